package wasmtimetest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/host/internal/extism"
)

// TestKernelOnWasmtime holds the test kernel to the faults plugin that host/internal/extism's tests
// run on wazero: echo through the arena and a user import, an error code with its message, traps
// (unreachable, a kernel access out of bounds, memory growth past the cap) and a deadline that ends
// during an import, each with wazero's errors.
func TestKernelOnWasmtime(t *testing.T) {
	wasm, err := os.ReadFile("../internal/extism/testdata/faults.wasm")
	if err != nil {
		t.Fatal(err)
	}
	imports := map[string]extism.HostFunc{
		"echo": func(_ context.Context, in []byte) []byte { return append([]byte("host:"), in...) },
		"slow": func(ctx context.Context, in []byte) []byte { <-ctx.Done(); return in },
	}
	big := bytes.Repeat([]byte{'x', 0, 0xff}, 1<<16)
	tests := []struct {
		export string
		input  []byte
		want   string // the output, when the call succeeds
		check  func(error) bool
		broken bool
	}{
		{"echo", big, string(big), nil, false},
		{"user_echo", []byte("ping"), "host:ping", nil, false},
		{"fail", []byte("boom"), "", func(err error) bool {
			var e *extism.ExitError
			return errors.As(err, &e) && e.Code == 3 && e.Message == "boom"
		}, false},
		{"trap", nil, "", func(err error) bool { return errors.Is(err, extism.ErrTrap) }, true},
		{"oob", nil, "", func(err error) bool {
			return errors.Is(err, extism.ErrTrap) && strings.Contains(err.Error(), "out of bounds")
		}, true},
		{"grow", nil, "", func(err error) bool { return errors.Is(err, extism.ErrTrap) }, true},
		{"slow_import", []byte("boom"), "", func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.export, func(t *testing.T) {
			i := instance(t, wasm, imports)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			out, err := i.Call(ctx, tt.export, tt.input)
			if tt.check == nil {
				if err != nil || string(out) != tt.want {
					t.Fatalf("got %d bytes, %v", len(out), err)
				}
			} else if !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			if err != nil && tt.export != "fail" && strings.Contains(err.Error(), "boom") {
				t.Fatalf("error leaks the input: %v", err)
			}
			if i.broken != tt.broken {
				t.Fatalf("broken = %v", i.broken)
			}
			if !tt.broken {
				if out, err := i.Call(context.Background(), "echo", []byte("ok")); err != nil || string(out) != "ok" {
					t.Fatalf("instance unusable after %s: %q, %v", tt.export, out, err)
				}
			}
		})
	}
}
