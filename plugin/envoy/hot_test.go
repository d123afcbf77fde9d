//go:build !wasip1

package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// The hot path (hot.go): a request that finds the entry the flow last served, unchanged, gets that
// answer without the flow. These tests change the entry the way another worker (or this one) does
// and check the filter answers as the flow would.

// tokenKey is the shared-data key of the identity's token entry.
func tokenKey(t testing.TB, conf map[string]any) string {
	return strings.TrimSuffix(lockKey(t, conf), "/lock")
}

func mustGet(t testing.TB, key string) ([]byte, uint32) {
	t.Helper()
	b, cas, err := proxywasm.GetSharedData(key)
	if err != nil {
		t.Fatal(err)
	}
	return b, cas
}

func mustSet(t testing.TB, key string, value []byte, cas uint32) {
	t.Helper()
	if err := proxywasm.SetSharedData(key, value, cas); err != nil {
		t.Fatal(err)
	}
}

// hotHarness fetches a token and serves it twice from shared data (the flow, then the memo); it
// returns the harness, the token entry's key and the header set.
func hotHarness(t *testing.T, runner string, fake *providertest.Fake) (*harness, string, string) {
	t.Helper()
	conf := nikoConfig(fake, nil)
	h := startHarness(t, runner, fake.URL(), conf)
	key := tokenKey(t, conf)
	id, _ := h.request("/api/x")
	h.answerAll()
	header := h.header(id)
	for i := range 2 {
		if id, action := h.request("/api/y"); action != types.ActionContinue || h.header(id) != header {
			t.Fatalf("request %d from shared data: %v %q", i, action, h.header(id))
		}
	}
	if h.vm != nil { // the memo holds the entry as it is in shared data
		raw, cas := mustGet(t, key)
		if hot := h.vm.plugin.hot; hot.cas != cas || hot.raw != string(raw) || hot.header != header {
			t.Fatalf("memo %d %q, shared data %d %q", hot.cas, hot.raw, cas, raw)
		}
	}
	if h.counter("hits") != 2 || fake.Requests() != 1 {
		t.Fatalf("hits %d, token calls %d", h.counter("hits"), fake.Requests())
	}
	return h, key, header
}

func TestHotPathFollowsSharedData(t *testing.T) {
	const otherToken = "other-worker-token-1"
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, h *harness, fake *providertest.Fake, key, header string)
		want   string // "same": the same token from shared data; "other": otherToken; "fetch"; "gate"
	}{
		{"unchanged", func(*testing.T, *harness, *providertest.Fake, string, string) {}, "same"},
		{"rewritten with the same bytes (new CAS)", func(t *testing.T, _ *harness, _ *providertest.Fake, key, _ string) {
			raw, cas := mustGet(t, key)
			mustSet(t, key, raw, cas)
		}, "same"},
		{"refreshed by another worker", func(t *testing.T, _ *harness, _ *providertest.Fake, key, header string) {
			raw, cas := mustGet(t, key)
			mustSet(t, key, []byte(strings.Replace(string(raw), strings.TrimPrefix(header, "Bearer "), otherToken, 1)), cas)
		}, "other"},
		{"deleted by another worker", func(t *testing.T, _ *harness, _ *providertest.Fake, key, _ string) {
			_, cas := mustGet(t, key)
			mustSet(t, key, nil, cas)
		}, "fetch"},
		{"rewritten expired by another worker", func(t *testing.T, _ *harness, _ *providertest.Fake, key, _ string) {
			raw, cas := mustGet(t, key)
			_, value, _ := strings.Cut(string(raw), " ")
			mustSet(t, key, []byte("1 "+value), cas)
		}, "fetch"},
		{"a 401 on this worker", func(_ *testing.T, h *harness, _ *providertest.Fake, _, _ string) {
			h.host.CallOnResponseHeaders(h.lastID, [][2]string{{":status", "401"}}, false)
		}, "fetch"},
		{"deleted, then a 429 closes the gate", func(t *testing.T, h *harness, fake *providertest.Fake, key, _ string) {
			_, cas := mustGet(t, key)
			mustSet(t, key, nil, cas)
			fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
				w.Header().Set("Retry-After", "30")
				w.WriteHeader(429)
				return true
			})
			id, _ := h.request("/api/x")
			if h.answerAll() != 1 {
				t.Fatal("no token call after the delete")
			}
			if _, kind, _ := h.local(id); kind != "rate_limited" {
				t.Fatalf("the 429: kind %q", kind)
			}
		}, "gate"},
	} {
		runners(t, func(t *testing.T, runner string) {
			t.Run(tt.name, func(t *testing.T) {
				fake := niko(t, time.Hour)
				h, key, header := hotHarness(t, runner, fake)
				tt.change(t, h, fake, key, header)
				calls := fake.Requests()
				id, action := h.request("/api/z")
				switch tt.want {
				case "same", "other":
					want := header
					if tt.want == "other" {
						want = "Bearer " + otherToken
					}
					if action != types.ActionContinue || h.header(id) != want || len(h.callouts()) != 0 || h.counter("hits") != 3 {
						t.Fatalf("%v header %q (want %q), %d callouts, hits %d", action, h.header(id), want, len(h.callouts()), h.counter("hits"))
					}
					if h.vm != nil { // the flow ran again and the memo follows the entry's new CAS
						raw, cas := mustGet(t, key)
						if hot := h.vm.plugin.hot; hot.cas != cas || hot.raw != string(raw) || hot.header != want {
							t.Fatalf("memo %d %q, shared data %d %q", hot.cas, hot.header, cas, raw)
						}
					}
				case "fetch":
					if action != types.ActionPause || h.answerAll() != 1 || h.header(id) == header || !strings.HasPrefix(h.header(id), "Bearer ") {
						t.Fatalf("%v, header %q: want a new token fetched", action, h.header(id))
					}
				case "gate":
					_, kind, retryAfter := h.local(id)
					if n, _ := strconv.Atoi(retryAfter); kind != "rate_limited" || n < 1 || n > 30 || len(h.callouts()) != 0 || fake.Requests() != calls || h.counter("gate_closed") != 1 {
						t.Fatalf("kind %q Retry-After %q, %d callouts, gate_closed %d", kind, retryAfter, len(h.callouts()), h.counter("gate_closed"))
					}
				}
			})
		})
	}
}

