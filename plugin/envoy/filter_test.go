//go:build !wasip1

package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// The filter runs twice: natively in proxytest, and as the compiled .wasm in proxytest's wazero
// engine (the same proxy-wasm ABI Envoy speaks). Token requests are answered by the loopback fakes.

var filterWasm []byte

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envoy-filter")
	if err == nil {
		out := filepath.Join(dir, "filter.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, ".")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			os.Stderr.Write(b)
			os.Exit(1)
		}
		filterWasm, _ = os.ReadFile(out)
		os.RemoveAll(dir)
	}
	os.Exit(m.Run())
}

type harness struct {
	t    *testing.T
	host proxytest.HostEmulator
	fake *providertest.Fake
}

func newHarness(t *testing.T, runner string, fake *providertest.Fake, extra map[string]any) *harness {
	cfg := fake.Config()
	conf := map[string]any{
		"request": map[string]any{"provider": "nikohealth", "client_id": cfg.ClientID, "client_secret": cfg.ClientSecret, "token_url": fake.TokenURL()},
		"cluster": "nikohealth_token", "paths": []string{"/api/"},
	}
	for k, v := range extra {
		conf[k] = v
	}
	b, _ := json.Marshal(conf)
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(vmFor(t, runner)).WithPluginConfiguration(b))
	t.Cleanup(reset)
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("plugin start: %v", st)
	}
	return &harness{t: t, host: host, fake: fake}
}

// request starts an API request and returns its context and the action the filter took.
func (h *harness) request(path string) (uint32, types.Action) {
	id := h.host.InitializeHttpContext()
	return id, h.host.CallOnRequestHeaders(id, [][2]string{{":path", path}, {":authority", "api.example"}, {":method", "GET"}}, true)
}

// answer performs the filter's callout of context id against the fake over real HTTP and delivers
// the response to the filter, as Envoy would.
func (h *harness) answer(id uint32) {
	h.t.Helper()
	callouts := h.host.GetCalloutAttributesFromContext(id)
	if len(callouts) != 1 {
		h.t.Fatalf("%d callouts from context %d, want 1", len(callouts), id)
	}
	h.answerCallout(callouts[0])
}

// calloutsSince returns every callout made by contexts up to maxID, past the first skip ones.
func (h *harness) calloutsSince(maxID uint32, skip int) []proxytest.HttpCalloutAttribute {
	var all []proxytest.HttpCalloutAttribute
	for id := uint32(0); id <= maxID; id++ {
		all = append(all, h.host.GetCalloutAttributesFromContext(id)...)
	}
	if len(all) <= skip {
		return nil
	}
	return all[skip:]
}

func (h *harness) answerCallout(c proxytest.HttpCalloutAttribute) {
	h.t.Helper()
	var method, path string
	req, _ := http.NewRequest("POST", "", strings.NewReader(string(c.Body)))
	for _, kv := range c.Headers {
		switch kv[0] {
		case ":method":
			method = kv[1]
		case ":path":
			path = kv[1]
		case ":authority", ":scheme":
		default:
			req.Header.Set(kv[0], kv[1])
		}
	}
	if c.Upstream != "nikohealth_token" || method != "POST" {
		h.t.Fatalf("callout to %q with %s", c.Upstream, method)
	}
	req.Method = method
	req.URL, _ = req.URL.Parse(h.fake.URL() + path)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	headers := [][2]string{{":status", itoa(resp.StatusCode)}}
	for k, vs := range resp.Header {
		headers = append(headers, [2]string{strings.ToLower(k), vs[0]})
	}
	h.host.CallOnHttpCallResponse(c.CalloutID, headers, nil, body)
}

