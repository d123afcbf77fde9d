package wasmtimetest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/internal/extism"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// noImports answers every import with an empty object: the calls benchmarked do no I/O.
var noImports = map[string]extism.HostFunc{
	abi.ImportHTTPSend:    func(context.Context, []byte) []byte { return []byte(`{}`) },
	abi.ImportCacheGet:    func(context.Context, []byte) []byte { return []byte(`{}`) },
	abi.ImportCacheSet:    func(context.Context, []byte) []byte { return []byte(`{}`) },
	abi.ImportCacheDelete: func(context.Context, []byte) []byte { return []byte(`{}`) },
}

// engine is an instance of the plugin on one engine.
type engine interface {
	Call(ctx context.Context, export string, input []byte) ([]byte, error)
}

// BenchmarkCall: the cost of a call on wasmtime beside the Go host's kernel on wazero, the same
// plugin (host/tokenwasm.wasm) and the same calls: one encode (the call of host's BenchmarkCall), and
// a cached token_step (testdata/flow/cached_hit.json: the step that asks for cache_get, then the one
// that answers the hit).
func BenchmarkCall(b *testing.B) {
	wasm, err := os.ReadFile("../tokenwasm.wasm")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	engines := []struct {
		name string
		new  func(b *testing.B) engine
	}{
		{"wazero", func(b *testing.B) engine {
			m, err := extism.Compile(ctx, wasm, abi.ImportModule, noImports, extism.Config{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = m.Close(ctx) })
			i, err := m.Instantiate(ctx)
			if err != nil {
				b.Fatal(err)
			}
			return i
		}},
		{"wasmtime", func(b *testing.B) engine { return instance(b, wasm, noImports) }},
	}
	encode := []byte(`{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"}`)
	for _, e := range engines {
		b.Run(e.name+"/encode", func(b *testing.B) {
			inst := e.new(b)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := inst.Call(ctx, abi.ExportEncode, encode); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(e.name+"/token_step_cached", func(b *testing.B) {
			inst := e.new(b)
			first, second := cachedHit(b, inst)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := inst.Call(ctx, abi.ExportTokenStep, first); err != nil {
					b.Fatal(err)
				}
				if _, err := inst.Call(ctx, abi.ExportTokenStep, second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// cachedHit returns the two token_step inputs of testdata/flow/cached_hit.json: the request, then the
// request with the state of the first answer and the cache hit; it checks that the second answers
// the cached token.
func cachedHit(b *testing.B, inst engine) (first, second []byte) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range vs {
		if v.Name != "flow/cached_hit" {
			continue
		}
		var in struct {
			Request json.RawMessage `json:"request"`
		}
		if err := json.Unmarshal(v.Input, &in); err != nil {
			b.Fatal(err)
		}
		out, err := inst.Call(context.Background(), abi.ExportTokenStep, v.Input)
		if err != nil {
			b.Fatal(err)
		}
		a, err := conformance.ParseStep(out)
		if err != nil || a.Next == nil {
			b.Fatalf("first step: %s %v", out, err)
		}
		second, _ = json.Marshal(map[string]any{"request": in.Request, "state": a.State, "answer": v.Steps[0].Answer})
		out, err = inst.Call(context.Background(), abi.ExportTokenStep, second)
		if err != nil || !bytes.Contains(out, []byte(`"cached":true`)) {
			b.Fatalf("second step: %s %v", out, err)
		}
		return v.Input, second
	}
	b.Fatal("no flow/cached_hit vector")
	return nil, nil
}
