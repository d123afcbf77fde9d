//go:build !wasip1

package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
)

// The same provider answers, the same outcomes, through the Go host and through the filter
// (testdata/sequence.json): first fetch, a cached hit, expiry then a 429, the closed gate, a 5xx,
// recovery.

type seqStep struct {
	Name   string `json:"name"`
	WaitMS int64  `json:"wait_ms"`
	Answer *struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	} `json:"answer"`
	Want  struct{ Token, Kind string } `json:"want"`
	Calls struct{ Go, Envoy int64 }    `json:"calls"`
}

// scriptServer answers every token call with the current step's answer and counts the calls.
type scriptServer struct {
	*httptest.Server
	step  atomic.Pointer[seqStep]
	calls atomic.Int64
}

func newScriptServer(t *testing.T) (*scriptServer, []seqStep) {
	b, err := os.ReadFile("testdata/sequence.json")
	if err != nil {
		t.Fatal(err)
	}
	var script struct{ Steps []seqStep }
	if err := json.Unmarshal(b, &script); err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.calls.Add(1)
		st := s.step.Load()
		if st == nil || st.Answer == nil {
			w.WriteHeader(599) // a call the script does not expect: the outcome will not match
			return
		}
		for k, v := range st.Answer.Headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(st.Answer.Status)
		w.Write([]byte(st.Answer.Body))
	}))
	t.Cleanup(s.Close)
	return s, script.Steps
}

// play runs the script: before each step it waits, then asks outcome for the token, and checks the
// outcome and the number of token calls.
func (s *scriptServer) play(t *testing.T, steps []seqStep, calls func(seqStep) int64, wait func(time.Duration), outcome func() (token, kind string)) {
	for i := range steps {
		st := &steps[i]
		wait(time.Duration(st.WaitMS) * time.Millisecond)
		s.step.Store(st)
		before := s.calls.Load()
		token, kind := outcome()
		if token != st.Want.Token || kind != st.Want.Kind {
			t.Fatalf("step %q: token %q kind %q, want %q %q", st.Name, token, kind, st.Want.Token, st.Want.Kind)
		}
		if n := s.calls.Load() - before; n != calls(*st) {
			t.Fatalf("step %q: %d token calls, want %d", st.Name, n, calls(*st))
		}
	}
}

func seqRequest(url string) abi.TokenRequest {
	return abi.TokenRequest{Provider: "nikohealth", ClientID: "seq-client", ClientSecret: "seq-secret-0123", TokenURL: url + "/token"}
}

func TestSequenceGoHost(t *testing.T) {
	srv, steps := newScriptServer(t)
	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	req := seqRequest(srv.URL)
	srv.play(t, steps, func(s seqStep) int64 { return s.Calls.Go }, time.Sleep, func() (string, string) {
		tok, err := c.Token(ctx, req)
		var aerr *abi.Error
		if errors.As(err, &aerr) {
			return "", aerr.Kind
		}
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken, ""
	})
}

func TestSequenceFilter(t *testing.T) {
	srv, steps := newScriptServer(t)
	req := seqRequest(srv.URL)
	h := startHarness(t, "native", srv.URL, map[string]any{
		"request": map[string]any{"provider": req.Provider, "client_id": req.ClientID, "client_secret": req.ClientSecret,
			"token_url": httpsURL(req.TokenURL)},
		"cluster": "nikohealth_token",
	})
	srv.play(t, steps, func(s seqStep) int64 { return s.Calls.Envoy }, h.clock.advance, func() (string, string) {
		id, action := h.request("/api/x")
		if action == types.ActionPause {
			h.answerAll()
		}
		if _, kind, _ := h.local(id); kind != "" {
			return "", kind
		}
		return strings.TrimPrefix(h.header(id), "Bearer "), ""
	})
}
