package gosdkwitness

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"testing"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/internal/rawcall"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// compilationCache is shared by go-sdk and our host here, as the Go host's own default cache is
// shared by every runtime in a process.
var compilationCache = wazero.NewCompilationCache()

// builds are the plugin builds the witness runs (conformance.Builds): the embedded one always, and
// those named by TOKENWASM_WASM_TINYGO and TOKENWASM_WASM_GO when set.
func builds(t testing.TB) map[string][]byte {
	t.Helper()
	out, err := conformance.Builds(host.Plugin())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// newGoSDKPlugin loads wasm with the official Extism go-sdk: the anchor that proves our host keeps
// Extism's semantics. Its imports answer a cache miss and a transport error, as ours do with an
// empty cache and no network.
func newGoSDKPlugin(t testing.TB, wasm []byte) *extism.Plugin {
	t.Helper()
	ctx := context.Background()
	user := func(name string, answer string) extism.HostFunction {
		f := extism.NewHostFunctionWithStack(name, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			off, err := p.WriteBytes([]byte(answer))
			if err != nil {
				panic(err)
			}
			stack[0] = off
		}, []extism.ValueType{extism.ValueTypePTR}, []extism.ValueType{extism.ValueTypePTR})
		f.SetNamespace("extism:host/user")
		return f
	}
	p, err := extism.NewPlugin(ctx, extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: wasm}}},
		extism.PluginConfig{
			// The compilation cache our host is given too: the same bytes through the same wazero
			// compile to the same code, and compiling the 2.3 MB Go build a second time cost 9 s of CPU
			// under -race. The imports, the kernel and WASI stay go-sdk's own.
			RuntimeConfig: wazero.NewRuntimeConfig().WithCompilationCache(compilationCache),
			EnableWasi:    true,
			// go-sdk defaults to a fake clock and a fixed random seed: give the plugin the real ones.
			ModuleConfig: wazero.NewModuleConfig().WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader),
		},
		[]extism.HostFunction{
			user("http_send", `{"error":"no network in this test"}`),
			user("cache_get", `{"hit":false}`),
			user("cache_set", `{}`),
			user("cache_delete", `{}`),
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(ctx) })
	return p
}

// TestGoSDKCompatibility runs every vector under go-sdk and under our host and requires the same bytes
// (Candescent's random transactionId aside, which both must still produce).
func TestGoSDKCompatibility(t *testing.T) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	for name, wasm := range builds(t) {
		t.Run(name, func(t *testing.T) {
			sdk := newGoSDKPlugin(t, wasm)
			// Our http_send fails as go-sdk's import does: no request leaves the test.
			noNetwork := roundTripFunc(func(*http.Request) (*http.Response, error) {
				return nil, errors.New("no network in this test")
			})
			// One pooled instance of our host's runtime, with its own imports (host/internal/rawcall).
			call, release, err := rawcall.Open(context.Background(), host.WithPlugin(wasm), host.WithHTTPTransport(noNetwork),
				host.WithCompilationCache(compilationCache))
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			sdkCall := func(export string, in []byte) ([]byte, error) {
				rc, out, err := sdk.Call(export, in)
				if err == nil && rc != 0 {
					err = fmt.Errorf("rc %d", rc)
				}
				return out, err
			}
			oursCall := func(export string, in []byte) ([]byte, error) { return call(context.Background(), export, in) }
			for _, v := range vs {
				if len(v.Steps) > 0 { // a token_step flow: each step's answer, under both
					if err := v.Check(sdkCall); err != nil {
						t.Errorf("%s under go-sdk: %v", v.Name, err)
					}
					if err := v.Check(oursCall); err != nil {
						t.Errorf("%s under our host: %v", v.Name, err)
					}
					continue
				}
				rc, sdkOut, err := sdk.Call(v.Export, v.Input)
				if err != nil || rc != 0 {
					t.Fatalf("%s under go-sdk: rc %d, %v", v.Name, rc, err)
				}
				ours, err := call(context.Background(), v.Export, v.Input)
				if err != nil {
					t.Fatalf("%s under our host: %v", v.Name, err)
				}
				if err := conformance.Match(v.Want, sdkOut); err != nil {
					t.Errorf("%s under go-sdk: %v", v.Name, err)
				}
				if !bytes.Contains(v.Want, []byte("<uuid>")) && !bytes.Equal(sdkOut, ours) {
					t.Errorf("%s: go-sdk %s\nours %s", v.Name, sdkOut, ours)
				}
			}
			// The token export through both: the same transport error from the same imports.
			in := []byte(`{"provider":"nikohealth","client_id":"c","client_secret":"niko-secret","domain":"acme"}`)
			_, sdkOut, err := sdk.Call("token", in)
			if err != nil || !bytes.Contains(sdkOut, []byte(`"kind":"transport"`)) {
				t.Fatalf("token under go-sdk: %s %v", sdkOut, err)
			}
			ours, err := call(context.Background(), "token", in)
			if err != nil || !bytes.Equal(ours, sdkOut) {
				t.Fatalf("token: go-sdk %s\nours %s (%v)", sdkOut, ours, err)
			}
		})
	}
}
