package wasmtimetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/internal/extism"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// builds are the plugin builds the tests run: the one the Go host embeds (host/tokenwasm.wasm), and
// the files named by TOKENWASM_WASM_TINYGO and TOKENWASM_WASM_GO when set (`make test-wasmtime` sets
// them to the builds under build/ that exist).
func builds(t testing.TB) map[string][]byte {
	t.Helper()
	embedded, err := os.ReadFile("../tokenwasm.wasm")
	if err != nil {
		t.Fatal(err)
	}
	out, err := conformance.Builds(embedded)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compiled holds each build compiled once for every test and benchmark.
var compiled sync.Map // string(wasm) -> *Module

// instance returns an instance of wasm linked to imports.
func instance(t testing.TB, wasm []byte, imports map[string]extism.HostFunc) *Instance {
	t.Helper()
	m, ok := compiled.Load(string(wasm))
	if !ok {
		c, err := Compile(wasm)
		if err != nil {
			t.Fatal(err)
		}
		m, _ = compiled.LoadOrStore(string(wasm), c)
	}
	i, err := m.(*Module).Instantiate(abi.ImportModule, imports)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// failingImports answer every import with an error: the vectors drive token_step, which asks the
// host for its I/O instead of importing it, so none of them may be called.
func failingImports(t *testing.T) map[string]extism.HostFunc {
	imports := map[string]extism.HostFunc{}
	for _, name := range []string{abi.ImportHTTPSend, abi.ImportCacheGet, abi.ImportCacheSet, abi.ImportCacheDelete} {
		imports[name] = func(context.Context, []byte) []byte {
			t.Errorf("import %s called", name)
			return []byte(`{"error":"not scripted"}`)
		}
	}
	return imports
}

// caller returns a conformance.Call on inst; it copies each answer, which aliases the kernel arena.
func caller(inst *Instance) conformance.Call {
	return func(export string, in []byte) ([]byte, error) {
		out, err := inst.Call(context.Background(), export, in)
		return bytes.Clone(out), err
	}
}

// TestVectorsOnWasmtime runs every conformance vector (encode, decode, describe, the token_step flow
// vectors of testdata/flow) through each plugin build on wasmtime, and every encode and decode vector
// again through the token_step flow, as host's TestVectorsThroughWasm does on wazero.
func TestVectorsOnWasmtime(t *testing.T) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	for name, wasm := range builds(t) {
		t.Run(name, func(t *testing.T) {
			call := caller(instance(t, wasm, failingImports(t)))
			flows, steps := 0, 0
			for _, v := range vs {
				if err := v.Check(call); err != nil {
					t.Errorf("%s: %v", v.Name, err)
				}
				if len(v.Steps) > 0 {
					flows++
				}
				if ok, err := v.ThroughSteps(call); err != nil {
					t.Errorf("%s through token_step: %v", v.Name, err)
				} else if ok {
					steps++
				}
			}
			t.Logf("%d vectors (%d token_step flows), %d of them again through token_step", len(vs), flows, steps)
			if flows < 40 || steps < 50 {
				t.Fatalf("only %d flow vectors and %d through token_step", flows, steps)
			}
		})
	}
}

// TestTokenExportOnWasmtime drives each valid encode vector's request through the token export,
// whose I/O goes through the plugin's imports on wasmtime, and through the token_step flow with the
// same answers: both ask for the same actions in the same order and end with the same answer.
func TestTokenExportOnWasmtime(t *testing.T) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	for name, wasm := range builds(t) {
		t.Run(name, func(t *testing.T) {
			var log []string // the actions asked for, in order
			do := func(a conformance.Action) []byte {
				// Candescent's transactionId is drawn per request: the same in both runs is not asked.
				log = append(log, a.Import+" "+uuid.ReplaceAllString(string(a.Input), "<uuid>"))
				switch a.Import {
				case abi.ImportCacheGet:
					return []byte(`{"hit":false}`)
				case abi.ImportHTTPSend:
					return []byte(`{"status":200,"headers":{},"body":"{\"access_token\":\"t\",\"expires_in\":3600}"}`)
				}
				return []byte(`{"stored":true}`)
			}
			imports := map[string]extism.HostFunc{}
			for _, name := range []string{abi.ImportHTTPSend, abi.ImportCacheGet, abi.ImportCacheSet, abi.ImportCacheDelete} {
				imports[name] = func(_ context.Context, in []byte) []byte {
					return do(conformance.Action{Import: name, Input: bytes.Clone(in)})
				}
			}
			call := caller(instance(t, wasm, imports))
			ran := 0
			for _, v := range vs {
				var want, req map[string]json.RawMessage
				if v.Export != abi.ExportEncode || json.Unmarshal(v.Want, &want) != nil || want["request"] == nil ||
					json.Unmarshal(v.Input, &req) != nil || req == nil {
					continue // an encode vector that sends a request
				}
				req["now_ms"] = json.RawMessage("1767225600000") // one clock for both runs
				in, _ := json.Marshal(req)
				log = nil
				stepped, err := conformance.Drive(call, func(a conformance.Action) []byte {
					if a.Import == "sign" {
						return conformance.DummySignature(a.Input)
					}
					return do(a)
				}, in, "")
				if err != nil {
					t.Fatalf("%s: token_step: %v", v.Name, err)
				}
				stepLog := log
				if bytes.Contains(stepped, []byte(`"signing_required"`)) || containsSign(stepLog) {
					continue // token cannot sign; token_step asks the host to (testdata/flow/sign_*.json)
				}
				log = nil
				got, err := call(abi.ExportToken, in)
				if err != nil {
					t.Fatalf("%s: token: %v", v.Name, err)
				}
				if err := conformance.Match(stepped, got); err != nil {
					t.Errorf("%s: token answers unlike token_step: %v", v.Name, err)
				}
				if fmt.Sprint(log) != fmt.Sprint(stepLog) {
					t.Errorf("%s: token's imports\n%q\ntoken_step's actions\n%q", v.Name, log, stepLog)
				}
				ran++
			}
			t.Logf("%d requests through token and token_step", ran)
			if ran < 10 {
				t.Fatalf("only %d requests ran", ran)
			}
		})
	}
}

var uuid = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`)

// containsSign reports whether the flow asked the host to sign (an action the token export cannot ask for).
func containsSign(log []string) bool {
	for _, l := range log {
		if strings.HasPrefix(l, "sign ") {
			return true
		}
	}
	return false
}
