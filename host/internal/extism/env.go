package extism

import (
	"context"
	"encoding/binary"
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

// trap aborts the current call: wazero turns a panic in a host function into an error of the call.
type trap string

func (t trap) Error() string { return string(t) }

// envModule defines the Extism kernel functions, with the signatures of go-pdk v1.1.3.
func envModule(b wazero.HostModuleBuilder, log *slog.Logger) wazero.HostModuleBuilder {
	def := func(name string, params, results []api.ValueType, fn func(i *Instance, stack []uint64)) {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
			fn(instanceOf(ctx), stack)
		}), params, results).Export(name)
	}
	def("alloc", i64, i64, func(i *Instance, s []uint64) { s[0] = i.alloc(s[0]) })
	def("free", i64, none, func(i *Instance, s []uint64) { i.free(s[0]) })
	def("length", i64, i64, func(i *Instance, s []uint64) { s[0] = i.length(s[0]) })
	def("length_unsafe", i64, i64, func(i *Instance, s []uint64) { s[0] = i.length(s[0]) })
	def("load_u8", i64, i32, func(i *Instance, s []uint64) { s[0] = uint64(i.span(s[0], 1)[0]) })
	def("load_u64", i64, i64, func(i *Instance, s []uint64) { s[0] = binary.LittleEndian.Uint64(i.span(s[0], 8)) })
	def("store_u8", i64i32, none, func(i *Instance, s []uint64) { i.span(s[0], 1)[0] = byte(s[1]) })
	def("store_u64", i64i64, none, func(i *Instance, s []uint64) { binary.LittleEndian.PutUint64(i.span(s[0], 8), s[1]) })
	def("input_length", none, i64, func(i *Instance, s []uint64) { s[0] = uint64(len(i.input)) })
	def("input_load_u8", i64, i32, func(i *Instance, s []uint64) { s[0] = uint64(inputSpan(i.input, s[0], 1)[0]) })
	def("input_load_u64", i64, i64, func(i *Instance, s []uint64) {
		s[0] = binary.LittleEndian.Uint64(inputSpan(i.input, s[0], 8))
	})
	def("output_set", i64i64, none, func(i *Instance, s []uint64) {
		i.span(s[0], s[1]) // validate now; sliced when the call returns, after any arena growth
		i.outOff, i.outLen = s[0], s[1]
	})
	def("error_set", i64, none, func(i *Instance, s []uint64) { i.errMsg = string(i.block(s[0])) })
	def("config_get", i64, i64, func(_ *Instance, s []uint64) { s[0] = 0 })
	def("var_get", i64, i64, func(_ *Instance, s []uint64) { s[0] = 0 })
	def("var_set", i64i64, none, func(*Instance, []uint64) {})
	def("http_request", i64i64, i64, func(_ *Instance, s []uint64) { s[0] = 0 })
	def("http_status_code", none, i32, func(_ *Instance, s []uint64) { s[0] = 0 })
	def("http_headers", none, i64, func(_ *Instance, s []uint64) { s[0] = 0 })
	def("get_log_level", none, i32, func(_ *Instance, s []uint64) { s[0] = uint64(logLevel(log)) })
	for name, level := range map[string]slog.Level{
		"log_trace": slog.LevelDebug - 4, "log_debug": slog.LevelDebug, "log_info": slog.LevelInfo,
		"log_warn": slog.LevelWarn, "log_error": slog.LevelError,
	} {
		def(name, i64, none, func(i *Instance, s []uint64) {
			log.Log(context.Background(), level, "plugin: "+string(i.block(s[0])))
		})
	}
	return b
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

// userFunc adapts a HostFunc to an (i64) -> i64 import: read the block, call, store the answer. A
// call whose context has ended stops here (see Config.Interruptible).
func userFunc(fn HostFunc) api.GoModuleFunc {
	return func(ctx context.Context, _ api.Module, stack []uint64) {
		i := instanceOf(ctx)
		caller := callerContext(ctx)
		if caller.Err() != nil {
			panic(trap("extism: call canceled"))
		}
		out := fn(caller, i.block(stack[0]))
		if caller.Err() != nil {
			panic(trap("extism: call canceled"))
		}
		if len(out) == 0 {
			stack[0] = 0
			return
		}
		off := i.alloc(uint64(len(out)))
		if off == 0 {
			panic(trap("extism: kernel memory limit reached"))
		}
		copy(i.arena[off:], out)
		stack[0] = off
	}
}

// alloc reserves n bytes at an 8-aligned offset; 0 when n is 0 or the arena limit is reached.
func (i *Instance) alloc(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	off := (uint64(len(i.arena)) + 7) &^ 7
	end := off + n
	if end > uint64(i.limit) || end < off {
		return 0
	}
	if end > uint64(cap(i.arena)) {
		grown := make([]byte, end, max(end, 2*uint64(cap(i.arena))))
		copy(grown, i.arena)
		i.arena = grown
	} else {
		i.arena = i.arena[:end]
	}
	i.blocks = append(i.blocks, block{off: off, len: n})
	return off
}

// find returns the index of the live block starting at off, or -1.
func (i *Instance) find(off uint64) int {
	j := sort.Search(len(i.blocks), func(j int) bool { return i.blocks[j].off >= off })
	if j < len(i.blocks) && i.blocks[j].off == off && !i.blocks[j].freed {
		return j
	}
	return -1
}

func (i *Instance) length(off uint64) uint64 {
	if j := i.find(off); j >= 0 {
		return i.blocks[j].len
	}
	return 0
}

// free releases a block; freed blocks at the end of the arena are reclaimed at once, so a call that
// allocates and frees in turn (every host round trip does) does not grow the arena.
func (i *Instance) free(off uint64) {
	j := i.find(off)
	if j < 0 {
		return
	}
	i.blocks[j].freed = true
	for n := len(i.blocks); n > 0 && i.blocks[n-1].freed; n = len(i.blocks) {
		i.arena = i.arena[:i.blocks[n-1].off]
		i.blocks = i.blocks[:n-1]
	}
}

// block returns the bytes of the live block at off; nil for 0 or an unknown offset.
func (i *Instance) block(off uint64) []byte {
	if j := i.find(off); j >= 0 {
		return i.arena[off : off+i.blocks[j].len]
	}
	return nil
}

// span returns n bytes of the arena at off, trapping outside allocated memory.
func (i *Instance) span(off, n uint64) []byte {
	if n == 0 {
		return nil
	}
	end := off + n
	if off < arenaBase || end < off || end > uint64(len(i.arena)) {
		panic(trap("extism: kernel memory access out of bounds"))
	}
	return i.arena[off:end]
}

func inputSpan(in []byte, off, n uint64) []byte {
	end := off + n
	if end < off || end > uint64(len(in)) {
		panic(trap("extism: input access out of bounds"))
	}
	return in[off:end]
}
