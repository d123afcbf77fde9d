//go:build !wasip1

package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

func niko(t *testing.T, lifetime time.Duration) *providertest.Fake {
	cfg := providertest.DefaultConfig("nikohealth")
	if lifetime > 0 {
		cfg.Lifetime = lifetime
	}
	fake := providertest.NewNikoHealth(cfg)
	t.Cleanup(fake.Close)
	return fake
}

func TestFirstRequestPausesThenSharedData(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		h := newHarness(t, runner, fake, nil)
		id, action := h.request("/api/patients")
		if action != types.ActionPause {
			t.Fatalf("first request: %v, want pause", action)
		}
		h.answerAll()
		if got := h.header(id); !strings.HasPrefix(got, "Bearer ") || len(got) < 20 {
			t.Fatalf("header after resume: %q", got)
		}
		if h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
			t.Fatal("the request was not resumed")
		}
		id2, action := h.request("/api/other")
		if action != types.ActionContinue || len(h.callouts()) != 0 || h.header(id2) != h.header(id) || fake.Requests() != 1 {
			t.Fatalf("second request: %v, %d requests at the fake", action, fake.Requests())
		}
		id3, action := h.request("/health") // out of scope: no header, no pause
		if action != types.ActionContinue || h.header(id3) != "" {
			t.Fatal("a path outside the filter's paths was touched")
		}
		// Metrics: one fetch, one hit (the second request), its latency recorded, nothing secret in a name.
		if f, hits := h.counter("fetches"), h.counter("hits"); f != 1 || hits != 1 {
			t.Fatalf("metrics: fetches %d hits %d, want 1 and 1", f, hits)
		}
		if _, err := h.host.GetHistogramMetric("tokenwasm.nikohealth_token.nikohealth.fetch_ms"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestTokenTypeFromTheAnswer: the header is the token's own type, never a fixed "Bearer".
func TestTokenTypeFromTheAnswer(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"access_token":"dpop-token-1","token_type":"DPoP","expires_in":3600}`))
			return true
		})
		h := newHarness(t, runner, fake, nil)
		id, _ := h.request("/api/x")
		h.answerAll()
		if got := h.header(id); got != "DPoP dpop-token-1" {
			t.Fatalf("header %q, want the answer's token type", got)
		}
	})
}

func TestFiftyRequestsOneCall(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		h := newHarness(t, runner, fake, nil)
		var ids []uint32
		for range 50 {
			id, action := h.request("/api/x")
			if action != types.ActionPause {
				t.Fatal("a request during the fetch was not paused")
			}
			ids = append(ids, id)
		}
		if n := h.answerAll(); n != 1 {
			t.Fatalf("%d callouts for 50 requests", n)
		}
		for _, id := range ids {
			if !strings.HasPrefix(h.header(id), "Bearer ") || h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
				t.Fatalf("request %d not resumed with the token", id)
			}
		}
		if fake.Requests() != 1 {
			t.Fatalf("%d requests at the fake", fake.Requests())
		}
	})
}

// TestGateAndFailures: a 429 closes the gate (a local reply with Retry-After: the gate's remaining
// time, and no call while it is closed); a 5xx is a typed failure. Both counted by kind.
func TestGateAndFailures(t *testing.T) {
	for _, tt := range []struct {
		name, kind string
		fault      func(w http.ResponseWriter)
	}{
		{"429 gate", "rate_limited", func(w http.ResponseWriter) { w.Header().Set("Retry-After", "30"); w.WriteHeader(429) }},
		{"endpoint down", "server_error", func(w http.ResponseWriter) { w.WriteHeader(503) }},
	} {
		runners(t, func(t *testing.T, runner string) {
			t.Run(tt.name, func(t *testing.T) {
				fake := niko(t, 0)
				fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool { tt.fault(w); return true })
				h := newHarness(t, runner, fake, nil)
				id, _ := h.request("/api/x")
				h.answerAll()
				status, kind, retryAfter := h.local(id)
				if status != 503 || kind != tt.kind {
					t.Fatalf("local reply: %d %q", status, kind)
				}
				if strings.Contains(string(h.host.GetSentLocalResponse(id).Data), fake.Config().ClientSecret) {
					t.Fatal("the local reply leaks the secret")
				}
				if h.counter("failures."+tt.kind) != 1 {
					t.Fatalf("failures.%s = %d, want 1", tt.kind, h.counter("failures."+tt.kind))
				}
				if tt.kind == "rate_limited" {
					if retryAfter != "30" {
						t.Fatalf("Retry-After %q, want 30", retryAfter)
					}
					id2, _ := h.request("/api/y")
					_, kind2, ra2 := h.local(id2)
					n, _ := strconv.Atoi(ra2)
					if len(h.callouts()) != 0 || kind2 != "rate_limited" || n < 1 || n > 30 {
						t.Fatalf("during the gate: %d callouts, kind %q, Retry-After %q", len(h.callouts()), kind2, ra2)
					}
					if h.counter("gate_closed") != 1 {
						t.Fatalf("gate_closed = %d", h.counter("gate_closed"))
					}
				}
				if fake.Requests() != 1 {
					t.Fatalf("%d requests at the fake", fake.Requests())
				}
			})
		})
	}
}

// TestRememberedFailureNoFetch (issue 17 item 4): while a failure is remembered, requests get it
// without a call: 20 requests against a revoked secret are 1 token call, not 20.
func TestRememberedFailureNoFetch(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"invalid_client"}`))
			return true
		})
		h := newHarness(t, runner, fake, map[string]any{"failure_memory_ms": 5000})
		for i := range 20 {
			id, _ := h.request("/api/x")
			h.answerAll()
			if _, kind, _ := h.local(id); kind != "invalid_client" {
				t.Fatalf("request %d: kind %q", i, kind)
			}
		}
		if fake.Requests() != 1 {
			t.Fatalf("%d token calls for 20 requests, want 1", fake.Requests())
		}
		if h.clock != nil { // once the memory ends, the next request calls again
			h.clock.advance(5 * time.Second)
			h.request("/api/x")
			if h.answerAll() != 1 || fake.Requests() != 2 {
				t.Fatalf("after the memory: %d token calls", fake.Requests())
			}
		}
	})
}

