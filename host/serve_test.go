package host

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"golang.org/x/oauth2"
)

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
