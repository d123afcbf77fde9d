// Package rediscache shares the plugin's token cache through Redis, so a fleet of processes fetches
// one token per credential set instead of one per process, and one process's 429 stops them all.
//
// Values are encrypted at rest with AES-256-GCM (the key is bound to the value as associated data);
// keys are the plugin's hashed cache keys, never secrets. When Redis is down or slow, the cache falls
// back to an in-process cache with a logged warning and a metric, and returns to Redis when it answers
// again: callers keep getting tokens either way.
package rediscache

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
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
	// Timeout bounds each Redis operation (default 250 ms): a slow Redis is a down Redis.
	Timeout time.Duration
	// Retry is how long the cache stays on its fallback after a Redis failure before trying Redis
	// again (default 1 s).
	Retry time.Duration
	// Fallback serves while Redis is down (default host.NewMemoryCache(0)).
	Fallback host.AtomicCache
	// Logger gets a warning when Redis fails and a note when it is back.
	Logger *slog.Logger
}

// Cache is a host.AtomicCache on Redis.
type Cache struct {
	rdb       redis.UniversalClient
	aeads     []cipher.AEAD
	opts      Options
	fallback  host.AtomicCache
	downUntil atomic.Int64 // Unix ns until which Redis is skipped
	down      atomic.Bool
	fallbacks atomic.Int64
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
	c := &Cache{rdb: rdb, opts: opts, fallback: opts.Fallback}
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

// redis runs op against Redis unless Redis recently failed; it reports whether Redis answered.
func (c *Cache) redis(ctx context.Context, op func(ctx context.Context) error) bool {
	if time.Now().UnixNano() < c.downUntil.Load() {
		c.fallbacks.Add(1)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if err := op(ctx); err != nil && !errors.Is(err, redis.Nil) {
		c.downUntil.Store(time.Now().Add(c.opts.Retry).UnixNano())
		c.fallbacks.Add(1)
		if !c.down.Swap(true) {
			c.opts.Logger.Warn("rediscache: Redis failed; serving from the in-process cache", "err", err)
		}
		return false
	}
	if c.down.Swap(false) {
		c.opts.Logger.Info("rediscache: Redis is back")
	}
	return true
}

// Get implements host.Cache. A value that does not decrypt with any key is a miss.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	var raw []byte
	var found bool
	if !c.redis(ctx, func(ctx context.Context) error {
		b, err := c.rdb.Get(ctx, key).Bytes()
		raw, found = b, err == nil
		return err
	}) {
		return c.fallback.Get(ctx, key)
	}
	if !found {
		return nil, false, nil
	}
	v, ok := c.open(key, raw)
	return v, ok, nil
}

// Set implements host.Cache.
func (c *Cache) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	sealed := c.seal(key, value)
	if !c.redis(ctx, func(ctx context.Context) error { return c.rdb.Set(ctx, key, sealed, ttl).Err() }) {
		return c.fallback.Set(ctx, key, value, ttl)
	}
	return nil
}

// Delete implements host.Cache.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if !c.redis(ctx, func(ctx context.Context) error { return c.rdb.Del(ctx, key).Err() }) {
		return c.fallback.Delete(ctx, key)
	}
	return nil
}

// SetNX implements host.AtomicCache with SET NX PX.
func (c *Cache) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	sealed := c.seal(key, value)
	var stored bool
	if !c.redis(ctx, func(ctx context.Context) error {
		var err error
		stored, err = c.rdb.SetNX(ctx, key, sealed, ttl).Result()
		return err
	}) {
		return c.fallback.SetNX(ctx, key, value, ttl)
	}
	return stored, nil
}

// deleteIfScript deletes KEYS[1] only while it holds ARGV[1], atomically.
var deleteIfScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// DeleteIf implements host.AtomicCache: it reads the sealed value, checks that it opens to value,
// and deletes it only if it is still that exact sealed value.
func (c *Cache) DeleteIf(ctx context.Context, key string, value []byte) error {
	if !c.redis(ctx, func(ctx context.Context) error {
		raw, err := c.rdb.Get(ctx, key).Bytes()
		if err != nil {
			return err
		}
		if v, ok := c.open(key, raw); !ok || string(v) != string(value) {
			return nil
		}
		return deleteIfScript.Run(ctx, c.rdb, []string{key}, raw).Err()
	}) {
		return c.fallback.DeleteIf(ctx, key, value)
	}
	return nil
}

// seal encrypts value with the first key: nonce || ciphertext, the cache key as associated data (a
// value moved to another key does not open).
func (c *Cache) seal(key string, value []byte) []byte {
	aead := c.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(value)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return aead.Seal(nonce, nonce, value, []byte(key))
}

func (c *Cache) open(key string, sealed []byte) ([]byte, bool) {
	for _, aead := range c.aeads {
		if len(sealed) < aead.NonceSize() {
			return nil, false
		}
		if v, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(key)); err == nil {
			return v, true
		}
	}
	return nil, false
}
