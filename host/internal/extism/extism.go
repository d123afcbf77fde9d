// Package extism is a lean Extism host on wazero: it implements the Extism kernel (module
// extism:host/env: memory blocks, input, output, errors, logs) in Go, so a call costs a few
// microseconds instead of the official SDK's hundred, but for the functions a plugin calls for every
// 8 bytes it reads or writes, which run in a small wasm module of each instance (kernel.wat) on the
// memory that holds the blocks: a call from wasm into Go costs more than those functions do. Plugins
// built with any Extism PDK run unchanged; the kernel semantics are kept exactly (see "Kernel
// semantics" below).
//
// # Kernel semantics
//
//   - Memory blocks live in a kernel arena separate from the plugin's linear memory, addressed by u64
//     offsets; 0 is null; alloc(0) returns 0; length of an offset that starts no block is 0.
//   - The arena is reset at the start of every call; blocks do not outlive a call.
//   - An export has signature () -> i32; a non-zero result is a failure whose message is what the
//     plugin passed to error_set.
//   - Config and vars are empty; http_request is not offered (the host's own imports do I/O).
//
// An Instance is single-threaded: pool them for concurrent callers.
package extism

import (
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// kernelBinary is the kernel module, built from kernel.wat (see there).
//
//go:embed kernel.wasm
var kernelBinary []byte

// EnvModule is the import module of the Extism kernel functions.
const EnvModule = "extism:host/env"

// HostFunc implements one user import of signature (i64) -> i64: it gets the bytes of the block the
// plugin passed and returns the bytes to put in a new block, whose offset the plugin receives.
//
// # Notes
//   - input is only valid during the call; copy what must outlive it.
//   - ctx is the context the caller passed to Instance.Call.
type HostFunc func(ctx context.Context, input []byte) []byte

// Config bounds a Module's instances.
type Config struct {
	// MemoryLimitPages caps each instance's linear memory, and its kernel memory (the blocks, and an
	// input of up to 256 KiB), in 64 KiB pages (0: 1024, 64 MiB).
	MemoryLimitPages uint32
	// KernelMemoryLimit caps each instance's block arena in bytes; alloc beyond it returns 0 (0: 64 MiB).
	// The arena is a wasm memory, so MemoryLimitPages caps it as well: the lower of the two holds.
	KernelMemoryLimit int
	// CompilationCache, when set, is shared with other runtimes so compiling happens once.
	CompilationCache wazero.CompilationCache
	// Logger receives the plugin's log_* calls; nil discards them.
	Logger *slog.Logger
	// Interruptible makes a call stop inside pure wasm code when its context ends (wazero's
	// CloseOnContextDone). It costs a goroutine per call, measured at about 100 us on a 2-core
	// machine, so it is off by default: then a call stops at its next host function call after the
	// context ends, which is soon for a plugin that, like tokenwasm's, calls the host every few
	// microseconds; only a loop that never calls the host would run on.
	Interruptible bool
}

// Module is a compiled plugin: compile once, instantiate many times.
type Module struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	kernel   wazero.CompiledModule // kernel.wasm: one instance of it per plugin instance
	cfg      Config
	seq      atomic.Uint64
}

// Compile compiles wasm and links it to the kernel functions, WASI and the user imports in module
// userModule.
func Compile(ctx context.Context, wasm []byte, userModule string, imports map[string]HostFunc, cfg Config) (*Module, error) {
	if cfg.MemoryLimitPages == 0 {
		cfg.MemoryLimitPages = 1024
	}
	if cfg.KernelMemoryLimit == 0 {
		cfg.KernelMemoryLimit = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(cfg.Interruptible).WithMemoryLimitPages(cfg.MemoryLimitPages)
	if cfg.CompilationCache != nil {
		rc = rc.WithCompilationCache(cfg.CompilationCache)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	m := &Module{rt: rt, cfg: cfg}
	fail := func(err error) (*Module, error) {
		_ = rt.Close(ctx)
		return nil, err
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return fail(err)
	}
	if _, err := envModule(rt.NewHostModuleBuilder(goEnvModule), cfg.Logger).Instantiate(ctx); err != nil {
		return fail(err)
	}
	kernel, err := rt.CompileModule(ctx, kernelBinary)
	if err != nil {
		return fail(err)
	}
	m.kernel = kernel
	if len(imports) > 0 {
		b := rt.NewHostModuleBuilder(userModule)
		for name, fn := range imports {
			b.NewFunctionBuilder().WithGoModuleFunction(userFunc(fn), i64, i64).Export(name)
		}
		if _, err := b.Instantiate(ctx); err != nil {
			return fail(err)
		}
	}
	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return fail(err)
	}
	m.compiled = compiled
	return m, nil
}

// Close releases the runtime and every instance.
func (m *Module) Close(ctx context.Context) error { return m.rt.Close(ctx) }

// Instance is one instantiation of a Module. It is not safe for concurrent use.
type Instance struct {
	mod    api.Module
	fns    map[string]api.Function
	stack  [1]uint64
	broken bool
	logger *slog.Logger
	Kernel // the block arena (in its kernel module's memory) and the call's input, output and error
}

type block struct {
	off, len uint64
	freed    bool
}

// arenaBase is the first offset handed out: offsets below it are never valid, so 0 stays null, and
// a kernel module keeps its header there. A copied input starts at it (kernel.wat has it as 64;
// TestKernelBounds reads the input's edges through it).
const arenaBase = 64

// Instantiate creates an instance with the real clock and a cryptographic random source (wazero's
// defaults are a fake clock and a fixed seed), and runs the reactor's _initialize.
func (m *Module) Instantiate(ctx context.Context) (*Instance, error) {
	i := &Instance{fns: map[string]api.Function{}, logger: m.cfg.Logger, Kernel: *NewKernel(m.cfg.KernelMemoryLimit)}
	seq := strconv.FormatUint(m.seq.Add(1), 10)
	// Anonymous: no other module can import it by a name, so only this instance's plugin reaches it,
	// through the resolver below, and only its functions (it exports nothing else).
	kmod, err := m.rt.InstantiateModule(ctx, m.kernel, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		return nil, fmt.Errorf("extism: instantiate the kernel: %w", err)
	}
	i.wasm = &kernelWasm{mod: kmod}
	i.arena = i.wasm.view()[:arenaBase]
	i.Begin(nil) // the header, before _initialize can call the kernel
	mc := wazero.NewModuleConfig().
		WithName("plugin-" + seq).
		WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader).
		WithStdout(io.Discard).WithStderr(io.Discard).
		WithStartFunctions()
	cc := &callContext{ctx, i}
	// The plugin's extism:host/env is this instance's own kernel module.
	resolve := experimental.WithImportResolver(cc, func(name string) api.Module {
		if name == EnvModule {
			return kmod
		}
		return nil
	})
	mod, err := m.rt.InstantiateModule(resolve, m.compiled, mc)
	if err == nil {
		i.mod = mod
		if init := mod.ExportedFunction("_initialize"); init != nil {
			err = init.CallWithStack(cc, i.stack[:])
		}
	}
	if err != nil {
		if i.mod != nil {
			_ = i.mod.Close(ctx)
		}
		_ = kmod.Close(ctx)
		return nil, fmt.Errorf("extism: instantiate: %w", err)
	}
	return i, nil
}

