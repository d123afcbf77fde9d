//go:build wasip1

// Command plugin is the tokenwasm Extism plugin: it encodes each provider's token request and decodes
// its response; the host does all I/O through the imports in imports.go. Build it with ../build.sh.
package main

import (
	"time"

	"github.com/extism/go-pdk"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// now reads the WASI wall clock; hosts must give the plugin the real one (abi/ABI.md, "Time").
func now() int64 { return time.Now().UnixMilli() }

// memo remembers the last request prepared: hosts send the same one again and again. Nothing an
// export parses outlives its call, so the memo reuses one storage for every request (core.Memo.Reuse).
var memo = core.Memo{Reuse: true}

//go:wasmexport describe
func describe() int32 { return output(core.Describe()) }

//go:wasmexport encode
func encode() int32 {
	return runRequest(func(in []byte) []byte { return core.Encode(&memo, in, now) })
}

//go:wasmexport decode
func decode() int32 { return run(func(in []byte) []byte { return core.Decode(&memo, in, now) }) }

//go:wasmexport token
func token() int32 {
	return runRequest(func(in []byte) []byte { return core.Token(&memo, in, hostImports{}, now) })
}

//go:wasmexport token_step
func tokenStep() int32 {
	return run(func(in []byte) []byte { return core.TokenStep(&memo, in, now) })
}

//go:wasmexport invalidate
func invalidate() int32 {
	return runRequest(func(in []byte) []byte { return core.Invalidate(&memo, in, hostImports{}) })
}

// inputBuf holds the call's input. It is reused by every call rather than allocated per call:
// TinyGo's collector keeps large buffers alive through false pointers (plugin/core/rawjson.go), so
// a new megabyte per call leaks. Nothing read from it outlives the call (the memo keeps copies).
var inputBuf []byte

// run reads the input of an export that may carry a provider's response (decode, token_step), unless
// it is too large to copy in, and sets what f answers.
func run(f func(input []byte) []byte) int32 {
	if inputLength() > core.MaxInputBytes {
		return output(core.InputTooLarge())
	}
	return read(f)
}

// runRequest is run for an export whose input is a TokenRequest (encode, token, invalidate).
func runRequest(f func(input []byte) []byte) int32 {
	if inputLength() > core.MaxRequestBytes {
		return output(core.RequestTooLarge())
	}
	return read(f)
}

func read(f func(input []byte) []byte) int32 {
	inputBuf = readInto(inputBuf, int(inputLength()), inputSource{})
	return output(f(inputBuf))
}

// output sets the export's JSON result. Every export returns 0: failures are JSON errors.
func output(b []byte) int32 {
	pdk.Output(b)
	return 0
}

func main() {}
