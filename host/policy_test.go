package host

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"golang.org/x/oauth2"
)

// TestAllowList: token URLs the host does not allow are refused with a typed error, and the fake
// behind them sees nothing.
func TestAllowList(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	redirect := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer redirect.Close()
	redirect.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, strings.Replace(fake.TokenURL(), "127.0.0.1", "localhost", 1), http.StatusTemporaryRedirect)
		return true
	})
	cfg := fake.Config()
	tests := []struct {
		name string
		url  string
		opts []Option
		want string
		// provider is nikohealth unless set: Pattern's hosts are per customer, so only its requests
		// reach the host's allow-list with a host outside it (the plugin binds the others' hosts).
		provider string
	}{
		// A refusal an option would lift names it, in Go and as the CLI's flag.
		{"loopback not enabled", fake.TokenURL(), nil, "loopback token hosts are not allowed; host.WithLoopback() (tokenwasm token -allow-loopback) allows them", ""},
		{"plain http elsewhere", "http://acme.nikohealth.com/token", nil, "https", ""},
		{"host not allowed", "https://evil.example/token", []Option{WithLoopback()}, `host "evil.example" is not an allowed token host; host.WithAllowedHosts("evil.example") (tokenwasm token -allow-host evil.example)`, "pattern"},
		{"host and port not allowed", "https://evil.example:8443/token", []Option{WithLoopback()}, `host.WithAllowedHosts("evil.example:8443") (tokenwasm token -allow-host evil.example:8443)`, "pattern"},
		{"redirect to another host", redirect.TokenURL(), []Option{WithLoopback()}, "redirect to another host", ""},
		{"ssh port of an allowed host", "https://acme.nikohealth.com:22/api/identity/connect/token", nil, `not an allowed token port; host.WithAllowedHosts("acme.nikohealth.com:22") (tokenwasm token -allow-host acme.nikohealth.com:22)`, ""},
		{"redis port of an allowed host", "https://acme.nikohealth.com:6379/api/identity/connect/token", nil, "not an allowed token port", ""},
		{"credentials in the URL", "https://user:pw@acme.nikohealth.com/api/identity/connect/token", nil, "", ""},
		{"credentials in a Pattern URL", "https://user:pw@api.pattern.example/api/auth/token", []Option{WithAllowedHosts("api.pattern.example")}, "", "pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(context.Background(), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			provider := cmp.Or(tt.provider, "nikohealth")
			_, err = c.Token(context.Background(), abi.TokenRequest{Provider: provider, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: tt.url})
			var ae *abi.Error
			if !errors.As(err, &ae) || ae.Kind != abi.KindPolicy || ae.Retryable || !strings.Contains(ae.Message, tt.want) {
				t.Fatalf("err = %v, want a policy error (not retryable) mentioning %q", err, tt.want)
			}
			if n := strings.Count(ae.Message, "refused by"); n > 1 { // the plugin's prefix, not the host's too
				t.Fatalf("message %q says it was refused %d times", ae.Message, n)
			}
			if n := c.Metrics().Snapshot()["retries"]; n != 0 {
				t.Fatalf("a policy refusal was retried %d times", n)
			}
			if strings.Contains(err.Error(), cfg.ClientSecret) {
				t.Fatal("error leaks the secret")
			}
		})
	}
	if n := fake.Requests(); n != 0 {
		t.Fatalf("the fake received %d requests", n)
	}
}

