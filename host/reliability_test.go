package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// The tests behind docs/reliability.md. Each row there names its test.

func nikoFake(t *testing.T, cfg providertest.Config) (*providertest.Fake, abi.TokenRequest) {
	t.Helper()
	f := providertest.NewNikoHealth(cfg)
	t.Cleanup(f.Close)
	return f, abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: f.TokenURL()}
}

func newRuntime(t *testing.T, opts ...Option) *Runtime {
	t.Helper()
	c, err := New(context.Background(), append([]Option{WithLoopback()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func kindOf(err error) string {
	var ae *abi.Error
	if errors.As(err, &ae) {
		return ae.Kind
	}
	return ""
}

// TestGateHoldsEveryCaller: after one 429, 500 callers in two Runtimes (two pools of instances) that
// share a cache, all forcing a fetch, cause no further request until Retry-After ends.
func TestGateHoldsEveryCaller(t *testing.T) {
	for _, tt := range []struct{ name, retryAfter string }{
		{"seconds", "30"},
		{"http date", time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)},
		{"absent", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
			fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			})
			cache := NewMemoryCache(0)
			clients := []*Runtime{newRuntime(t, WithCache(cache)), newRuntime(t, WithCache(cache))}
			if _, err := clients[0].Token(context.Background(), req); kindOf(err) != abi.KindRateLimited {
				t.Fatalf("first: %v", err)
			}
			forced := req
			forced.Force = true
			var wg sync.WaitGroup
			var limited atomic.Int64
			for i := range 500 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := clients[i%2].Token(context.Background(), forced)
					var ae *abi.Error
					if errors.As(err, &ae) && ae.Kind == abi.KindRateLimited && ae.RetryAfterMS > 25000 {
						limited.Add(1)
					}
				}()
			}
			wg.Wait()
			if n := fake.Requests(); n != 1 || limited.Load() != 500 {
				t.Fatalf("%d requests at the fake (want 1), %d of 500 callers rate_limited", n, limited.Load())
			}
		})
	}
}

