package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// The tests behind the security rows of docs/reliability.md: identities never cross, every entry
// point honours its deadline, refresh tokens follow rotation, single-flight survives a full source
// map, 401 storms cost no fetch storm, and Close waits for what is in flight.

// memoLimit was the plugin memo's input bound (plugin/core memoMaxInput): requests over it were not
// remembered. The memo now keeps every request within core.MaxRequestBytes, in storage it reuses.
const memoLimit = 64 << 10

// padTo pads req with a header so the token export's input is size bytes (a header changes what the
// provider is sent, so it is part of the identity; the fakes ignore it).
func padTo(t *testing.T, req abi.TokenRequest, size int) abi.TokenRequest {
	t.Helper()
	req.Headers = map[string]string{"X-Pad": ""}
	b, _ := json.Marshal(req)
	if size <= len(b) {
		return req
	}
	req.Headers = map[string]string{"X-Pad": strings.Repeat("p", size-len(b))}
	if b, _ = json.Marshal(req); len(b) != size {
		t.Fatalf("padded to %d bytes, want %d", len(b), size)
	}
	return req
}

// TestLargeRequestsKeepTheirIdentity: requests around the plugin memo's old 64 KiB limit and up to
// the request limit (core.MaxRequestBytes, 256 KiB), with credential sets alternating on one instance
// and two Runtimes sharing one cache: every caller gets a token issued to its own client by its own
// provider, a wrong secret never gets a token, and one identity's 429 never gates another.
func TestLargeRequestsKeepTheirIdentity(t *testing.T) {
	f1 := providertest.NewNikoHealth(providertest.Config{ClientID: "tenant-1", ClientSecret: "secret-1"})
	f2 := providertest.NewNikoHealth(providertest.Config{ClientID: "tenant-2", ClientSecret: "secret-2"})
	gated := providertest.NewNikoHealth(providertest.Config{ClientID: "tenant-3", ClientSecret: "secret-3"})
	for _, f := range []*providertest.Fake{f1, f2, gated} {
		defer f.Close()
	}
	gated.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Retry-After", "86400")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	})
	req := func(f *providertest.Fake, secret string) abi.TokenRequest {
		return abi.TokenRequest{Provider: "nikohealth", ClientID: f.Config().ClientID, ClientSecret: secret, TokenURL: f.TokenURL()}
	}
	type tenant struct {
		name  string
		req   abi.TokenRequest
		owner *providertest.Fake // nil: must not get a token
		other *providertest.Fake
	}
	tenants := []tenant{
		{"tenant-1", req(f1, "secret-1"), f1, f2},
		{"tenant-2", req(f2, "secret-2"), f2, f1},
		{"tenant-1 wrong secret", req(f1, "guess"), nil, f1},
		{"tenant-2 wrong secret", req(f2, "guess"), nil, f2},
		{"tenant-3 rate-limited", req(gated, "secret-3"), nil, gated},
	}
	cache := NewMemoryCache(0)
	clients := []*Runtime{newRuntime(t, WithCache(cache), WithMaxInstances(1)), newRuntime(t, WithCache(cache), WithMaxInstances(1))}
	sizes := []int{0, memoLimit - 1, memoLimit, memoLimit + 1, core.MaxRequestBytes - 1, core.MaxRequestBytes}
	ctx := context.Background()
	calls := 0
	for round := range 2 {
		for si, size := range sizes {
			for ti, tn := range tenants {
				// Alternate sizes between tenants too, so a small request follows a large one and back.
				r := padTo(t, tn.req, sizes[(si+ti)%len(sizes)])
				if size == 0 && ti%2 == 0 {
					r = tn.req
				}
				c := clients[(round+si+ti)%2]
				calls++
				tok, err := c.Token(ctx, r)
				switch {
				case tn.owner == nil && err == nil:
					t.Fatalf("%s (%d bytes, client %d): got a token %q, want an error", tn.name, size, (round+si+ti)%2, tok.AccessToken)
				case tn.owner == nil:
					want := abi.KindInvalidClient
					if tn.other == gated {
						want = abi.KindRateLimited
					}
					if kindOf(err) != want {
						t.Fatalf("%s: %v, want %s", tn.name, err, want)
					}
				case err != nil:
					t.Fatalf("%s (%d bytes): %v", tn.name, size, err)
				default:
					if callAPI(t, tn.owner.APIURL(), tok.AccessToken) != 200 || callAPI(t, tn.other.APIURL(), tok.AccessToken) != 401 {
						t.Fatalf("%s (%d bytes) got a token its own provider did not issue", tn.name, size)
					}
				}
			}
		}
	}
	// Each padding of tenant-3 is an identity of its own (the header reaches the provider): one
	// request each, the second round held by that identity's gate.
	if n := gated.Requests(); n != int64(len(sizes)) {
		t.Fatalf("%d requests at the rate-limited provider, want %d (one per identity)", n, len(sizes))
	}
	t.Logf("%d calls, provider requests: tenant-1 %d, tenant-2 %d", calls, f1.Requests(), f2.Requests())
}

