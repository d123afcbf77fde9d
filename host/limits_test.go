package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/internal/race"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// limitCalls is how many forced fetches each limit case makes on one instance: traps from heap
// growth showed up after a handful of calls (2-7), never on the first. Under -race a call of a large
// case takes over a second, so the race run makes 8, past the 7; `make unit` runs the 40 without it.
var limitCalls = race.Iterations(40, 8)

// tokenBody returns a 200 token response of exactly size bytes: a token and an extra field "pad"
// filled with c.
func tokenBody(size int, c byte) string {
	head := `{"access_token":"big-token","token_type":"Bearer","expires_in":3600,"pad":"`
	tail := `"}`
	return head + strings.Repeat(string(c), size-len(head)-len(tail)) + tail
}

// headerBlock returns n bytes of response header lines ("X-Pad-i: aaa...\r\n") split into headers of
// at most 4 KiB each, as a provider behind a chatty proxy might send.
func headerBlock(n int) [][2]string {
	var hs [][2]string
	for i := 0; n > 0; i++ {
		name := fmt.Sprintf("X-Pad-%d", i)
		line := min(n, 4096)
		v := max(line-len(name)-4, 1) // "name: value\r\n"
		hs = append(hs, [2]string{name, strings.Repeat("a", v)})
		n -= len(name) + 4 + v
	}
	return hs
}

// TestResponseLimits: every token response within the documented limits (body up to
// MaxResponseBytes - 1, headers up to MaxResponseHeaderBytes) decodes on every call of one long-lived
// instance, and every response over a limit is a typed error: never a trap. Before the fix, 1,000 KiB
// of ASCII in an extra field and 512 KiB of '<' (6 bytes each once the host JSON-escapes the body)
// trapped the plugin after a few calls, and 8 MiB of headers grew the heap until it trapped. A key
// of a megabyte spelled with one escape grew the instance from 48 to 384 pages (core.Members
// unescaped it whole).
func TestResponseLimits(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		body     string
		headers  [][2]string
		wantKind string // "" for a token
	}{
		{"extra field 1000 KiB ascii", tokenBody(1000<<10, 'x'), nil, ""},
		{"512 KiB of <", tokenBody(512<<10, '<'), nil, ""},
		{"scope 1000 KiB", `{"access_token":"big-token","expires_in":3600,"scope":"` + strings.Repeat("s", 1000<<10) + `"}`, nil, abi.KindMalformedResponse},
		{"scope of 500 KiB of quotes", `{"access_token":"big-token","expires_in":3600,"scope":"` + strings.Repeat(`\"`, 500<<10) + `"}`, nil, abi.KindMalformedResponse},
		{"access_token 900 KiB", `{"access_token":"` + strings.Repeat("t", 900<<10) + `","expires_in":3600}`, nil, abi.KindMalformedResponse},
		{"escaped key 1000 KiB", `{"\u0070` + strings.Repeat("k", 1000<<10) + `":1,"access_token":"big-token","expires_in":3600}`, nil, ""},
		{"escaped key 1000 KiB after the token", `{"access_token":"big-token","expires_in":3600,"k\u0065` + strings.Repeat("k", 1000<<10) + `":1}`, nil, ""},
		{"escaped keys, two of 500 KiB", `{"\u0070` + strings.Repeat("k", 500<<10) + `":1,"\u0071` + strings.Repeat("k", 500<<10) + `":1,"access_token":"big-token","expires_in":3600}`, nil, ""},
		{"escaped keys of 100 KiB", `{` + strings.Repeat(`"\u0070`+strings.Repeat("k", 100<<10)+`":1,`, 10) + `"access_token":"big-token","expires_in":3600}`, nil, ""},
		{"body 1 MiB exactly", tokenBody(core.MaxBodyBytes, 'x'), nil, ""},
		{"body 1 MiB exactly of <", tokenBody(core.MaxBodyBytes, '<'), nil, ""},
		{"body 1 MiB + 1", tokenBody(core.MaxBodyBytes+1, 'x'), nil, abi.KindMalformedResponse},
		{"body 1 MiB + 1 of <", tokenBody(core.MaxBodyBytes+1, '<'), nil, abi.KindMalformedResponse},
		{"headers at the cap", tokenBody(128, 'x'), headerBlock(MaxResponseHeaderBytes - 200), ""},
		{"headers over the cap", tokenBody(128, 'x'), headerBlock(MaxResponseHeaderBytes + 1), abi.KindTransport},
		{"headers 8 MiB", tokenBody(128, 'x'), headerBlock(8 * mib), abi.KindTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
			fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				for _, h := range tt.headers {
					w.Header()[h[0]] = []string{h[1]}
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tt.body))
				return true
			})
			c := newRuntime(t, append([]Option{WithMaxInstances(1)}, limitPlugin(t)...)...)
			c.pool.recycleAbove = 1 << 62 // the plugin itself must hold up on one instance
			req.Force = true              // every call reaches the provider
			req.TimeoutMS = 5000
			in, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			tokens, typed := 0, map[string]int{}
			for i := range limitCalls {
				// One token export per call, on the client's one instance: no retries, no source.
				res, err := c.fetch(context.Background(), in)
				var ae *abi.Error
				switch {
				case err == nil && res.Token.AccessToken == "big-token":
					tokens++
				case errors.As(err, &ae):
					typed[ae.Kind]++
				default:
					t.Fatalf("call %d: %v (%d tokens before)", i+1, err, tokens)
				}
			}
			m := c.Metrics().Snapshot()
			pages := instancePages(t, c)
			t.Logf("%d calls: %d tokens, typed errors %v, %d provider requests, %d plugin faults, instance memory %d pages",
				limitCalls, tokens, typed, fake.Requests(), m["plugin_faults"], pages)
			if strings.HasPrefix(tt.name, "escaped") && pages > 64 {
				t.Fatalf("instance memory %d pages, want at most 64 (a plain key of the same size: 48)", pages)
			}
			// 384 pages (24 MiB) is as far as TinyGo's doubling heap grows under the 32 MiB cap: an
			// instance there traps at its next growth. A scope of 500 KiB of \" sat there, and trapped
			// now and then (gjson unescaped it whole, anew at every call).
			if pages > 192 {
				t.Fatalf("instance memory %d pages, want at most 192 (12 MiB)", pages)
			}
			if m["plugin_faults"] != 0 {
				t.Fatalf("%d plugin faults in %d calls", m["plugin_faults"], limitCalls)
			}
			wantToken := tt.wantKind == ""
			if wantToken && tokens != limitCalls || !wantToken && typed[tt.wantKind] != limitCalls {
				t.Fatalf("want %d x %q, got %d tokens, errors %v", limitCalls, tt.wantKind, tokens, typed)
			}
		})
	}
}

