//go:build !wasip1

package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// The filter follows the plugin's schedule (plugin/core/flow.go, RefreshAtMS and StaleAtMS): it
// refreshes a used token in the background from the answer's refresh_at_ms, and a token it holds
// is given to requests until expires_at_ms while fetching its successor fails. Most of these are
// native only: they need the filter's clock moved by minutes to given points, and the wasm engine's
// clock is wazero's fake one; TestHeldTokenUntilExpiry runs compiled too, with a 3-second token the
// fake clock outlives.

// failWith makes every token call fail with status.
func failWith(fake interface {
	Intercept(func(http.ResponseWriter, *http.Request) bool)
}, status int) {
	fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool { w.WriteHeader(status); return true })
}

// served checks that request id went upstream with header, not paused or answered locally.
func served(t *testing.T, h *harness, id uint32, action types.Action, header, when string) {
	t.Helper()
	status, kind, _ := h.local(id)
	if action != types.ActionContinue || status != 0 || h.header(id) != header {
		t.Fatalf("%s: action %v, local reply %d %q, header %q: want the held token at once", when, action, status, kind, h.header(id))
	}
}

// TestValidTokenServedWhileRefreshFails: a 10-minute token is refreshed from the answer's
// refresh_at_ms (400 s: a third of its life before it expires), not at max(expiry -
// refresh_ahead_ms, issued + life/2) = 540 s. While every refresh fails, requests get the held token
// at once until it expires at 600 s: at 540.1 s, past its stale_at_ms (540 s), when shared data no
// longer holds it, it is still served, where the filter once paused the request for the refresh.
func TestValidTokenServedWhileRefreshFails(t *testing.T) {
	fake := niko(t, 10*time.Minute)
	h := newHarness(t, "native", fake, nil)
	id, _ := h.request("/api/x") // at 0 s: the token's issued_at_ms, by the filter's clock
	h.answerAll()
	held := h.header(id)
	failWith(fake, 503)
	h.ticks(7999) // 399.95 s
	if n := len(h.callouts()); n != 0 {
		t.Fatalf("%d refreshes before refresh_at_ms", n)
	}
	h.ticks(1) // 400 s
	if n := h.answerAll(); n != 1 {
		t.Fatalf("%d refreshes at refresh_at_ms (400 s), want 1", n)
	}
	refreshes := 1
	for range 10802 - 8000 { // to 540.1 s, every refresh failing
		h.ticks(1)
		refreshes += h.answerAll()
	}
	if refreshes < 5 || refreshes > 25 {
		t.Fatalf("%d failing refreshes in 140 s: want them backing off (the flow's backoff, doubling to 30 s)", refreshes)
	}
	id, action := h.request("/api/y") // 540.1 s
	served(t, h, id, action, held, "at 540.1 s")
	if n := len(h.callouts()); n != 0 {
		t.Fatalf("a request served the held token made %d token calls", n)
	}
	for range 11999 - 10802 { // to 599.95 s
		h.ticks(1)
		h.answerAll()
	}
	id, action = h.request("/api/z")
	served(t, h, id, action, held, "at 599.95 s")
	h.ticks(1) // 600 s: expired
	h.answerAll()
	id, action = h.request("/api/w")
	if action == types.ActionPause {
		h.answerAll()
	}
	status, kind, retryAfter := h.local(id)
	if status != 503 || kind != "server_error" || h.header(id) == held {
		t.Fatalf("at expiry: local reply %d %q, header %q: want the failure", status, kind, h.header(id))
	}
	// The provider recovers: the next request once the flow's backoff (30 s after this many failures
	// in a row) has passed fetches.
	fake.Intercept(nil)
	wait, _ := strconv.Atoi(retryAfter)
	if wait < 1 || wait > 30 {
		t.Fatalf("Retry-After %q, want the flow's backoff", retryAfter)
	}
	h.ticks(wait * 20)
	id, action = h.request("/api/v")
	if action == types.ActionPause {
		h.answerAll()
	}
	if got := h.header(id); got == "" || got == held {
		t.Fatalf("after recovery: header %q, want a new token", got)
	}
}

