package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// The concurrency suite: refresh-token rotation under concurrent, forced and timed-out callers and
// under eviction, single flight on a full and churning source map, Close racing every entry point
// and a slow hook, waits for a plugin instance, concurrent 401s through the Transport, and tenants
// apart through the source index under concurrent callers. Each test failed on a version of the code
// it was written against; the comments say what it checks.

// rotationSetup: a rotating Candescent fake and a refresh_token request holding a live refresh token.
func rotationSetup(t *testing.T, c *Runtime, life time.Duration) (*providertest.Fake, abi.TokenRequest) {
	t.Helper()
	cfg := providertest.DefaultConfig("candescent")
	cfg.Lifetime = life
	fake := providertest.NewCandescent(cfg)
	t.Cleanup(fake.Close)
	pw := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantPassword, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		InstitutionID: cfg.InstitutionID, Username: cfg.Username, Password: cfg.Password, TokenURL: fake.TokenURL()}
	first, err := c.Token(context.Background(), pw)
	if err != nil || first.RefreshToken == "" {
		t.Fatalf("password grant: %v", err)
	}
	return fake, abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: cfg.ClientID,
		ClientSecret: cfg.ClientSecret, RefreshToken: first.RefreshToken, TokenURL: fake.TokenURL()}
}

// TestRotationForcedRefreshSendsOnce: a forced refresh concurrent with a normal one must not send the
// same refresh token twice (a replay).
func TestRotationForcedRefreshSendsOnce(t *testing.T) {
	var hooks atomic.Int64
	c := newRuntime(t, WithRefreshTokenHook(func(context.Context, abi.TokenRequest, string) { hooks.Add(1) }))
	fake, rt := rotationSetup(t, c, time.Hour)
	before := fake.Requests()
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		stall(r, 150*time.Millisecond)
		return false
	})
	hooks.Store(0)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := rt
			req.Force = i > 0
			_, errs[i] = c.Token(context.Background(), req)
		}()
	}
	wg.Wait()
	t.Logf("requests %d, hooks %d, errs %v", fake.Requests()-before, hooks.Load(), errs)
	// next call after: does the source still work?
	req := rt
	req.Force = true
	_, err := c.Token(context.Background(), req)
	t.Logf("after: %v", err)
	for _, e := range errs {
		if e != nil {
			t.Errorf("concurrent refresh_token callers: %v (same refresh token sent %d times)", e, fake.Requests()-before)
		}
	}
}

// TestRotationSurvivesCallerDeadline: a caller whose deadline ends after the provider rotated the
// refresh token, but before the answer arrived, must not lose the new refresh token (the grant would
// be dead): the exchange runs to its end and the next call works.
func TestRotationSurvivesCallerDeadline(t *testing.T) {
	var hooks atomic.Int64
	c := newRuntime(t, WithRefreshTokenHook(func(context.Context, abi.TokenRequest, string) { hooks.Add(1) }))
	fake, rt := rotationSetup(t, c, time.Hour)
	hooks.Store(0)
	// The provider processes the request (rotates) first, then is slow to answer.
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Inner") != "" {
			return false
		}
		body, _ := io.ReadAll(r.Body)
		in, _ := http.NewRequest(http.MethodPost, fake.TokenURL(), strings.NewReader(string(body)))
		in.Header = r.Header.Clone()
		in.Header.Set("X-Inner", "1")
		resp, err := http.DefaultClient.Do(in)
		if err != nil {
			w.WriteHeader(500)
			return true
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		time.Sleep(300 * time.Millisecond)
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(rb)
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Token(ctx, rt)
	t.Logf("short caller: %v", err)
	time.Sleep(500 * time.Millisecond)
	_, err = c.Token(context.Background(), rt)
	t.Logf("hooks after: %d; next call: %v", hooks.Load(), err)
	if err != nil {
		t.Errorf("the grant is lost after one caller's deadline: %v (hook fired %d times)", err, hooks.Load())
	}
}