// TestUnauthorizedInvalidatesOncePerToken: a 401 from upstream drops the token it carried; the next
// request fetches a new one; more 401s for the same old token drop nothing more.
func TestUnauthorizedInvalidatesOncePerToken(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		h := newHarness(t, runner, fake, nil)
		id1, _ := h.request("/api/x")
		h.answerAll()
		id2, _ := h.request("/api/y") // carries the same token
		old := h.header(id1)
		h.host.CallOnResponseHeaders(id1, [][2]string{{":status", "401"}}, false)
		id3, action := h.request("/api/z")
		if action != types.ActionPause || h.answerAll() != 1 {
			t.Fatal("the token was not dropped after a 401")
		}
		fresh := h.header(id3)
		if fresh == old || fresh == "" {
			t.Fatal("no new token after the 401")
		}
		h.host.CallOnResponseHeaders(id2, [][2]string{{":status", "401"}}, false) // the same old token again
		id4, action := h.request("/api/w")
		if action != types.ActionContinue || h.header(id4) != fresh || fake.Requests() != 2 {
			t.Fatalf("a second 401 for the old token dropped the new one: %d calls", fake.Requests())
		}
		if h.counter("invalidated") != 1 {
			t.Fatalf("invalidated = %d, want 1", h.counter("invalidated"))
		}
	})
}

// TestRefreshOncePerToken (issue 17 item 2): a 30 s token is refreshed once, at the answer's
// refresh_at_ms (a third of its life before expiry: 20 s), not on every tick; an unused or expired
// token is not refreshed at all. refresh_ahead_ms is accepted and has no say (with it the filter
// once refreshed at max(expiry - refresh_ahead_ms, issued + life/2) = 15 s).
func TestRefreshOncePerToken(t *testing.T) {
	fake := niko(t, 30*time.Second)
	h := newHarness(t, "native", fake, map[string]any{"refresh_ahead_ms": 60000})
	id, _ := h.request("/api/x")
	h.answerAll()
	first := h.header(id)
	h.ticks(399) // 19.95 s: before refresh_at_ms
	if n := len(h.callouts()); n != 0 {
		t.Fatalf("%d refreshes before refresh_at_ms", n)
	}
	h.ticks(1) // 20 s
	if n := h.answerAll(); n != 1 {
		t.Fatalf("%d refreshes at refresh_at_ms, want 1", n)
	}
	id2, action := h.request("/api/y")
	if action != types.ActionContinue || h.header(id2) == first {
		t.Fatal("the refreshed token is not served")
	}
	h.ticks(20)
	if fake.Requests() != 2 {
		t.Fatalf("%d token calls in 20 ticks after the refresh, want 2 in all", fake.Requests())
	}
	// Idle: the new token is used once above; its refresh comes once (at 40 s); then an unused token
	// and an expired one stay quiet for as long as the proxy is idle.
	h.ticks(400)
	h.answerAll()
	h.ticks(2000) // 100 s: the newest token, never used, expires unrefreshed
	if n := len(h.callouts()); n != 0 || fake.Requests() != 3 {
		t.Fatalf("idle proxy: %d token calls, want 3", fake.Requests())
	}
}