// TestDeadlines: every entry point returns by its context's deadline with an error that
// errors.Is(err, context.DeadlineExceeded) (or Canceled), an already-done context sends nothing,
// and a fetch nobody waits for any more stops retrying.
func TestDeadlines(t *testing.T) {
	const deadline = 200 * time.Millisecond
	const slack = 150 * time.Millisecond // a loaded 2-core machine; the old code took 18-30 s
	stalled := func(t *testing.T) (*providertest.Fake, abi.TokenRequest) {
		fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
		fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
			stall(r, 10*time.Second)
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		})
		return fake, req
	}
	entries := map[string]func(ctx context.Context, c *Runtime, req abi.TokenRequest) error{
		"Runtime.Token": func(ctx context.Context, c *Runtime, req abi.TokenRequest) error {
			_, err := c.Token(ctx, req)
			return err
		},
		"Runtime.Token force": func(ctx context.Context, c *Runtime, req abi.TokenRequest) error {
			req.Force = true
			_, err := c.Token(ctx, req)
			return err
		},
		"TokenSource.TokenContext": func(ctx context.Context, c *Runtime, req abi.TokenRequest) error {
			_, err := c.TokenSource(req).TokenContext(ctx)
			return err
		},
		"Transport": func(ctx context.Context, c *Runtime, req abi.TokenRequest) error {
			r, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1/api", nil)
			resp, err := c.Transport(nil, req).RoundTrip(r)
			if err == nil {
				resp.Body.Close()
			}
			return err
		},
	}
	for name, call := range entries {
		t.Run(name+"/deadline", func(t *testing.T) {
			fake, req := stalled(t)
			c := newRuntime(t)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := call(ctx, c, req)
			if d := time.Since(start); d > deadline+slack || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("returned after %v with %v; want context.DeadlineExceeded by %v", d, err, deadline)
			}
			time.Sleep(300 * time.Millisecond) // a fetch nobody waits for stops: no retries after
			if n := fake.Requests(); n != 1 {
				t.Fatalf("%d requests at the provider, want 1 (no retries once nobody waits)", n)
			}
		})
		t.Run(name+"/canceled", func(t *testing.T) {
			fake, req := stalled(t)
			c := newRuntime(t)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := call(ctx, c, req); !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if n := fake.Requests(); n != 0 {
				t.Fatalf("an already-canceled context sent %d requests", n)
			}
		})
	}

	t.Run("followers keep the fetch", func(t *testing.T) {
		// A caller that gives up does not fail the fetch for one still waiting.
		fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
		fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
			stall(r, 400*time.Millisecond)
			return false
		})
		c := newRuntime(t)
		short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		var wg sync.WaitGroup
		var shortErr, longErr error
		wg.Add(2)
		go func() { defer wg.Done(); _, shortErr = c.Token(short, req) }()
		time.Sleep(20 * time.Millisecond)
		go func() { defer wg.Done(); _, longErr = c.Token(context.Background(), req) }()
		wg.Wait()
		if !errors.Is(shortErr, context.DeadlineExceeded) || longErr != nil || fake.Requests() != 1 {
			t.Fatalf("short caller %v, long caller %v, %d requests (want 1)", shortErr, longErr, fake.Requests())
		}
	})

	t.Run("timeout_ms bounds the whole call", func(t *testing.T) {
		fake, req := stalled(t)
		req.TimeoutMS = 300
		c := newRuntime(t)
		start := time.Now()
		_, err := c.Token(context.Background(), req)
		if d := time.Since(start); d > 300*time.Millisecond+slack || kindOf(err) != abi.KindTransport {
			t.Fatalf("returned after %v with %v, want a transport timeout by 300 ms", d, err)
		}
		if n := fake.Requests(); n != 1 {
			t.Fatalf("%d requests: retries ran past timeout_ms", n)
		}
	})
}

