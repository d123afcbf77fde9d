package extism

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sort"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

var (
	none   = []api.ValueType{}
	i32    = []api.ValueType{api.ValueTypeI32}
	i64    = []api.ValueType{api.ValueTypeI64}
	i64i32 = []api.ValueType{api.ValueTypeI64, api.ValueTypeI32}
	i64i64 = []api.ValueType{api.ValueTypeI64, api.ValueTypeI64}
)

// Trap is what a kernel function panics with to abort the call (an access out of bounds, the kernel
// memory limit, a canceled call): wazero turns the panic into an error of the call; another engine's
// adapter recovers it and raises its own trap.
type Trap string

func (t Trap) Error() string { return string(t) }

// Kernel is the engine-independent state of the Extism kernel for one instance: the block arena
// and the current call's input, output and error. Its arena is Go memory (NewKernel), or for wazero
// the memory of the instance's kernel module (kernel.wat), whose own functions then read and write
// it without a call into Go. Instance embeds one for wazero; Funcs are its kernel functions for any
// engine (the wasmtime conformance module, host/wasmtimetest, adapts them).
type Kernel struct {
	input  []byte
	arena  []byte // the arena's bytes [0, end); its capacity is the memory it has
	base   uint64 // the first offset a block may have: arenaBase, or past the input copied in
	blocks []block
	outOff uint64
	outLen uint64
	errMsg string
	limit  int         // bytes of arena, past which alloc returns 0
	wasm   *kernelWasm // the kernel module, whose memory holds the arena; nil: the arena is Go memory
}

// kernelWasm is an instance's kernel module (kernel.wat), whose memory holds the arena.
type kernelWasm struct{ mod api.Module }

// The header of a kernel module's memory, below arenaBase (kernel.wat): where blocks start and the
// arena ends, the input's length, and whether the input is there (at arenaBase, which kernel.wat
// knows as 64).
const (
	headerBase = 8 * iota
	headerEnd
	headerInLen
	headerInCopied
)

// maxCopiedInput is the largest input copied into a kernel module's memory for the plugin to read in
// wasm; a larger one is read through Go, so that one large call does not leave every later one a
// memory that large.
const maxCopiedInput = 256 << 10

// NewKernel returns a kernel whose arena, in Go memory, holds at most limit bytes.
func NewKernel(limit int) *Kernel {
	return &Kernel{arena: make([]byte, arenaBase, 4096), base: arenaBase, limit: limit}
}

// Begin starts a call with input: the arena of the call before is reset. With a kernel module, an
// input of at most maxCopiedInput bytes is copied to the start of its memory, before the blocks.
func (k *Kernel) Begin(input []byte) {
	k.input = input
	k.base = arenaBase
	k.arena = k.arena[:arenaBase]
	k.blocks = k.blocks[:0]
	k.outOff, k.outLen = 0, 0
	k.errMsg = ""
	if k.wasm == nil {
		return
	}
	copied := uint64(0)
	if base := arenaBase + (uint64(len(input))+7)&^7; len(input) <= maxCopiedInput && k.room(base) {
		k.arena = k.arena[:base]
		copy(k.arena[arenaBase:], input)
		k.base, copied = base, 1
	}
	k.header(headerInLen, uint64(len(input)))
	k.header(headerInCopied, copied)
	k.header(headerBase, k.base)
	k.sync()
}

// header writes a field of the kernel module's header.
func (k *Kernel) header(field int, v uint64) { binary.LittleEndian.PutUint64(k.arena[field:], v) }

// sync tells the kernel module where the arena ends now.
func (k *Kernel) sync() {
	if k.wasm != nil {
		k.header(headerEnd, uint64(len(k.arena)))
	}
}

// room makes the arena's memory hold n bytes, its contents kept: Go memory is replaced by an array at
// least twice as large, a kernel module's memory grown (doubled, or as far as its limit allows).
// False when the memory cannot hold n bytes.
func (k *Kernel) room(n uint64) bool {
	if n <= uint64(cap(k.arena)) {
		return true
	}
	if k.wasm == nil {
		grown := make([]byte, len(k.arena), max(n, 2*uint64(cap(k.arena))))
		copy(grown, k.arena)
		k.arena = grown
		return true
	}
	mem := k.wasm.mod.Memory()
	size := uint64(mem.Size())
	pages := func(bytes uint64) uint32 { return uint32((bytes - size + 65535) / 65536) }
	if _, ok := mem.Grow(pages(max(n, 2*size))); !ok {
		if _, ok := mem.Grow(pages(n)); !ok {
			return false
		}
	}
	k.arena = k.wasm.view()[:len(k.arena)]
	return true
}