// TestHeldTokenServedWhenItsFetchFails: a request past the token's stale_at_ms waits for a fetch (no
// refresh ran: no tick); when that fetch fails it gets the held token, still valid, not the failure.
// Later requests get it at once, without a call, until it expires.
func TestHeldTokenServedWhenItsFetchFails(t *testing.T) {
	fake := niko(t, 10*time.Minute)
	h := newHarness(t, "native", fake, map[string]any{"failure_memory_ms": 5000})
	id, _ := h.request("/api/x")
	h.answerAll()
	held := h.header(id)
	failWith(fake, 503)
	h.clock.advance(545 * time.Second)
	id, action := h.request("/api/y")
	if action != types.ActionPause {
		t.Fatalf("past stale_at_ms: %v, want the request paused for a fetch", action)
	}
	if n := h.answerAll(); n != 1 {
		t.Fatalf("%d token calls, want 1", n)
	}
	if status, kind, _ := h.local(id); status != 0 || h.header(id) != held || h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
		t.Fatalf("the fetch failed: local reply %d %q, header %q; want the held token", status, kind, h.header(id))
	}
	for _, d := range []time.Duration{time.Second, 10 * time.Second, 40 * time.Second} { // 546, 556, 596 s
		h.clock.advance(d)
		id, action = h.request("/api/z")
		served(t, h, id, action, held, "after the failed fetch")
	}
	if fake.Requests() != 2 {
		t.Fatalf("%d token calls, want 2: the held token is served without one", fake.Requests())
	}
	h.clock.advance(4 * time.Second) // 600 s
	id, action = h.request("/api/w")
	if action == types.ActionPause {
		h.answerAll()
	}
	if status, _, _ := h.local(id); status != 503 {
		t.Fatalf("at expiry: local reply %d, header %q: want the failure", status, h.header(id))
	}
}

// TestDroppedTokenNotHeld: a token gone from shared data before its stale_at_ms was dropped by
// another worker (an upstream's 401): this worker forgets it, and never gives it to a request when a
// fetch fails, even past its stale_at_ms.
func TestDroppedTokenNotHeld(t *testing.T) {
	fake := niko(t, 10*time.Minute)
	conf := nikoConfig(fake, nil)
	h := startHarness(t, "native", fake.URL(), conf)
	id, _ := h.request("/api/x")
	h.answerAll()
	held := h.header(id)
	failWith(fake, 503)
	h.clock.advance(100 * time.Second)
	key := strings.TrimSuffix(lockKey(t, conf), "/lock")
	_, cas, err := proxywasm.GetSharedData(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := proxywasm.SetSharedData(key, nil, cas); err != nil { // another worker's invalidate
		t.Fatal(err)
	}
	for _, at := range []time.Duration{0, 445 * time.Second} { // 100 s, then 545 s (past stale_at_ms)
		h.clock.advance(at)
		id, action := h.request("/api/y")
		if action == types.ActionPause {
			h.answerAll()
		}
		if status, kind, _ := h.local(id); status != 503 || h.header(id) == held {
			t.Fatalf("after %v more: local reply %d %q, header %q: want the failure, not the dropped token", at, status, kind, h.header(id))
		}
	}
}

// TestHeldTokenServedWhenTheWaitEnds: a request past stale_at_ms that waits longer than wait_ms for
// the fetch gets the held token, still valid, not the timeout.
func TestHeldTokenServedWhenTheWaitEnds(t *testing.T) {
	fake := niko(t, 10*time.Minute)
	h := newHarness(t, "native", fake, map[string]any{"wait_ms": 500})
	id, _ := h.request("/api/x")
	h.answerAll()
	held := h.header(id)
	h.clock.advance(545 * time.Second)
	id, action := h.request("/api/y")
	if action != types.ActionPause || len(h.callouts()) != 1 {
		t.Fatalf("past stale_at_ms: %v, %d token calls: want the request paused for one", action, len(h.callouts()))
	}
	h.ticks(11) // the call never answers
	if status, kind, _ := h.local(id); status != 0 || h.header(id) != held || h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
		t.Fatalf("after wait_ms: local reply %d %q, header %q: want the held token", status, kind, h.header(id))
	}
}

// TestHeldTokenUntilExpiry, natively and compiled: a 3-second token whose refresh fails (at 2 s) is
// given to every request at once until it expires, served from shared data until its stale_at_ms
// (2.25 s) and held after it; from expiry requests get the failure. The filter once paused the
// requests between 2.25 s and 3 s for a fetch and answered them with its failure.
func TestHeldTokenUntilExpiry(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 3*time.Second)
		h := newHarness(t, runner, fake, nil)
		id, _ := h.request("/api/x")
		h.answerAll()
		held := h.header(id)
		failWith(fake, 503)
		h.tickUntilCallout() // the refresh, at refresh_at_ms (2 s)
		h.answerAll()
		for i := 0; ; i++ {
			if i == 20000 {
				t.Fatal("the token never expired")
			}
			h.ticks(1)
			h.answerAll() // the refresher's retries, failing
			id, action := h.request("/api/y")
			if action == types.ActionContinue && h.header(id) == held {
				continue
			}
			if action == types.ActionPause {
				h.answerAll()
			}
			if status, kind, _ := h.local(id); status != 503 {
				t.Fatalf("request %d: %v, local reply %d %q, header %q: want the held token, or once it expired the failure", i, action, status, kind, h.header(id))
			}
			break
		}
		if h.counter("held") == 0 {
			t.Fatal("no request was given the held token past its stale_at_ms")
		}
	})
}