// ErrTrap marks a call that trapped (unreachable, out-of-bounds access, a failed host function). The
// instance is broken afterwards.
var ErrTrap = errors.New("extism: plugin trapped")

// ExitError is a call that returned a non-zero code; the instance stays usable.
type ExitError struct {
	Export  string
	Code    int32
	Message string // what the plugin passed to error_set
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("extism: %s returned %d: %s", e.Export, e.Code, e.Message)
}

// Call runs export with input and returns its output.
//
// # Notes
//   - The output aliases the instance's arena: it is valid until the next Call or Close.
//   - A trap returns an error wrapping ErrTrap; a done ctx returns one wrapping ctx.Err(). Both leave
//     the instance Broken. Errors never include input or output bytes (they may hold secrets).
func (i *Instance) Call(ctx context.Context, export string, input []byte) ([]byte, error) {
	if i.broken {
		return nil, fmt.Errorf("%w: instance is broken", ErrTrap)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("extism: %s: %w", export, err)
	}
	fn, ok := i.fns[export]
	if !ok {
		if fn = i.mod.ExportedFunction(export); fn == nil {
			return nil, fmt.Errorf("extism: no export %q", export)
		}
		i.fns[export] = fn
	}
	i.Begin(input)
	i.stack[0] = 0
	err := fn.CallWithStack(&callContext{ctx, i}, i.stack[:])
	if err != nil {
		i.input = nil
		i.broken = true
		if ctx.Err() != nil {
			return nil, fmt.Errorf("extism: %s: %w", export, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrTrap, export, trapReason(err))
	}
	out, err := i.End(export, int32(uint32(i.stack[0])))
	if errors.Is(err, ErrTrap) {
		i.broken = true
	}
	return out, err
}

// trapReason keeps the first line of wazero's error (the trap kind) and drops the stack trace.
func trapReason(err error) string {
	s := err.Error()
	for j := 0; j < len(s); j++ {
		if s[j] == '\n' {
			return s[:j]
		}
	}
	return s
}

// CallBytes returns how many bytes of kernel memory the last call used: the blocks the plugin and the
// host functions allocated, its output among them (not its input). A host may recycle an instance after a
// call that moved megabytes, so a pathological call's garbage never burdens the next one.
func (k *Kernel) CallBytes() int { return len(k.arena) - int(k.base) }

// MemorySize returns the size of the plugin's linear memory in bytes (for measuring per-instance
// cost; the kernel's memory is apart, and holds about what the largest call moved).
func (i *Instance) MemorySize() uint32 { return i.mod.Memory().Size() }

// Broken reports whether the instance trapped, ran past its deadline or failed on memory: throw it away.
func (i *Instance) Broken() bool { return i.broken }

// Close releases the instance.
func (i *Instance) Close(ctx context.Context) error {
	i.broken = true
	return errors.Join(i.mod.Close(ctx), i.wasm.mod.Close(ctx))
}

// callContext carries the instance to host functions without a map lookup per host call. It is
// allocated per call and never mutated: wazero's deadline watcher may read it after the call returns.
type callContext struct {
	context.Context
	inst *Instance
}

type instanceKey struct{}

func (c *callContext) Value(key any) any {
	if key == (instanceKey{}) {
		return c.inst
	}
	return c.Context.Value(key)
}

func instanceOf(ctx context.Context) *Instance {
	if cc, ok := ctx.(*callContext); ok {
		return cc.inst
	}
	return ctx.Value(instanceKey{}).(*Instance)
}

// callerContext returns the caller's own ctx for user host functions.
func callerContext(ctx context.Context) context.Context {
	if cc, ok := ctx.(*callContext); ok {
		return cc.Context
	}
	return ctx
}