// view returns the kernel module's whole memory (wazero's view of it changes when it grows).
func (w *kernelWasm) view() []byte {
	b, _ := w.mod.Memory().Read(0, w.mod.Memory().Size())
	return b
}

// End finishes a call whose export returned code: its output, an *ExitError for a non-zero code, or
// an error wrapping ErrTrap when the output lies outside kernel memory. The output aliases the arena:
// it is valid until the next Begin.
func (k *Kernel) End(export string, code int32) ([]byte, error) {
	k.input = nil
	if code != 0 {
		return nil, &ExitError{Export: export, Code: code, Message: k.errMsg}
	}
	end := k.outOff + k.outLen
	if end < k.outOff || end > uint64(len(k.arena)) {
		return nil, fmt.Errorf("%w: %s: output outside kernel memory", ErrTrap, export)
	}
	return k.arena[k.outOff:end], nil
}

// Func is one kernel function of EnvModule: its wasm signature and its body, which reads its
// parameters from stack and leaves its result in stack[0] (wazero's convention, which any engine can
// adapt to). A body panics with a Trap to abort the call.
type Func struct {
	Name            string
	Params, Results []api.ValueType
	Call            func(k *Kernel, stack []uint64)
}

// Funcs returns the Extism kernel functions, with the signatures of go-pdk v1.1.3; log receives the
// plugin's log_* calls.
func Funcs(log *slog.Logger) []Func {
	var fs []Func
	def := func(name string, params, results []api.ValueType, fn func(k *Kernel, stack []uint64)) {
		fs = append(fs, Func{name, params, results, fn})
	}
	def("alloc", i64, i64, func(k *Kernel, s []uint64) { s[0] = k.alloc(s[0]) })
	def("free", i64, none, func(k *Kernel, s []uint64) { k.free(s[0]) })
	def("length", i64, i64, func(k *Kernel, s []uint64) { s[0] = k.length(s[0]) })
	def("length_unsafe", i64, i64, func(k *Kernel, s []uint64) { s[0] = k.length(s[0]) })
	def("load_u8", i64, i32, func(k *Kernel, s []uint64) { s[0] = uint64(k.span(s[0], 1)[0]) })
	def("load_u64", i64, i64, func(k *Kernel, s []uint64) { s[0] = binary.LittleEndian.Uint64(k.span(s[0], 8)) })
	def("store_u8", i64i32, none, func(k *Kernel, s []uint64) { k.span(s[0], 1)[0] = byte(s[1]) })
	def("store_u64", i64i64, none, func(k *Kernel, s []uint64) { binary.LittleEndian.PutUint64(k.span(s[0], 8), s[1]) })
	def("input_length", none, i64, func(k *Kernel, s []uint64) { s[0] = uint64(len(k.input)) })
	def("input_load_u8", i64, i32, func(k *Kernel, s []uint64) { s[0] = uint64(inputSpan(k.input, s[0], 1)[0]) })
	def("input_load_u64", i64, i64, func(k *Kernel, s []uint64) {
		s[0] = binary.LittleEndian.Uint64(inputSpan(k.input, s[0], 8))
	})
	def("output_set", i64i64, none, func(k *Kernel, s []uint64) {
		k.span(s[0], s[1]) // validate now; sliced when the call returns, after any arena growth
		k.outOff, k.outLen = s[0], s[1]
	})
	def("error_set", i64, none, func(k *Kernel, s []uint64) { k.errMsg = string(k.block(s[0])) })
	def("config_get", i64, i64, func(_ *Kernel, s []uint64) { s[0] = 0 })
	def("var_get", i64, i64, func(_ *Kernel, s []uint64) { s[0] = 0 })
	def("var_set", i64i64, none, func(*Kernel, []uint64) {})
	def("http_request", i64i64, i64, func(_ *Kernel, s []uint64) { s[0] = 0 })
	def("http_status_code", none, i32, func(_ *Kernel, s []uint64) { s[0] = 0 })
	def("http_headers", none, i64, func(_ *Kernel, s []uint64) { s[0] = 0 })
	def("get_log_level", none, i32, func(_ *Kernel, s []uint64) { s[0] = uint64(logLevel(log)) })
	for name, level := range map[string]slog.Level{
		"log_trace": slog.LevelDebug - 4, "log_debug": slog.LevelDebug, "log_info": slog.LevelInfo,
		"log_warn": slog.LevelWarn, "log_error": slog.LevelError,
	} {
		def(name, i64, none, func(k *Kernel, s []uint64) {
			log.Log(context.Background(), level, "plugin: "+string(k.block(s[0])))
		})
	}
	return fs
}

// goEnvModule is the module of the kernel functions in Go, which each instance's kernel module
// (kernel.wat) imports and exports again, but for the ones it runs itself.
const goEnvModule = EnvModule + "/go"

