//go:build !wasip1

package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// The filter runs twice: natively in proxytest, and as the compiled .wasm in proxytest's wazero
// engine (the proxy-wasm ABI Envoy speaks). Token calls are answered over real HTTP by loopback
// servers. What the wasm engine cannot do is said where it matters: it gives the module wazero's
// fake clock (2022-01-01, 1 ms more per reading) and no environment variables, so behaviours that
// need time to pass, or a secret from the environment, are tested natively with a clock the test
// moves. The one exception: the tests' build of the filter sets the signing keys' variables itself
// (testenv_wasip1.go, sign_test.go's wasmEnviron), so private_key_jwt runs compiled too.

var filterWasm []byte

func TestMain(m *testing.M) {
	log.SetOutput(io.Discard) // proxytest logs every host call; failures are reported by the tests
	dir, err := os.MkdirTemp("", "envoy-filter")
	if err == nil {
		out := filepath.Join(dir, "filter.wasm")
		// The tag and -X give the compiled filter the test keys' environment (testenv_wasip1.go):
		// proxytest's wasm engine gives a module no environment variables.
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-tags", "tokenwasm_testenv",
			"-ldflags", "-X main.testEnviron="+wasmEnviron(), "-o", out, ".")
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

// wasmVM returns the compiled filter, instantiated once for the whole package: compiling it takes
// seconds (minutes under -race), and each emulator creates a new plugin context in it, so tests share
// nothing but the module's memory. Its fake clock runs on across tests.
func wasmVM(t testing.TB) types.VMContext {
	wasmOnce.Do(func() { wasmCtx, wasmErr = proxytest.NewWasmVMContext(filterWasm) })
	if wasmErr != nil {
		t.Fatal(wasmErr)
	}
	return wasmCtx
}

var (
	wasmOnce sync.Once
	wasmCtx  proxytest.WasmVMContext
	wasmErr  error
)

// clock is the native runner's clock: it moves only when the test moves it.
type clock struct{ ms atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ms.Store(time.Now().UnixMilli())
	return c
}
func (c *clock) now() int64              { return c.ms.Load() }
func (c *clock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

type harness struct {
	t        testing.TB
	host     proxytest.HostEmulator
	upstream string       // where callouts are sent over HTTP (a fake's or a script server's base URL)
	cluster  string       // the configuration's cluster, which every callout must name
	clock    *clock       // nil for the wasm runner
	vm       *recordingVM // nil for the wasm runner
	lastID   uint32
	answered map[uint32]int // per context: how many of its callouts were answered (proxytest reuses callout ids)
	client   *http.Client   // reaches the upstream; nil is http.DefaultClient (an https fake needs its CA)
	// onCallout, when set, sees every callout before it is sent upstream.
	onCallout func(c proxytest.HttpCalloutAttribute)
}

// nikoConfig is a configuration for the NikoHealth fake: its token URL with https (the filter
// refuses plain http; the harness forwards the callout to the fake over loopback http).
func nikoConfig(fake *providertest.Fake, extra map[string]any) map[string]any {
	cfg := fake.Config()
	conf := map[string]any{
		"request": map[string]any{"provider": "nikohealth", "client_id": cfg.ClientID, "client_secret": cfg.ClientSecret,
			"token_url": httpsURL(fake.TokenURL())},
		"cluster": "nikohealth_token", "paths": []string{"/api/"},
	}
	for k, v := range extra {
		if v == nil {
			delete(conf, k)
		} else {
			conf[k] = v
		}
	}
	return conf
}

func httpsURL(u string) string { return strings.Replace(u, "http://", "https://", 1) }

func newHarness(t testing.TB, runner string, fake *providertest.Fake, extra map[string]any) *harness {
	t.Helper()
	return startHarness(t, runner, fake.URL(), nikoConfig(fake, extra))
}

func startHarness(t testing.TB, runner, upstream string, conf map[string]any) *harness {
	t.Helper()
	h := emulate(t, runner, conf)
	h.upstream = upstream
	h.cluster, _ = conf["cluster"].(string)
	if st := h.host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("plugin start: %v (critical logs %q)", st, h.host.GetCriticalLogs())
	}
	return h
}

// emulate sets up the emulator with a configuration, without starting the plugin.
func emulate(t testing.TB, runner string, conf map[string]any) *harness {
	t.Helper()
	b, _ := json.Marshal(conf)
	return emulateRaw(t, runner, b)
}

// emulateRaw is emulate with the configuration's bytes as given.
func emulateRaw(t testing.TB, runner string, b []byte) *harness {
	t.Helper()
	h := &harness{t: t, answered: map[uint32]int{}}
	var vm types.VMContext
	if runner == "wasm" {
		vm = wasmVM(t)
	} else {
		h.clock = newClock()
		h.vm = &recordingVM{vmContext: &vmContext{now: h.clock.now}}
		vm = h.vm
	}
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(vm).WithPluginConfiguration(b))
	t.Cleanup(reset)
	h.host = host
	return h
}