// TestFailedFetchPacesTheRefresher: a request's fetch of the held token's successor that fails (503,
// past stale_at_ms) is a failed refresh: the refresher calls again when the error's retry_after_ms
// has passed (the gate's until_ms), and again at each backoff's end; the requests meanwhile get the
// held token with no call.
func TestFailedFetchPacesTheRefresher(t *testing.T) {
	fake := niko(t, 10*time.Minute)
	conf := nikoConfig(fake, nil)
	h := startHarness(t, "native", fake.URL(), conf)
	id, _ := h.request("/api/x")
	h.answerAll()
	held := h.header(id)
	failWith(fake, 503)
	h.clock.advance(545 * time.Second) // past stale_at_ms, with no tick: the refresher has not run
	if _, action := h.request("/api/y"); action != types.ActionPause || h.answerAll() != 1 {
		t.Fatal("past stale_at_ms: want the request paused for a call")
	}
	key := tokenKey(t, conf)
	if gateUntil(t, h, key) <= h.clock.now() {
		t.Fatal("the failed fetch closed no gate")
	}
	// From here every call is the refresher's, each at the until_ms of the gate the last call closed
	// (the first: the request's).
	var at []int
	until := gateUntil(t, h, key)
	for i := range 200 { // 10 s
		h.ticks(1)
		id, action := h.request("/api/z")
		served(t, h, id, action, held, "while the refresher tries")
		now, calls := h.clock.now(), h.answerAll()
		if calls == 1 && now < until || calls == 0 && now >= until || calls > 1 {
			t.Fatalf("tick %d: %d calls, %d ms past the gate's until_ms (calls at %v)", i, calls, now-until, at)
		}
		if calls == 1 {
			at = append(at, i)
			until = gateUntil(t, h, key)
		}
	}
	if len(at) < 5 {
		t.Fatalf("refresh calls at ticks %v: want one at each backoff's end", at)
	}
}

// TestNonRetryableFetchStopsTheRefresher: a request's fetch of the held token's successor answered
// invalid_client stops refreshing the token (failure_memory_ms 0: nothing else stops calls): no tick
// calls again; the next request past stale_at_ms fetches once, and gets the held token when that
// fails too.
func TestNonRetryableFetchStopsTheRefresher(t *testing.T) {
	fake := niko(t, 10*time.Minute)
	h := newHarness(t, "native", fake, map[string]any{"failure_memory_ms": 0})
	id, _ := h.request("/api/x")
	h.answerAll()
	held := h.header(id)
	fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		w.Write([]byte(`{"error":"invalid_client"}`))
		return true
	})
	h.clock.advance(545 * time.Second)
	if _, action := h.request("/api/y"); action != types.ActionPause || h.answerAll() != 1 {
		t.Fatal("past stale_at_ms: want the request paused for a call")
	}
	h.ticks(100)
	if n := h.answerAll(); n != 0 {
		t.Fatalf("%d refresh calls after invalid_client, want none", n)
	}
	id, action := h.request("/api/z")
	if action != types.ActionPause || h.answerAll() != 1 || h.header(id) != held {
		t.Fatalf("the next request: %v, header %q: want one call, then the held token", action, h.header(id))
	}
}

// TestHeldTokenAtItsExpiry: on a clock that moves 1 ms at every reading (as the wasm engine's does,
// and as a real one may between two readings), a request around the held token's expiry, while
// fetching its successor fails, gets the held token or makes a call: it never waits with no call
// (the refresher does not refresh an expired token). The filter once read the clock at each step,
// and a request 6 or 7 ms before expiry on this clock was left to the refresher, then found the token
// expired.
func TestHeldTokenAtItsExpiry(t *testing.T) {
	for before := int64(-3); before <= 20; before++ {
		t.Run(strconv.FormatInt(before, 10), func(t *testing.T) { heldAtExpiry(t, before) })
	}
}

func heldAtExpiry(t *testing.T, before int64) {
	fake := niko(t, 10*time.Minute)
	h := newHarness(t, "native", fake, nil)
	id, _ := h.request("/api/x")
	h.answerAll()
	held := h.header(id)
	failWith(fake, 503)
	h.clock.advance(545 * time.Second)
	h.request("/api/y") // its fetch fails: the held token's successor cannot be had
	h.answerAll()
	p := h.vm.plugin
	expires := p.refresh.held.expiresAtMS
	h.clock.ms.Store(expires - before)
	moving := func() int64 { return h.clock.ms.Add(1) - 1 }
	p.now, p.cache.now = moving, moving
	id, action := h.request("/api/z")
	switch {
	case action == types.ActionContinue && h.header(id) == held:
	case action == types.ActionPause && len(h.callouts()) == 1:
	default:
		t.Fatalf("%d ms before expiry: %v, header %q, %d token calls: want the held token or a call", before, action, h.header(id), len(h.callouts()))
	}
}
