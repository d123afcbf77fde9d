//go:build !wasip1

package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// A one-time grant's lineage through the filter: the flow reads the grant's newest refresh token
// before each token call and writes the next one in its then-actions, which the filter performs on
// shared data. The filter has no code of its own for it; these tests show it holds for every way the
// filter calls (a paused request, the refresher, a request after a 401, a request after expiry).

// rotatingProvider is a scripted token endpoint whose refresh tokens work once: a refresh_token grant
// with the newest refresh token it issued gets a new access token at-<n> and refresh token rt-<n>;
// any other refresh token (used before, never issued) is a replay, answered invalid_grant. Its
// authorization code works once as well. Access tokens live lifeS seconds.
type rotatingProvider struct {
	*httptest.Server
	lifeS int

	mu      sync.Mutex
	code    string // the authorization code it accepts, once ("" once used, or for none)
	newest  string // the refresh token it accepts next
	n       int
	calls   []grantCall
	replays int
}

// grantCall is one token call: its grant and the credential it carried (the refresh token or code).
type grantCall struct{ grant, credential string }

func newRotatingProvider(t *testing.T, code, refreshToken string, lifeS int) *rotatingProvider {
	p := &rotatingProvider{lifeS: lifeS, code: code, newest: refreshToken}
	p.Server = httptest.NewServer(http.HandlerFunc(p.token))
	t.Cleanup(p.Close)
	return p
}

func (p *rotatingProvider) token(w http.ResponseWriter, r *http.Request) {
	if r.ParseForm() != nil {
		w.WriteHeader(400)
		return
	}
	grant := r.PostForm.Get("grant_type")
	p.mu.Lock()
	defer p.mu.Unlock()
	var cred string
	ok := false
	switch grant {
	case "refresh_token":
		cred = r.PostForm.Get("refresh_token")
		ok = cred != "" && cred == p.newest
	case "authorization_code":
		cred = r.PostForm.Get("code")
		ok = cred != "" && cred == p.code
		p.code = ""
	}
	p.calls = append(p.calls, grantCall{grant, cred})
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		p.replays++
		w.WriteHeader(400)
		w.Write([]byte(`{"error":"invalid_grant","error_description":"refresh token or code used before, or unknown"}`))
		return
	}
	p.n++
	p.newest = "rt-" + strconv.Itoa(p.n)
	json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + strconv.Itoa(p.n), "token_type": "Bearer",
		"expires_in": p.lifeS, "refresh_token": p.newest})
}

// record returns the calls so far and the replays among them.
func (p *rotatingProvider) record() ([]grantCall, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]grantCall(nil), p.calls...), p.replays
}

// lineageConfig is a Candescent configuration (a provider whose profile allows the one-time grants)
// against the scripted provider: request holds the grant's own fields.
func lineageConfig(p *rotatingProvider, request map[string]any) map[string]any {
	req := map[string]any{"provider": "candescent", "client_id": "cd-client", "client_secret": "cd-secret-1",
		"token_url": httpsURL(p.URL + "/token")}
	for k, v := range request {
		req[k] = v
	}
	return map[string]any{"request": req, "cluster": "candescent_token", "paths": []string{"/api/"}}
}

// tickUntilCallout runs ticks until the filter makes a token call (the refresher, at the answer's
// refresh_at_ms): the native clock moves 50 ms a tick, the wasm engine's fake clock at least 1 ms.
func (h *harness) tickUntilCallout() {
	h.t.Helper()
	for range 20000 {
		if len(h.callouts()) > 0 {
			return
		}
		h.ticks(1)
	}
	h.t.Fatal("no token call after 20000 ticks")
}

// get makes an API request and returns the access token it went upstream with, answering the token
// call it paused for, if any; paused says whether it paused.
func (h *harness) get() (id uint32, token string, paused bool) {
	h.t.Helper()
	id, action := h.request("/api/x")
	if paused = action == types.ActionPause; paused {
		if n := h.answerAll(); n != 1 {
			h.t.Fatalf("a paused request made %d token calls, want 1", n)
		}
	}
	if status, kind, _ := h.local(id); status != 0 {
		h.t.Fatalf("request answered locally: %d %s", status, kind)
	}
	hdr := h.header(id)
	if len(hdr) < len("Bearer ") {
		h.t.Fatalf("no token on the request: %q", hdr)
	}
	return id, hdr[len("Bearer "):], paused
}

