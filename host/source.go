package host

import (
	"crypto/sha256"
	"encoding/json"
	"hash/maphash"
	"sync"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
)

// A source (serve.go) serves the tokens of one credential set; the source map (this file) holds one
// per set. Each of a source's concerns has a file, as x/oauth2 composes small token sources
// (tokenRefresher inside reuseTokenSource, under Transport):
//
//   - serve.go: serving from memory, and refreshing ahead of expiry (the plugin's schedule)
//   - flight.go: single flight: one fetch at a time per source, shared by its callers; rotation
//   - fetch.go: one fetch through the plugin, retried within the request's timeout_ms
//   - transport.go: the 401 policy, and the http.RoundTripper that applies it
//   - tokensource.go: TokenSource, the oauth2.TokenSource over a source
//   - sourceindex.go: the lock-free index in front of the source map

// sourceMap holds one source per credential set, keyed by a hash of the request (never the secret).
// It is bounded: rotating credentials (each refresh_token grant is a new set) would otherwise grow it
// for the life of the process.
type sourceMap struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*source
	fastIndex
}

// maxSources bounds sourceMap; past it, idle sources are dropped, least recently used first.
const maxSources = 4096

// evictGrace protects a source asked for this recently from being dropped for holding no token.
const evictGrace = time.Second

func (sm *sourceMap) init() {
	sm.m = make(map[[sha256.Size]byte]*source)
	sm.seed = maphash.MakeSeed()
}

// sourceKey names req's credential set: the per-call fields are not part of it.
func sourceKey(req abi.TokenRequest) ([sha256.Size]byte, abi.TokenRequest, error) {
	clearPerCall(&req)
	b, err := json.Marshal(req)
	if err != nil {
		return [sha256.Size]byte{}, req, err
	}
	return sha256.Sum256(b), req, nil
}

func (sm *sourceMap) get(c *Runtime, req abi.TokenRequest) (*source, error) {
	s, _, err := sm.getGen(c, req)
	return s, err
}

// getGen is get, with the map's generation at the time: an index entry holds while it has not moved.
func (sm *sourceMap) getGen(c *Runtime, req abi.TokenRequest) (*source, uint64, error) {
	key, req, err := sourceKey(req)
	if err != nil {
		return nil, 0, err
	}
	n := c.clock.now().UnixNano()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	s, ok := sm.m[key]
	if !ok {
		if len(sm.m) >= maxSources {
			sm.evict(n)
		}
		s = &source{c: c, req: cloneRequest(req)}
		sm.m[key] = s
	}
	s.lastUsed.Store(n)
	return s, sm.gen.Load(), nil
}

// drop removes key from the map; sm.mu is held. Every index entry goes stale with it.
func (sm *sourceMap) drop(key [sha256.Size]byte) {
	delete(sm.m, key)
	sm.gen.Add(1)
}

// evict drops every idle source whose token has expired or that holds none, or, if that frees
// nothing, the least recently used idle source. A source with a caller waiting or a fetch running is
// never dropped: its callers would stop sharing one fetch. Callers holding a dropped source keep
// using it; it just is not shared anymore.
func (sm *sourceMap) evict(n int64) {
	nowMS := n / int64(time.Millisecond)
	var lru [sha256.Size]byte
	lruAt := int64(-1)
	freed := false
	for k, s := range sm.m {
		if s.active.Load() > 0 || s.refreshing.Load() {
			continue
		}
		u := s.lastUsed.Load()
		// A source without a live token goes, unless it was asked for just now: its first caller may
		// be between finding it and starting its fetch.
		if h := s.cur.Load(); (h == nil || h.tok.ExpiresAtMS <= nowMS) && n-u > int64(evictGrace) {
			sm.drop(k)
			freed = true
			continue
		}
		if lruAt < 0 || u < lruAt {
			lru, lruAt = k, u
		}
	}
	switch {
	case freed:
	case lruAt >= 0:
		sm.drop(lru)
	}
}
