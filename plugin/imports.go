//go:build wasip1

package main

import "github.com/extism/go-pdk"

// The host functions of ABI v1 (abi/ABI.md, "Imports"). Each takes the handle of an Extism memory block
// holding JSON and returns the handle of a block holding the JSON answer. This file is the only place
// that declares them.

//go:wasmimport extism:host/user http_send
func hostHTTPSend(uint64) uint64

//go:wasmimport extism:host/user cache_get
func hostCacheGet(uint64) uint64

//go:wasmimport extism:host/user cache_set
func hostCacheSet(uint64) uint64

//go:wasmimport extism:host/user cache_delete
func hostCacheDelete(uint64) uint64

// hostImports implements core.Imports with the host functions above.
type hostImports struct{}

func (hostImports) HTTPSend(in []byte) []byte    { return call(hostHTTPSend, in) }
func (hostImports) CacheGet(in []byte) []byte    { return call(hostCacheGet, in) }
func (hostImports) CacheSet(in []byte) []byte    { return call(hostCacheSet, in) }
func (hostImports) CacheDelete(in []byte) []byte { return call(hostCacheDelete, in) }

// call copies in to a host block, calls fn and reads the answer, freeing both blocks.
func call(fn func(uint64) uint64, in []byte) []byte {
	mem := pdk.AllocateBytes(in)
	off := fn(mem.Offset())
	mem.Free()
	if off == 0 {
		return nil
	}
	out := pdk.FindMemory(off)
	b := out.ReadBytes()
	out.Free()
	return b
}
