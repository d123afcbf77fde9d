// Package rediscache shares the plugin's token cache through Redis, so a fleet of processes fetches
// one token per credential set instead of one per process, and one process's 429 stops them all.
//
// Values are encrypted at rest with AES-256-GCM (the plugin's cache key is bound to the value as
// associated data). Redis keys are an HMAC-SHA256 of the plugin's cache key under a key only the fleet
// holds: the plugin's keys are a plain SHA-256 of the encoded request, so anyone who could list them
// and knew a client id could test secret or password guesses offline. When Redis is down or slow, the
// cache falls back to an in-process cache with a logged warning and a metric, and returns to Redis
// when it answers again: callers keep getting tokens either way. An error that concerns one key (a
// value of the wrong type) affects that key only.
//
// It is a module of its own, so the tokenwasm module itself does not depend on go-redis.
package rediscache

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tokenwasm/tokenwasm/host"
)

// Options configures a Cache.
type Options struct {
	// Keys are AES-256 keys (32 bytes each): values are encrypted with the first and decrypted with
	// any, so a new key goes first and an old one stays until its values have expired. Required.
	Keys [][]byte
	// HashKey (32 bytes or more) keys the HMAC that turns the plugin's cache keys into Redis keys.
	// Every process sharing the Redis must use the same one. When empty it is derived from Keys[0],
	// so rotating the encryption keys also moves every entry to new Redis keys (one fetch per
	// credential set) and processes on different first keys share nothing and cannot see that
	// they differ: a fleet that rotates its encryption keys should set HashKey, which also lets
	// the cache count and log values it cannot decrypt (DecryptFailures).
	HashKey []byte
	// Timeout bounds each Redis operation (default 250 ms): a slow Redis is a down Redis.
	Timeout time.Duration
	// Retry is how long the cache stays on its fallback after a Redis failure before trying Redis
	// again (default 1 s).
	Retry time.Duration
	// Fallback serves while Redis is down (default host.NewMemoryCache(0)).
	Fallback host.AtomicCache
	// Logger gets a warning when Redis fails and a note when it is back, and at most one warning a
	// minute each for values that do not decrypt and for keys Redis refuses (such as WRONGTYPE).
	Logger *slog.Logger
}

// logInterval is the least time between two warnings of one kind that could repeat on every call.
const logInterval = time.Minute

// hashKeyInfo separates the HMAC key derived from Keys[0] from every other use of that key.
const hashKeyInfo = "tokenwasm rediscache v1: HMAC key for Redis key names"

// Cache is a host.AtomicCache on Redis.
type Cache struct {
	rdb       redis.UniversalClient
	aeads     []cipher.AEAD
	opts      Options
	fallback  host.AtomicCache
	macs      sync.Pool // hash.Hash: HMAC-SHA256 under the hash key
	now       func() time.Time
	downUntil atomic.Int64 // Unix ns until which Redis is skipped
	down      atomic.Bool
	fallbacks atomic.Int64

	decryptFailures, keyErrors           atomic.Int64
	decryptLog, keyErrorLog, takeoverLog throttle
}

var (
	_ host.AtomicCache = (*Cache)(nil)
	_ host.SharedCache = (*Cache)(nil)
)