// TestRotationSurvivesEviction: a full source map evicts an idle refresh_token source; the original
// request must then follow the grant's lineage, never replay the rotated-away refresh token.
func TestRotationSurvivesEviction(t *testing.T) {
	c := newRuntime(t)
	_, rt := rotationSetup(t, c, 2*time.Second)
	if _, err := c.Token(context.Background(), rt); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond) // token expired: source idle, evictable
	for i := range maxSources + 2 {
		c.TokenSource(abi.TokenRequest{Provider: "nikohealth", ClientID: "x", ClientSecret: "y", Scope: strings.Repeat("s", 1) + string(rune('a'+i%26)) + itoa(i)})
	}
	_, err := c.Token(context.Background(), rt)
	if err != nil {
		t.Errorf("after eviction, the original request (the README says its source moved on): %v", err)
	}
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0)) + fmtInt(i) }
func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

// TestTransportNonReplayable401Invalidates: a revoked token is dropped on a 401 even when the
// request's body cannot be replayed, so it is not served forever to such requests.
func TestTransportNonReplayable401Invalidates(t *testing.T) {
	fake := providertest.NewPattern(providertest.DefaultConfig("pattern"))
	defer fake.Close()
	req := abi.TokenRequest{Provider: "pattern", ClientID: fake.Config().ClientID, ClientSecret: fake.Config().ClientSecret, TokenURL: fake.TokenURL()}
	c := newRuntime(t)
	tr := c.Transport(nil, req)
	tok, _ := c.Token(context.Background(), req)
	fake.Revoke(tok.AccessToken)
	codes := []int{}
	for range 5 {
		r, _ := http.NewRequest(http.MethodPost, fake.APIURL(), io.NopCloser(strings.NewReader("x")))
		resp, err := tr.RoundTrip(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	t.Logf("codes %v token requests %d", codes, fake.Requests())
	if codes[len(codes)-1] == 401 {
		t.Errorf("a revoked token is served forever to non-replayable requests: %v", codes)
	}
}

// TestNoGoroutineLeak: many callers canceled while their fetch stalls leave no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool { stall(r, 5*time.Second); return false })
	c := newRuntime(t)
	base := runtime.NumGoroutine()
	for range 30 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := c.Token(ctx, req)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := runtime.NumGoroutine(); n > base+10 {
		t.Errorf("goroutines %d -> %d", base, n)
	}
}

// TestCloseBoundedByCtxWithSlowHook: Close(ctx) with a short ctx while a refresh-token hook ignores
// its ctx: Close must return by ctx (plus slack), per its doc.
func TestCloseBoundedByCtxWithSlowHook(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	c, err := New(context.Background(), WithLoopback(), WithRefreshTokenHook(func(context.Context, abi.TokenRequest, string) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer close(release)
	cfg := providertest.DefaultConfig("candescent")
	fake := providertest.NewCandescent(cfg)
	defer fake.Close()
	pw := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantPassword, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		InstitutionID: cfg.InstitutionID, Username: cfg.Username, Password: cfg.Password, TokenURL: fake.TokenURL()}
	go c.Token(context.Background(), pw)
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Close(ctx) }()
	select {
	case err := <-done:
		t.Logf("Close: %v", err)
	case <-time.After(2 * time.Second):
		t.Errorf("Close(ctx 100ms) still blocked after 2 s (hook running on the flight goroutine)")
	}
}

// TestCloseRaceStress: every entry point concurrently with Close.
func TestCloseRaceStress(t *testing.T) {
	fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool { stall(r, 30*time.Millisecond); return false })
	for round := range 5 {
		c, err := New(context.Background(), WithLoopback())
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := req
				r.Scope = fmtInt(i % 4)
				for j := 0; j < 5; j++ {
					switch (i + j) % 5 {
					case 0:
						c.Token(context.Background(), r)
					case 1:
						r2 := r
						r2.Force = true
						c.Token(context.Background(), r2)
					case 2:
						c.TokenSource(r).TokenContext(context.Background())
					case 3:
						c.Invalidate(context.Background(), r)
					case 4:
						hr, _ := http.NewRequest("GET", fake.APIURL(), nil)
						if resp, err := c.Transport(nil, r).RoundTrip(hr); err == nil {
							resp.Body.Close()
						}
					}
				}
			}()
		}
		time.Sleep(time.Duration(round*15) * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		c.Close(ctx)
		cancel()
		wg.Wait()
		c.Close(context.Background())
	}
}