// vmFor returns the filter's VM context: the Go code itself ("native"), or the compiled .wasm.
func vmFor(t *testing.T, runner string) types.VMContext {
	t.Helper()
	if runner != "wasm" {
		return &vmContext{}
	}
	w, err := proxytest.NewWasmVMContext(filterWasm)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func bearer(headers [][2]string) string {
	for _, kv := range headers {
		if strings.EqualFold(kv[0], "authorization") {
			return kv[1]
		}
	}
	return ""
}

func runners(t *testing.T, f func(t *testing.T, runner string)) {
	for _, r := range []string{"native", "wasm"} {
		t.Run(r, func(t *testing.T) {
			if r == "wasm" && filterWasm == nil {
				t.Fatal("the filter did not build to wasm")
			}
			f(t, r)
		})
	}
}

func TestFirstRequestPausesThenSharedData(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
		defer fake.Close()
		h := newHarness(t, runner, fake, nil)
		id, action := h.request("/api/patients")
		if action != types.ActionPause {
			t.Fatalf("first request: %v, want pause", action)
		}
		h.answer(id)
		if got := bearer(h.host.GetCurrentRequestHeaders(id)); !strings.HasPrefix(got, "Bearer ") || len(got) < 20 {
			t.Fatalf("header after resume: %q", got)
		}
		if h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
			t.Fatal("the request was not resumed")
		}
		id2, action := h.request("/api/other")
		if action != types.ActionContinue || len(h.host.GetCalloutAttributesFromContext(id2)) != 0 {
			t.Fatal("the second request did not come from shared data")
		}
		if bearer(h.host.GetCurrentRequestHeaders(id2)) != bearer(h.host.GetCurrentRequestHeaders(id)) || fake.Requests() != 1 {
			t.Fatalf("second request: token differs or %d requests", fake.Requests())
		}
		// Out of scope: no header, no pause.
		id3, action := h.request("/health")
		if action != types.ActionContinue || bearer(h.host.GetCurrentRequestHeaders(id3)) != "" {
			t.Fatal("a path outside the filter's paths was touched")
		}
	})
}

func TestFiftyRequestsOneCall(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
		defer fake.Close()
		h := newHarness(t, runner, fake, nil)
		var ids []uint32
		for range 50 {
			id, action := h.request("/api/x")
			if action != types.ActionPause {
				t.Fatal("a request during the fetch was not paused")
			}
			ids = append(ids, id)
		}
		callouts := 0
		for _, id := range ids {
			callouts += len(h.host.GetCalloutAttributesFromContext(id))
		}
		if callouts != 1 {
			t.Fatalf("%d callouts for 50 requests", callouts)
		}
		h.answer(ids[0])
		for _, id := range ids {
			if !strings.HasPrefix(bearer(h.host.GetCurrentRequestHeaders(id)), "Bearer ") || h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
				t.Fatalf("request %d not resumed with the token", id)
			}
		}
		if fake.Requests() != 1 {
			t.Fatalf("%d requests at the fake", fake.Requests())
		}
	})
}

func TestGateAndFailures(t *testing.T) {
	for _, tt := range []struct {
		name, kind string
		fault      func(w http.ResponseWriter) bool
	}{
		{"429 gate", "rate_limited", func(w http.ResponseWriter) bool {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(429)
			return true
		}},
		{"endpoint down", "server_error", func(w http.ResponseWriter) bool { w.WriteHeader(503); return true }},
	} {
		runners(t, func(t *testing.T, runner string) {
			t.Run(tt.name, func(t *testing.T) {
				fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
				defer fake.Close()
				fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool { return tt.fault(w) })
				h := newHarness(t, runner, fake, nil)
				id, _ := h.request("/api/x")
				h.answer(id)
				local := h.host.GetSentLocalResponse(id)
				if local == nil || local.StatusCode != 503 || !strings.Contains(string(local.Data), `"kind":"`+tt.kind+`"`) {
					t.Fatalf("local reply: %+v", local)
				}
				if strings.Contains(string(local.Data), fake.Config().ClientSecret) {
					t.Fatal("the local reply leaks the secret")
				}
				if tt.kind == "rate_limited" { // the gate holds: no new call
					id2, action := h.request("/api/y")
					if action != types.ActionPause || len(h.host.GetCalloutAttributesFromContext(id2)) != 0 || h.host.GetSentLocalResponse(id2) == nil {
						t.Fatal("a request during the gate called the provider or was not refused")
					}
				}
				if fake.Requests() != 1 {
					t.Fatalf("%d requests at the fake", fake.Requests())
				}
			})
		})
	}
}

