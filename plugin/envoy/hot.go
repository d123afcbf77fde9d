package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// hotToken is one worker's memo of the last token the flow served from shared data. A request that
// finds the same entry before the time the flow would stop serving it gets the same answer without
// running the flow: the flow's answer to a cache hit depends only on the entry it read and the time,
// so the memo adds no rule of its own. Each plugin context (one identity) has its own memo.
//
// "The same entry" is the same CAS and the same bytes. Envoy (proxy-wasm-cpp-host SharedData) gives
// every write a new CAS from one process-wide counter (1, 2, ..., skipping 0 when it wraps);
// proxytest gives a key's first write the CAS passed plus one and each later write the previous CAS
// plus one. In both a rewrite gets a new CAS (until 2^32 writes wrap the counter), so an entry
// deleted and written again, even with the same bytes, is seen as new. The bytes are compared as
// well, so that a host whose CAS repeats (a wrap, a key removed and created again) still never gets
// an answer for bytes other than the ones the flow read.
type hotToken struct {
	raw     string // the entry as the flow's cache_get read it
	cas     uint32
	untilMS int64 // exclusive: the earlier of the entry's expiry and the flow's CachedUntil
	a       answer
	header  string // the header value the answer sets
}

// lookup returns the remembered answer if key's entry is still the one it came from and now is
// before its limit: one shared-data read.
func (h *hotToken) lookup(key string, now int64) (*hotToken, bool) {
	if h.raw == "" || now >= h.untilMS {
		return nil, false
	}
	b, cas, err := proxywasm.GetSharedData(key)
	if err != nil || cas != h.cas || string(b) != h.raw {
		return nil, false
	}
	return h, true
}

// remember keeps the answer f gave after reading read (the flow's last cache_get), if f served it
// from that entry; otherwise it forgets whatever it held.
func (h *hotToken) remember(f *core.Flow, read entry, key string, a answer) {
	until, ok := f.CachedUntil()
	if !ok || a.token == "" || read.key != key || !read.live {
		*h = hotToken{}
		return
	}
	*h = hotToken{raw: read.raw, cas: read.cas, untilMS: min(until, read.untilMS), a: a, header: a.tokenType + " " + a.token}
}
