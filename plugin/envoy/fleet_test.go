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
	h := &harness{t: t, host: host, clock: clk, upstream: fake.URL(), cluster: "nikohealth_token", answered: map[uint32]int{}}
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
	if logs := strings.Join(h.host.GetInfoLogs(), "\n"); !strings.Contains(logs, "failure_memory_ms remembers non-retryable failures only") {
		t.Fatalf("no word at start on what failure_memory_ms now means: %q", logs)
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

// TestUnauthorizedWindowAcrossWorkers: the 401 window is the flow's, in shared data. Both workers
// send the same token and both get a 401: it is dropped once, and one token call follows for the two.
// Then the other worker gets a 401 for the new token within 30 s: the flow answers retry false,
// nothing is dropped, and both workers keep sending it with no call (the filter once kept the window
// per worker: a worker that had dropped nothing dropped the new token, a third call). After 30 s a
// 401 drops it again.
func TestUnauthorizedWindowAcrossWorkers(t *testing.T) {
	fake := niko(t, time.Hour)
	h, mux := twoWorkers(t, fake, nil)
	id0, _ := h.on(mux, 0)
	h.answerAll()
	id1, action := h.on(mux, 1)
	old := h.header(id0)
	if action != types.ActionContinue || h.header(id1) != old || fake.Requests() != 1 {
		t.Fatalf("worker 1: %v, %d token calls: want the token from shared data", action, fake.Requests())
	}
	h.unauthorized(id0)
	h.unauthorized(id1)
	if n := h.counter("invalidated"); n != 1 {
		t.Fatalf("invalidated = %d after two 401s for one token, want 1", n)
	}
	a, _ := h.on(mux, 0)
	b, _ := h.on(mux, 1)
	if n := h.answerAll(); n != 1 {
		t.Fatalf("%d token calls after the 401s, want 1", n)
	}
	h.ticks(1) // worker 1's request waited for worker 0's call: it finds the token on its tick
	fresh := h.header(a)
	if fresh == "" || fresh == old || h.header(b) != fresh || fake.Requests() != 2 {
		t.Fatalf("headers %q and %q (old %q), %d token calls: want one new token for both", fresh, h.header(b), old, fake.Requests())
	}
	h.unauthorized(b) // worker 1, the new token, within 30 s of the drop
	for _, w := range []int{0, 1} {
		id, action := h.on(mux, w)
		if action != types.ActionContinue || h.header(id) != fresh {
			t.Fatalf("worker %d after a 401 within the window: %v %q: want the same token", w, action, h.header(id))
		}
	}
	if fake.Requests() != 2 || h.counter("invalidated") != 1 {
		t.Fatalf("%d token calls, invalidated %d: want 2 and 1 (the window holds across workers)", fake.Requests(), h.counter("invalidated"))
	}
	h.clock.advance(30 * time.Second)
	id, _ := h.on(mux, 1)
	h.unauthorized(id)
	if _, action := h.on(mux, 0); action != types.ActionPause || h.answerAll() != 1 || h.counter("invalidated") != 2 {
		t.Fatalf("30 s later: %v, invalidated %d: want the token dropped and a call", action, h.counter("invalidated"))
	}
}

// TestLate401DoesNotSilenceAWorker: a 401 for a token another worker already replaced drops nothing
// (the flow answers retry: a fresh token is worth a try) and opens no window. The filter once started
// its own 30 s window on any 401: worker 1's late 401 for an old token then kept it from dropping the
// current token for a 401 after the fleet's window had passed.
func TestLate401DoesNotSilenceAWorker(t *testing.T) {
	fake := niko(t, time.Hour)
	h, mux := twoWorkers(t, fake, nil)
	h.on(mux, 0)
	h.answerAll() // A
	id, _ := h.on(mux, 0)
	h.unauthorized(id) // A dropped: the window runs 30 s
	h.on(mux, 0)
	h.answerAll()           // B
	late, _ := h.on(mux, 1) // worker 1 sends B; its answer comes late
	h.clock.advance(30 * time.Second)
	id, _ = h.on(mux, 0)
	h.unauthorized(id) // B dropped: a new window, to 60 s
	h.on(mux, 0)
	h.answerAll() // C
	h.clock.advance(time.Second)
	h.unauthorized(late) // 31 s: B's late 401 on worker 1
	if n := h.counter("invalidated"); n != 2 || fake.Requests() != 3 {
		t.Fatalf("invalidated %d, %d token calls: want 2 and 3 (a late 401 for a replaced token drops nothing)", n, fake.Requests())
	}
	h.clock.advance(29500 * time.Millisecond) // 60.5 s: the window has passed
	id, _ = h.on(mux, 1)
	h.unauthorized(id) // C's 401 on worker 1
	if _, action := h.on(mux, 1); action != types.ActionPause || h.answerAll() != 1 || h.counter("invalidated") != 3 {
		t.Fatalf("a 401 after the window: %v, invalidated %d: want C dropped and a call", action, h.counter("invalidated"))
	}
}

// TestUnauthorizedWindowCompiled: the window through the compiled filter. Another worker (the native
// filter, on the compiled one's clock read from the token it stored) drops the token for a 401; the
// compiled filter's next request makes one call, and a 401 for that new token within 30 s drops
// nothing: its next request gets the same token with no call.
func TestUnauthorizedWindowCompiled(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, time.Hour)
		conf := nikoConfig(fake, nil)
		h := startHarness(t, runner, fake.URL(), conf)
		id, _ := h.request("/api/x")
		h.answerAll()
		old := strings.TrimPrefix(h.header(id), "Bearer ")
		entry, _ := mustGet(t, tokenKey(t, conf))
		exp, _ := strconv.ParseInt(strings.SplitN(string(entry), " ", 2)[0], 10, 64)
		now := exp - (3600-60)*1000 // the filter's clock when it stored the token
		other := (&vmContext{now: func() int64 { return now }}).NewPluginContext(9).(*pluginContext)
		if st := other.start(mustJSON(t, conf)); st != types.OnPluginStartStatusOK {
			t.Fatal("the other worker did not start")
		}
		if !other.invalidate(old) {
			t.Fatal("the other worker's 401: retry false, want the token dropped")
		}
		id, action := h.request("/api/y")
		if action != types.ActionPause || h.answerAll() != 1 {
			t.Fatalf("after the other worker's drop: %v, want one call", action)
		}
		fresh := h.header(id)
		h.unauthorized(id)
		id, action = h.request("/api/z")
		if action != types.ActionContinue || h.header(id) != fresh || fake.Requests() != 2 {
			t.Fatalf("after a 401 within the other worker's window: %v %q, %d token calls: want the same token, 2 calls", action, h.header(id), fake.Requests())
		}
	})
}

// TestRefreshBackoffAcrossWorkers: both workers used the token, so both refresh it from its
// refresh_at_ms (80 s for a 2-minute token); every refresh fails with 503. Whichever worker's tick
// comes first calls; the other finds the flow's gate closed and waits its retry_after_ms: one call
// per backoff step for the two, each at the first tick at or past the gate's until_ms, as for one
// worker.
func TestRefreshBackoffAcrossWorkers(t *testing.T) {
	fake := niko(t, 120*time.Second)
	h, mux := twoWorkers(t, fake, nil)
	h.on(mux, 0)
	h.answerAll()
	if _, action := h.on(mux, 1); action != types.ActionContinue {
		t.Fatal("worker 1 did not get the token from shared data")
	}
	failWith(fake, 503)
	h.ticks(1599) // 79.95 s
	at := refreshPacing(t, h, mux.p[0].s.key, 400)
	if len(at) < 6 || at[0] != 0 {
		t.Fatalf("refresh calls at ticks %v: want them from tick 0, at each backoff's end", at)
	}
}
