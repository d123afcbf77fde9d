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

// memoryLimit caps each instance's linear memory at the Go host's default (WithMemoryLimit: 512
// pages, 32 MiB).
const memoryLimit = 32 << 20

// Module is a compiled plugin: compile once (cranelift takes seconds for the standard-Go build),
// instantiate many times.
type Module struct {
	engine *wasmtime.Engine
	module *wasmtime.Module
}

// Compile compiles wasm.
func Compile(wasm []byte) (*Module, error) {
	engine := wasmtime.NewEngine()
	module, err := wasmtime.NewModule(engine, wasm)
	if err != nil {
		return nil, fmt.Errorf("wasmtimetest: compile: %w", err)
	}
	return &Module{engine: engine, module: module}, nil
}

// linker links the kernel functions (extism.EnvModule), WASI and imports (in module userModule, each
// of signature (i64) -> i64).
func (m *Module) linker(userModule string, imports map[string]extism.HostFunc) (*wasmtime.Linker, error) {
	linker := wasmtime.NewLinker(m.engine)
	if err := linker.DefineWasi(); err != nil {
		return nil, err
	}
	for _, f := range extism.Funcs(slog.New(slog.DiscardHandler)) {
		ty := wasmtime.NewFuncType(valTypes(f.Params), valTypes(f.Results))
		call := func(i *Instance, stack []uint64) { f.Call(i.kernel, stack) }
		if err := linker.FuncNew(extism.EnvModule, f.Name, ty, hostFunc(f.Results, call)); err != nil {
			return nil, err
		}
	}
	i64 := []api.ValueType{api.ValueTypeI64}
	for name, fn := range imports {
		call := func(i *Instance, stack []uint64) { stack[0] = i.kernel.CallHost(i.ctx, fn, stack[0]) }
		ty := wasmtime.NewFuncType(valTypes(i64), valTypes(i64))
		if err := linker.FuncNew(userModule, name, ty, hostFunc(i64, call)); err != nil {
			return nil, err
		}
	}
	return linker, nil
}

// hostFunc adapts a body over a stack (extism.Func's convention) to a wasmtime host function: the
// parameters go on the instance's stack, stack[0] comes back as the result, and a kernel Trap the
// body panics with becomes a wasmtime trap (other panics go on).
func hostFunc(results []api.ValueType, call func(i *Instance, stack []uint64)) func(*wasmtime.Caller, []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
	return func(c *wasmtime.Caller, args []wasmtime.Val) (_ []wasmtime.Val, t *wasmtime.Trap) {
		defer func() {
			if r := recover(); r != nil {
				kt, ok := r.(extism.Trap)
				if !ok {
					panic(r)
				}
				t = wasmtime.NewTrap(kt.Error())
			}
		}()
		i := c.Data().(*Instance)
		for j, a := range args {
			if a.Kind() == wasmtime.KindI32 {
				i.stack[j] = uint64(uint32(a.I32()))
			} else {
				i.stack[j] = uint64(a.I64())
			}
		}
		call(i, i.stack[:])
		switch {
		case len(results) == 0:
			return nil, nil
		case results[0] == api.ValueTypeI32:
			i.result[0] = wasmtime.ValI32(int32(uint32(i.stack[0])))
		default:
			i.result[0] = wasmtime.ValI64(int64(i.stack[0]))
		}
		return i.result[:], nil // wasmtime copies it out before the next host call
	}
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
	stack    [2]uint64       // a host function's parameters and result
	result   [1]wasmtime.Val // its result for wasmtime
}

// Instantiate creates an instance linked to the kernel, WASI (its real clock and randomness) and
// imports in module userModule, and runs the reactor's _initialize.
func (m *Module) Instantiate(userModule string, imports map[string]extism.HostFunc) (*Instance, error) {
	linker, err := m.linker(userModule, imports)
	if err != nil {
		return nil, err
	}
	i := &Instance{kernel: extism.NewKernel(64 << 20), ctx: context.Background(), fns: map[string]*wasmtime.Func{}}
	i.store = wasmtime.NewStoreWithData(m.engine, i)
	i.store.SetWasi(wasmtime.NewWasiConfig())
	i.store.Limiter(memoryLimit, -1, -1, -1, -1)
	inst, err := linker.Instantiate(i.store, m.module)
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

// Call runs export with input and returns its output, which is valid until the next Call. As on
// wazero, a non-zero exit code is an *extism.ExitError; a trap, or a ctx that ends (seen when the
// plugin next calls an import), leaves the instance broken.
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
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wasmtimetest: %s: %w", export, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %w", extism.ErrTrap, export, err)
	}
	code, _ := res.(int32)
	out, err := i.kernel.End(export, code)
	if errors.Is(err, extism.ErrTrap) {
		i.broken = true
	}
	return out, err
}