// TestTransientFaults: 5xx, refused, reset and timeout are retried (3 tries, backoff with jitter);
// 4xx is not.
func TestTransientFaults(t *testing.T) {
	tests := []struct {
		name      string
		fault     func(w http.ResponseWriter, r *http.Request)
		failFirst int64 // requests that fail before the fake answers normally
		wantKind  string
		wantReqs  int64
	}{
		{"503 then ok", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, 2, "", 3},
		{"500 always", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }, 99, abi.KindServerError, 3},
		{"reset", resetConn, 1, "", 2},
		// timeout_ms bounds the whole fetch: a try that stalls past it leaves no time for another.
		{"timeout", func(w http.ResponseWriter, r *http.Request) { stall(r, 2*time.Second) }, 1, abi.KindTransport, 1},
		{"400 not retried", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"error":"invalid_request"}`))
		}, 99, abi.KindInvalidRequest, 1},
		{"401 not retried", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(401) }, 99, abi.KindInvalidClient, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
			req.TimeoutMS = 300
			var seen atomic.Int64
			fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				if seen.Add(1) > tt.failFirst {
					return false
				}
				tt.fault(w, r)
				return true
			})
			c := newRuntime(t)
			start := time.Now()
			tok, err := c.Token(context.Background(), req)
			if kindOf(err) != tt.wantKind || (tt.wantKind == "" && (err != nil || tok == nil)) {
				t.Fatalf("err = %v, want kind %q", err, tt.wantKind)
			}
			if n := fake.Requests(); n != tt.wantReqs {
				t.Fatalf("%d requests, want %d", n, tt.wantReqs)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

func TestConnectionRefusedFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := newRuntime(t)
	start := time.Now()
	_, err = c.Token(context.Background(), abi.TokenRequest{Provider: "nikohealth", ClientID: "c", ClientSecret: "niko-secret", TokenURL: "http://" + addr + "/t"})
	if kindOf(err) != abi.KindTransport || time.Since(start) > 2*time.Second {
		t.Fatalf("refused: %v after %v", err, time.Since(start))
	}
	if got := c.Metrics().Snapshot()["retries"]; got != 2 {
		t.Fatalf("retries = %d, want 2", got)
	}
}

// TestFailedRefreshKeepsServing: a provider that dies after the first token does not cost callers
// the still-valid token; once it expires, they get a typed error quickly, not a hang.
func TestFailedRefreshKeepsServing(t *testing.T) {
	cfg := providertest.DefaultConfig("nikohealth")
	cfg.Lifetime = 4 * time.Second // refresh from 2.67 s, skew from 3 s, expiry at 4 s
	fake, req := nikoFake(t, cfg)
	req.TimeoutMS = 200
	c := newRuntime(t)
	first, err := c.Token(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool { w.WriteHeader(503); return true })
	time.Sleep(2700 * time.Millisecond) // in the refresh window
	// Up to 30 calls inside the window, the first one always. The skew ends the loop, not the count:
	// past it each call fetches in its own path, three tries of a 503, and under -race on a loaded
	// 2-core machine 30 of them ran past the expiry.
	skewAt := time.UnixMilli(first.ExpiresAtMS - (first.ExpiresAtMS-first.IssuedAtMS)/4)
	for i := 0; i == 0 || i < 30 && time.Now().Before(skewAt); i++ {
		tok, err := c.Token(context.Background(), req)
		if err != nil || tok.AccessToken != first.AccessToken {
			t.Fatalf("valid token not served during a failing refresh: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.Metrics().Snapshot()["refresh_failures"] == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Metrics().Snapshot()["refresh_failures"] == 0 {
		t.Fatal("no failed refresh recorded")
	}
	// Past the skew but before expiry, a failed fetch still yields the valid token.
	time.Sleep(time.Until(time.UnixMilli(first.ExpiresAtMS).Add(-500 * time.Millisecond)))
	if tok, err := c.Token(context.Background(), req); err != nil || tok.AccessToken != first.AccessToken {
		t.Fatalf("inside the skew with a dead provider: %v", err)
	}
	time.Sleep(time.Until(time.UnixMilli(first.ExpiresAtMS)))
	start := time.Now()
	if _, err := c.Token(context.Background(), req); kindOf(err) != abi.KindServerError || time.Since(start) > 2*time.Second {
		t.Fatalf("expired token and dead provider: %v after %v", err, time.Since(start))
	}
}

// TestPluginOutOfMemory: a call that needs more memory than the cap traps inside the plugin; the
// instance is replaced and the next call works.
func TestPluginOutOfMemory(t *testing.T) {
	c := newRuntime(t, WithMemoryLimit(8), WithMaxInstances(1)) // 512 KiB
	huge := abi.DecodeInput{Request: abi.TokenRequest{Provider: "candid", ClientID: "c", ClientSecret: "s"},
		Response: abi.HTTPResponse{Status: 200, Body: strings.Repeat("x", 2<<20)}}
	var out json.RawMessage
	in, _ := json.Marshal(huge)
	if err := c.call(context.Background(), abi.ExportDecode, in, &out); err == nil {
		t.Fatalf("a 2 MiB body under a 512 KiB cap must fail the call, got %s", out)
	}
	if _, err := c.Decode(context.Background(), huge.Request, abi.HTTPResponse{Status: 200, Body: `{"access_token":"a"}`}); err != nil {
		t.Fatalf("next call: %v", err)
	}
	if c.Metrics().Snapshot()["plugin_faults"] != 1 {
		t.Fatalf("metrics %v", c.Metrics().Snapshot())
	}
}

// TestBadInputThroughWasm replays the committed fuzz corpus and hand-made hostile inputs through the
// built plugin: every one must get a JSON answer, never a trap.
func TestBadInputThroughWasm(t *testing.T) {
	var inputs [][]byte
	for _, dir := range []string{"../plugin/core/testdata/fuzz/FuzzDecode", "../plugin/core/testdata/fuzz/FuzzEncode"} {
		corpus, err := conformance.FuzzCorpus(dir)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, corpus...)
	}
	tenMiB := strings.Repeat("a", 10<<20)
	inputs = append(inputs,
		[]byte("\xff\xfe{\"provider\":\"candid\"}"),
		[]byte(`{"provider":"candid","client_id":"\xc3\x28","client_secret":"\xed\xa0\x80"}`),
		[]byte(strings.Repeat("[", 1<<20)),
		[]byte(`{"request":{"provider":"candid","client_id":"c","client_secret":"s"},"response":{"status":200,"body":"`+tenMiB+`"}}`),
		[]byte(`{"request":{"provider":"candid","client_id":"c","client_secret":"s"},"response":{"status":200,"body":"`+tenMiB[:2<<20]+`"}}`),
		[]byte(`{"provider":["candid"],"client_id":{},"client_secret":1,"params":[],"headers":"x","force":"yes","timeout_ms":"1"}`),
		[]byte(`{}`), []byte(`null`), []byte(``), []byte(`{"request":null,"response":null}`),
	)
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		for _, export := range []string{abi.ExportEncode, abi.ExportDecode, abi.ExportInvalidate, abi.ExportToken, abi.ExportTokenStep} {
			for _, in := range inputs {
				var res map[string]json.RawMessage
				if err := c.call(context.Background(), export, in, &res); err != nil {
					t.Fatalf("%s(%.60q): %v", export, in, err)
				}
				if len(res) != 1 && !(export == abi.ExportInvalidate && len(res) == 0) && !(export == abi.ExportToken && len(res) == 2) &&
					!(export == abi.ExportTokenStep && len(res) == 2 && res["next"] != nil) {
					t.Fatalf("%s(%.60q) answered %v", export, in, res)
				}
			}
		}
		// The same inputs as token_step answers to a real flow's cache_get and http_send: a miss or a
		// typed error, never a trap.
		req := `{"provider":"nikohealth","client_id":"c","client_secret":"s","domain":"acme"}`
		var first, second struct{ State string }
		if err := c.call(context.Background(), abi.ExportTokenStep, []byte(`{"request":`+req+`}`), &first); err != nil || first.State == "" {
			t.Fatalf("first step: %+v %v", first, err)
		}
		in := `{"request":` + req + `,"state":"` + first.State + `"}`
		if err := c.call(context.Background(), abi.ExportTokenStep, []byte(in), &second); err != nil || second.State == "" {
			t.Fatalf("second step: %+v %v", second, err)
		}
		for _, state := range []string{first.State, second.State} {
			for _, answer := range inputs {
				if !json.Valid(answer) {
					answer, _ = json.Marshal(string(answer))
				}
				in := []byte(`{"request":` + req + `,"state":"` + state + `","answer":` + string(answer) + `}`)
				var res map[string]json.RawMessage
				if err := c.call(context.Background(), abi.ExportTokenStep, in, &res); err != nil {
					t.Fatalf("token_step answer %.60q: %v", answer, err)
				}
				if res["next"] == nil && res["error"] == nil {
					t.Fatalf("token_step answer %.60q: %v", answer, res)
				}
			}
		}
		if f := c.Metrics().Snapshot()["plugin_faults"]; f != 0 {
			t.Fatalf("%d plugin faults", f)
		}
		t.Logf("%d inputs x 5 exports and as 2 token_step answers, 0 traps", len(inputs))
	})
}

func resetConn(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // RST instead of FIN
		}
		conn.Close()
	}
}

// stall holds a request for d or until its client goes away. The body is read first (and put back
// for the fake): the server notices a client that went away only once the body has been read.
func stall(r *http.Request, d time.Duration) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	select {
	case <-r.Context().Done():
	case <-time.After(d):
	}
}
