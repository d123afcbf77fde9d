package host

import (
	"context"
	"strings"
	"sync"
	"time"
)

// Cache stores the plugin's cache entries: tokens (access tokens only) and 429 gates, under keys that
// are hashes, never secrets. Implementations must be safe for concurrent use and must not return an
// entry past its TTL. A Cache error is treated as a miss: a broken cache costs a fetch, not a failure.
type Cache interface {
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
}

// AtomicCache is a Cache that can store a value only if its key is absent and delete a key only while
// it holds a given value, atomically for everyone sharing it: what fleet-wide single-flight needs (one
// fetch per token across processes). MemoryCache and rediscache implement it.
type AtomicCache interface {
	Cache
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	DeleteIf(ctx context.Context, key string, value []byte) error
}

// SharedCache is implemented by caches shared across processes (such as rediscache): with one, the
// plugin takes a fetch lock in the cache so one process of the fleet fetches each token. Within one
// process the Runtime's own single-flight already does that, so in-process caches skip the lock.
type SharedCache interface {
	Cache
	Shared() bool
}

// MemoryCache is the default Cache: in-process, with TTLs and a bound on the number of entries.
type MemoryCache struct {
	mu      sync.Mutex
	entries map[string]memoryEntry
	max     int
	clock   clock // nil: the wall clock; a Runtime's default cache shares its clock (clock.go)
}

type memoryEntry struct {
	value   []byte
	expires time.Time
}

// NewMemoryCache returns a cache holding at most maxEntries entries (0 means 10000). When full, expired
// entries are dropped first, then the entry closest to expiry.
func NewMemoryCache(maxEntries int) *MemoryCache {
	if maxEntries <= 0 {
		maxEntries = 10000
	}
	return &MemoryCache{entries: make(map[string]memoryEntry), max: maxEntries}
}

// Get implements Cache.
func (c *MemoryCache) Get(_ context.Context, key string) ([]byte, bool, error) {
	c.mu.Lock()
	e, ok := c.entries[key]
	if ok && !c.clock.now().Before(e.expires) {
		delete(c.entries, key)
		ok = false
	}
	c.mu.Unlock()
	return e.value, ok, nil
}

// Set implements Cache. The value is copied.
func (c *MemoryCache) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	v := append([]byte(nil), value...)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.now()
	if _, exists := c.entries[key]; !exists && len(c.entries) >= c.max {
		c.evict(now)
	}
	c.entries[key] = memoryEntry{value: v, expires: now.Add(ttl)}
	return nil
}

// evict makes room for one entry: every expired entry goes, or else the one closest to expiry. A
// one-time grant's lineage or exchange mark goes last: evicted, the next exchange would send a used
// refresh token or code again (a tenant whose tokens live long must not push another's out).
func (c *MemoryCache) evict(now time.Time) {
	var victim string
	var soonest time.Time
	victimLineage := false
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
			continue
		}
		lineage := isLineageKey(k)
		if victim == "" || victimLineage && !lineage || lineage == victimLineage && e.expires.Before(soonest) {
			victim, soonest, victimLineage = k, e.expires, lineage
		}
	}
	if len(c.entries) >= c.max {
		delete(c.entries, victim)
	}
}

// isLineageKey reports whether key is a one-time grant's lineage or exchange mark (abi/ABI.md).
func isLineageKey(key string) bool {
	return strings.HasSuffix(key, "/grant") || strings.HasSuffix(key, "/sent")
}

// Delete implements Cache.
func (c *MemoryCache) Delete(_ context.Context, key string) error {
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
	return nil
}

// Len returns the number of entries, expired or not.
func (c *MemoryCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// SetNX implements AtomicCache.
func (c *MemoryCache) SetNX(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.now()
	if e, ok := c.entries[key]; ok && now.Before(e.expires) {
		return false, nil
	}
	if len(c.entries) >= c.max {
		c.evict(now)
	}
	c.entries[key] = memoryEntry{value: append([]byte(nil), value...), expires: now.Add(ttl)}
	return true, nil
}

// DeleteIf implements AtomicCache.
func (c *MemoryCache) DeleteIf(_ context.Context, key string, value []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && string(e.value) == string(value) {
		delete(c.entries, key)
	}
	return nil
}