// TestRefreshTokenRotation: a TokenSource for the refresh_token grant against the rotating
// Candescent fake (each refresh token works once) keeps refreshing, sending the newest refresh token
// every time (the flow follows the grant's lineage); the hook fires once per rotation with the new
// value, which no log record holds.
func TestRefreshTokenRotation(t *testing.T) {
	cfg := providertest.DefaultConfig("candescent")
	cfg.Lifetime = time.Second
	fake := providertest.NewCandescent(cfg)
	defer fake.Close()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&logs, &sync.Mutex{}}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var mu sync.Mutex
	var hooked []string
	var from []string
	c := newRuntime(t, WithLogger(logger), WithRefreshTokenHook(func(_ context.Context, req abi.TokenRequest, rt string) {
		mu.Lock()
		hooked, from = append(hooked, rt), append(from, req.RefreshToken)
		mu.Unlock()
	}))
	ctx := context.Background()
	pw := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantPassword, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		InstitutionID: cfg.InstitutionID, Username: cfg.Username, Password: cfg.Password, TokenURL: fake.TokenURL()}
	first, err := c.Token(ctx, pw)
	if err != nil || first.RefreshToken == "" {
		t.Fatalf("password grant: %v", err)
	}
	rt := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: cfg.ClientID,
		ClientSecret: cfg.ClientSecret, RefreshToken: first.RefreshToken, TokenURL: fake.TokenURL()}
	ts := c.TokenSource(rt)
	seen := map[string]bool{first.AccessToken: true}
	// Every token lives 1 s: each call after the wait is a refresh, with a refresh token used once.
	for i := range 4 {
		tok, err := ts.TokenContext(ctx)
		if err != nil {
			t.Fatalf("refresh %d: %v (the source reused a rotated refresh token?)", i, err)
		}
		if seen[tok.AccessToken] {
			t.Fatalf("refresh %d served an old token", i)
		}
		seen[tok.AccessToken] = true
		time.Sleep(1100 * time.Millisecond)
	}
	// Forcing with the original request: its lineage moved on to the newest refresh token.
	forced := rt
	forced.Force = true
	if _, err := c.Token(ctx, forced); err != nil {
		t.Fatalf("forced refresh: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	// One rotation per refresh grant (4 + 1 forced) and one for the password grant's first refresh token.
	if len(hooked) != 6 || hooked[0] != first.RefreshToken {
		t.Fatalf("hook fired %d times, want 6 (first value the password grant's)", len(hooked))
	}
	// The hook names the credential set as first given (the lineage's), with each new value once.
	distinct := map[string]bool{}
	for i := 1; i < len(hooked); i++ {
		if distinct[hooked[i]] || hooked[i] == first.RefreshToken || from[i] != first.RefreshToken {
			t.Fatalf("rotation %d: hook got a repeated value, or another credential set", i)
		}
		distinct[hooked[i]] = true
	}
	if n := c.Metrics().Snapshot()["rotations"]; n != 6 {
		t.Fatalf("rotations metric %d, want 6", n)
	}
	for _, v := range hooked {
		if strings.Contains(logs.String(), v) {
			t.Fatal("a refresh token reached the log")
		}
	}
}

// TestSingleFlightWithFullSourceMap: with the per-credential map at its bound, and new credential
// sets arriving during the fetch, 200 callers of one cold set cause one request.
func TestSingleFlightWithFullSourceMap(t *testing.T) {
	fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		stall(r, 100*time.Millisecond)
		return false
	})
	c := newRuntime(t)
	other := func(i int) abi.TokenRequest {
		return abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: "c", ClientSecret: "s",
			RefreshToken: "rt-" + strconv.Itoa(i)}
	}
	for i := range maxSources {
		c.TokenSource(other(i))
	}
	stop := make(chan struct{})
	go func() { // credential sets keep arriving, each one evicting
		for i := maxSources; ; i++ {
			select {
			case <-stop:
				return
			default:
				c.TokenSource(other(i))
			}
		}
	}()
	failed := concurrently(200, func() error { _, err := c.Token(context.Background(), req); return err })
	close(stop)
	if n := fake.Requests(); n != 1 || failed != 0 {
		t.Fatalf("%d requests (want 1), %d callers failed", n, failed)
	}
	checkSourcesBounded(t, c)
}

