// Package wasmtimetest runs the tokenwasm plugin on wasmtime (wasmtime-go, cgo), the engine that
// Extism's SDKs in other languages (Python, Ruby, .NET, Java, PHP) embed. It is a small test kernel:
// the Extism kernel functions of host/internal/extism, whose block arena lives in Go memory and is
// independent of the engine, adapted to wasmtime host functions, plus the plugin's own imports. Its
// tests hold the plugin to every conformance vector in testdata/, as the Go host does on wazero.
//
// It is a nested module so that wasmtime-go and its cgo build stay out of the tokenwasm module.
package wasmtimetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/bytecodealliance/wasmtime-go/v39"
	"github.com/tetratelabs/wazero/api"
	"github.com/tokenwasm/tokenwasm/host/internal/extism"
)

// memoryLimit caps each instance's linear memory, as the Go host's default does (1024 pages).
const memoryLimit = 64 << 20

// Module is a compiled plugin linked to the kernel, WASI and the user imports.
type Module struct {
	engine *wasmtime.Engine
	module *wasmtime.Module
	linker *wasmtime.Linker
}

// Compile compiles wasm and links it to the kernel functions (extism.EnvModule), WASI and imports
// (in module userModule, each of signature (i64) -> i64).
func Compile(wasm []byte, userModule string, imports map[string]extism.HostFunc) (*Module, error) {
	engine := wasmtime.NewEngine()
	module, err := wasmtime.NewModule(engine, wasm)
	if err != nil {
		return nil, fmt.Errorf("wasmtimetest: compile: %w", err)
	}
	linker := wasmtime.NewLinker(engine)
	if err := linker.DefineWasi(); err != nil {
		return nil, err
	}
	for _, f := range extism.Funcs(slog.New(slog.DiscardHandler)) {
		ty := wasmtime.NewFuncType(valTypes(f.Params), valTypes(f.Results))
		if err := linker.FuncNew(extism.EnvModule, f.Name, ty, kernelFunc(f)); err != nil {
			return nil, err
		}
	}
	i64 := []*wasmtime.ValType{wasmtime.NewValType(wasmtime.KindI64)}
	for name, fn := range imports {
		err := linker.FuncNew(userModule, name, wasmtime.NewFuncType(i64, i64), func(c *wasmtime.Caller, args []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
			inst := c.Data().(*Instance)
			var off uint64
			if t := catch(func() { off = inst.kernel.CallHost(inst.ctx, fn, uint64(args[0].I64())) }); t != nil {
				return nil, t
			}
			return []wasmtime.Val{wasmtime.ValI64(int64(off))}, nil
		})
		if err != nil {
			return nil, err
		}
	}
	return &Module{engine: engine, module: module, linker: linker}, nil
}

// kernelFunc adapts a kernel function to wasmtime: its parameters on a stack, its result off it.
func kernelFunc(f extism.Func) func(*wasmtime.Caller, []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
	return func(c *wasmtime.Caller, args []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
		var stack [2]uint64
		for j, a := range args {
			if a.Kind() == wasmtime.KindI32 {
				stack[j] = uint64(uint32(a.I32()))
			} else {
				stack[j] = uint64(a.I64())
			}
		}
		k := c.Data().(*Instance).kernel
		if t := catch(func() { f.Call(k, stack[:]) }); t != nil {
			return nil, t
		}
		switch {
		case len(f.Results) == 0:
			return nil, nil
		case f.Results[0] == api.ValueTypeI32:
			return []wasmtime.Val{wasmtime.ValI32(int32(uint32(stack[0])))}, nil
		default:
			return []wasmtime.Val{wasmtime.ValI64(int64(stack[0]))}, nil
		}
	}
}

// catch runs f and turns a kernel Trap it panics with into a wasmtime trap; other panics go on.
func catch(f func()) (t *wasmtime.Trap) {
	defer func() {
		if r := recover(); r != nil {
			kt, ok := r.(extism.Trap)
			if !ok {
				panic(r)
			}
			t = wasmtime.NewTrap(kt.Error())
		}
	}()
	f()
	return nil
}

func valTypes(ts []api.ValueType) []*wasmtime.ValType {
	out := make([]*wasmtime.ValType, len(ts))
	for j, t := range ts {
		kind := wasmtime.KindI64
		if t == api.ValueTypeI32 {
			kind = wasmtime.KindI32
		}
		out[j] = wasmtime.NewValType(kind)
	}
	return out
}

// Instance is one instantiation of a Module, with its own store and kernel. It is not safe for
// concurrent use.
type Instance struct {
	store    *wasmtime.Store
	instance *wasmtime.Instance
	kernel   *extism.Kernel
	ctx      context.Context // the current call's, for the user imports
	fns      map[string]*wasmtime.Func
	broken   bool
}

// Instantiate creates an instance with WASI's real clock and randomness, and runs the reactor's
// _initialize.
func (m *Module) Instantiate() (*Instance, error) {
	i := &Instance{kernel: extism.NewKernel(64 << 20), ctx: context.Background(), fns: map[string]*wasmtime.Func{}}
	i.store = wasmtime.NewStoreWithData(m.engine, i)
	i.store.SetWasi(wasmtime.NewWasiConfig())
	i.store.Limiter(memoryLimit, -1, -1, -1, -1)
	inst, err := m.linker.Instantiate(i.store, m.module)
	if err != nil {
		return nil, fmt.Errorf("wasmtimetest: instantiate: %w", err)
	}
	i.instance = inst
	if init := inst.GetFunc(i.store, "_initialize"); init != nil {
		if _, err := init.Call(i.store); err != nil {
			return nil, fmt.Errorf("wasmtimetest: _initialize: %w", err)
		}
	}
	return i, nil
}

// Call runs export with input and returns its output, which is valid until the next Call. A trap
// leaves the instance broken; a non-zero exit code is an *extism.ExitError, as on wazero.
func (i *Instance) Call(ctx context.Context, export string, input []byte) ([]byte, error) {
	if i.broken {
		return nil, errors.New("wasmtimetest: instance is broken")
	}
	fn, ok := i.fns[export]
	if !ok {
		if fn = i.instance.GetFunc(i.store, export); fn == nil {
			return nil, fmt.Errorf("wasmtimetest: no export %q", export)
		}
		i.fns[export] = fn
	}
	i.kernel.Begin(input)
	i.ctx = ctx
	res, err := fn.Call(i.store)
	i.ctx = context.Background()
	if err != nil {
		i.kernel.Begin(nil) // drop the input
		i.broken = true
		return nil, fmt.Errorf("%w: %s: %w", extism.ErrTrap, export, err)
	}
	code, _ := res.(int32)
	out, err := i.kernel.End(export, code)
	if errors.Is(err, extism.ErrTrap) {
		i.broken = true
	}
	return out, err
}
