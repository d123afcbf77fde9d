//go:build !wasip1

package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// What the flow remembers for a whole fleet (abi/ABI.md "Failures and the 401 window"), through the
// filter's shared data: a transient failure's backoff and the 401 window. Envoy runs one VM per
// worker thread, sharing the shared data of their vm_id; here two plugin contexts of one filter
// configuration (twoFilters, hot_test.go) are the two workers, on one native clock.

// twoWorkers starts one filter configuration on two workers. h.request goes to worker mux.route;
// ticks go to both.
func twoWorkers(t *testing.T, fake *providertest.Fake, extra map[string]any) (*harness, *twoFilters) {
	t.Helper()
	conf := mustJSON(t, nikoConfig(fake, extra))
	clk := newClock()
	mux := &twoFilters{confs: [2][]byte{conf, conf}}
	for i := range mux.p {
		mux.p[i] = (&vmContext{now: clk.now}).NewPluginContext(uint32(i + 1)).(*pluginContext)
	}
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(mux))
	t.Cleanup(reset)
	h := &harness{t: t, host: host, clock: clk, upstream: fake.URL(), answered: map[uint32]int{}}
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("start: %v", st)
	}
	return h, mux
}

// on makes a request on worker w.
func (h *harness) on(mux *twoFilters, w int) (uint32, types.Action) {
	mux.route = w
	return h.request("/api/x")
}

// refused checks that request id was answered locally with kind and Retry-After, and made no call.
func refused(t *testing.T, h *harness, id uint32, kind, retryAfter, when string) {
	t.Helper()
	if status, k, ra := h.local(id); status != 503 || k != kind || ra != retryAfter || len(h.callouts()) != 0 {
		t.Fatalf("%s: local reply %d %q Retry-After %q, %d token calls: want %q, Retry-After %s, no call",
			when, status, k, ra, len(h.callouts()), kind, retryAfter)
	}
}

// gateUntil reads the flow's gate of the identity whose token key is key, as the filter stored it in
// shared data: its until_ms, or 0 when there is none (or it has expired).
func gateUntil(t *testing.T, h *harness, key string) int64 {
	t.Helper()
	b, _, err := proxywasm.GetSharedData(core.GateKey(key))
	if err != nil {
		return 0
	}
	exp, v, _ := strings.Cut(string(b), " ")
	if n, _ := strconv.ParseInt(exp, 10, 64); n <= h.clock.now() {
		return 0
	}
	return gjson.Get(v, "until_ms").Int()
}

// seconds is a Retry-After header for ms, rounded up as the filter does.
func seconds(ms int64) string { return strconv.FormatInt((ms+999)/1000, 10) }

// TestTransientFailureRemembered: a 503 closes the flow's gate for its backoff (abi/ABI.md: 50 ms,
// doubling with each failure in a row), for every worker: a request on either worker within the
// backoff gets the remembered failure (server_error, retryable, Retry-After: the time left) with no
// call; at the gate's until_ms one request calls. The workers take turns for six failures in a row,
// then the provider recovers. failure_memory_ms (5 s here) has no say over a retryable failure: the
// filter once remembered it for that long, and nobody called for 5 s.
func TestTransientFailureRemembered(t *testing.T) {
	fake := niko(t, 0)
	failWith(fake, 503)
	h, mux := twoWorkers(t, fake, map[string]any{"failure_memory_ms": 5000})
	key := mux.p[0].s.key
	id, action := h.on(mux, 0)
	if action != types.ActionPause || h.answerAll() != 1 {
		t.Fatal("the first request made no token call")
	}
	var backoffs []int64
	for n := 1; ; n++ {
		backoff := gateUntil(t, h, key) - h.clock.now()
		if backoff <= 0 {
			t.Fatalf("failure %d closed no gate", n)
		}
		refused(t, h, id, "server_error", seconds(backoff), "the failed call")
		if len(backoffs) > 0 && backoff != 2*backoffs[len(backoffs)-1] {
			t.Fatalf("backoffs %v then %d ms: want each twice the last", backoffs, backoff)
		}
		backoffs = append(backoffs, backoff)
		w := n % 2 // the worker that calls next
		id, _ = h.on(mux, w)
		refused(t, h, id, "server_error", seconds(backoff), "within the backoff")
		h.clock.advance(time.Duration(backoff-1) * time.Millisecond)
		id, _ = h.on(mux, 1-w)
		refused(t, h, id, "server_error", "1", "the other worker 1 ms before the backoff ends")
		h.clock.advance(time.Millisecond)
		if n == 6 {
			break
		}
		id, action = h.on(mux, w)
		if action != types.ActionPause || h.answerAll() != 1 {
			t.Fatalf("at the gate's until_ms: %v, want one token call", action)
		}
	}
	fake.Intercept(nil) // the provider recovers
	id, action = h.on(mux, 0)
	if action != types.ActionPause || h.answerAll() != 1 || !strings.HasPrefix(h.header(id), "Bearer ") {
		t.Fatalf("after the last backoff: %v, header %q: want a call and the token", action, h.header(id))
	}
	id, action = h.on(mux, 1)
	if action != types.ActionContinue || !strings.HasPrefix(h.header(id), "Bearer ") || fake.Requests() != 7 {
		t.Fatalf("the other worker: %v, %d token calls: want the token from shared data, 7 calls", action, fake.Requests())
	}
	if n := h.counter("failures.server_error"); n != 6 {
		t.Fatalf("failures.server_error = %d, want 6 (the remembered ones are no calls)", n)
	}
}

// TestTransientFailureRememberedCompiled: the same gate through the compiled filter, on one worker
// (the wasm engine's clock cannot be moved): a request right after a 503 gets the remembered failure
// without a call.
func TestTransientFailureRememberedCompiled(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		failWith(fake, 503)
		h := newHarness(t, runner, fake, nil)
		id, _ := h.request("/api/x")
		if h.answerAll() != 1 {
			t.Fatal("no token call")
		}
		refused(t, h, id, "server_error", "1", "the failed call")
		id, _ = h.request("/api/y")
		refused(t, h, id, "server_error", "1", "within the backoff")
		if fake.Requests() != 1 {
			t.Fatalf("%d token calls", fake.Requests())
		}
	})
}

// TestNonRetryableFailureRememberedAcrossWorkers: the flow does not remember a non-retryable failure
// (a revoked secret: invalid_client), so failure_memory_ms does, in shared data: the other worker's
// request gets it with no call, until the memory ends.
func TestNonRetryableFailureRememberedAcrossWorkers(t *testing.T) {
	fake := niko(t, 0)
	fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		w.Write([]byte(`{"error":"invalid_client"}`))
		return true
	})
	h, mux := twoWorkers(t, fake, map[string]any{"failure_memory_ms": 3000})
	id, _ := h.on(mux, 0)
	h.answerAll()
	refused(t, h, id, "invalid_client", "", "the failed call")
	h.clock.advance(2999 * time.Millisecond)
	id, _ = h.on(mux, 1)
	refused(t, h, id, "invalid_client", "", "the other worker, within failure_memory_ms")
	h.clock.advance(time.Millisecond)
	if _, action := h.on(mux, 1); action != types.ActionPause || h.answerAll() != 1 || fake.Requests() != 2 {
		t.Fatalf("after failure_memory_ms: %v, %d token calls: want a second call", action, fake.Requests())
	}
}
