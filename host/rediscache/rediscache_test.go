package rediscache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// Tests run against a real Redis named by REDIS_URL (.ci/run starts one); without it they skip.

func redisURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("REDIS_URL")
	if u == "" {
		t.Skip("REDIS_URL is not set: no Redis to test against (.ci/run starts one)")
	}
	return u
}

func client(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opt.DialTimeout, opt.MaxRetries = 200*time.Millisecond, -1
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

var testKey = bytes.Repeat([]byte{7}, 32)

func newCache(t *testing.T, rdb redis.UniversalClient, keys ...[]byte) *Cache {
	t.Helper()
	return newCacheOpts(t, rdb, Options{Keys: keys})
}

func newCacheOpts(t *testing.T, rdb redis.UniversalClient, opts Options) *Cache {
	t.Helper()
	if len(opts.Keys) == 0 {
		opts.Keys = [][]byte{testKey}
	}
	c, err := New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func uniqueKey(t *testing.T) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "tokenwasm/1/test/" + t.Name() + "/" + hex.EncodeToString(b)
}

func TestEncryptedAtRestAndRotation(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	hashKey := bytes.Repeat([]byte{3}, 32) // set, so the Redis keys stay the same across rotation
	withKeys := func(keys ...[]byte) *Cache { return newCacheOpts(t, rdb, Options{Keys: keys, HashKey: hashKey}) }
	key, value := uniqueKey(t), []byte(`{"access_token":"AT-plaintext-canary","expires_at_ms":1}`)
	old := withKeys(oldKey)
	if err := old.Set(ctx, key, value, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.Get(ctx, old.redisKey(key)).Bytes()
	if err != nil || bytes.Contains(raw, []byte("AT-plaintext-canary")) || bytes.Contains(raw, []byte("access_token")) {
		t.Fatalf("raw value in Redis holds the token in clear (%v)", err)
	}
	if ttl := rdb.PTTL(ctx, old.redisKey(key)).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL %v", ttl)
	}
	rotated := withKeys(newKey, oldKey)
	if v, ok, _ := rotated.Get(ctx, key); !ok || !bytes.Equal(v, value) {
		t.Fatalf("a rotated key list must still read old values: %q %v", v, ok)
	}
	if _, ok, err := withKeys(newKey).Get(ctx, key); ok || err != nil {
		t.Fatalf("a value under an unknown key must be a miss, not an error: %v %v", ok, err)
	}
	// A value copied under another key does not open: the key is bound as associated data.
	other := uniqueKey(t)
	rdb.Set(ctx, rotated.redisKey(other), raw, time.Minute)
	if _, ok, _ := rotated.Get(ctx, other); ok {
		t.Fatal("a sealed value moved to another key opened")
	}
}

func TestSetNXAndDeleteIf(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	c := newCache(t, rdb)
	key := uniqueKey(t)
	if ok, err := c.SetNX(ctx, key, []byte("owner-1"), time.Minute); !ok || err != nil {
		t.Fatalf("first SetNX: %v %v", ok, err)
	}
	if ttl := rdb.PTTL(ctx, c.redisKey(key)).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("lock TTL %v, want (0, 1m]", ttl)
	}
	if ok, _ := c.SetNX(ctx, key, []byte("owner-2"), time.Minute); ok {
		t.Fatal("second SetNX stored")
	}
	_ = c.DeleteIf(ctx, key, []byte("owner-2"))
	if rdb.Exists(ctx, c.redisKey(key)).Val() != 1 {
		t.Fatal("a non-owner deleted the lock")
	}
	_ = c.DeleteIf(ctx, key, []byte("owner-1"))
	if rdb.Exists(ctx, c.redisKey(key)).Val() != 0 {
		t.Fatal("the owner could not delete its lock")
	}
}

// workerEnv marks a re-executed test binary acting as one process of the fleet.
const workerEnv = "TOKENWASM_REDIS_WORKER"