// TestLargeRequestsOnOneInstance: forced fetches of large requests on one long-lived instance at the
// default memory limit (32 MiB) answer every time, and the instance's memory stops growing after the
// first calls. The plugin accepts requests up to core.MaxRequestBytes (256 KiB): at it, under it, a
// request of form-encoded characters (3 bytes each in the body), and two such requests alternating
// (each call replaces the one the plugin remembers) get 40 tokens each; over it, a typed
// invalid_request without a trap. Before: 1 MiB of params (what the plugin then accepted) trapped
// every other call, the instance at 24 MiB after each of the others; 256 KiB of '<' trapped every
// other call too: every step parsed, encoded and hashed the request anew into new megabytes, and
// TinyGo's conservative collector keeps most of them (plugin/core/rawjson.go).
func TestLargeRequestsOnOneInstance(t *testing.T) {
	calls := limitCalls
	if raceEnabled { // 25 times slower: the plugin reads its input 8 bytes per host call
		calls = 8
	}
	const maxPages = 192 // 12 MiB: half the most a 32 MiB cap lets TinyGo's doubling heap reach
	tests := []struct {
		name      string
		size      int  // the request's bytes
		fill      byte // what its one parameter is made of
		alternate bool
		wantKind  string // "" for a token
	}{
		{"1 MiB of params", 1<<20 + 300, 'v', false, abi.KindInvalidRequest},
		{"at the limit", core.MaxRequestBytes, 'v', false, ""},
		{"under the limit", core.MaxRequestBytes - 1, 'v', false, ""},
		{"over the limit", core.MaxRequestBytes + 1, 'v', false, abi.KindInvalidRequest},
		{"at the limit, form-encoded", core.MaxRequestBytes, '<', false, ""},
		{"at the limit, two alternating", core.MaxRequestBytes, '<', true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, base := nikoFake(t, providertest.DefaultConfig("nikohealth"))
			var bodyBytes atomic.Int64
			fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				n, _ := io.Copy(io.Discard, r.Body) // the fake's own handler reads at most 64 KiB
				bodyBytes.Store(n)
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"access_token":"big-token","token_type":"Bearer","expires_in":3600}`))
				return true
			})
			c := newRuntime(t, append([]Option{WithMaxInstances(1)}, limitPlugin(t)...)...)
			c.pool.recycleAbove = 1 << 62 // the plugin itself must hold up on one instance
			request := func(secret string) []byte {
				req := base
				req.ClientSecret, req.Force, req.TimeoutMS = secret, true, 5000
				req.Params = map[string]string{"pad": ""}
				in, err := json.Marshal(req)
				if err != nil {
					t.Fatal(err)
				}
				// Raw JSON: json.Marshal would escape '<' as \u003c.
				pad := strings.Repeat(string(tt.fill), tt.size-len(in))
				return []byte(strings.Replace(string(in), `"pad":""`, `"pad":"`+pad+`"`, 1))
			}
			ins := [][]byte{request(base.ClientSecret), request(base.ClientSecret)}
			if tt.alternate {
				ins[1] = request("another-secret") // the fake answers any secret here
			}
			if len(ins[0]) != tt.size {
				t.Fatalf("request of %d bytes, want %d", len(ins[0]), tt.size)
			}
			tokens, typed := 0, map[string]int{}
			pages := make([]uint32, calls)
			for i := range calls {
				res, err := c.fetch(context.Background(), ins[i%2])
				var ae *abi.Error
				switch {
				case err == nil && res.Token.AccessToken == "big-token":
					tokens++
				case errors.As(err, &ae):
					typed[ae.Kind]++
				default:
					t.Fatalf("call %d: %v (%d tokens before)", i+1, err, tokens)
				}
				pages[i] = instancePages(t, c)
			}
			m := c.Metrics().Snapshot()
			t.Logf("%d calls: %d tokens, typed errors %v, provider body %d bytes, %d plugin faults, instance memory in pages %v",
				calls, tokens, typed, bodyBytes.Load(), m["plugin_faults"], pages)
			if m["plugin_faults"] != 0 {
				t.Fatalf("%d plugin faults in %d calls", m["plugin_faults"], calls)
			}
			wantToken := tt.wantKind == ""
			if wantToken && tokens != calls || !wantToken && typed[tt.wantKind] != calls {
				t.Fatalf("want %d x %q, got %d tokens, errors %v", calls, tt.wantKind, tokens, typed)
			}
			if wantToken && bodyBytes.Load() < int64(tt.size-1000) {
				t.Fatalf("the provider got a body of %d bytes", bodyBytes.Load())
			}
			if last := pages[calls-1]; last > maxPages || last > pages[3] {
				t.Fatalf("instance memory grew to %d pages (%d after the 4th call), want it flat at most %d", last, pages[3], maxPages)
			}
		})
	}
}

// TestRequestLimitThroughWasm: a TokenRequest of core.MaxRequestBytes is taken by every export that
// takes one, and one byte more is invalid_request, whether it is the whole input (encode, token,
// invalidate: refused before it is read) or decode's request (token_step's: TestStepAttacksThroughWasm).
func TestRequestLimitThroughWasm(t *testing.T) {
	const tooLarge = "request exceeds 256 KiB"
	req := `{"provider":"nikohealth","client_id":"niko-client","client_secret":"s","token_url":"http://127.0.0.1:1/token"}`
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		for _, size := range []int{core.MaxRequestBytes - 1, core.MaxRequestBytes, core.MaxRequestBytes + 1, 1 << 20} {
			in := padRequest(req, size)
			inputs := map[string]string{
				abi.ExportEncode:     in,
				abi.ExportToken:      in,
				abi.ExportInvalidate: in,
				abi.ExportDecode:     `{"request":` + in + `,"response":{"status":200,"headers":{},"body":"{\"access_token\":\"a\"}"}}`,
			}
			for export, input := range inputs {
				var out struct{ Error *abi.Error }
				if err := c.call(context.Background(), export, []byte(input), &out); err != nil {
					t.Fatalf("%s of %d bytes: %v", export, size, err)
				}
				refused := out.Error != nil && out.Error.Message == tooLarge
				if refused != (size > core.MaxRequestBytes) || refused && out.Error.Kind != abi.KindInvalidRequest {
					t.Errorf("%s of a %d-byte request: %+v", export, size, out.Error)
				}
			}
		}
	}, WithLoopback())
}

// instancePages returns the linear memory, in 64 KiB pages, of the client's one instance.
func instancePages(t *testing.T, c *Runtime) uint32 {
	t.Helper()
	inst, err := c.pool.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.pool.put(context.Background(), inst)
	return inst.MemorySize() / 65536
}

// limitPlugin runs the build named by TOKENWASM_WASM_TINYGO when set (a fresh build), else the
// embedded one.
func limitPlugin(t *testing.T) []Option {
	if p := os.Getenv("TOKENWASM_WASM_TINYGO"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return []Option{WithPlugin(b)}
	}
	return nil
}

// TestPoolRecyclesAfterLargeCalls: an instance that moved more than recycleAbove bytes in one call is
// replaced, not reused, so even an input the plugin keeps garbage of cannot accumulate: 40 encodes of
// a request with a 200 KiB client secret in a row on a pool of one instance, 0 faults. The bound is
// lowered to 128 KiB here: no request within core.MaxRequestBytes (256 KiB) moves the 1 MiB of the
// default any more.
func TestPoolRecyclesAfterLargeCalls(t *testing.T) {
	c := newRuntime(t, WithMaxInstances(1))
	c.pool.recycleAbove = 128 << 10
	req := abi.TokenRequest{Provider: "nikohealth", Domain: "acme", ClientID: "id", ClientSecret: strings.Repeat("s", 200<<10)}
	first, err := c.pool.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.pool.put(context.Background(), first)
	for i := range limitCalls {
		if _, err := c.Encode(context.Background(), req); err != nil {
			t.Fatalf("encode %d: %v", i+1, err)
		}
	}
	if n := c.Metrics().Snapshot()["plugin_faults"]; n != 0 {
		t.Fatalf("%d plugin faults", n)
	}
	again, err := c.pool.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.pool.put(context.Background(), again)
	if again == first {
		t.Fatal("the instance that encoded a 200 KiB secret was reused")
	}
}

// TestHeapGrownAtStart: the plugin grows its heap once, at start (plugin/heap_tinygo.go, heapDoublings), so
// that its collector runs every hundred fetches or so instead of every few; fetches on that instance
// stay within it; and under a memory limit below it the plugin starts and fetches all the same.
func TestHeapGrownAtStart(t *testing.T) {
	_, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	req.Force = true
	for _, tc := range []struct {
		name        string
		limit       uint32 // pages; 0: the default
		atLeast, at uint32 // pages after start
	}{
		{"default limit", 0, 12, 0},
		{"a limit of 8 pages", 8, 0, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append(limitPlugin(t), WithMaxInstances(1))
			if tc.limit > 0 {
				opts = append(opts, WithMemoryLimit(tc.limit))
			}
			c := newRuntime(t, opts...)
			start := instancePages(t, c)
			if start < tc.atLeast || tc.at > 0 && start != tc.at {
				t.Fatalf("linear memory %d pages after start: want at least %d (exactly %d if set)", start, tc.atLeast, tc.at)
			}
			for i := range 300 {
				if _, err := c.Token(context.Background(), req); err != nil {
					t.Fatalf("fetch %d: %v", i+1, err)
				}
			}
			if n := instancePages(t, c); n != start {
				t.Fatalf("300 fetches on one instance grew its memory from %d to %d pages", start, n)
			}
			if n := c.Metrics().Snapshot()["plugin_faults"]; n != 0 {
				t.Fatalf("%d plugin faults", n)
			}
		})
	}
}
