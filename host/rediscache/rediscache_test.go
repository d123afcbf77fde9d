package rediscache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	if len(keys) == 0 {
		keys = [][]byte{testKey}
	}
	c, err := New(rdb, Options{Keys: keys})
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
	key, value := uniqueKey(t), []byte(`{"access_token":"AT-plaintext-canary","expires_at_ms":1}`)
	if err := newCache(t, rdb, oldKey).Set(ctx, key, value, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.Get(ctx, key).Bytes()
	if err != nil || bytes.Contains(raw, []byte("AT-plaintext-canary")) || bytes.Contains(raw, []byte("access_token")) {
		t.Fatalf("raw value in Redis holds the token in clear (%v)", err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL %v", ttl)
	}
	rotated := newCache(t, rdb, newKey, oldKey)
	if v, ok, _ := rotated.Get(ctx, key); !ok || !bytes.Equal(v, value) {
		t.Fatalf("a rotated key list must still read old values: %q %v", v, ok)
	}
	if _, ok, err := newCache(t, rdb, newKey).Get(ctx, key); ok || err != nil {
		t.Fatalf("a value under an unknown key must be a miss, not an error: %v %v", ok, err)
	}
	// A value copied under another key does not open: the key is bound as associated data.
	other := uniqueKey(t)
	rdb.Set(ctx, other, raw, time.Minute)
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
	if ok, _ := c.SetNX(ctx, key, []byte("owner-2"), time.Minute); ok {
		t.Fatal("second SetNX stored")
	}
	_ = c.DeleteIf(ctx, key, []byte("owner-2"))
	if rdb.Exists(ctx, key).Val() != 1 {
		t.Fatal("a non-owner deleted the lock")
	}
	_ = c.DeleteIf(ctx, key, []byte("owner-1"))
	if rdb.Exists(ctx, key).Val() != 0 {
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
			tok, err := c.Token(context.Background(), req)
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

// TestFleetLockOwnerKilled: the process holding the fetch lock dies mid-fetch; the others take over
// once the lock's TTL (timeout 1 s + 2 s) ends, and all get a token.
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
	get := func() *abi.Token { // a new Client each time: nothing held in memory but the cache
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
