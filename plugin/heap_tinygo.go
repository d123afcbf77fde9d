//go:build wasip1 && tinygo

package main

import _ "unsafe" // go:linkname

// The plugin grows its heap once, at start. TinyGo's collector starts with the heap that fits in
// the module's first pages (57 KB) and grows it only when a collection frees less than a third of
// it; a token fetch allocates about 3.4 KB, so the plugin collected every eleven fetches or so, each
// collection scanning every global. Two doublings of the heap (to 768 KB of linear memory) make
// collections some fifteen times rarer. A host whose memory limit is lower keeps what it allows:
// growHeap answers false, nothing traps. (An allocation of that size does not do it: TinyGo runs
// init at compile time and would make it data, and at a low limit it traps.) The standard Go build
// has a collector of its own and needs none of this.
const heapDoublings = 2

// growHeap doubles the linear memory and gives the new half to the heap; false when the host's
// limit refuses it. It is the TinyGo runtime's own (src/runtime/arch_tinygowasm.go, TinyGo 0.40.1,
// the version build.sh pins); TestHeapGrownAtStart fails if it stops working.
//
//go:linkname growHeap runtime.growHeap
func growHeap() bool

func init() {
	for range heapDoublings {
		if !growHeap() {
			break
		}
	}
}