// unauthorized makes the upstream answer 401 to request id: the filter drops the token it carried.
func (h *harness) unauthorized(id uint32) {
	h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
}

// checkLineage: every call used the refresh token the provider issued last (the first, the
// configured one, or the code's), so each is distinct; none was a replay.
func checkLineage(t *testing.T, p *rotatingProvider, first grantCall, min int) {
	t.Helper()
	calls, replays := p.record()
	if len(calls) < min || replays != 0 {
		t.Fatalf("%d token calls (want at least %d), %d replays: %v", len(calls), min, replays, calls)
	}
	seen := map[string]bool{}
	for i, c := range calls {
		want := grantCall{"refresh_token", "rt-" + strconv.Itoa(i)}
		if i == 0 {
			want = first
		}
		if c != want || seen[c.credential] {
			t.Fatalf("call %d carried %v, want %v (calls %v)", i, c, want, calls)
		}
		seen[c.credential] = true
	}
}

// TestRefreshTokenRotates: a refresh_token configuration against a provider that rotates its refresh
// tokens keeps working: each token call, whoever makes it, carries the newest refresh token.
func TestRefreshTokenRotates(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		p := newRotatingProvider(t, "", "rt-0", 3)
		h := startHarness(t, runner, p.URL, lineageConfig(p, map[string]any{"grant_type": "refresh_token", "refresh_token": "rt-0"}))
		want := func(got, token string) {
			t.Helper()
			if got != token {
				calls, _ := p.record()
				t.Fatalf("request went upstream with %q, want %q (calls %v)", got, token, calls)
			}
		}
		// A paused request: the configured refresh token.
		_, tok, paused := h.get()
		want(tok, "at-1")
		if !paused {
			t.Fatal("the first request was not paused")
		}
		// The refresher, twice, each token used by a request in between.
		h.tickUntilCallout()
		h.answerAll()
		_, tok, _ = h.get()
		want(tok, "at-2")
		h.tickUntilCallout()
		h.answerAll()
		id, tok, _ := h.get()
		want(tok, "at-3")
		// A 401 drops the token: the next request fetches.
		h.unauthorized(id)
		_, tok, paused = h.get()
		want(tok, "at-4")
		if !paused {
			t.Fatal("the request after a 401 was not paused for a fetch")
		}
		h.tickUntilCallout()
		h.answerAll()
		if h.clock != nil { // past the token's expiry, no tick: the next request fetches
			h.clock.advance(3 * time.Second)
			_, tok, paused = h.get()
			want(tok, "at-6")
			if !paused {
				t.Fatal("the request after expiry was not paused for a fetch")
			}
		}
		checkLineage(t, p, grantCall{"refresh_token", "rt-0"}, 5)
	})
}

// TestAuthorizationCodeOnce: an authorization_code configuration sends its code once; the calls
// after it are the refresh_token grant with the newest refresh token.
func TestAuthorizationCodeOnce(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		p := newRotatingProvider(t, "code-1", "", 3)
		h := startHarness(t, runner, p.URL, lineageConfig(p, map[string]any{"grant_type": "authorization_code",
			"code": "code-1", "redirect_uri": "https://app.example/callback", "institution_id": "inst-1"}))
		id, tok, _ := h.get()
		if tok != "at-1" {
			t.Fatalf("first token %q", tok)
		}
		h.unauthorized(id) // the next request fetches: with the code's refresh token, not the code
		_, tok, paused := h.get()
		if tok != "at-2" || !paused {
			t.Fatalf("after a 401: token %q, paused %v", tok, paused)
		}
		h.tickUntilCallout()
		h.answerAll()
		_, tok, _ = h.get()
		if tok != "at-3" {
			t.Fatalf("after the refresh: token %q", tok)
		}
		h.tickUntilCallout()
		h.answerAll()
		if h.clock != nil {
			h.clock.advance(3 * time.Second)
			if _, tok, _ = h.get(); tok != "at-5" {
				t.Fatalf("after expiry: token %q", tok)
			}
		}
		checkLineage(t, p, grantCall{"authorization_code", "code-1"}, 4)
	})
}

