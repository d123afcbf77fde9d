package extism

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/internal/race"
)

// faultsWasm is built from testdata/faults.wat with: wat2wasm faults.wat -o faults.wasm
//
//go:embed testdata/faults.wasm
var faultsWasm []byte

func newInstance(t testing.TB, cfg Config) *Instance {
	t.Helper()
	ctx := context.Background()
	m, err := Compile(ctx, faultsWasm, "extism:host/user", map[string]HostFunc{
		"echo": func(_ context.Context, in []byte) []byte { return append([]byte("host:"), in...) },
		"slow": func(ctx context.Context, in []byte) []byte {
			<-ctx.Done() // a host call that outlives the deadline, as a stalled provider would
			return in
		},
	}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(ctx) })
	i, err := m.Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestEcho(t *testing.T) {
	i := newInstance(t, Config{})
	for _, n := range []int{0, 1, 7, 8, 9, 4096, 1 << 20} {
		in := bytes.Repeat([]byte{'x', 0, 0xff}, n)[:n]
		out, err := i.Call(context.Background(), "echo", in)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("echo %d bytes: got %d bytes, %v", n, len(out), err)
		}
	}
	// The arena is reset per call: 16 echoes of 1 MiB keep it at one call's size (input and output,
	// 2 MiB, then doubled), where without the reset it would hold all 32 MiB. Under -race, where the
	// faults plugin's two host calls per byte make each echo seconds long, 4 echoes: 8 MiB without the
	// reset, still over the cap (`make unit` runs the 16 without -race).
	in := bytes.Repeat([]byte{'y'}, 1<<20)
	for range race.Iterations(16, 4) {
		if out, err := i.Call(context.Background(), "echo", in); err != nil || !bytes.Equal(out, in) {
			t.Fatalf("echo 1 MiB: got %d bytes, %v", len(out), err)
		}
	}
	if cap(i.arena) > 4<<20 {
		t.Fatalf("arena grew to %d", cap(i.arena))
	}
}

func TestUserImport(t *testing.T) {
	i := newInstance(t, Config{})
	out, err := i.Call(context.Background(), "user_echo", []byte("ping"))
	if err != nil || string(out) != "host:ping" {
		t.Fatalf("user_echo = %q, %v", out, err)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		export  string
		timeout time.Duration
		check   func(error) bool
		broken  bool
	}{
		{"fail", 0, func(err error) bool {
			var e *ExitError
			return errors.As(err, &e) && e.Code == 3 && e.Message == "boom"
		}, false},
		{"trap", 0, func(err error) bool { return errors.Is(err, ErrTrap) }, true},
		{"oob", 0, func(err error) bool { return errors.Is(err, ErrTrap) && strings.Contains(err.Error(), "out of bounds") }, true},
		{"grow", 0, func(err error) bool { return errors.Is(err, ErrTrap) }, true},
		{"spin", 100 * time.Millisecond, func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, true},
		{"slow_import", 100 * time.Millisecond, func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.export, func(t *testing.T) {
			i := newInstance(t, Config{MemoryLimitPages: 16, Interruptible: tt.export == "spin"})
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			_, err := i.Call(ctx, tt.export, []byte("boom"))
			if !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("took %v", time.Since(start))
			}
			if i.Broken() != tt.broken {
				t.Fatalf("Broken() = %v", i.Broken())
			}
			if strings.Contains(err.Error(), "boom") && tt.export != "fail" {
				t.Fatalf("error leaks the input: %v", err)
			}
			if !tt.broken {
				if out, err := i.Call(context.Background(), "echo", []byte("ok")); err != nil || string(out) != "ok" {
					t.Fatalf("instance unusable after %s: %v", tt.export, err)
				}
			}
		})
	}
}

func TestKernelMemoryLimit(t *testing.T) {
	i := newInstance(t, Config{KernelMemoryLimit: 1024})
	if _, err := i.Call(context.Background(), "echo", make([]byte, 4096)); !errors.Is(err, ErrTrap) {
		t.Fatalf("a block past the kernel limit must trap, got %v", err)
	}
}

func BenchmarkEcho(b *testing.B) {
	i := newInstance(b, Config{})
	in := bytes.Repeat([]byte("a"), 256)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := i.Call(ctx, "echo", in); err != nil {
			b.Fatal(err)
		}
	}
}
