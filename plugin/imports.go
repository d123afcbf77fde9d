//go:build wasip1

package main

import (
	"encoding/binary"

	"github.com/extism/go-pdk"
)

// The host functions of ABI v1 (abi/ABI.md, "Imports"). Each takes the handle of an Extism memory block
// holding JSON and returns the handle of a block holding the JSON answer. This file is the only place
// that declares them, and the only place beside go-pdk that imports a kernel function (input_length,
// to refuse an oversized input before copying it in, and the load functions, to read the input and
// http_send's answer into buffers that are reused).

// inputLength returns the length in bytes of the call's input; 0: an empty input. Kernel function
// (abi/ABI.md, "The host side").
//
//go:wasmimport extism:host/env input_length
func inputLength() uint64

// inputLoadU64 returns the 8 bytes of the call's input from the offset, little-endian. Kernel
// function (abi/ABI.md, "The host side").
//
//go:wasmimport extism:host/env input_load_u64
func inputLoadU64(uint64) uint64

// inputLoadU8 returns the byte of the call's input at the offset, below inputLength(). Kernel
// function (abi/ABI.md, "The host side").
//
//go:wasmimport extism:host/env input_load_u8
func inputLoadU8(uint64) uint32

// loadU64 returns the 8 bytes of kernel memory from the offset (a block's offset plus an index),
// little-endian. Kernel function (abi/ABI.md, "The host side").
//
//go:wasmimport extism:host/env load_u64
func loadU64(uint64) uint64

// loadU8 returns the byte of kernel memory at the offset. Kernel function (abi/ABI.md, "The host
// side").
//
//go:wasmimport extism:host/env load_u8
func loadU8(uint64) uint32

// hostHTTPSend sends one HTTP request: input the offset of a block holding an HttpRequest's JSON,
// output the offset of a block holding the HttpResponse's JSON ({"status","headers","body"}, or
// {"error"} when no response was had, with "policy":true when the host's policy refused it). 0: no
// answer, a transport error (abi/ABI.md, "http_send").
//
//go:wasmimport extism:host/user http_send
func hostHTTPSend(uint64) uint64

// hostCacheGet reads a cache entry: input {"key"}, output {"hit","value"?,"error"?}. 0, or anything
// but a JSON object with "hit":true and a string value, is a miss (abi/ABI.md, "cache_get").
//
//go:wasmimport extism:host/user cache_get
func hostCacheGet(uint64) uint64

// hostCacheSet stores a cache entry: input {"key","value","ttl_ms","nx"?}, output {"stored"?} or
// {"error"}. 0 is {}: stored, nx ignored (abi/ABI.md, "cache_set").
//
//go:wasmimport extism:host/user cache_set
func hostCacheSet(uint64) uint64

// hostCacheDelete deletes a cache entry, only while it holds if_value when given: input
// {"key","if_value"?}, output {} or {"error"}. 0 is {} (abi/ABI.md, "cache_delete").
//
//go:wasmimport extism:host/user cache_delete
func hostCacheDelete(uint64) uint64

// hostImports implements core.Imports with the host functions above. (TinyGo cannot take an imported
// function as a value, hence one line per import rather than a table.)
type hostImports struct{}

// sendBuf holds http_send's answer, reused by every call: a token response can be megabytes once
// JSON-escaped, and TinyGo's collector does not reliably free buffers that large (see inputBuf). The
// flow reads it before it calls http_send again, and keeps nothing from it past the call.
var sendBuf []byte

// HTTPSend calls http_send with an HttpRequest's JSON and returns the answer's JSON, read into
// sendBuf; nil when the host answered 0 (a transport error to the flow).
func (hostImports) HTTPSend(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	off := hostHTTPSend(m.Offset())
	m.Free()
	if off == 0 {
		return nil
	}
	out := pdk.FindMemory(off)
	sendBuf = readInto(sendBuf, int(out.Length()), blockSource(off))
	out.Free()
	return sendBuf
}

// CacheGet calls cache_get; nil when the host answered 0 (a miss).
func (hostImports) CacheGet(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	return answer(hostCacheGet(m.Offset()), m)
}

// CacheSet calls cache_set; nil when the host answered 0 ({}: stored, nx ignored).
func (hostImports) CacheSet(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	return answer(hostCacheSet(m.Offset()), m)
}

// CacheDelete calls cache_delete; nil when the host answered 0 ({}).
func (hostImports) CacheDelete(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	return answer(hostCacheDelete(m.Offset()), m)
}

// source is kernel memory to read: the call's input, or a block.
type source interface {
	u64(i uint64) uint64 // the 8 bytes at i
	u8(i uint64) uint32  // the byte at i
}

// inputSource is the call's input; blockSource the block at an offset. (TinyGo cannot take an
// imported function as a value, hence two small types.)
type (
	inputSource struct{}
	blockSource uint64
)

func (inputSource) u64(i uint64) uint64   { return inputLoadU64(i) }
func (inputSource) u8(i uint64) uint32    { return inputLoadU8(i) }
func (b blockSource) u64(i uint64) uint64 { return loadU64(uint64(b) + i) }
func (b blockSource) u8(i uint64) uint32  { return loadU8(uint64(b) + i) }

// readInto reads n bytes of src into buf, reusing its array when large enough, 8 at a time as
// go-pdk does.
func readInto(buf []byte, n int, src source) []byte {
	if cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	buf = buf[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], src.u64(uint64(i)))
	}
	for ; i < n; i++ {
		buf[i] = byte(src.u8(uint64(i)))
	}
	return buf
}

// answer frees the block sent and reads (and frees) the host's answer at off; nil when off is 0.
func answer(off uint64, sent pdk.Memory) []byte {
	sent.Free()
	if off == 0 {
		return nil
	}
	out := pdk.FindMemory(off)
	b := out.ReadBytes()
	out.Free()
	return b
}