// TestCodeMarkedUnderTheLock: a failure another worker remembers while this worker's flow holds the
// fleet lock does not stop the flow at its other store-if-absent (the authorization code marked
// used): the flow sends, stores and releases the lock. Stopping there, as the filter once did at
// every "nx", left the lock held until its TTL and the code marked used but never sent.
func TestCodeMarkedUnderTheLock(t *testing.T) {
	p := newRotatingProvider(t, "code-1", "", 3600)
	conf := lineageConfig(p, map[string]any{"grant_type": "authorization_code", "code": "code-1",
		"redirect_uri": "https://app.example/callback", "institution_id": "inst-1"})
	conf["failure_memory_ms"] = 5000
	h := startHarness(t, "native", p.URL, conf)
	pc := h.vm.plugin
	f := pc.flow(core.OpToken, nil)
	grantKey := core.GrantKey(pc.s.key)
	var answer []byte
	for {
		next, final := f.Step(answer)
		if next.Import == "" {
			t.Fatalf("the flow ended before reading the grant: %s", final)
		}
		answer = pc.cache.perform(next)
		if gjson.GetBytes(next.Input, "key").Str == grantKey {
			break // the next step marks the code used
		}
	}
	pc.cache.set(pc.failureKey(), `{"error":{"kind":"invalid_client","message":"another worker's call failed","retryable":false}}`, 5000)
	if final, sent := pc.drive(f, answer, false); !sent {
		t.Fatalf("the flow stopped at the code's mark: %s", final)
	}
	h.answerAll()
	if calls, _ := p.record(); len(calls) != 1 || calls[0] != (grantCall{"authorization_code", "code-1"}) {
		t.Fatalf("calls %v", calls)
	}
	if e := pc.cache.read(core.LockKey(pc.s.key)); e.live {
		t.Fatalf("the lock is still held: %q", e.value)
	}
	if e := pc.cache.read(grantKey); !e.live || gjson.Get(e.value, "refresh_token").Str != "rt-1" {
		t.Fatalf("the lineage holds %q, want the code's refresh token", e.value)
	}
}

// TestRefusedLineageOneCall: a second replica (its own shared data, as another Envoy, another vm_id
// or this one after a restart) configured with a refresh token the first replica already used makes
// one token call: the provider's invalid_grant marks the lineage refused, and no later request, tick
// or failure-memory window sends that refresh token again. Each request is refused invalid_grant.
func TestRefusedLineageOneCall(t *testing.T) {
	p := newRotatingProvider(t, "", "rt-0", 3600)
	conf := lineageConfig(p, map[string]any{"grant_type": "refresh_token", "refresh_token": "rt-0"})
	conf["failure_memory_ms"] = 1000
	t.Run("first replica", func(t *testing.T) { // its emulator ends with the subtest (one at a time)
		if _, tok, _ := startHarness(t, "native", p.URL, conf).get(); tok != "at-1" {
			t.Fatalf("the first replica's token %q", tok)
		}
	})
	second := startHarness(t, "native", p.URL, conf)
	for i := range 6 {
		id, action := second.request("/api/x")
		if action == types.ActionPause {
			second.answerAll()
		}
		if status, kind, _ := second.local(id); status == 0 || kind != "invalid_grant" {
			t.Fatalf("request %d: local reply %d %q, want invalid_grant", i, status, kind)
		}
		second.clock.advance(5 * time.Second) // past failure_memory_ms each time
		second.ticks(3)
		second.answerAll()
	}
	calls, replays := p.record()
	if want := []grantCall{{"refresh_token", "rt-0"}, {"refresh_token", "rt-0"}}; len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] || replays != 1 {
		t.Fatalf("calls %v (%d replays), want the first replica's and one of the second's", calls, replays)
	}
}