// TestRefreshAhead: once a token enters its refresh window, callers still get it at once while one
// background fetch replaces it.
func TestRefreshAhead(t *testing.T) {
	cfg := providertest.DefaultConfig("nikohealth")
	cfg.Lifetime = 3 * time.Second // skew 0.75 s, refresh window the last 1 s
	fake := providertest.NewNikoHealth(cfg)
	defer fake.Close()
	var clock atomic.Int64 // Unix ns: the Runtime's clock, moved by the test instead of sleeping
	clock.Store(time.Now().UnixNano())
	c, err := New(context.Background(), WithLoopback(), withClock(func() time.Time { return time.Unix(0, clock.Load()) }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ts := c.TokenSource(abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()})
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(1900 * time.Millisecond)) // outside the refresh window: served, nothing fetched
	if tok, err := ts.Token(); err != nil || tok.AccessToken != first.AccessToken || fake.Requests() != 1 {
		t.Fatalf("before the refresh window: %v, %d requests", err, fake.Requests())
	}
	clock.Add(int64(200 * time.Millisecond)) // inside the refresh window, outside the skew
	for range 50 {
		tok, err := ts.Token()
		if err != nil || tok.AccessToken != first.AccessToken && fake.Requests() < 2 {
			t.Fatalf("during refresh: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second) // the background refresh runs on its own goroutine
	for fake.Requests() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	var second *oauth2.Token
	for time.Now().Before(deadline) { // until the refreshed token is held
		if second, err = ts.Token(); err != nil || second.AccessToken != first.AccessToken {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil || second.AccessToken == first.AccessToken {
		t.Fatalf("token not refreshed in the background: %v", err)
	}
	if n := fake.Requests(); n != 2 {
		t.Fatalf("%d requests, want 2 (one fetch, one refresh)", n)
	}
	if got := c.Metrics().Snapshot()["refreshes"]; got != 1 {
		t.Fatalf("refreshes = %d", got)
	}
}

// TestPluginFaultReplacesInstance: a call whose deadline passes inside the plugin (here, while the
// provider stalls) loses that call only; the instance is replaced and the next call works.
func TestPluginFaultReplacesInstance(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	c, err := New(context.Background(), WithLoopback(), WithMaxInstances(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	cfg := fake.Config()
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client hanging up
		select {                           // stall until the client gives up
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var out abi.Result
	in, _ := json.Marshal(req)
	start := time.Now()
	if err := c.call(ctx, abi.ExportToken, in, &out); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled call: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the deadline took %v to stop the call", d)
	}
	fake.Intercept(nil)
	if _, err := c.Token(context.Background(), req); err != nil {
		t.Fatalf("next call after a fault: %v", err)
	}
	if c.Metrics().Snapshot()["plugin_faults"] != 1 {
		t.Fatalf("metrics = %v", c.Metrics().Snapshot())
	}
}

// TestSourcesBounded: distinct credential sets beyond the bound do not grow the client's memory.
func TestSourcesBounded(t *testing.T) {
	c, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for i := range maxSources + 100 {
		c.TokenSource(abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: "c",
			ClientSecret: "s", RefreshToken: "rt-" + strconv.Itoa(i)})
	}
	checkSourcesBounded(t, c)
}

// TestAllowListPorts: an entry without a port allows 443 only, "host:port" that port only, and a
// wildcard its subdomains only.
func TestAllowListPorts(t *testing.T) {
	s, _ := newSender(nil, append(append([]string(nil), DefaultAllowedHosts...), "tokens.example:8443", "*.corp.example"), false, nil)
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"https://api.candescent.com/t", true},
		{"https://api.candescent.com:443/t", true},
		{"https://API.Candescent.com/t", true},
		{"https://api.candescent.com:22/t", false},
		{"https://api.candescent.com:6379/t", false},
		{"https://acme.nikohealth.com/t", true},
		{"https://nikohealth.com/t", false},
		{"https://acme.nikohealth.com.evil.example/t", false},
		{"https://tokens.example:8443/t", true},
		{"https://tokens.example/t", false},
		{"https://tokens.example:9443/t", false},
		{"https://a.corp.example/t", true},
		{"https://a.corp.example:8443/t", false},
		{"https://corp.example/t", false},
		{"http://api.candescent.com/t", false},
		{"https://127.0.0.1:6379/t", false},
	} {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.check(u); (err == nil) != tt.ok {
			t.Errorf("%s: %v, want allowed %v", tt.url, err, tt.ok)
		}
	}
}

// checkSourcesBounded fails t if c holds more sources than its bound.
func checkSourcesBounded(t *testing.T, c *Runtime) {
	t.Helper()
	c.sources.mu.Lock()
	n := len(c.sources.m)
	c.sources.mu.Unlock()
	if n > maxSources {
		t.Fatalf("%d sources held, bound %d", n, maxSources)
	}
}
