package gosdkwitness

import (
	"os"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
)

// BenchmarkCall: go-sdk's side of the host package's BenchmarkCall/lean: the same export and input
// on the same plugin (the file named by TOKENWASM_BENCH_WASM, else the embedded build).
func BenchmarkCall(b *testing.B) {
	wasm := host.Plugin()
	if path := os.Getenv("TOKENWASM_BENCH_WASM"); path != "" {
		var err error
		if wasm, err = os.ReadFile(path); err != nil {
			b.Fatal(err)
		}
	}
	in := []byte(`{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"}`)
	b.Run("go-sdk", func(b *testing.B) {
		p := newGoSDKPlugin(b, wasm)
		b.ReportAllocs()
		for b.Loop() {
			if rc, _, err := p.Call(abi.ExportEncode, in); err != nil || rc != 0 {
				b.Fatal(rc, err)
			}
		}
	})
}