func fillWithTokens(c *Runtime, from, n int) {
	exp := time.Now().Add(time.Hour).UnixMilli()
	for i := from; i < from+n; i++ {
		ts := c.TokenSource(abi.TokenRequest{Provider: "nikohealth", ClientID: "fill", ClientSecret: "s", Scope: "f" + fmtInt(i)})
		ts.s.cur.Store(newHeld(&abi.Result{Token: &abi.Token{AccessToken: "a", TokenType: "Bearer", IssuedAtMS: time.Now().UnixMilli(), ExpiresAtMS: exp},
			RefreshAtMS: exp - 300_000, StaleAtMS: exp - 60_000}))
	}
}

// TestSingleFlightOnFullSourceMap: with the map full of token-holding sources (LRU eviction) and
// churning, 200 staggered callers of a cold credential set share one fetch.
func TestSingleFlightOnFullSourceMap(t *testing.T) {
	fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool { stall(r, 200*time.Millisecond); return false })
	c := newRuntime(t)
	fillWithTokens(c, 0, maxSources)
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				c.TokenSource(abi.TokenRequest{Provider: "nikohealth", ClientID: "churn", ClientSecret: "s", Scope: "c" + fmtInt(i)})
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 500 * time.Microsecond)
			c.Token(context.Background(), req)
		}()
	}
	wg.Wait()
	close(stop)
	if n := fake.Requests(); n != 1 {
		t.Errorf("200 callers with a full map: %d requests, want 1", n)
	}
}

// TestHotTokenSourceNotEvicted: a hot TokenSource is not evicted as least recently used when the map
// fills (its hits once never updated lastUsed).
func TestHotTokenSourceNotEvicted(t *testing.T) {
	fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	c := newRuntime(t)
	ts := c.TokenSource(req)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	fillWithTokens(c, 0, maxSources-1)
	for range 1000 {
		ts.Token() // hot
	}
	c.TokenSource(abi.TokenRequest{Provider: "nikohealth", ClientID: "new", ClientSecret: "s"}) // one new set
	if _, err := c.Token(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if n := fake.Requests(); n != 1 {
		t.Errorf("the hottest source was evicted as LRU: %d requests for one credential set, want 1", n)
	}
}

// TestTimeoutMSBoundsInstanceWait: timeout_ms bounds the wait for a plugin instance: with every
// instance held by stalled fetches of other credential sets, a request with timeout_ms 300 does not
// wait for them.
func TestTimeoutMSBoundsInstanceWait(t *testing.T) {
	slow, slowReq := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	slow.Intercept(func(w http.ResponseWriter, r *http.Request) bool { stall(r, 3*time.Second); return false })
	_, fastReq := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	c := newRuntime(t, WithMaxInstances(2))
	for i := range 2 {
		r := slowReq
		r.Scope = "s" + fmtInt(i)
		r.TimeoutMS = 3000
		go c.Token(context.Background(), r)
	}
	for slow.Requests() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	fastReq.TimeoutMS = 300
	start := time.Now()
	_, err := c.Token(context.Background(), fastReq)
	d := time.Since(start)
	t.Logf("timeout_ms 300: %v after %v", err, d)
	if d > 600*time.Millisecond {
		t.Errorf("timeout_ms 300 call took %v (waited for a plugin instance)", d)
	}
}

// TestAuthorizationCodeMovesToRefreshToken: an authorization_code source moves to refresh_token
// after the first fetch (20 concurrent callers, one exchange) and keeps working past each expiry.
func TestAuthorizationCodeMovesToRefreshToken(t *testing.T) {
	var hooks atomic.Int64
	c := newRuntime(t, WithRefreshTokenHook(func(context.Context, abi.TokenRequest, string) { hooks.Add(1) }))
	cfg := providertest.DefaultConfig("candescent")
	cfg.Lifetime = time.Second
	fake := providertest.NewCandescent(cfg)
	defer fake.Close()
	ac := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantAuthorizationCode, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		InstitutionID: cfg.InstitutionID, Code: cfg.Code, CodeVerifier: cfg.CodeVerifier, RedirectURI: cfg.RedirectURI, Scope: "offline_access", TokenURL: fake.TokenURL()}
	fails := concurrently(20, func() error { _, err := c.Token(context.Background(), ac); return err })
	for i := range 3 {
		time.Sleep(1100 * time.Millisecond)
		if _, err := c.Token(context.Background(), ac); err != nil {
			t.Fatalf("after expiry %d: %v", i, err)
		}
	}
	t.Logf("fails %d, requests %d, hooks %d", fails, fake.Requests(), hooks.Load())
	if fails != 0 || hooks.Load() != 4 {
		t.Errorf("fails %d hooks %d", fails, hooks.Load())
	}
}