// TestRefreshOnTick: a token inside its refresh window is replaced on the tick, while requests keep
// getting the still-valid one without waiting.
func TestRefreshOnTick(t *testing.T) {
	cfg := providertest.DefaultConfig("nikohealth")
	cfg.Lifetime = 4 * time.Second
	fake := providertest.NewNikoHealth(cfg)
	defer fake.Close()
	h := newHarness(t, "native", fake, map[string]any{"refresh_ahead_ms": 3500})
	id, _ := h.request("/api/x")
	h.answer(id)
	first := bearer(h.host.GetCurrentRequestHeaders(id))
	time.Sleep(600 * time.Millisecond) // inside refresh_ahead
	h.host.Tick()
	id2, action := h.request("/api/y")
	if action != types.ActionContinue || bearer(h.host.GetCurrentRequestHeaders(id2)) != first {
		t.Fatal("a request waited during the refresh")
	}
	refresh := h.calloutsSince(id2, 1) // the tick's callout (proxytest files it under the last active context)
	if len(refresh) != 1 {
		t.Fatalf("%d refresh callouts from the tick, want 1", len(refresh))
	}
	h.answerCallout(refresh[0])
	id3, _ := h.request("/api/z")
	if got := bearer(h.host.GetCurrentRequestHeaders(id3)); got == first || got == "" || fake.Requests() != 2 {
		t.Fatalf("token not refreshed: %d requests", fake.Requests())
	}
}

// TestExpiredTokenRefetched: a token past its expiry skew is not used; the next request fetches a new
// one (natively: the emulator's wasm engine runs on wazero's fake clock).
func TestExpiredTokenRefetched(t *testing.T) {
	cfg := providertest.DefaultConfig("nikohealth")
	cfg.Lifetime = time.Second // skew 250 ms
	fake := providertest.NewNikoHealth(cfg)
	defer fake.Close()
	h := newHarness(t, "native", fake, map[string]any{"refresh_ahead_ms": 1})
	id, _ := h.request("/api/x")
	h.answer(id)
	first := bearer(h.host.GetCurrentRequestHeaders(id))
	time.Sleep(800 * time.Millisecond)
	id2, action := h.request("/api/y")
	if action != types.ActionPause {
		t.Fatal("an expired token was used")
	}
	h.answer(id2)
	if got := bearer(h.host.GetCurrentRequestHeaders(id2)); got == first || got == "" || fake.Requests() != 2 {
		t.Fatalf("expired token not replaced: %d requests", fake.Requests())
	}
}

// TestDispatchRefusalIsPolicy: a proxy_http_call the proxy will not send (unknown cluster: Envoy's
// BadArgument) is a policy error, not retried; other failures stay retryable transport errors.
func TestDispatchRefusalIsPolicy(t *testing.T) {
	tests := []struct {
		err       error
		kind      string
		retryable bool
	}{
		{types.ErrorStatusBadArgument, "policy", false},
		{types.ErrorStatusNotFound, "policy", false},
		{types.ErrorInternalFailure, "transport", true},
	}
	for _, tt := range tests {
		if e := dispatchError(tt.err); e.Kind != tt.kind || e.Retryable != tt.retryable {
			t.Errorf("%v: got %+v, want kind %s retryable %v", tt.err, e, tt.kind, tt.retryable)
		}
	}
}

// TestForeignTokenHostRefusedAtStart: a configuration whose token_url sends one provider's
// credentials to another provider's host does not start (the core refuses it with kind policy), so
// no request is ever sent.
func TestForeignTokenHostRefusedAtStart(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		conf, _ := json.Marshal(map[string]any{
			"request": map[string]any{"provider": "pattern", "client_id": "c", "client_secret": "pattern-secret-1",
				"token_url": "https://api.joincandidhealth.com/api/auth/v2/token"},
			"cluster": "pattern_token",
		})
		host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(vmFor(t, runner)).WithPluginConfiguration(conf))
		defer reset()
		if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
			t.Fatalf("plugin start: %v, want failed", st)
		}
		logs := strings.Join(host.GetCriticalLogs(), "\n")
		if !strings.Contains(logs, "policy") || strings.Contains(logs, "pattern-secret-1") {
			t.Fatalf("critical logs: %q", logs)
		}
	})
}