// refreshPacing runs n ticks, answering each token call, and checks that each call comes at the first
// tick at or past the until_ms of the flow's gate the last one closed (its error's retry_after_ms),
// never before, and at most one a tick. It returns the ticks of the calls.
func refreshPacing(t *testing.T, h *harness, key string, n int) []int {
	t.Helper()
	var at []int
	var until int64 // of the gate after the last call; 0: none
	for i := range n {
		h.ticks(1)
		now, calls := h.clock.now(), h.answerAll()
		switch {
		case calls > 1:
			t.Fatalf("tick %d: %d token calls", i, calls)
		case calls == 1 && now < until:
			t.Fatalf("tick %d: a call %d ms before the gate's until_ms (calls at %v)", i, until-now, at)
		case calls == 0 && until != 0 && now >= until:
			t.Fatalf("tick %d: no call %d ms after the gate's until_ms (calls at %v)", i, now-until, at)
		}
		if calls == 1 {
			at = append(at, i)
			until = gateUntil(t, h, key)
		}
	}
	return at
}

// TestFailingRefreshBacksOff (issue 17 item 3): a failing refresh tries again when the error's
// retry_after_ms says: the flow's backoff, doubling for every worker (abi/ABI.md: 50 ms to 30 s),
// with no jitter or doubling of the filter's own (which once gave calls at ticks like 0, 37, 109,
// 191, 394 while the flow's gate said 0, 20, 60, 140, 300); a non-retryable failure stops
// refreshing; a 429 defers the refresh until the gate opens (its Retry-After: 15 s, 300 ticks).
func TestFailingRefreshBacksOff(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault func(w http.ResponseWriter)
		check func(at []int) bool // the ticks of the refresh calls in the 20 s from the refresh point
	}{
		{"5xx backs off", func(w http.ResponseWriter) { w.WriteHeader(503) }, func(at []int) bool {
			for i := 2; i < len(at); i++ {
				if at[i]-at[i-1] < at[i-1]-at[i-2] {
					return false
				}
			}
			return len(at) >= 6 && at[0] == 0
		}},
		{"invalid_client stops", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"invalid_client"}`))
		}, func(at []int) bool { return slices.Equal(at, []int{0}) }},
		{"429 waits for the gate", func(w http.ResponseWriter) { w.Header().Set("Retry-After", "15"); w.WriteHeader(429) },
			func(at []int) bool { return slices.Equal(at, []int{0, 300}) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake := niko(t, 120*time.Second)
			conf := nikoConfig(fake, nil)
			h := startHarness(t, "native", fake.URL(), conf)
			h.request("/api/x")
			h.answerAll()
			fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool { tt.fault(w); return true })
			h.ticks(1599) // 79.95 s: the refresh point, refresh_at_ms, is 80 s
			if n := len(h.callouts()); n != 0 {
				t.Fatalf("%d refreshes before refresh_at_ms", n)
			}
			if at := refreshPacing(t, h, tokenKey(t, conf), 400); !tt.check(at) { // 20 s of ticks
				t.Fatalf("refresh calls at ticks %v", at)
			}
		})
	}
}

// TestRefreshStoppedTrafficFetches: after a non-retryable refresh failure nobody refreshes the token
// again, and from its stale_at_ms (90 s for a 2-minute token) a request waits for one call of its
// own; the provider has recovered, and the request gets the new token. The filter once gave requests
// the held token at once until it expired, with no call.
func TestRefreshStoppedTrafficFetches(t *testing.T) {
	fake := niko(t, 120*time.Second)
	h := newHarness(t, "native", fake, nil)
	id, _ := h.request("/api/x")
	h.answerAll()
	held := h.header(id)
	fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		w.Write([]byte(`{"error":"invalid_client"}`))
		return true
	})
	h.ticks(1600) // 80 s: the refresh, refused
	if n := h.answerAll(); n != 1 {
		t.Fatalf("%d refreshes at refresh_at_ms, want 1", n)
	}
	fake.Intercept(nil)
	for range 199 { // to 89.95 s: the token is served from shared data, and not refreshed again
		h.ticks(1)
		if id, action := h.request("/api/y"); action != types.ActionContinue || h.header(id) != held || len(h.callouts()) != 0 {
			t.Fatalf("before stale_at_ms: %v %q, %d token calls: want the token, no call", action, h.header(id), len(h.callouts()))
		}
	}
	h.ticks(1) // 90 s
	id, action := h.request("/api/z")
	if action != types.ActionPause || h.answerAll() != 1 {
		t.Fatalf("at stale_at_ms: %v: want the request paused for a call", action)
	}
	if got := h.header(id); got == "" || got == held || fake.Requests() != 3 {
		t.Fatalf("header %q, %d token calls: want a new token from the third call", got, fake.Requests())
	}
}

// TestLostCallRetried (issue 17 item 7): the call of a worker that died leaves its lock; requests
// wait, and once the lock's deadline passes the tick makes a new call for them.
func TestLostCallRetried(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, time.Hour)
		conf := nikoConfig(fake, map[string]any{"wait_ms": 60000})
		h := startHarness(t, runner, fake.URL(), conf)
		// The filter's clock, read from the expiry it stores with a token (now + life - skew): the
		// wasm engine's clock is wazero's fake one.
		h.request("/api/x")
		h.answerAll()
		key := strings.TrimSuffix(lockKey(t, conf), "/lock")
		entry, cas, err := proxywasm.GetSharedData(key)
		if err != nil {
			t.Fatal(err)
		}
		exp, _ := strconv.ParseInt(strings.SplitN(string(entry), " ", 2)[0], 10, 64)
		now := exp - (3600-60)*1000
		// The token is gone and a dead worker holds the lock, as the flow writes it (timeout + 2 s).
		if err := proxywasm.SetSharedData(key, nil, cas); err != nil {
			t.Fatal(err)
		}
		_, lockCAS, _ := proxywasm.GetSharedData(lockKey(t, conf)) // released by the first fetch: present, empty
		if err := proxywasm.SetSharedData(lockKey(t, conf), []byte(strconv.FormatInt(now+12000, 10)+" dead-worker-lock-id"), lockCAS); err != nil {
			t.Fatal(err)
		}
		id, action := h.request("/api/y")
		if action != types.ActionPause || len(h.callouts()) != 0 {
			l, _, _ := proxywasm.GetSharedData(lockKey(t, conf))
			t.Fatalf("a request called while another worker held the lock: %v lock %q now %d", action, l, now)
		}
		ticks := 0
		for ; len(h.callouts()) == 0 && ticks < 20000; ticks++ {
			h.ticks(1)
		}
		if len(h.callouts()) != 1 || ticks < 10 {
			t.Fatalf("%d calls after %d ticks: want one, once the lock's deadline passed", len(h.callouts()), ticks)
		}
		h.answerAll()
		if !strings.HasPrefix(h.header(id), "Bearer ") || h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
			t.Fatal("the waiting request did not get the token")
		}
	})
}

// TestPausedRequestsCapped (issue 17 item 8): at most max_waiting requests wait for a call on a
// worker; the rest are answered at once with a typed, retryable failure and Retry-After.
func TestPausedRequestsCapped(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		h := newHarness(t, runner, fake, map[string]any{"max_waiting": 5})
		var ids []uint32
		for range 8 {
			id, _ := h.request("/api/x")
			ids = append(ids, id)
		}
		for i, id := range ids[5:] {
			if _, kind, ra := h.local(id); kind != "transport" || ra != "1" {
				t.Fatalf("request %d over the cap: kind %q Retry-After %q", 5+i, kind, ra)
			}
		}
		h.answerAll()
		for _, id := range ids[:5] {
			if !strings.HasPrefix(h.header(id), "Bearer ") {
				t.Fatal("a request under the cap did not get the token")
			}
		}
		if h.counter("shed") != 3 {
			t.Fatalf("shed = %d, want 3", h.counter("shed"))
		}
	})
}

// TestWaitTimesOut: a request waiting longer than wait_ms is answered with a typed failure.
func TestWaitTimesOut(t *testing.T) {
	fake := niko(t, 0)
	h := newHarness(t, "native", fake, map[string]any{"wait_ms": 500})
	id, _ := h.request("/api/x")
	h.ticks(11)
	if _, kind, _ := h.local(id); kind != "transport" {
		t.Fatalf("after wait_ms: kind %q", kind)
	}
}

// TestExpiredTokenRefetched: a token past its expiry skew is not used; the next request fetches.
func TestExpiredTokenRefetched(t *testing.T) {
	fake := niko(t, time.Second) // skew 250 ms
	h := newHarness(t, "native", fake, map[string]any{"refresh_ahead_ms": 0})
	id, _ := h.request("/api/x")
	h.answerAll()
	first := h.header(id)
	h.clock.advance(800 * time.Millisecond)
	id2, action := h.request("/api/y")
	if action != types.ActionPause {
		t.Fatal("an expired token was used")
	}
	h.answerAll()
	if got := h.header(id2); got == first || got == "" || fake.Requests() != 2 {
		t.Fatalf("expired token not replaced: %d requests", fake.Requests())
	}
}

// TestSecretFromEnvironment: secret_env reads a secret from the VM's environment (Envoy's
// vm_config.environment_variables). Natively only for the success: proxytest's wasm engine gives
// the module no environment, which the wasm run shows by failing at start, naming the variable.
func TestSecretFromEnvironment(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		secret := fake.Config().ClientSecret
		t.Setenv("TOKENWASM_TEST_SECRET", secret)
		req := nikoConfig(fake, nil)["request"].(map[string]any)
		delete(req, "client_secret")
		conf := nikoConfig(fake, map[string]any{"request": req, "secret_env": map[string]string{"client_secret": "TOKENWASM_TEST_SECRET"}})
		h := emulate(t, runner, conf)
		h.upstream = fake.URL()
		st := h.host.StartPlugin()
		logs := strings.Join(h.host.GetCriticalLogs(), "\n")
		if strings.Contains(logs, secret) {
			t.Fatal("a log holds the secret")
		}
		if runner == "wasm" {
			if st != types.OnPluginStartStatusFailed || !strings.Contains(logs, "TOKENWASM_TEST_SECRET is not set") {
				t.Fatalf("wasm start %v, logs %q", st, logs)
			}
			return
		}
		if st != types.OnPluginStartStatusOK {
			t.Fatalf("start: %v %q", st, logs)
		}
		id, _ := h.request("/api/x")
		h.answerAll()
		if !strings.HasPrefix(h.header(id), "Bearer ") {
			t.Fatal("no token with the secret from the environment")
		}
	})
}

// TestStrictConfiguration (issue 17 item 6): unknown fields and invalid values stop the filter at
// start, with a message naming the field and never the secret.
func TestStrictConfiguration(t *testing.T) {
	fake := niko(t, 0)
	tests := []struct {
		name  string
		extra map[string]any
		want  string
	}{
		{"typo path", map[string]any{"paths": nil, "path": []string{"/api"}}, `unknown field "path"`},
		{"empty path", map[string]any{"paths": []string{""}}, "paths:"},
		{"dot segments", map[string]any{"paths": []string{"/api/../admin"}}, "paths:"},
		{"empty segment", map[string]any{"paths": []string{"/api//v1"}}, "paths:"},
		{"dot segment", map[string]any{"paths": []string{"/api/./v1"}}, "paths:"},
		{"escaped unreserved", map[string]any{"paths": []string{"/%61pi"}}, "paths:"},
		{"parameters", map[string]any{"paths": []string{"/api/;/v1"}}, "paths:"},
		{"header CRLF", map[string]any{"header": "X-A\r\nX-B"}, "header must be"},
		{"failure_status 99", map[string]any{"failure_status": 99}, "failure_status must be"},
		{"failure_status 200", map[string]any{"failure_status": 200}, "failure_status must be"},
		{"wait_ms 0", map[string]any{"wait_ms": 0}, "wait_ms must be"},
		{"max_waiting 0", map[string]any{"max_waiting": 0}, "max_waiting must be"},
		{"negative refresh", map[string]any{"refresh_ahead_ms": -1}, "refresh_ahead_ms must be"},
		{"wrong type", map[string]any{"wait_ms": "10s"}, "wait_ms must be"},
		{"host with port", map[string]any{"hosts": []string{"api.example:443"}}, "hosts:"},
		{"no cluster", map[string]any{"cluster": nil}, "cluster is required"},
		{"secret_file gone", map[string]any{"secret_file": "/etc/secret"}, `unknown field "secret_file"`},
		{"bad secret_env field", map[string]any{"secret_env": map[string]string{"client_id": "X"}}, "not a secret field"},
		{"plain http", map[string]any{"request": map[string]any{"provider": "nikohealth", "client_id": "c",
			"client_secret": "niko-secret-9", "token_url": fake.TokenURL()}}, "must be https"},
		{"unknown request field", map[string]any{"request": map[string]any{"provider": "nikohealth", "client_id": "c",
			"client_secret": "niko-secret-9", "clientsecret": "x", "token_url": httpsURL(fake.TokenURL())}}, `field "clientsecret"`},
		{"filter-owned request field", map[string]any{"request": map[string]any{"provider": "nikohealth", "client_id": "c",
			"client_secret": "niko-secret-9", "min_ttl_ms": 5, "token_url": httpsURL(fake.TokenURL())}}, `field "min_ttl_ms"`},
	}
	runners(t, func(t *testing.T, runner string) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := emulate(t, runner, nikoConfig(fake, tt.extra))
				if st := h.host.StartPlugin(); st != types.OnPluginStartStatusFailed {
					t.Fatalf("start: %v, want failed", st)
				}
				logs := strings.Join(h.host.GetCriticalLogs(), "\n")
				if !strings.Contains(logs, tt.want) || strings.Contains(logs, fake.Config().ClientSecret) || strings.Contains(logs, "niko-secret-9") {
					t.Fatalf("critical logs %q, want %q and no secret", logs, tt.want)
				}
			})
		}
	})
}

// scopeCases is the path and host matrix for paths ["/api"], hosts ["api.example"]: in says whether
// the request gets the token. A path is in scope only in the form every reader reads alike; the
// comments name the reader that disagrees.
var scopeCases = []struct {
	path, host string
	in         bool
}{
	// Normal paths under /api, and not.
	{"/api", "api.example", true},
	{"/api/", "api.example", true},
	{"/api/x", "api.example", true},
	{"/api/x/", "api.example", true},
	{"/api/x?y=1", "api.example", true},
	{"/api/x?q=/../../admin", "api.example", true}, // the query is no part of the path
	{"/api/x?q=..//..", "api.example", true},
	{"/api/x;v=1", "api.example", true},
	{"/api/a%20b", "api.example", true},
	{"/api/files/100%25", "api.example", true},
	{"/api/..x/y", "api.example", true},
	{"/api/.x", "api.example", true},
	{"/api/x.y", "api.example", true},
	{"/api/x%3Ay", "api.example", true},
	{"/apix/secret", "api.example", false},
	{"/api;x/y", "api.example", false}, // the segment is "api;x" (Tomcat reads /api/y: refusing is safe)
	{"/", "api.example", false},
	{"api/x", "api.example", false},
	{"", "api.example", false},
	{"*", "api.example", false},

	// "The Envoy filter you can deploy with confidence", item 1: nginx (merge_slashes on) served these
	// from /admin; RFC 3986 resolution against the empty segment kept them under /api.
	{"/api//../admin", "api.example", false},
	{"/api/x//../../admin", "api.example", false},
	{"/api///../../admin", "api.example", false},
	{"/api/.//../admin", "api.example", false},
	// The empty segment need not touch the dot segment: RFC 3986 /api/admin, nginx /admin.
	{"/api//y/../../admin", "api.example", false},
	{"/api/x//y/../../../admin", "api.example", false},

	// Empty segments in every position.
	{"//api/x", "api.example", false},  // leading (nginx: /api/x; some read //api as a host)
	{"///api/x", "api.example", false}, // leading, several
	{"//api", "api.example", false},
	{"//../api/x", "api.example", false}, // leading, before ".."
	{"/api//x", "api.example", false},    // middle
	{"/api///x", "api.example", false},   // middle, several
	{"/api/x//y", "api.example", false},
	{"/api//x//y", "api.example", false}, // multiple
	{"/api//", "api.example", false},     // trailing, after the one trailing slash
	{"/api/x//", "api.example", false},
	{"/api/x///", "api.example", false},
	{"/api//.", "api.example", false}, // before "."
	{"/api/.//x", "api.example", false},
	{"/api//./x", "api.example", false},
	{"/api/x/.//", "api.example", false},
	{"/api//..", "api.example", false}, // before ".."
	{"/api/x//..", "api.example", false},
	{"/api/..//x", "api.example", false}, // after ".."
	{"/api/x/..//y", "api.example", false},
	{"/api/x///../../../admin", "api.example", false},
	{"/admin//../api/x", "api.example", false}, // nginx /api/x, RFC 3986 /admin/api/x: out either way

	// Dot segments, with no empty segment: Envoy's router without normalize_path reads them raw
	// (/x/../api/y is routed as /x), RFC 3986 resolves them.
	{"/api/../admin", "api.example", false},
	{"/api/./x", "api.example", false},
	{"/x/../api/y", "api.example", false},
	{"/api/x/..", "api.example", false},
	{"/api/.", "api.example", false},
	{"/api/.../admin", "api.example", false},   // Windows trims trailing dots: ".." or "."
	{"/api/..%20/admin", "api.example", false}, // and trailing spaces
	{"/api/%20/x", "api.example", false},

	// Encoded dots.
	{"/api/%2e%2e/admin", "api.example", false},
	{"/api/%2E%2E/admin", "api.example", false},
	{"/api/.%2e/admin", "api.example", false},
	{"/api/%2E./admin", "api.example", false},
	{"/api//%2e%2e/admin", "api.example", false},
	{"/api/%2e//../admin", "api.example", false},
	{"/api/x//%2E%2e/%2e%2E/admin", "api.example", false},
	{"/api/x%2ey", "api.example", false}, // any escape of an unreserved character
	{"/%61pi/x", "api.example", false},   // Envoy's router (raw) does not read it as /api
	{"/api/%78", "api.example", false},
	{"/api/x%7e", "api.example", false},

	// Encoded slashes and backslashes, in either case.
	{"/api%2Fx", "api.example", false},
	{"/api/x%2fy", "api.example", false},
	{"/api/%2f/../admin", "api.example", false},
	{"/api/%2F%2F../admin", "api.example", false},
	{"/api%2f%2f..%2fadmin", "api.example", false},
	{"/api/x%5cy", "api.example", false},
	{"/api/%5C..%5Cadmin", "api.example", false},
	{"/api/%5c/../admin", "api.example", false},

	// Raw backslashes (Envoy's normalize_path, IIS and others read them as slashes).
	{"/api\\..\\admin", "api.example", false},
	{"/api/x\\..\\..\\admin", "api.example", false},
	{"/api\\\\..\\admin", "api.example", false},
	{"/api/x\\y", "api.example", false},

	// ";" path parameters: Tomcat drops them before merging and resolving.
	{"/api/..;/admin", "api.example", false},
	{"/api/.;/x", "api.example", false},
	{"/api/;/../admin", "api.example", false}, // Tomcat: /api//../admin, merged: /admin
	{"/api/x/;/../../admin", "api.example", false},
	{"/api/;x/y", "api.example", false},
	{"/api/%3b/../admin", "api.example", false},
	{"/api/..%3B/admin", "api.example", false},

	// Double escapes, controls, fragments, bytes outside ASCII.
	{"/api/%252e%252e/admin", "api.example", false},
	{"/api/%252F..%252Fadmin", "api.example", false},
	{"/api/x%2541", "api.example", false},
	{"/api/x%00", "api.example", false},
	{"/api/x%0a", "api.example", false},
	{"/api/x#/../../admin", "api.example", false}, // a reader taking "#" literally resolves to /admin
	{"/api/x%23/../../admin", "api.example", false},
	{"/admin%3F/../api/x", "api.example", false},                         // a decode-first reader: /admin?/../api/x
	{"/api/x%c0%ae%c0%ae/admin", "api.example", false},                   // overlong UTF-8 "."
	{"/api/x%EF%BC%8F..%EF%BC%8F..%EF%BC%8Fadmin", "api.example", false}, // full-width solidus
	{"/api/caf\u00e9", "api.example", false},
	{"/api/x y", "api.example", false},
	{"/api/x%", "api.example", false},
	{"/api/x\x00/../../admin", "api.example", false}, // a raw NUL: a C reader stops there
	{"/api\x00/x", "api.example", false},
	{"/api/x%c0%af..%c0%afadmin", "api.example", false}, // overlong UTF-8 "/"
	{"/api/x%e0%80%ae%e0%80%ae/admin", "api.example", false},
	{"/API/x", "api.example", false}, // compared as written: a case-folding upstream reads it as /api (safe)
	{"/Api/../admin", "api.example", false},
	{"/api/x;/..;/admin", "api.example", false},
	{"/api/%2e%2e;/admin", "api.example", false},
	{"/api/x%zz", "api.example", false},

	// Hosts.
	{"/api/x", "api.example:443", true},
	{"/api/x", "API.Example.", true},
	{"/api/x", "api.example.:8443", true},
	{"/api/x", "API.example.:443", true},
	{"/api/x", "api.example.evil", false},
	{"/api/x", "evil.api.example", false},
	{"/api/x", "", false},
	// Unicode case folding: Go's strings.ToLower maps U+0130 to "i" and the Kelvin sign U+212A to
	// "k"; Envoy's virtual hosts and DNS fold ASCII only, so these name another host.
	{"/api/x", "AP\u0130.example", false},
	{"/api/x", "ap\u0130.example:443", false},
	{"/api/x", "api.ex\u00e4mple", false},
}

// TestScope (issue 17 item 5; "deploy with confidence" item 1): paths match whole segments of a
// path every reader reads alike, anything else is out of scope; hosts match without port or
// trailing dot, case-insensitively. The whole matrix runs on scope.applies, then through the
// filter natively and compiled.
func TestScope(t *testing.T) {
	s, err := newScope([]string{"/api"}, []string{"api.example"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range scopeCases {
		if got := s.applies(tt.path, tt.host); got != tt.in {
			t.Errorf("applies(%q, %q) = %v, want %v", tt.path, tt.host, got, tt.in)
		}
	}
	// Through the filter: the same rules decide whether the token is set.
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		h := newHarness(t, runner, fake, map[string]any{"paths": []string{"/api"}, "hosts": []string{"api.example"}})
		id, _ := h.request("/api/x")
		h.answerAll()
		want := h.header(id)
		if want == "" {
			t.Fatal("no token in scope")
		}
		for _, tt := range scopeCases {
			id, _ := h.requestTo(tt.path, tt.host)
			if got := h.header(id); (got == want) != tt.in || !tt.in && got != "" {
				t.Errorf("%q %q: header %q, want in scope %v", tt.host, tt.path, got, tt.in)
			}
		}
	})
}

// TestDispatchRefusal: a call the proxy will not send (unknown cluster) is a policy refusal, not
// retried; other failures stay transport errors.
func TestDispatchRefusal(t *testing.T) {
	for _, tt := range []struct {
		err    error
		policy bool
	}{
		{types.ErrorStatusBadArgument, true},
		{types.ErrorStatusNotFound, true},
		{types.ErrorInternalFailure, false},
		{errors.New("other"), false},
	} {
		var out struct{ Policy bool }
		if json.Unmarshal(dispatchRefusal(tt.err), &out) != nil || out.Policy != tt.policy {
			t.Errorf("%v: policy %v, want %v", tt.err, out.Policy, tt.policy)
		}
	}
}

// TestForeignTokenHostRefusedAtStart: a token_url that sends one provider's credentials to another
// provider's host does not start (kind policy), so nothing is ever sent.
func TestForeignTokenHostRefusedAtStart(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		h := emulate(t, runner, map[string]any{
			"request": map[string]any{"provider": "pattern", "client_id": "c", "client_secret": "pattern-secret-1",
				"token_url": "https://api.joincandidhealth.com/api/auth/v2/token"},
			"cluster": "pattern_token",
		})
		if st := h.host.StartPlugin(); st != types.OnPluginStartStatusFailed {
			t.Fatalf("plugin start: %v, want failed", st)
		}
		logs := strings.Join(h.host.GetCriticalLogs(), "\n")
		if !strings.Contains(logs, "policy") || strings.Contains(logs, "pattern-secret-1") {
			t.Fatalf("critical logs: %q", logs)
		}
	})
}