// TestFleetWorker is not a test of its own: it is the body of each fleet process the tests below
// start. It asks for the token from 50 goroutines and prints each one.
func TestFleetWorker(t *testing.T) {
	if os.Getenv(workerEnv) == "" {
		t.Skip("runs only as a fleet process")
	}
	rdb := client(t, os.Getenv("REDIS_URL"))
	cache := newCache(t, rdb)
	c, err := host.New(context.Background(), host.WithCache(cache), host.WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	timeout, _ := strconv.Atoi(os.Getenv("WORKER_TIMEOUT_MS"))
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: os.Getenv("WORKER_CLIENT_ID"),
		ClientSecret: os.Getenv("WORKER_CLIENT_SECRET"), TokenURL: os.Getenv("WORKER_TOKEN_URL"), TimeoutMS: int64(timeout)}
	fmt.Println("started")
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// As a caller would: a retryable failure (a wait for another process's fetch that outlived
			// this request's timeout_ms) is tried again, for at most 15 s.
			tok, err := c.Token(context.Background(), req)
			for giveUp := time.Now().Add(15 * time.Second); err != nil && time.Now().Before(giveUp); {
				var e *abi.Error
				if !errors.As(err, &e) || !e.Retryable {
					break
				}
				time.Sleep(100 * time.Millisecond)
				tok, err = c.Token(context.Background(), req)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Println("error", err)
				return
			}
			fmt.Println("token", tok.AccessToken)
		}()
	}
	wg.Wait()
}

type worker struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

func startWorker(t *testing.T, url string, fake *providertest.Fake, timeoutMS int) *worker {
	t.Helper()
	cfg := fake.Config()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFleetWorker$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), workerEnv+"=1", "REDIS_URL="+url, "WORKER_CLIENT_ID="+cfg.ClientID,
		"WORKER_CLIENT_SECRET="+cfg.ClientSecret, "WORKER_TOKEN_URL="+fake.TokenURL(), "WORKER_TIMEOUT_MS="+strconv.Itoa(timeoutMS))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &worker{cmd: cmd, lines: make(chan string, 200), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-w.done })
	return w
}

// tokens collects a worker's 50 answers.
func (w *worker) tokens(t *testing.T) []string {
	t.Helper()
	var toks []string
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				return toks
			}
			if tok, found := strings.CutPrefix(line, "token "); found {
				toks = append(toks, tok)
			} else if strings.HasPrefix(line, "error") {
				t.Errorf("worker: %s", line)
			}
		case <-timeout:
			t.Fatal("worker did not finish")
		}
	}
}

func freshFake(t *testing.T) *providertest.Fake {
	cfg := providertest.DefaultConfig("nikohealth")
	cfg.ClientID = "fleet-" + uniqueKey(t)[len(uniqueKey(t))-16:] // a cold cache for every run
	f := providertest.NewNikoHealth(cfg)
	t.Cleanup(f.Close)
	return f
}

// TestFleetOneRequest: 8 processes x 50 goroutines on a cold cache make exactly one request, and
// all 400 callers get the same token.
func TestFleetOneRequest(t *testing.T) {
	url := redisURL(t)
	fake := freshFake(t)
	var workers []*worker
	for range 8 {
		workers = append(workers, startWorker(t, url, fake, 10000))
	}
	seen := map[string]int{}
	for _, w := range workers {
		for _, tok := range w.tokens(t) {
			seen[tok]++
		}
	}
	if len(seen) != 1 || fake.Requests() != 1 {
		t.Fatalf("%d distinct tokens, %d requests at the fake; want 1 and 1", len(seen), fake.Requests())
	}
	for _, n := range seen {
		if n != 400 {
			t.Fatalf("%d callers got the token, want 400", n)
		}
	}
}