// TestHotPathStopsAtTheFlowsLimit: the memo serves up to the millisecond before the flow would stop
// serving the entry and not at it, whichever of the flow's limit (expiry less skew) and the entry's
// own expiry in shared data comes first.
func TestHotPathStopsAtTheFlowsLimit(t *testing.T) {
	for _, tt := range []struct {
		name       string
		entryShift int64 // another worker rewrites the entry's expiry this much past the flow's limit
	}{
		{"entry outlives the flow's limit", 600000},
		{"entry expires 5 s before the flow's limit", -5000},
		{"entry expires at the flow's limit", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake := niko(t, time.Hour) // skew 60 s
			h, key, header := hotHarness(t, "native", fake)
			raw, cas := mustGet(t, key)
			_, value, _ := strings.Cut(string(raw), " ")
			exp := h.vm.plugin.hot.a.expiresAtMS
			flowLimit := exp - 60000
			limit := min(flowLimit, flowLimit+tt.entryShift)
			mustSet(t, key, []byte(strconv.FormatInt(flowLimit+tt.entryShift, 10)+" "+value), cas)
			if id, action := h.request("/api/x"); action != types.ActionContinue || h.header(id) != header {
				t.Fatal("the rewritten entry is not served")
			}
			if got := h.vm.plugin.hot.untilMS; got != limit {
				t.Fatalf("memo until %d, want %d (flow's limit %+d)", got, limit, limit-flowLimit)
			}
			h.clock.ms.Store(limit - 1)
			if id, action := h.request("/api/x"); action != types.ActionContinue || h.header(id) != header || len(h.callouts()) != 0 {
				t.Fatal("not served 1 ms before the limit")
			}
			h.clock.ms.Store(limit)
			if _, action := h.request("/api/x"); action != types.ActionPause || h.answerAll() != 1 {
				t.Fatalf("at the limit: %v, want a fetch", action)
			}
		})
	}
}

// TestHotPathIdentitiesApart: two filters (two identities) in one VM, so in one shared data, whose
// token entries have the same CAS (proxytest counts CAS per key), alternate requests: each always
// gets its own token, from its own memo.
func TestHotPathIdentitiesApart(t *testing.T) {
	fakes := [2]*providertest.Fake{niko(t, time.Hour), niko(t, time.Hour)}
	var confs [2][]byte
	var keys [2]string
	for i, f := range fakes {
		conf := nikoConfig(f, nil)
		confs[i] = mustJSON(t, conf)
		keys[i] = tokenKey(t, conf)
	}
	if keys[0] == keys[1] {
		t.Fatal("one identity")
	}
	clk := newClock()
	mux := &twoFilters{confs: confs}
	for i := range mux.p {
		mux.p[i] = (&vmContext{now: clk.now}).NewPluginContext(uint32(i + 1)).(*pluginContext)
	}
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(mux))
	t.Cleanup(reset)
	h := &harness{t: t, host: host, clock: clk, answered: map[uint32]int{}}
	if host.StartPlugin() != types.OnPluginStartStatusOK {
		t.Fatal("start")
	}
	var headers [2]string
	for i := range 2 {
		mux.route, h.upstream = i, fakes[i].URL()
		id, _ := h.request("/api/x")
		h.answerAll()
		headers[i] = h.header(id)
	}
	_, cas0 := mustGet(t, keys[0])
	if _, cas1 := mustGet(t, keys[1]); cas0 != cas1 || headers[0] == headers[1] {
		t.Fatalf("CAS %d and %d, headers %q %q: want one CAS, two tokens", cas0, cas1, headers[0], headers[1])
	}
	for n := range 20 {
		i := n % 2
		mux.route = i
		if id, action := h.request("/api/x"); action != types.ActionContinue || h.header(id) != headers[i] {
			t.Fatalf("request %d of identity %d: %v %q", n, i, action, h.header(id))
		}
	}
	for i, p := range mux.p {
		if p.hot.header != headers[i] || p.hot.cas != cas0 {
			t.Fatalf("identity %d's memo holds %q", i, p.hot.header)
		}
	}
	if fakes[0].Requests() != 1 || fakes[1].Requests() != 1 {
		t.Fatal("a token call from shared data")
	}
}

// twoFilters is one VM context with two filters configured, as Envoy runs two filter configurations
// with the same vm_id on a worker (proxytest makes one plugin context: this one passes each request
// to the filter route names, and ticks to both).
type twoFilters struct {
	types.DefaultVMContext
	types.DefaultPluginContext
	p     [2]*pluginContext
	confs [2][]byte
	route int
}

func (m *twoFilters) NewPluginContext(uint32) types.PluginContext { return m }

func (m *twoFilters) OnPluginStart(int) types.OnPluginStartStatus {
	for i, p := range m.p {
		if st := p.start(m.confs[i]); st != types.OnPluginStartStatusOK {
			return st
		}
	}
	return types.OnPluginStartStatusOK
}

func (m *twoFilters) NewHttpContext(id uint32) types.HttpContext {
	return m.p[m.route].NewHttpContext(id)
}

func (m *twoFilters) OnTick() {
	for _, p := range m.p {
		p.OnTick()
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
