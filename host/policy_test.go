package host

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
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
	}{
		{"loopback not enabled", fake.TokenURL(), nil, "loopback"},
		{"plain http elsewhere", "http://api.candescent.com/token", nil, "https"},
		{"host not allowed", "https://evil.example/token", []Option{WithLoopback()}, "not an allowed token host"},
		{"redirect to another host", redirect.TokenURL(), []Option{WithLoopback()}, "redirect to another host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(context.Background(), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			_, err = c.Token(context.Background(), abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: tt.url})
			var ae *abi.Error
			if !errors.As(err, &ae) || ae.Kind != abi.KindTransport || !strings.Contains(ae.Message, tt.want) {
				t.Fatalf("err = %v, want a transport error mentioning %q", err, tt.want)
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
	c, err := New(context.Background(), WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ts := c.TokenSource(abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()})
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond) // inside the refresh window, outside the skew
	for range 50 {
		tok, err := ts.Token()
		if err != nil || tok.AccessToken != first.AccessToken && fake.Requests() < 2 {
			t.Fatalf("during refresh: %v", err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for fake.Requests() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	second, err := ts.Token()
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

// TestPluginFaultReplacesInstance: an instance whose call fails (here: past its deadline) is replaced; the next call works.
func TestPluginFaultReplacesInstance(t *testing.T) {
	set := providertest.StartAll()
	defer set.Close()
	c, err := New(context.Background(), WithLoopback(), WithMaxInstances(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	req := cases(set)["nikohealth/client_credentials"]
	if err := c.pool.warm(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	// A deadline that has already passed stops the call inside wasm.
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	var out any
	if err := c.call(ctx, abi.ExportDescribe, nil, &out); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired call: %v", err)
	}
	if _, err := c.Token(context.Background(), req); err != nil {
		t.Fatalf("next call after a fault: %v", err)
	}
	if c.Metrics().Snapshot()["plugin_faults"] != 1 {
		t.Fatalf("metrics = %v", c.Metrics().Snapshot())
	}
}
