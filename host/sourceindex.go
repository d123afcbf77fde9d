package host

import (
	"hash/maphash"
	"sync/atomic"
	"unsafe"

	"github.com/tokenwasm/tokenwasm/abi"
)

// The source index answers Runtime.Token's "which source serves this request?" without the source
// map's JSON key, SHA-256 and lock: a direct-mapped table of recent answers, read lock-free. A slot is
// only a hint: it is used when its request equals the caller's field by field (a hash collision is a
// miss, never another tenant's source) and no source has left the map since it was filled.

// fastSlots is the index's size: as many as the source map holds.
const fastSlots = maxSources

// fastEntry is one remembered answer; it is never modified once stored.
type fastEntry struct {
	req abi.TokenRequest // the credential set as asked for, per-call fields cleared, maps copied
	src *source
	gen uint64 // the source map's generation when stored
}

// lookup returns the source for req: from the index when it remembers req, else from the map, and
// then remembers it.
func (sm *sourceMap) lookup(c *Runtime, req *abi.TokenRequest) (*source, error) {
	slot := &sm.fast[sm.slot(req)]
	if e := slot.Load(); e != nil && e.gen == sm.gen.Load() && (sameBits(&e.req, req) || sameCredentials(&e.req, req)) {
		return e.src, nil
	}
	s, gen, err := sm.getGen(c, *req)
	if err != nil {
		return nil, err
	}
	e := &fastEntry{req: cloneRequest(*req), src: s, gen: gen}
	clearPerCall(&e.req)
	slot.Store(e)
	return s, nil
}

// slot picks req's slot: the client id's hash, mixed with the lengths of the fields that tell one
// client's credential sets apart (a collision costs a slow lookup, nothing else: the request is
// compared field by field before an entry is used).
func (sm *sourceMap) slot(req *abi.TokenRequest) uint64 {
	h := maphash.String(sm.seed, req.ClientID)
	h ^= (uint64(len(req.Scope)) | uint64(len(req.Username))<<12 | uint64(len(req.RefreshToken))<<24 |
		uint64(len(req.Domain))<<36 | uint64(len(req.TokenURL))<<48) * 0x9e3779b97f4a7c15
	return h % fastSlots
}

// sameCredentials reports whether a and b name the same credential set: every identity field of
// plugin/core's field table equal (the per-call ones aside). Stricter than the map's key (a nil
// Profile differs from an empty one), never looser.
func sameCredentials(a, b *abi.TokenRequest) bool {
	return requestFields.identity.same(unsafe.Pointer(a), unsafe.Pointer(b))
}

// sameBits reports whether a and b are the same bits, padding included: then every field is the same
// (the same strings, maps and profile), so they name the same credential set. It is the usual case, a
// caller asking again with the request it asked with, and one memory comparison instead of a loop
// over the fields; any difference at all, a per-call field or a map (the index keeps copies of the
// maps), falls back to sameCredentials.
func sameBits(a, b *abi.TokenRequest) bool {
	type bits = [unsafe.Sizeof(abi.TokenRequest{})]byte
	return *(*bits)(unsafe.Pointer(a)) == *(*bits)(unsafe.Pointer(b))
}

// same is a == b, without a call when both are the same bytes (a caller asking again with the same
// request, the usual case).
func same(a, b string) bool {
	return len(a) == len(b) && (len(a) == 0 || unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true // ranging over an empty map still costs an iterator
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sameProfile(a, b *abi.Profile) bool {
	if a == nil || b == nil {
		return a == b
	}
	return profileFields.identity.same(unsafe.Pointer(a), unsafe.Pointer(b))
}

func sameBool(a, b *bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// cloneRequest copies req's maps and profile, so a caller reusing them for another tenant later
// cannot change what a source sends or what the index compares.
func cloneRequest(req abi.TokenRequest) abi.TokenRequest {
	req.Params, req.Headers, req.Profile = cloneMap(req.Params), cloneMap(req.Headers), cloneProfile(req.Profile)
	return req
}

// fastIndex is the sourceMap's part for lookup.
type fastIndex struct {
	seed maphash.Seed
	gen  atomic.Uint64 // bumped (under sourceMap.mu) whenever a source leaves the map
	fast [fastSlots]atomic.Pointer[fastEntry]
}
