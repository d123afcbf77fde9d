//go:build !wasip1

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/internal/lifecycle"
)

// TestTokenLife drives testdata/lifecycle/token_life.json through the filter, natively: the
// filter's clock (shared data expires by it too) is moved to each event's time, never slept; the
// provider is the NikoHealth fake, whose answers the events script; an API's 401 is the upstream's
// response to a request. At each event the request comes first, then one tick (the refresher's
// timer). The file's "hosts" says where the filter meets an event differently from the Go and
// JavaScript hosts. Not compiled: the wasm engine's clock is wazero's fake one.
func TestTokenLife(t *testing.T) {
	sc, err := lifecycle.Load("token_life.json")
	if err != nil {
		t.Fatal(err)
	}
	var req map[string]any
	if err := json.Unmarshal(sc.Request, &req); err != nil {
		t.Fatal(err)
	}
	cfg := providertest.DefaultConfig("nikohealth")
	cfg.ClientID, cfg.ClientSecret, cfg.Lifetime = req["client_id"].(string), req["client_secret"].(string), time.Duration(sc.LifeMS)*time.Millisecond
	fake := providertest.NewNikoHealth(cfg)
	t.Cleanup(fake.Close)
	var script atomic.Pointer[lifecycle.Provider] // how the token endpoint answers now
	fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		p := script.Load()
		if p == nil || p.Status == http.StatusOK {
			return false
		}
		if p.RetryAfter != "" {
			w.Header().Set("Retry-After", p.RetryAfter)
		}
		w.WriteHeader(p.Status)
		return true
	})
	req["token_url"] = httpsURL(fake.TokenURL())
	h := startHarness(t, "native", fake.URL(), map[string]any{"request": req, "cluster": "nikohealth_token", "paths": []string{"/api/"}})
	t0 := h.clock.now()
	refresh := func() answer { return h.vm.plugin.refresh.held }

	labels := lifecycle.Labels{}
	var last string // the token the last request carried
	for i, ev := range sc.Events {
		what := fmt.Sprintf("event %d (%d s, %s)", i+1, ev.AtMS/1000, ev.Call)
		h.clock.ms.Store(t0 + ev.AtMS)
		if ev.Provider != nil {
			script.Store(ev.Provider)
		}
		before := refresh()
		switch ev.Call {
		case "token":
			heldGiven := h.counter("held")
			id, action := h.request("/api/x")
			own := h.answerAll() // the request's token call, if it made one
			h.host.Tick()
			ticked := h.answerAll() // the refresher's
			tok := strings.TrimPrefix(h.header(id), "Bearer ")
			status, _, _ := h.local(id)
			decision := lifecycle.Error
			switch {
			case status != 0:
			case h.counter("held") > heldGiven:
				decision = lifecycle.FetchFailedHeld
			case action == types.ActionPause && own == 1 && tok != last:
				decision = lifecycle.Fetch
			case action != types.ActionContinue || own != 0:
				decision = fmt.Sprintf("(paused %v, %d token calls of its own)", action == types.ActionPause, own)
			case ticked == 1:
				decision = lifecycle.Background
			case ticked == 0:
				decision = lifecycle.Memory
			}
			if decision != ev.Want.Decision {
				t.Fatalf("%s: decision %s (local reply %d, %d calls on the tick), want %s: %s", what, decision, status, ticked, ev.Want.Decision, ev.Note)
			}
			if status != 0 {
				checkReplyError(t, h, id, what, ev)
				break
			}
			if err := labels.Check(ev.Want.Token, tok); err != nil {
				t.Fatalf("%s: %v: %s", what, err, ev.Note)
			}
			last = tok
		case "api_401":
			// A proxy cannot replay the request: the 401 goes downstream, the filter drops the token
			// or not, and the client's retry is the next request.
			id, action := h.request("/api/x")
			refused := strings.TrimPrefix(h.header(id), "Bearer ")
			if action != types.ActionContinue || refused != last {
				t.Fatalf("%s: the request was not given the held token at once: %v", what, action)
			}
			h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
			id, action = h.request("/api/x")
			own := h.answerAll()
			tok := strings.TrimPrefix(h.header(id), "Bearer ")
			dropped := action == types.ActionPause && own == 1 && tok != refused
			if !dropped && (action != types.ActionContinue || own != 0 || tok != refused) {
				t.Fatalf("%s: the next request: %v, %d token calls, a new token %v: neither a fetch nor the kept token", what, action, own, tok != refused)
			}
			if ev.Want.Retry == nil || dropped != *ev.Want.Retry {
				t.Fatalf("%s: the token dropped (the next request fetched) %v, want %v: %s", what, dropped, ev.Want.Retry != nil && *ev.Want.Retry, ev.Note)
			}
			if err := labels.Check(ev.Want.Token, tok); err != nil {
				t.Fatalf("%s: the next request: %v: %s", what, err, ev.Note)
			}
			last = tok
			h.host.Tick()
			h.answerAll()
		default:
			t.Fatalf("%s: unknown call", what)
		}
		if n := fake.Requests(); n != ev.Want.Requests {
			t.Fatalf("%s: %d token requests so far, want %d: %s", what, n, ev.Want.Requests, ev.Note)
		}
		// A token fetched at this event (by a request or by the refresher) has the schedule, from
		// this event's time.
		if a := refresh(); a.token != "" && a.token != before.token {
			at := t0 + ev.AtMS
			if a.expiresAtMS != at+sc.LifeMS || a.refreshAtMS != at+sc.Schedule.RefreshAtMS || a.staleAtMS != at+sc.Schedule.StaleAtMS {
				t.Fatalf("%s: the new token expires at %+d ms, is refreshed from %+d ms and stale from %+d ms after the event; want %d, %d, %d",
					what, a.expiresAtMS-at, a.refreshAtMS-at, a.staleAtMS-at, sc.LifeMS, sc.Schedule.RefreshAtMS, sc.Schedule.StaleAtMS)
			}
		}
	}
}

// checkReplyError checks the local reply of request id against the event's error: its body is the
// flow's error, its Retry-After the error's retry_after_ms in whole seconds, rounded up.
func checkReplyError(t *testing.T, h *harness, id uint32, what string, ev lifecycle.Event) {
	t.Helper()
	w := ev.Want.Error
	body := h.host.GetSentLocalResponse(id).Data
	e := gjson.GetBytes(body, "error")
	_, _, retryAfter := h.local(id)
	if w == nil || e.Get("kind").Str != w.Kind || e.Get("retryable").Bool() != w.Retryable || e.Get("retry_after_ms").Int() != w.RetryAfterMS ||
		retryAfter != strconv.FormatInt((w.RetryAfterMS+999)/1000, 10) {
		t.Fatalf("%s: local reply %s (Retry-After %q), want %+v: %s", what, body, retryAfter, w, ev.Note)
	}
}