// TestFleetLockOwnerKilled: the process holding the fetch lock dies mid-fetch; the others' waits end
// with their own timeout_ms (1 s, a retryable error their callers retry), and once the lock's TTL
// (1 s + 2 s) ends one of them takes over: all get the one token, 2 requests in all. (Before the
// retries, it passed only when -race made the processes slow to start.)
func TestFleetLockOwnerKilled(t *testing.T) {
	url := redisURL(t)
	fake := freshFake(t)
	var stalled atomic.Bool
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if stalled.CompareAndSwap(false, true) { // the first request: stall until its client is gone
			buf := make([]byte, 1<<10)
			for {
				if _, err := r.Body.Read(buf); err != nil {
					break
				}
			}
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return true
		}
		return false
	})
	owner := startWorker(t, url, fake, 1000)
	deadline := time.Now().Add(20 * time.Second)
	for fake.Requests() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	others := []*worker{startWorker(t, url, fake, 1000), startWorker(t, url, fake, 1000)}
	time.Sleep(300 * time.Millisecond) // the others are now waiting on the lock
	_ = owner.cmd.Process.Kill()
	start := time.Now()
	seen := map[string]bool{}
	for _, w := range others {
		toks := w.tokens(t)
		if len(toks) != 50 {
			t.Fatalf("a worker got %d tokens, want 50", len(toks))
		}
		for _, tok := range toks {
			seen[tok] = true
		}
	}
	if len(seen) != 1 || fake.Requests() != 2 {
		t.Fatalf("%d distinct tokens, %d requests; want 1 and 2 (the killed one, then one take-over)", len(seen), fake.Requests())
	}
	t.Logf("take-over after the kill: %v", time.Since(start).Round(time.Millisecond))
}

// TestRedisDownAndBack: with Redis stopped mid-run, callers keep getting tokens from the fallback;
// when Redis returns, tokens are shared through it again.
func TestRedisDownAndBack(t *testing.T) {
	redisURL(t)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server binary to stop and restart")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
		defer rdb.Close()
		for i := 0; rdb.Ping(context.Background()).Err() != nil; i++ {
			if i > 100 {
				t.Fatal("redis-server did not start")
			}
			time.Sleep(20 * time.Millisecond)
		}
		return cmd
	}
	srv := start()
	url := fmt.Sprintf("redis://127.0.0.1:%d", port)
	rdb := client(t, url)
	cache, err := New(rdb, Options{Keys: [][]byte{testKey}, Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fake := freshFake(t)
	cfg := fake.Config()
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
	get := func() *abi.Token { // a new Runtime each time: nothing held in memory but the cache
		c, err := host.New(context.Background(), host.WithCache(cache), host.WithLoopback())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		tok, err := c.Token(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	first := get()
	if n := len(rdb.Keys(context.Background(), "tokenwasm/1/nikohealth/*").Val()); n == 0 {
		t.Fatal("the token was not stored in Redis")
	}
	_ = srv.Process.Kill()
	_ = srv.Wait()
	down := get() // Redis gone: fetched and cached in the fallback
	if again := get(); again.AccessToken != down.AccessToken || cache.Fallbacks() == 0 {
		t.Fatalf("fallback did not serve: fallbacks %d", cache.Fallbacks())
	}
	srv = start()
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(150 * time.Millisecond) // past Options.Retry
	back := get()
	if n := len(rdb.Keys(context.Background(), "tokenwasm/1/nikohealth/*").Val()); n == 0 {
		t.Fatal("after Redis returned, tokens are not stored there again")
	}
	if first.AccessToken == "" || back.AccessToken == "" {
		t.Fatal("no token")
	}
}

// recorder is a Cache that notes every plugin cache key it is asked about, so a test can find the
// Redis keys of a credential set.
type recorder struct {
	*Cache
	mu   sync.Mutex
	keys map[string]bool
}

func record(c *Cache) *recorder { return &recorder{Cache: c, keys: map[string]bool{}} }

func (r *recorder) note(key string) {
	r.mu.Lock()
	r.keys[key] = true
	r.mu.Unlock()
}

func (r *recorder) Get(ctx context.Context, key string) ([]byte, bool, error) {
	r.note(key)
	return r.Cache.Get(ctx, key)
}

func (r *recorder) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	r.note(key)
	return r.Cache.Set(ctx, key, value, ttl)
}

func (r *recorder) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	r.note(key)
	return r.Cache.SetNX(ctx, key, value, ttl)
}

// tokenKey is the plugin's cache key of the token among the keys recorded.
func (r *recorder) tokenKey(t *testing.T) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.keys {
		if !strings.HasSuffix(k, "/gate") && !strings.HasSuffix(k, "/lock") {
			return k
		}
	}
	t.Fatal("no token key recorded")
	return ""
}

