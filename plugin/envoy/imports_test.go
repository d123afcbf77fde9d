//go:build !wasip1

package main

import (
	"context"
	"slices"
	"testing"

	"github.com/tetratelabs/wazero"
)

// TestWASIImports: the compiled filter imports only the WASI functions README.md lists ("WASI
// imports"), which Envoy registers since proxy-wasm-cpp-host PR #427. A package that reads files
// (crypto/x509 does, for the system roots) adds path_open and path_filestat_get, registered only
// since PR #533: an older Envoy would refuse to load the module. The tests' build is checked: it is
// the shipped one and one file (testenv_wasip1.go), so its imports hold the shipped build's.
func TestWASIImports(t *testing.T) {
	if filterWasm == nil {
		t.Fatal("the filter did not build to wasm")
	}
	allowed := []string{"args_get", "args_sizes_get", "clock_time_get", "environ_get", "environ_sizes_get", "fd_close",
		"fd_fdstat_get", "fd_fdstat_set_flags", "fd_prestat_dir_name", "fd_prestat_get", "fd_read", "fd_write",
		"poll_oneoff", "proc_exit", "random_get", "sched_yield"}
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	m, err := r.CompileModule(ctx, filterWasm)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range m.ImportedFunctions() {
		if mod, name, _ := f.Import(); mod == "wasi_snapshot_preview1" {
			n++
			if !slices.Contains(allowed, name) {
				t.Errorf("the filter imports %s.%s, which README.md does not list (and an older Envoy may not register)", mod, name)
			}
		}
	}
	if n == 0 {
		t.Fatal("no WASI import found: the look proves nothing")
	}
}