// recordingVM is the native VM context, keeping the plugin context it made for tests to look into.
type recordingVM struct {
	*vmContext
	plugin *pluginContext
}

func (v *recordingVM) NewPluginContext(id uint32) types.PluginContext {
	v.plugin = v.vmContext.NewPluginContext(id).(*pluginContext)
	return v.plugin
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

// request starts an API request and returns its context and the action the filter took.
func (h *harness) request(path string) (uint32, types.Action) {
	return h.requestTo(path, "api.example")
}

func (h *harness) requestTo(path, authority string) (uint32, types.Action) {
	id := h.host.InitializeHttpContext()
	h.lastID = id
	return id, h.host.CallOnRequestHeaders(id, [][2]string{{":path", path}, {":authority", authority}, {":method", "GET"}}, true)
}

// callouts returns the token calls not answered yet, from any context (proxytest files a callout
// under the context active when it was made: a request's, or the plugin's on a tick).
func (h *harness) callouts() []proxytest.HttpCalloutAttribute {
	var out []proxytest.HttpCalloutAttribute
	for id := uint32(0); id <= h.lastID+1; id++ {
		out = append(out, h.host.GetCalloutAttributesFromContext(id)[h.answered[id]:]...)
	}
	return out
}

// answerAll performs every open callout against the upstream over real HTTP and delivers the
// responses, as Envoy would; it returns how many there were.
func (h *harness) answerAll() int {
	h.t.Helper()
	n := 0
	for id := uint32(0); id <= h.lastID+1; id++ {
		for _, c := range h.host.GetCalloutAttributesFromContext(id)[h.answered[id]:] {
			h.answered[id]++
			h.answer(c)
			n++
		}
	}
	return n
}

func (h *harness) answer(c proxytest.HttpCalloutAttribute) {
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
	cluster := h.cluster
	if cluster == "" { // a harness set up by emulate: the fakes' configuration
		cluster = "nikohealth_token"
	}
	if c.Upstream != cluster || method != "POST" {
		h.t.Fatalf("callout to %q with %s", c.Upstream, method)
	}
	req.Method = method
	req.URL, _ = req.URL.Parse(h.upstream + path)
	if h.onCallout != nil {
		h.onCallout(c)
	}
	client := h.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	headers := [][2]string{{":status", strconv.Itoa(resp.StatusCode)}}
	for k, vs := range resp.Header {
		headers = append(headers, [2]string{strings.ToLower(k), vs[0]})
	}
	h.host.CallOnHttpCallResponse(c.CalloutID, headers, nil, body)
}

// ticks runs n ticks, moving the native clock by the tick period before each.
func (h *harness) ticks(n int) {
	for range n {
		if h.clock != nil {
			h.clock.advance(tickMS * time.Millisecond)
		}
		h.host.Tick()
	}
}

func (h *harness) header(id uint32) string {
	for _, kv := range h.host.GetCurrentRequestHeaders(id) {
		if strings.EqualFold(kv[0], "authorization") {
			return kv[1]
		}
	}
	return ""
}

// local returns the local reply sent for a request: status, error kind, Retry-After ("" if none).
func (h *harness) local(id uint32) (status int, kind, retryAfter string) {
	r := h.host.GetSentLocalResponse(id)
	if r == nil {
		return 0, "", ""
	}
	var body struct {
		Error struct{ Kind string } `json:"error"`
	}
	json.Unmarshal(r.Data, &body)
	for _, kv := range r.Headers {
		if kv[0] == "retry-after" {
			retryAfter = kv[1]
		}
	}
	return int(r.StatusCode), body.Error.Kind, retryAfter
}

func (h *harness) counter(name string) uint64 {
	h.t.Helper()
	v, err := h.host.GetCounterMetric("tokenwasm." + metricSegment(h.cluster) + ".nikohealth." + name)
	if err != nil {
		return 0
	}
	return v
}

// lockKey is the shared-data key of the fleet lock for the fake's identity, as the core names it.
func lockKey(t testing.TB, conf map[string]any) string {
	b, _ := json.Marshal(conf["request"])
	_, _, key, err := core.Prepare(b)
	if err != nil {
		t.Fatal(err)
	}
	return core.LockKey(key)
}
