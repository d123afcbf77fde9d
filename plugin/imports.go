//go:build wasip1

package main

import "github.com/extism/go-pdk"

// The host functions of ABI v1 (abi/ABI.md, "Imports"). Each takes the handle of an Extism memory block
// holding JSON and returns the handle of a block holding the JSON answer. This file is the only place
// that declares them, and the only place beside go-pdk that imports a kernel function (input_length,
// to refuse an oversized input before copying it in).

//go:wasmimport extism:host/env input_length
func inputLength() uint64

//go:wasmimport extism:host/user http_send
func hostHTTPSend(uint64) uint64

//go:wasmimport extism:host/user cache_get
func hostCacheGet(uint64) uint64

//go:wasmimport extism:host/user cache_set
func hostCacheSet(uint64) uint64

//go:wasmimport extism:host/user cache_delete
func hostCacheDelete(uint64) uint64

// hostImports implements core.Imports with the host functions above. (TinyGo cannot take an imported
// function as a value, hence one line per import rather than a table.)
type hostImports struct{}

func (hostImports) HTTPSend(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	return answer(hostHTTPSend(m.Offset()), m)
}

func (hostImports) CacheGet(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	return answer(hostCacheGet(m.Offset()), m)
}

func (hostImports) CacheSet(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	return answer(hostCacheSet(m.Offset()), m)
}

func (hostImports) CacheDelete(in []byte) []byte {
	m := pdk.AllocateBytes(in)
	return answer(hostCacheDelete(m.Offset()), m)
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