// TestNo401Storm: an API that answers 401 to every token costs a handful of token requests over 100
// calls through Transport, not one per call.
func TestNo401Storm(t *testing.T) {
	fake := providertest.NewPattern(providertest.DefaultConfig("pattern"))
	defer fake.Close()
	req := abi.TokenRequest{Provider: "pattern", ClientID: fake.Config().ClientID, ClientSecret: fake.Config().ClientSecret, TokenURL: fake.TokenURL()}
	c := newRuntime(t)
	hc := &http.Client{Transport: c.Transport(nil, req)}
	fake.RefuseAPI(true)
	for i := range 100 {
		resp, err := hc.Get(fake.APIURL())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("call %d: %d, want the API's 401", i, resp.StatusCode)
		}
	}
	if n := fake.Requests(); n > 3 {
		t.Fatalf("100 refused calls made %d token requests, want at most 3", n)
	}
	t.Logf("100 calls: %d token requests, %d API calls", fake.Requests(), fake.APICalls())
}

// TestCloseWaitsForCallsInFlight: Close waits for the fetches in flight, which all succeed; calls
// after Close fail with ErrClosed; a Close whose context ends first returns that context's error.
func TestCloseWaitsForCallsInFlight(t *testing.T) {
	fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		stall(r, 300*time.Millisecond)
		return false
	})
	c, err := New(context.Background(), WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	forced := req
	forced.Force = true // each call its own fetch
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Token(context.Background(), forced); err != nil {
				failed.Add(1)
				t.Log(err)
			}
		}()
	}
	for fake.Requests() < 50 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if failed.Load() != 0 || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("%d of 50 calls in flight failed; Close returned after %v", failed.Load(), time.Since(start))
	}
	if _, err := c.Token(context.Background(), req); !errors.Is(err, ErrClosed) {
		t.Fatalf("Token after Close: %v", err)
	}
	if _, err := c.TokenSource(req).TokenContext(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("TokenContext after Close: %v", err)
	}
	if _, err := c.Describe(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Describe after Close: %v", err)
	}

	// A Close bounded by a context that ends first stops the calls still running.
	c2, err := New(context.Background(), WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		stall(r, 10*time.Second)
		return false
	})
	errs := make(chan error, 1)
	go func() { _, err := c2.Token(context.Background(), forced); errs <- err }()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := c2.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want its context's deadline", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v past its context", d)
	}
	if err := <-errs; err == nil {
		t.Fatal("a call stopped by Close succeeded")
	}
}

// TestTokenHeaderInjectionRefused: a token endpoint answering an access token with CR/LF gets
// malformed_response through the wasm; nothing reaches an API through Transport.
func TestTokenHeaderInjectionRefused(t *testing.T) {
	fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"abc\r\nX-Injected: yes\r\n\r\nGET /admin HTTP/1.1","expires_in":600}`))
		return true
	})
	c := newRuntime(t)
	if _, err := c.Token(context.Background(), req); kindOf(err) != abi.KindMalformedResponse {
		t.Fatalf("err = %v, want malformed_response", err)
	}
	r, _ := http.NewRequest(http.MethodGet, fake.APIURL(), nil)
	if resp, err := c.Transport(nil, req).RoundTrip(r); err == nil || fake.APICalls() != 0 {
		if resp != nil {
			resp.Body.Close()
		}
		t.Fatalf("Transport sent the API %d calls (err %v)", fake.APICalls(), err)
	}
}

// concurrently runs f on n goroutines at once and returns how many failed.
func concurrently(n int, f func() error) int64 {
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f() != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}
