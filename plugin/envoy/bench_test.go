//go:build !wasip1

package main

import (
	"encoding/json"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// Benchmarks of the filter in proxytest, natively and as the compiled .wasm in proxytest's wazero
// engine (plugin/envoy/README.md has the figures and the command):
//   - a request whose token is in shared data, unchanged since the flow served it: the hot path (one
//     shared-data read, the memo's answer; hot.go);
//   - one fetch: the token entry removed, a request runs the whole flow (cache, gate, lock, recheck,
//     proxy_http_call), the callout is answered with a canned 200 and the token stored.

var benchTokenBody = []byte(`{"access_token":"bench-token-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)

func benchHarness(b *testing.B, runner string) (*harness, string) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	b.Cleanup(fake.Close)
	conf := nikoConfig(fake, nil)
	h := startHarness(b, runner, fake.URL(), conf)
	req, _ := json.Marshal(conf["request"])
	_, _, key, err := core.Prepare(req)
	if err != nil {
		b.Fatal(err)
	}
	return h, key
}

func BenchmarkRequestFromSharedData(b *testing.B) {
	for _, runner := range []string{"native", "wasm"} {
		b.Run(runner, func(b *testing.B) {
			h, _ := benchHarness(b, runner)
			id, _ := h.request("/api/x")
			h.answerAll()
			want := h.header(id)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				id := h.host.InitializeHttpContext()
				if h.host.CallOnRequestHeaders(id, [][2]string{{":path", "/api/x"}, {":authority", "api.example"}, {":method", "GET"}}, true) != types.ActionContinue {
					b.Fatal("not served from shared data")
				}
				h.host.CompleteHttpContext(id)
			}
			b.StopTimer()
			if id, _ := h.request("/api/y"); h.header(id) != want {
				b.Fatal("the token changed")
			}
		})
	}
}

func BenchmarkFetch(b *testing.B) {
	for _, runner := range []string{"native", "wasm"} {
		b.Run(runner, func(b *testing.B) {
			h, key := benchHarness(b, runner)
			headers := [][2]string{{":status", "200"}, {"content-type", "application/json"}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, cas, err := proxywasm.GetSharedData(key); err == nil {
					_ = proxywasm.SetSharedData(key, nil, cas) // the token is gone: the next request fetches
				}
				id := h.host.InitializeHttpContext()
				h.lastID = id
				if h.host.CallOnRequestHeaders(id, [][2]string{{":path", "/api/x"}, {":authority", "api.example"}, {":method", "GET"}}, true) != types.ActionPause {
					b.Fatal("no fetch")
				}
				cs := h.host.GetCalloutAttributesFromContext(id)
				if len(cs) != 1 {
					b.Fatalf("%d callouts", len(cs))
				}
				h.host.CallOnHttpCallResponse(cs[0].CalloutID, headers, nil, benchTokenBody)
				if h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
					b.Fatal("not resumed")
				}
				h.host.CompleteHttpContext(id)
			}
		})
	}
}

// BenchmarkRequestOutOfScope is the floor under the two above: the emulator's cost of a request
// and the filter's two header reads and scope check, with no token work.
func BenchmarkRequestOutOfScope(b *testing.B) {
	for _, runner := range []string{"native", "wasm"} {
		b.Run(runner, func(b *testing.B) {
			h, _ := benchHarness(b, runner)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				id := h.host.InitializeHttpContext()
				if h.host.CallOnRequestHeaders(id, [][2]string{{":path", "/health"}, {":authority", "api.example"}, {":method", "GET"}}, true) != types.ActionContinue {
					b.Fatal("paused")
				}
				h.host.CompleteHttpContext(id)
			}
		})
	}
}
