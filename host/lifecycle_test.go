package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/internal/lifecycle"
)

// TestTokenLife drives testdata/lifecycle/token_life.json through the Go host: the Runtime's clock
// (withClock, given to the plugin as now_ms) and its MemoryCache's are moved to each event's time,
// never slept; the provider is the NikoHealth fake, whose answers the events script; an API's 401 is
// a stub under Transport. The JavaScript package and the Envoy filter run the same file.
func TestTokenLife(t *testing.T) {
	sc, err := lifecycle.Load("token_life.json")
	if err != nil {
		t.Fatal(err)
	}
	var req abi.TokenRequest
	if err := json.Unmarshal(sc.Request, &req); err != nil {
		t.Fatal(err)
	}
	cfg := providertest.DefaultConfig("nikohealth")
	cfg.ClientID, cfg.ClientSecret, cfg.Lifetime = req.ClientID, req.ClientSecret, time.Duration(sc.LifeMS)*time.Millisecond
	fake := providertest.NewNikoHealth(cfg)
	defer fake.Close()
	var answer atomic.Pointer[lifecycle.Provider] // how the token endpoint answers now
	fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		p := answer.Load()
		if p == nil || p.Status == http.StatusOK {
			return false
		}
		if p.RetryAfter != "" {
			w.Header().Set("Retry-After", p.RetryAfter)
		}
		w.WriteHeader(p.Status)
		return true
	})
	req.TokenURL = fake.TokenURL()

	t0 := time.Now().UnixMilli()
	var clock atomic.Int64 // Unix ms: the Runtime's clock and its cache's
	clock.Store(t0)
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	c, err := New(context.Background(), WithLoopback(), withClock(now)) // its default cache shares the clock
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	s, err := c.sources.get(c, req)
	if err != nil {
		t.Fatal(err)
	}
	api := &refusingAPI{}
	apiClient := &http.Client{Transport: c.Transport(api, req)}

	labels := lifecycle.Labels{}
	var last string // the token the last call got
	for i, ev := range sc.Events {
		what := fmt.Sprintf("event %d (%d s, %s)", i+1, ev.AtMS/1000, ev.Call)
		clock.Store(t0 + ev.AtMS)
		if ev.Provider != nil {
			answer.Store(ev.Provider)
		}
		held := s.cur.Load()
		switch ev.Call {
		case "token":
			refreshes, calls := c.metrics.refreshes.Load(), c.metrics.pluginCalls.Load()
			tok, err := c.Token(context.Background(), req)
			decision := lifecycle.Error
			switch {
			case err != nil:
			case c.metrics.refreshes.Load() > refreshes:
				decision = lifecycle.Background
			case c.metrics.pluginCalls.Load() == calls: // no flow: the held token
				decision = lifecycle.Memory
			case tok.AccessToken == last:
				decision = lifecycle.FetchFailedHeld
			default:
				decision = lifecycle.Fetch
			}
			settle(t, s)
			if decision != ev.Want.Decision {
				t.Fatalf("%s: decision %s (err %v), want %s: %s", what, decision, err, ev.Want.Decision, ev.Note)
			}
			if err != nil {
				var ae *abi.Error
				w := ev.Want.Error
				if !errors.As(err, &ae) || w == nil || ae.Kind != w.Kind || ae.Retryable != w.Retryable || ae.RetryAfterMS != w.RetryAfterMS {
					t.Fatalf("%s: %v (%+v), want %+v: %s", what, err, ae, w, ev.Note)
				}
			} else {
				if err := labels.Check(ev.Want.Token, tok.AccessToken); err != nil {
					t.Fatalf("%s: %v: %s", what, err, ev.Note)
				}
				last = tok.AccessToken
			}
		case "api_401":
			api.reset()
			resp, err := apiClient.Get("http://api.example/x")
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sent := api.sent()
			retried := len(sent) == 2 && sent[1] != sent[0] && resp.StatusCode == http.StatusOK
			if !retried && (len(sent) != 1 || resp.StatusCode != http.StatusUnauthorized) {
				t.Fatalf("%s: %d API requests, status %d: neither a retry with a new token nor the 401", what, len(sent), resp.StatusCode)
			}
			if ev.Want.Retry == nil || retried != *ev.Want.Retry {
				t.Fatalf("%s: retried %v, want %v: %s", what, retried, ev.Want.Retry != nil && *ev.Want.Retry, ev.Note)
			}
			tok, err := c.Token(context.Background(), req) // the next call
			if err != nil {
				t.Fatalf("%s: the next call: %v", what, err)
			}
			if tok.AccessToken != sent[len(sent)-1] {
				t.Fatalf("%s: the next call got another token than the API was last sent", what)
			}
			if err := labels.Check(ev.Want.Token, tok.AccessToken); err != nil {
				t.Fatalf("%s: the next call: %v: %s", what, err, ev.Note)
			}
			last = tok.AccessToken
			settle(t, s)
		default:
			t.Fatalf("%s: unknown call", what)
		}
		if n := fake.Requests(); n != ev.Want.Requests {
			t.Fatalf("%s: %d token requests so far, want %d: %s", what, n, ev.Want.Requests, ev.Note)
		}
		// A token fetched at this event (in the caller's path or in the background) has the schedule,
		// from this event's time.
		if h := s.cur.Load(); h != nil && h != held && h.tok.AccessToken != held.tokOrEmpty() {
			at := t0 + ev.AtMS
			if h.tok.ExpiresAtMS != at+sc.LifeMS || h.freshUntil != time.UnixMilli(at+sc.Schedule.RefreshAtMS).UnixNano() ||
				h.validUntil != time.UnixMilli(at+sc.Schedule.StaleAtMS).UnixNano() {
				t.Fatalf("%s: the new token expires at %+d ms, is refreshed from %+d ms and stale from %+d ms after the event; want %d, %d, %d",
					what, h.tok.ExpiresAtMS-at, time.Unix(0, h.freshUntil).UnixMilli()-at, time.Unix(0, h.validUntil).UnixMilli()-at,
					sc.LifeMS, sc.Schedule.RefreshAtMS, sc.Schedule.StaleAtMS)
			}
		}
	}
}

// tokOrEmpty is the held token's access token, "" for none.
func (h *held) tokOrEmpty() string {
	if h == nil {
		return ""
	}
	return h.tok.AccessToken
}

// settle waits until s runs no fetch and no background refresh.
func settle(t *testing.T, s *source) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		idle := s.flight == nil && !s.refreshing.Load()
		s.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a fetch or a refresh did not end")
		}
	}
}

// refusingAPI is an API that answers 401 to the first token it is sent after reset (and to that token
// only), and 200 to any other; it records the tokens it was sent.
type refusingAPI struct {
	mu      sync.Mutex
	refused string
	tokens  []string
}

func (a *refusingAPI) reset() {
	a.mu.Lock()
	a.refused, a.tokens = "", nil
	a.mu.Unlock()
}

func (a *refusingAPI) sent() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.tokens...)
}

func (a *refusingAPI) RoundTrip(r *http.Request) (*http.Response, error) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens = append(a.tokens, tok)
	if a.refused == "" {
		a.refused = tok
	}
	status := http.StatusOK
	if tok == a.refused {
		status = http.StatusUnauthorized
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: http.Header{},
		Body: io.NopCloser(strings.NewReader("")), Request: r, ProtoMajor: 1, ProtoMinor: 1}, nil
}