// TestConcurrent401Storm: 100 concurrent callers (in 4 waves) through Transport against an API that
// refuses every token cost at most 3 token requests.
func TestConcurrent401Storm(t *testing.T) {
	fake := providertest.NewPattern(providertest.DefaultConfig("pattern"))
	defer fake.Close()
	req := abi.TokenRequest{Provider: "pattern", ClientID: fake.Config().ClientID, ClientSecret: fake.Config().ClientSecret, TokenURL: fake.TokenURL()}
	c := newRuntime(t)
	hc := &http.Client{Transport: c.Transport(nil, req)}
	fake.RefuseAPI(true)
	for range 4 {
		var wg sync.WaitGroup
		for range 25 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, err := hc.Get(fake.APIURL()); err == nil {
					resp.Body.Close()
				}
			}()
		}
		wg.Wait()
	}
	t.Logf("token requests %d", fake.Requests())
	if fake.Requests() > 3 {
		t.Errorf("concurrent 401 storm: %d token requests", fake.Requests())
	}
}

// echoTokenServer answers every form token request with a token naming the client, secret, scope
// and every parameter it was sent, so a caller can check the token was issued for its own request.
func echoTokenServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		tok := fmt.Sprintf("%s|%s|%s|%s|%s", r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"),
			r.PostForm.Get("scope"), r.PostForm.Get("tenant"), r.Header.Get("X-Tenant"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestTokenIndexConcurrentTenants: many tenants sharing one client id and differing in one field
// each (secret, scope, a param, a header), asked for concurrently by callers that reuse and change
// their maps between calls, while sources are evicted underneath: every token is the caller's own.
func TestTokenIndexConcurrentTenants(t *testing.T) {
	srv := echoTokenServer(t)
	c, err := New(context.Background(), WithLoopback(), WithMaxInstances(4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	profile := &abi.Profile{Body: "form", ClientAuth: "body"}
	const tenants = 24
	want := func(i int) (abi.TokenRequest, string) {
		secret, scope, param, header := "s", "", "", ""
		switch i % 4 {
		case 0:
			secret = fmt.Sprint("s", i)
		case 1:
			scope = fmt.Sprint("sc", i)
		case 2:
			param = fmt.Sprint("p", i)
		case 3:
			header = fmt.Sprint("h", i)
		}
		req := abi.TokenRequest{Provider: "custom", ClientID: "shared-id", ClientSecret: secret, Scope: scope,
			TokenURL: srv.URL + "/token", Profile: profile,
			Params: map[string]string{"tenant": param}, Headers: map[string]string{"X-Tenant": header}}
		return req, fmt.Sprintf("shared-id|%s|%s|%s|%s", secret, scope, param, header)
	}
	stop := make(chan struct{})
	var evictor sync.WaitGroup
	evictor.Add(1)
	go func() { // drops sources at random, as a full map does
		defer evictor.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.sources.mu.Lock()
			for k := range c.sources.m {
				if rand.IntN(3) == 0 {
					c.sources.drop(k)
				}
				break
			}
			c.sources.mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			params, headers := map[string]string{}, map[string]string{} // reused across tenants
			for n := range 300 {
				i := (g*7 + n) % tenants
				req, tok := want(i)
				for k, v := range req.Params {
					params[k] = v
				}
				for k, v := range req.Headers {
					headers[k] = v
				}
				req.Params, req.Headers = params, headers
				got, err := c.Token(context.Background(), req)
				if err != nil {
					errs <- err
					return
				}
				if got.AccessToken != tok {
					errs <- fmt.Errorf("tenant %d got %q, want %q", i, got.AccessToken, tok)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	evictor.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