// envModule defines the kernel functions in Go for wazero, and the two the kernel module calls to
// trap with Go's message.
func envModule(b wazero.HostModuleBuilder, log *slog.Logger) wazero.HostModuleBuilder {
	fs := append(Funcs(log),
		Func{"oob", none, none, func(*Kernel, []uint64) { panic(Trap("extism: kernel memory access out of bounds")) }},
		Func{"input_oob", none, none, func(*Kernel, []uint64) { panic(Trap("extism: input access out of bounds")) }})
	for _, f := range fs {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
			f.Call(&instanceOf(ctx).Kernel, stack)
		}), f.Params, f.Results).Export(f.Name)
	}
	return b
}

// CallHost runs a user import fn of signature (i64) -> i64 for the block at off: read the block,
// call, store the answer; it returns the answer's offset (0 for none). A call whose ctx has ended
// stops here with a Trap (see Config.Interruptible).
func (k *Kernel) CallHost(ctx context.Context, fn HostFunc, off uint64) uint64 {
	if ctx.Err() != nil {
		panic(Trap("extism: call canceled"))
	}
	out := fn(ctx, k.block(off))
	if ctx.Err() != nil {
		panic(Trap("extism: call canceled"))
	}
	if len(out) == 0 {
		return 0
	}
	at := k.alloc(uint64(len(out)))
	if at == 0 {
		panic(Trap("extism: kernel memory limit reached (KernelMemoryLimit, or MemoryLimitPages for the kernel's memory)"))
	}
	copy(k.arena[at:], out)
	return at
}

// userFunc adapts a HostFunc to an (i64) -> i64 import of wazero.
func userFunc(fn HostFunc) api.GoModuleFunc {
	return func(ctx context.Context, _ api.Module, stack []uint64) {
		stack[0] = instanceOf(ctx).CallHost(callerContext(ctx), fn, stack[0])
	}
}

// logLevel maps the logger's lowest enabled level to Extism's (0 trace ... 4 error, 5 off).
func logLevel(log *slog.Logger) int32 {
	for lvl, sl := range []slog.Level{slog.LevelDebug - 4, slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if log.Enabled(context.Background(), sl) {
			return int32(lvl)
		}
	}
	return 5
}

// alloc reserves n bytes at an 8-aligned offset; 0 when n is 0 or the arena limit is reached.
func (k *Kernel) alloc(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	off := (uint64(len(k.arena)) + 7) &^ 7
	end := off + n
	if end < off || end-k.base+arenaBase > uint64(k.limit) || !k.room(end) {
		return 0
	}
	start := len(k.arena)
	k.arena = k.arena[:end]
	clear(k.arena[start:]) // the arena's memory is reused: no call reads what an earlier one left
	k.blocks = append(k.blocks, block{off: off, len: n})
	k.sync()
	return off
}

// find returns the index of the live block starting at off, or -1.
func (k *Kernel) find(off uint64) int {
	j := sort.Search(len(k.blocks), func(j int) bool { return k.blocks[j].off >= off })
	if j < len(k.blocks) && k.blocks[j].off == off && !k.blocks[j].freed {
		return j
	}
	return -1
}

func (k *Kernel) length(off uint64) uint64 {
	if j := k.find(off); j >= 0 {
		return k.blocks[j].len
	}
	return 0
}

// free releases a block; freed blocks at the end of the arena are reclaimed at once, so a call that
// allocates and frees in turn (every host round trip does) does not grow the arena.
func (k *Kernel) free(off uint64) {
	j := k.find(off)
	if j < 0 {
		return
	}
	k.blocks[j].freed = true
	for n := len(k.blocks); n > 0 && k.blocks[n-1].freed; n = len(k.blocks) {
		k.arena = k.arena[:k.blocks[n-1].off]
		k.blocks = k.blocks[:n-1]
	}
	k.sync()
}

// block returns the bytes of the live block at off; nil for 0 or an unknown offset.
func (k *Kernel) block(off uint64) []byte {
	if j := k.find(off); j >= 0 {
		return k.arena[off : off+k.blocks[j].len]
	}
	return nil
}

// span returns n bytes of the arena at off, trapping outside allocated memory.
func (k *Kernel) span(off, n uint64) []byte {
	if n == 0 {
		return nil
	}
	end := off + n
	if off < k.base || end < off || end > uint64(len(k.arena)) {
		panic(Trap("extism: kernel memory access out of bounds"))
	}
	return k.arena[off:end]
}

func inputSpan(in []byte, off, n uint64) []byte {
	end := off + n
	if end < off || end > uint64(len(in)) {
		panic(Trap("extism: input access out of bounds"))
	}
	return in[off:end]
}