// New returns a Cache on rdb.
func New(rdb redis.UniversalClient, opts Options) (*Cache, error) {
	if len(opts.Keys) == 0 {
		return nil, errors.New("rediscache: at least one encryption key is required")
	}
	c := &Cache{rdb: rdb, opts: opts, fallback: opts.Fallback, now: time.Now}
	for i, k := range opts.Keys {
		if len(k) != 32 {
			return nil, fmt.Errorf("rediscache: key %d is %d bytes, want 32 (AES-256)", i, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("rediscache: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("rediscache: %w", err)
		}
		c.aeads = append(c.aeads, aead)
	}
	hashKey := opts.HashKey
	switch {
	case len(hashKey) == 0:
		var err error
		if hashKey, err = hkdf.Key(sha256.New, opts.Keys[0], nil, hashKeyInfo, 32); err != nil {
			return nil, fmt.Errorf("rediscache: deriving the hash key: %w", err)
		}
	case len(hashKey) < 32:
		return nil, fmt.Errorf("rediscache: HashKey is %d bytes, want at least 32", len(hashKey))
	default:
		hashKey = append([]byte(nil), hashKey...) // the caller's slice may change later
	}
	c.opts.HashKey = nil // kept only inside the pool's hashers
	c.macs.New = func() any { return hmac.New(sha256.New, hashKey) }
	if c.opts.Timeout <= 0 {
		c.opts.Timeout = 250 * time.Millisecond
	}
	if c.opts.Retry <= 0 {
		c.opts.Retry = time.Second
	}
	if c.fallback == nil {
		c.fallback = host.NewMemoryCache(0)
	}
	if c.opts.Logger == nil {
		c.opts.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Shared implements host.SharedCache: Redis is shared by the fleet, so fetches take its lock.
func (c *Cache) Shared() bool { return true }

// Fallbacks counts the operations served by the fallback because Redis failed.
func (c *Cache) Fallbacks() int64 { return c.fallbacks.Load() }

// DecryptFailures counts values found in Redis that no key in Options.Keys opens: almost always
// processes sharing the Redis with different encryption keys, which then share no tokens, gates or
// locks. Each is a miss.
func (c *Cache) DecryptFailures() int64 { return c.decryptFailures.Load() }

// KeyErrors counts operations Redis refused for one key (such as WRONGTYPE, a key of another type
// under a cache key): each costs that key a miss and leaves the rest of the cache on Redis.
func (c *Cache) KeyErrors() int64 { return c.keyErrors.Load() }

// redisKey is the Redis key of a plugin cache key: `tokenwasm/1/<provider>/<hex HMAC-SHA256>`, with
// the plugin's `/gate` and `/lock` suffixes kept after the HMAC so each maps to its own Redis key
// and an operator can tell them apart. The provider stays readable when it is a plain name; any other
// key gets `_`. The HMAC covers the whole key but its suffix, provider included, so two plugin keys
// share a Redis key only if they are equal.
func (c *Cache) redisKey(key string) string {
	base, suffix := key, ""
	for _, s := range [...]string{"/gate", "/lock"} {
		if strings.HasSuffix(key, s) {
			base, suffix = key[:len(key)-len(s)], s
			break
		}
	}
	provider := "_"
	if rest, ok := strings.CutPrefix(base, "tokenwasm/1/"); ok {
		if p, _, ok := strings.Cut(rest, "/"); ok && plainName(p) {
			provider = p
		}
	}
	mac := c.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write([]byte(base))
	var sum [sha256.Size]byte
	mac.Sum(sum[:0])
	c.macs.Put(mac)
	return "tokenwasm/1/" + provider + "/" + hex.EncodeToString(sum[:]) + suffix
}

// plainName reports whether s is a provider name worth keeping readable in a Redis key.
func plainName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// outcome is what became of one Redis operation.
type outcome int

const (
	answered    outcome = iota // Redis answered (a missing key included)
	keyFailed                  // Redis refused the operation for this key only
	unavailable                // Redis is down or slow: use the fallback
)

// redis runs op against Redis unless Redis recently failed. A connection failure, a timeout or a
// server-wide refusal marks Redis down for Options.Retry; an error that concerns the key (see
// keyError) is counted, logged at most once a minute, and leaves Redis up for every other key.
func (c *Cache) redis(ctx context.Context, redisKey string, op func(ctx context.Context) error) outcome {
	if c.now().UnixNano() < c.downUntil.Load() {
		c.fallbacks.Add(1)
		return unavailable
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	err := op(ctx)
	result := answered
	switch {
	case err == nil || errors.Is(err, redis.Nil):
	case keyError(err):
		result = keyFailed
		c.keyErrors.Add(1)
		if c.keyErrorLog.allow(c.now()) {
			c.opts.Logger.Warn("rediscache: Redis refused an operation on one key; that key is a miss "+
				"(something other than this cache writes under its keys?)", "key", redisKey, "err", err)
		}
	default:
		c.downUntil.Store(c.now().Add(c.opts.Retry).UnixNano())
		c.fallbacks.Add(1)
		if !c.down.Swap(true) {
			c.opts.Logger.Warn("rediscache: Redis failed; serving from the in-process cache", "err", err)
		}
		return unavailable
	}
	if c.down.Swap(false) {
		c.opts.Logger.Info("rediscache: Redis is back")
	}
	return result
}

// keyError reports whether err is Redis refusing an operation because of the key it names (WRONGTYPE,
// a script error) rather than a connection failure, a timeout or a refusal that concerns the whole
// server (loading, read-only, cluster down, out of memory, authentication, permissions...).
func keyError(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	if _, moved := redis.IsMovedError(err); moved {
		return false
	}
	if _, ask := redis.IsAskError(err); ask {
		return false
	}
	return !(redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsAuthError(err) || redis.IsPermissionError(err) || redis.IsOOMError(err) ||
		redis.IsNoReplicasError(err) || redis.HasErrorPrefix(err, "BUSY") || redis.HasErrorPrefix(err, "MISCONF"))
}

// throttle lets an event through at most once per logInterval.
type throttle struct{ last atomic.Int64 } // Unix ns of the last event let through; 0 for none

func (t *throttle) allow(now time.Time) bool {
	for {
		last := t.last.Load()
		if last != 0 && now.UnixNano()-last < int64(logInterval) {
			return false
		}
		if t.last.CompareAndSwap(last, now.UnixNano()) {
			return true
		}
	}
}

// Get implements host.Cache. A value that does not decrypt with any key, or a key Redis refuses to
// read (WRONGTYPE), is a miss.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	rk := c.redisKey(key)
	var raw []byte
	var found bool
	switch c.redis(ctx, rk, func(ctx context.Context) error {
		b, err := c.rdb.Get(ctx, rk).Bytes()
		raw, found = b, err == nil
		return err
	}) {
	case unavailable:
		v, ok, err := c.fallback.Get(ctx, key)
		if !ok && err == nil && lineageKey(key) {
			// A grant's lineage (its newest refresh token) is in Redis: a local miss is not an answer.
			return nil, false, errLineageUnavailable
		}
		return v, ok, err
	case keyFailed:
		if lineageKey(key) {
			return nil, false, errLineageUnreadable
		}
	}
	if !found {
		return nil, false, nil
	}
	v, ok := c.open(key, raw)
	if !ok && lineageKey(key) {
		// A lineage no key opens (processes on other keys): a miss would send the request's own
		// refresh token, which may be a used one. The flow sends nothing on an error.
		return nil, false, errLineageUnreadable
	}
	return v, ok, nil
}

// lineageKey reports whether key is a one-time grant's lineage or exchange mark (abi/ABI.md, "One-time
// grants"): for these a miss that is not one (Redis down, a value no key opens, a wrong-typed key)
// is an error, never a miss, and a write Redis did not take is an error too: guessing would replay a
// used refresh token.
func lineageKey(key string) bool {
	return strings.HasSuffix(key, grantSuffix) || strings.HasSuffix(key, sentSuffix)
}

// sentSuffix ends the key of a one-time grant's exchange mark.
const sentSuffix = "/sent"

// errLineageUnreadable: Redis holds a lineage this cache cannot read (a wrong type, or a value no key
// opens).
var errLineageUnreadable = errors.New("rediscache: a grant's lineage in redis cannot be read (wrong type, or sealed under other keys)")

// grantSuffix ends the key of a one-time grant's lineage (abi/ABI.md, "Cache keys").
const grantSuffix = "/grant"

// errLineageUnavailable: Redis is down and the fallback does not hold the grant's lineage.
var errLineageUnavailable = errors.New("rediscache: redis unavailable; a grant's lineage is read from redis only")

// Set implements host.Cache. Redis's SET replaces a value of any type, so a wrong-typed key is
// overwritten.
func (c *Cache) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	rk, sealed := c.redisKey(key), c.seal(key, value)
	if c.redis(ctx, rk, func(ctx context.Context) error { return c.rdb.Set(ctx, rk, sealed, ttl).Err() }) == unavailable {
		if err := c.fallback.Set(ctx, key, value, ttl); err != nil || !lineageKey(key) {
			return err
		}
		// The fleet reads a lineage from Redis: a write Redis did not take must not look done.
		return errLineageUnavailable
	}
	return nil
}

// Delete implements host.Cache. With Redis unavailable the local copy is dropped and the error says
// the shared one was not: a token that was revoked or refused would be served again once Redis is
// back, so the caller (Revoke, Invalidate) must learn it.
func (c *Cache) Delete(ctx context.Context, key string) error {
	rk := c.redisKey(key)
	if c.redis(ctx, rk, func(ctx context.Context) error { return c.rdb.Del(ctx, rk).Err() }) == unavailable {
		if err := c.fallback.Delete(ctx, key); err != nil {
			return err
		}
		return ErrNotDropped
	}
	return nil
}

// ErrNotDropped: Redis was unavailable, so a Delete dropped the entry from the local fallback only.
var ErrNotDropped = errors.New("rediscache: redis unavailable; the entry was dropped locally, not in redis")

// setNXScript is SET NX PX that also takes over a stale key: one without a TTL (set by hand, or by
// a client that forgot PX) or with a TTL longer than any fetch lock can have (ARGV[3]). Without
// this, such a fetch lock would never expire and every caller of its credential set would wait for
// it until its deadline. A key of another type is no lock either. A live lock of a process with a
// longer timeout_ms is left alone.
// Answers 1 when stored, 2 when a stale key was taken over, 0 when the key is held.
var setNXScript = redis.NewScript(`
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return 1 end
local ttl = redis.call("PTTL", KEYS[1])
if ttl == -1 or ttl > tonumber(ARGV[3]) or redis.call("TYPE", KEYS[1]).ok ~= "string" then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 2
end
return 0`)

// SetNX implements host.AtomicCache with SET NX PX, taking over a stale key (see setNXScript). A key
// Redis refuses counts as stored: the caller fetches rather than waits on a lock it cannot see.
func (c *Cache) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	rk, sealed := c.redisKey(key), c.seal(key, value)
	ms := max(ttl.Milliseconds(), 1) // PX 0 is an error, and no PX would be a lock that never ends
	var res int64
	switch c.redis(ctx, rk, func(ctx context.Context) error {
		var err error
		res, err = setNXScript.Run(ctx, c.rdb, []string{rk}, sealed, ms, max(ms, maxLockTTL.Milliseconds())).Int64()
		return err
	}) {
	case unavailable:
		if lineageKey(key) { // a mark the fleet does not see is no mark
			return false, errLineageUnavailable
		}
		return c.fallback.SetNX(ctx, key, value, ttl)
	case keyFailed:
		if lineageKey(key) {
			return false, errLineageUnreadable
		}
		return true, nil
	}
	// A stray lock is taken over; a grant's mark that no key opens is not (it fails closed).
	if res == 0 && !lineageKey(key) && c.strayLock(ctx, key, rk, sealed, ms) {
		res = 2
	}
	if res == 2 && c.takeoverLog.allow(c.now()) { // at most once a minute
		c.opts.Logger.Warn("rediscache: took over a lock without a TTL or with a longer TTL than any fetch "+
			"lock has (set by hand?)", "key", rk, "ttl", ttl)
	}
	return res != 0, nil
}

// replaceIfScript sets KEYS[1] to ARGV[2] with PX ARGV[3] only while it still holds ARGV[1].
var replaceIfScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3]) return 1 end return 0`)

// strayLock takes over a held lock whose value does not open with any key (planted, or written by
// a process with other keys, which is counted as such): it guards no fetch this process can see.
func (c *Cache) strayLock(ctx context.Context, key, rk string, sealed []byte, ms int64) bool {
	var took bool
	c.redis(ctx, rk, func(ctx context.Context) error {
		raw, err := c.rdb.Get(ctx, rk).Bytes()
		if err != nil {
			return err
		}
		if _, ok := c.open(key, raw); ok {
			return nil
		}
		n, err := replaceIfScript.Run(ctx, c.rdb, []string{rk}, raw, sealed, ms).Int64()
		took = n == 1
		return err
	})
	return took
}

// maxLockTTL is the longest TTL a fetch lock is given: the plugin's longest timeout_ms (120 s) and
// its 2 s margin (abi/ABI.md, "Fleet single-flight"). A lock with a longer one is stale.
const maxLockTTL = 122 * time.Second

// deleteIfScript deletes KEYS[1] only while it holds ARGV[1], atomically.
var deleteIfScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// DeleteIf implements host.AtomicCache: it reads the sealed value, checks that it opens to value,
// and deletes it only if it is still that exact sealed value.
func (c *Cache) DeleteIf(ctx context.Context, key string, value []byte) error {
	rk := c.redisKey(key)
	if c.redis(ctx, rk, func(ctx context.Context) error {
		raw, err := c.rdb.Get(ctx, rk).Bytes()
		if err != nil {
			return err
		}
		if v, ok := c.open(key, raw); !ok || string(v) != string(value) {
			return nil
		}
		return deleteIfScript.Run(ctx, c.rdb, []string{rk}, raw).Err()
	}) == unavailable {
		return c.fallback.DeleteIf(ctx, key, value)
	}
	return nil
}

// seal encrypts value with the first key: nonce || ciphertext, the plugin's cache key as associated
// data (a value moved to another key does not open).
func (c *Cache) seal(key string, value []byte) []byte {
	aead := c.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(value)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return aead.Seal(nonce, nonce, value, []byte(key))
}

// open decrypts a value read from Redis. A value that does not open is counted and, at most once a
// minute, logged as the misconfiguration it almost always is; the log names neither key nor value.
func (c *Cache) open(key string, sealed []byte) ([]byte, bool) {
	for _, aead := range c.aeads {
		if len(sealed) < aead.NonceSize() {
			break
		}
		if v, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(key)); err == nil {
			return v, true
		}
	}
	n := c.decryptFailures.Add(1)
	if c.decryptLog.allow(c.now()) {
		c.opts.Logger.Warn("rediscache: a value in Redis does not decrypt with any of Options.Keys; "+
			"processes sharing this Redis probably have different encryption keys and share no tokens, "+
			"429 gates or fetch locks", "decrypt_failures", n)
	}
	return nil, false
}
