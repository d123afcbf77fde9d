package extism

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

// TestKernelBounds reads and writes kernel memory at, under and past every edge, through the kernel
// module's functions (an input copied into its memory) and through Go's (an input too large to copy
// in, or a memory limit that leaves no room for it): the same answers either way, and a trap with
// Go's message past an edge.
func TestKernelBounds(t *testing.T) {
	const (
		inputU64 = iota
		inputU8
		blockU64
		blockU8
		storeU64
	)
	peek := func(i *Instance, op, at uint64, size int) (uint64, error) {
		in := make([]byte, max(size, 16))
		binary.LittleEndian.PutUint64(in, op)
		binary.LittleEndian.PutUint64(in[8:], at)
		for j := 16; j < len(in); j++ {
			in[j] = byte(j)
		}
		out, err := i.Call(context.Background(), "peek", in)
		if err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint64(out), nil
	}
	fresh := func(t *testing.T, pages uint32) *Instance {
		return newInstance(t, Config{MemoryLimitPages: pages})
	}
	for _, c := range []struct {
		name  string
		size  int
		pages uint32
		// copied: the input is in the kernel module's memory.
		copied bool
	}{
		{"small input", 64, 0, true},
		{"largest input copied in", maxCopiedInput, 0, true},
		{"input too large to copy in", maxCopiedInput + 1, 0, false},
		{"no room for the input", 100 << 10, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := uint64(c.size)
			i := fresh(t, c.pages)
			ops := []struct {
				op, at uint64
				want   uint64
				trap   string
			}{
				{inputU64, n - 8, binary.LittleEndian.Uint64([]byte{byte(n - 8), byte(n - 7), byte(n - 6), byte(n - 5), byte(n - 4), byte(n - 3), byte(n - 2), byte(n - 1)}), ""},
				{inputU64, n - 7, 0, "input access out of bounds"},
				{inputU64, 1<<64 - 1, 0, "input access out of bounds"},
				{inputU8, n - 1, uint64(byte(n - 1)), ""},
				{inputU8, n, 0, "input access out of bounds"},
			}
			if c.size < 4096 { // copy_input copies a byte per two kernel calls
				ops = append(ops, []struct {
					op, at uint64
					want   uint64
					trap   string
				}{
					{blockU64, n - 8, binary.LittleEndian.Uint64([]byte{byte(n - 8), byte(n - 7), byte(n - 6), byte(n - 5), byte(n - 4), byte(n - 3), byte(n - 2), byte(n - 1)}), ""},
					{blockU64, n - 7, 0, "kernel memory access out of bounds"},
					{blockU8, n - 1, uint64(byte(n - 1)), ""},
					{blockU8, n, 0, "kernel memory access out of bounds"},
					{blockU8, 1<<64 - 1, 0, "kernel memory access out of bounds"},    // the byte before the block: the input's, never the arena's
					{blockU64, 1<<64 - 8*9, 0, "kernel memory access out of bounds"}, // further down, where a copied input lies
					{storeU64, n - 8, 0x0123456789abcdef, ""},
					{storeU64, n - 7, 0, "kernel memory access out of bounds"},
				}...)
			}
			for _, o := range ops {
				if i.Broken() { // by the trap before
					i = fresh(t, c.pages)
				}
				got, err := peek(i, o.op, o.at, c.size)
				switch {
				case o.trap == "" && (err != nil || got != o.want):
					t.Fatalf("op %d at %d: %#x, %v; want %#x", o.op, o.at, got, err, o.want)
				case o.trap != "" && (!errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), o.trap)):
					t.Fatalf("op %d at %d: %v; want a trap: %s", o.op, o.at, err, o.trap)
				}
				if o.trap == "" {
					copied := i.wasm != nil && i.base > arenaBase
					if copied != c.copied {
						t.Fatalf("input copied into the kernel module's memory: %v, want %v", copied, c.copied)
					}
				}
			}
		})
	}
}

// TestKernelIsNoPluginsToReach: a plugin imports the kernel's functions and nothing else of it (no
// memory, no global), and no plugin reaches another instance's kernel, by any name: a kernel module
// is anonymous, and each plugin's extism:host/env is resolved to its own.
func TestKernelIsNoPluginsToReach(t *testing.T) {
	ctx := context.Background()
	newInstance(t, Config{}) // a kernel exists (the first one once was named "kernel-1")
	for _, name := range []string{"memory", "global", "neighbour", "anonymous", "initialize"} {
		t.Run(name, func(t *testing.T) {
			wasm, err := os.ReadFile("testdata/intruder_" + name + ".wasm")
			if err != nil {
				t.Fatal(err)
			}
			m, err := Compile(ctx, wasm, "extism:host/user", nil, Config{})
			if err != nil {
				return // refused when compiled: as good
			}
			defer m.Close(ctx)
			if i, err := m.Instantiate(ctx); err == nil {
				_ = i.Close(ctx)
				t.Fatal("instantiated")
			}
		})
	}
}

// TestNoCallReadsAnEarlierOnes: a block a call allocates holds zeros, whatever earlier calls on the
// instance left in kernel memory (their inputs, their blocks, their output), on either path of the
// input.
func TestNoCallReadsAnEarlierOnes(t *testing.T) {
	for _, size := range []int{1 << 10, maxCopiedInput + 1} {
		i := newInstance(t, Config{})
		secret := bytes.Repeat([]byte("client_secret=hunter2;"), size/22+1)[:size]
		if out, err := i.Call(context.Background(), "echo", secret); err != nil || !bytes.Equal(out, secret) {
			t.Fatalf("echo: %v", err)
		}
		if _, err := i.Call(context.Background(), "peek", append(make([]byte, 16), secret...)); err != nil {
			t.Fatalf("peek: %v", err)
		}
		out, err := i.Call(context.Background(), "fresh", make([]byte, 2*size))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(out) - len(bytes.TrimLeft(out, "\x00")); n != len(out) {
			t.Fatalf("input of %d bytes: a new block holds an earlier call's bytes from offset %d: %q", size, n, out[n:min(len(out), n+40)])
		}
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

// TestWasmIsBuiltFromWat: the committed kernel.wasm, and the test plugins, are what wat2wasm makes of
// their .wat now (`make tools` installs wabt; without it the test skips).
func TestWasmIsBuiltFromWat(t *testing.T) {
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm (Debian package wabt) not installed")
	}
	wats, err := filepath.Glob("testdata/*.wat")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range append([]string{"kernel.wat"}, wats...) {
		name = strings.TrimSuffix(name, ".wat")
		out := filepath.Join(t.TempDir(), "out.wasm")
		if b, err := exec.Command("wat2wasm", name+".wat", "-o", out).CombinedOutput(); err != nil {
			t.Fatalf("wat2wasm %s.wat: %v: %s", name, err, b)
		}
		built, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(name + ".wasm")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(built, committed) {
			t.Errorf("%s.wasm is not built from %s.wat: run wat2wasm %s.wat -o %s.wasm", name, name, name, name)
		}
	}
}