// fetchWith asks a new Runtime (nothing held in memory) on cache for the token of fake's client.
func fetchWith(t *testing.T, cache host.Cache, fake *providertest.Fake, clientID string) (*abi.Token, error) {
	t.Helper()
	c, err := host.New(context.Background(), host.WithCache(cache), host.WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	cfg := fake.Config()
	if clientID == "" {
		clientID = cfg.ClientID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Token(ctx, abi.TokenRequest{Provider: "nikohealth", ClientID: clientID,
		ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL(), TimeoutMS: 1000})
}

func randomKey() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

// TestRedisKeysAreKeyedHashes: no Redis key holds the plugin's plain SHA-256 of a request (which
// anyone knowing a client id could test secret guesses against), the Redis keys change with
// HashKey, and the token, its gate and its lock each have their own.
func TestRedisKeysAreKeyedHashes(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	fake := freshFake(t)
	hashKey := randomKey()
	cache := record(newCacheOpts(t, rdb, Options{HashKey: hashKey}))
	if _, err := fetchWith(t, cache, fake, ""); err != nil {
		t.Fatal(err)
	}
	k := cache.tokenKey(t)
	pluginHash := k[strings.LastIndexByte(k, '/')+1:]
	if len(pluginHash) != 64 {
		t.Fatalf("unexpected plugin key %q", k)
	}
	all := rdb.Keys(ctx, "*").Val()
	for _, rk := range all {
		if strings.Contains(rk, pluginHash) {
			t.Fatalf("Redis key %q holds the plugin's plain request hash", rk)
		}
	}
	if rdb.Exists(ctx, cache.redisKey(k)).Val() != 1 {
		t.Fatalf("the token is not stored under its keyed hash %q", cache.redisKey(k))
	}
	if !strings.HasPrefix(cache.redisKey(k), "tokenwasm/1/nikohealth/") {
		t.Fatalf("the provider is not readable in %q", cache.redisKey(k))
	}
	names := map[string]bool{cache.redisKey(k): true, cache.redisKey(k + "/gate"): true, cache.redisKey(k + "/lock"): true}
	if len(names) != 3 || names[k] || names[k+"/gate"] || names[k+"/lock"] {
		t.Fatalf("token, gate and lock must map to three keyed Redis keys: %v", names)
	}
	if other := newCacheOpts(t, rdb, Options{HashKey: randomKey()}); other.redisKey(k) == cache.redisKey(k) {
		t.Fatal("the Redis key does not change with HashKey")
	}
	// A second process with the same HashKey gets the token from Redis; one with another does not.
	if _, err := fetchWith(t, newCacheOpts(t, rdb, Options{HashKey: hashKey}), fake, ""); err != nil || fake.Requests() != 1 {
		t.Fatalf("same HashKey: %v, %d requests, want 1", err, fake.Requests())
	}
	if _, err := fetchWith(t, newCacheOpts(t, rdb, Options{HashKey: randomKey()}), fake, ""); err != nil || fake.Requests() != 2 {
		t.Fatalf("another HashKey: %v, %d requests, want 2", err, fake.Requests())
	}
}

// TestHashKeySharing: caches share tokens, gates and locks exactly when their hash keys agree,
// whether set or derived from the first encryption key; a set HashKey survives key rotation.
func TestHashKeySharing(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	k1, k2, h1, h2 := randomKey(), randomKey(), randomKey(), randomKey()
	for _, tc := range []struct {
		name          string
		first, second Options
		share         bool
	}{
		{"same HashKey", Options{Keys: [][]byte{k1}, HashKey: h1}, Options{Keys: [][]byte{k1}, HashKey: h1}, true},
		{"different HashKey", Options{Keys: [][]byte{k1}, HashKey: h1}, Options{Keys: [][]byte{k1}, HashKey: h2}, false},
		{"same HashKey, rotated Keys", Options{Keys: [][]byte{k1}, HashKey: h1}, Options{Keys: [][]byte{k2, k1}, HashKey: h1}, true},
		{"derived, same first key", Options{Keys: [][]byte{k1}}, Options{Keys: [][]byte{k1, k2}}, true},
		{"derived, different first key", Options{Keys: [][]byte{k1}}, Options{Keys: [][]byte{k2, k1}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newCacheOpts(t, rdb, tc.first), newCacheOpts(t, rdb, tc.second)
			k := uniqueKey(t)
			_ = a.Set(ctx, k, []byte("token"), time.Minute)
			_ = a.Set(ctx, k+"/gate", []byte(`{"until_ms":1}`), time.Minute)
			if ok, err := a.SetNX(ctx, k+"/lock", []byte("owner-a"), time.Minute); !ok || err != nil {
				t.Fatalf("lock: %v %v", ok, err)
			}
			_, tokenHit, _ := b.Get(ctx, k)
			_, gateHit, _ := b.Get(ctx, k+"/gate")
			locked, _ := b.SetNX(ctx, k+"/lock", []byte("owner-b"), time.Minute)
			if tokenHit != tc.share || gateHit != tc.share || locked == tc.share {
				t.Fatalf("token hit %v, gate hit %v, lock taken %v; want sharing %v", tokenHit, gateHit, locked, tc.share)
			}
		})
	}
}

// TestSetNXTakesOverStaleLocks: a lock key without a TTL (set by hand) or with a TTL longer than any
// fetch lock has is taken over at once, with the TTL asked for; a live lock is not.
func TestSetNXTakesOverStaleLocks(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	c := newCache(t, rdb)
	const ttl = 5 * time.Second
	for _, tc := range []struct {
		name   string
		ttl    time.Duration // of the planted key; 0 for none
		stored bool
	}{
		{"no TTL", 0, true},
		{"1 day TTL", 24 * time.Hour, true},
		{"live lock", 2 * time.Second, false},
		{"live lock of a longer timeout_ms", 100 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := uniqueKey(t) + "/lock"
			rk := c.redisKey(k)
			planted := c.seal(k, []byte("owner-0")) // a lock another process of the fleet sealed
			rdb.Set(ctx, rk, planted, tc.ttl)
			stored, err := c.SetNX(ctx, k, []byte("owner-1"), ttl)
			if err != nil || stored != tc.stored {
				t.Fatalf("SetNX over a planted lock (%v): stored %v, %v; want %v", tc.ttl, stored, err, tc.stored)
			}
			got := rdb.PTTL(ctx, rk).Val()
			if !tc.stored {
				if rdb.Get(ctx, rk).Val() != string(planted) || got <= 0 || got > tc.ttl {
					t.Fatalf("a live lock was changed (TTL %v)", got)
				}
				return
			}
			if got <= 0 || got > ttl {
				t.Fatalf("taken-over lock TTL %v, want (0, %v]", got, ttl)
			}
			if again, _ := c.SetNX(ctx, k, []byte("owner-2"), ttl); again {
				t.Fatal("the taken-over lock was taken again while live")
			}
			if _ = c.DeleteIf(ctx, k, []byte("owner-1")); rdb.Exists(ctx, rk).Val() != 0 {
				t.Fatal("the new owner could not release its lock")
			}
		})
	}
}

// TestStaleFleetLockDoesNotStall: with a TTL-less lock planted on a credential set's fetch lock, a
// Token call fetches at once instead of waiting for the lock until its deadline.
func TestStaleFleetLockDoesNotStall(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	fake, cache, k := coldKnownKey(t, rdb)
	rdb.Set(ctx, cache.redisKey(k+"/lock"), "planted by hand", 0)
	start := time.Now()
	_, err := fetchWith(t, newCache(t, rdb), fake, "")
	if took := time.Since(start); err != nil || took > 2*time.Second || fake.Requests() != 2 {
		t.Fatalf("with a TTL-less lock: %v after %v, %d requests; want a token at once, 2 requests", err, took, fake.Requests())
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKeyErrorAffectsThatKeyOnly: a Redis list under one credential set's token key is a miss for
// that key, is overwritten by the next Set, and leaves every other key on Redis (no fallback).
func TestKeyErrorAffectsThatKeyOnly(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	var logs syncBuffer
	c := newCacheOpts(t, rdb, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	a, b := uniqueKey(t), uniqueKey(t)
	rdb.RPush(ctx, c.redisKey(a), "not", "a", "token")
	for range 10 {
		if _, ok, err := c.Get(ctx, a); ok || err != nil {
			t.Fatalf("Get of a wrong-typed key: %v %v, want a miss", ok, err)
		}
	}
	if err := c.DeleteIf(ctx, a, []byte("owner")); err != nil || rdb.Type(ctx, c.redisKey(a)).Val() != "list" {
		t.Fatalf("DeleteIf on a wrong-typed key: %v; it must leave the key alone", err)
	}
	if err := c.Set(ctx, b, []byte("token-b"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := c.Get(ctx, b); !ok || string(v) != "token-b" || rdb.Exists(ctx, c.redisKey(b)).Val() != 1 {
		t.Fatalf("another key is not served from Redis: %q %v", v, ok)
	}
	if err := c.Set(ctx, a, []byte("token-a"), time.Minute); err != nil || rdb.Type(ctx, c.redisKey(a)).Val() != "string" {
		t.Fatalf("Set did not replace the wrong-typed key: %v", err)
	}
	if v, ok, _ := c.Get(ctx, a); !ok || string(v) != "token-a" {
		t.Fatalf("after Set: %q %v", v, ok)
	}
	if c.Fallbacks() != 0 || c.KeyErrors() != 11 {
		t.Fatalf("fallbacks %d, key errors %d; want 0 and 11", c.Fallbacks(), c.KeyErrors())
	}
	if n := strings.Count(logs.String(), "refused an operation on one key"); n != 1 {
		t.Fatalf("%d key-error warnings for 11 errors within a minute, want 1:\n%s", n, logs.String())
	}
}

// TestWrongTypeTokenKeyThroughHost: the same through a Runtime: the credential set with a wrong-typed
// key gets a token (one fetch, stored over the bad key), and another credential set is shared
// through Redis.
func TestWrongTypeTokenKeyThroughHost(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	fake, cache, k := coldKnownKey(t, rdb)
	rk := cache.redisKey(k)
	rdb.RPush(ctx, rk, "wrong", "type")
	if _, err := fetchWith(t, cache, fake, ""); err != nil || fake.Requests() != 2 || rdb.Type(ctx, rk).Val() != "string" {
		t.Fatalf("with a wrong-typed token key: %v, %d requests, key type %s; want a token, 2, string",
			err, fake.Requests(), rdb.Type(ctx, rk).Val())
	}
	if _, err := fetchWith(t, cache, fake, ""); err != nil || fake.Requests() != 2 {
		t.Fatalf("the replaced key is not served from Redis: %v, %d requests", err, fake.Requests())
	}
	if cache.Fallbacks() != 0 {
		t.Fatalf("one wrong-typed key switched the cache to its fallback (%d)", cache.Fallbacks())
	}
}

// TestDecryptFailuresCountedAndLogged: two caches sharing a HashKey but not an encryption key count
// every value they cannot open and warn at most once a minute, naming the cause and no value.
func TestDecryptFailuresCountedAndLogged(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	hashKey := randomKey()
	writer := newCacheOpts(t, rdb, Options{Keys: [][]byte{randomKey()}, HashKey: hashKey})
	var logs syncBuffer
	reader := newCacheOpts(t, rdb, Options{Keys: [][]byte{randomKey()}, HashKey: hashKey,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	now := time.Unix(1_800_000_000, 0)
	reader.now = func() time.Time { return now }
	k := uniqueKey(t)
	value := []byte(`{"access_token":"AT-decrypt-canary"}`)
	_ = writer.Set(ctx, k, value, time.Minute)
	_ = writer.Set(ctx, k+"/gate", []byte(`{"until_ms":1}`), time.Minute)
	raw := rdb.Get(ctx, writer.redisKey(k)).Val()
	warnings := func() int { return strings.Count(logs.String(), "does not decrypt") }
	for i := range 50 {
		now = now.Add(time.Second / 2) // 25 s in all
		if _, ok, _ := reader.Get(ctx, k); ok {
			t.Fatal("a value under another encryption key opened")
		}
		if _, ok, _ := reader.Get(ctx, k+"/gate"); ok {
			t.Fatal("a gate under another encryption key opened")
		}
		if w := warnings(); w != 1 {
			t.Fatalf("after %d calls: %d warnings, want 1", 2*(i+1), w)
		}
	}
	if n := reader.DecryptFailures(); n != 100 {
		t.Fatalf("DecryptFailures %d, want 100", n)
	}
	now = now.Add(time.Minute)
	_, _, _ = reader.Get(ctx, k)
	if w := warnings(); w != 2 {
		t.Fatalf("a minute later: %d warnings, want 2", w)
	}
	out := logs.String()
	if !strings.Contains(out, "different encryption keys") || strings.Contains(out, "AT-decrypt-canary") ||
		strings.Contains(out, raw) || strings.Contains(out, hex.EncodeToString([]byte(raw))) || strings.Contains(out, k) {
		t.Fatalf("the warning must name the likely cause and neither the key nor the value:\n%s", out)
	}
	if _, ok, _ := writer.Get(ctx, k); !ok || writer.DecryptFailures() != 0 {
		t.Fatal("the writer cannot read its own value, or counted a failure")
	}
	if reader.Fallbacks() != 0 {
		t.Fatal("decrypt failures switched the reader to its fallback")
	}
}

// coldKnownKey fetches one token through a fresh fake so its credential set's cache key is known,
// then deletes that token from Redis: the set is cold again, with its key in hand for planting.
func coldKnownKey(t *testing.T, rdb *redis.Client) (*providertest.Fake, *recorder, string) {
	t.Helper()
	fake := freshFake(t)
	cache := record(newCache(t, rdb))
	if _, err := fetchWith(t, cache, fake, ""); err != nil {
		t.Fatal(err)
	}
	k := cache.tokenKey(t)
	rdb.Del(context.Background(), cache.redisKey(k))
	return fake, cache, k
}

// tcpProxy forwards loopback connections to a Redis until stopped: then it cuts every connection and
// answers new ones by closing them, as a network that stops forwarding would.
type tcpProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	stopped bool
	conns   []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.stop() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.stopped {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *tcpProxy) resume() {
	p.mu.Lock()
	p.stopped = false
	p.mu.Unlock()
}

// TestInvalidateWithRedisUnreachable: an Invalidate while Redis cannot be reached says the shared
// cache still holds the token (it would be served again once Redis is back), instead of nil.
func TestInvalidateWithRedisUnreachable(t *testing.T) {
	opt, err := redis.ParseURL(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, opt.Addr)
	opt.Addr = proxy.ln.Addr().String()
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	cache, err := New(rdb, Options{Keys: [][]byte{testKey}, Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fake := freshFake(t)
	cfg := fake.Config()
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
	ctx := context.Background()
	c, err := host.New(ctx, host.WithCache(cache), host.WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	tok, err := c.Token(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	proxy.stop()
	err = c.Invalidate(ctx, req)
	var nd *host.NotDroppedError
	if !errors.As(err, &nd) {
		t.Fatalf("Invalidate with Redis unreachable: %v, want a NotDroppedError", err)
	}
	if strings.Contains(err.Error(), tok.AccessToken) || strings.Contains(err.Error(), cfg.ClientSecret) {
		t.Fatal("the error holds a secret")
	}
	proxy.resume()
	time.Sleep(150 * time.Millisecond) // past Options.Retry
	if err := c.Invalidate(ctx, req); err != nil {
		t.Fatalf("Invalidate with Redis back: %v", err)
	}
}
