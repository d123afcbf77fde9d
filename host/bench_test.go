package host

import (
	"context"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/internal/extism"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/plugin/core"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The benchmarks run ours and the peer (golang.org/x/oauth2) side by side against the same loopback
// fake, so their ratio is what counts: `make bench` prints it.

func benchSetup(b *testing.B) (*Runtime, *providertest.Fake, abi.TokenRequest, *clientcredentials.Config) {
	b.Helper()
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	b.Cleanup(fake.Close)
	c, err := New(context.Background(), WithLoopback())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close(context.Background()) })
	cfg := fake.Config()
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
	peer := &clientcredentials.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL(),
		AuthStyle: oauth2.AuthStyleInHeader}
	return c, fake, req, peer
}

func BenchmarkTokenCacheHit(b *testing.B) {
	c, _, req, peer := benchSetup(b)
	b.Run("tokenwasm", func(b *testing.B) {
		ts := c.TokenSource(req)
		benchTokenSource(b, ts)
	})
	b.Run("x-oauth2", func(b *testing.B) {
		benchTokenSource(b, oauth2.ReuseTokenSource(nil, peer.TokenSource(context.Background())))
	})
	// Runtime.Token finds the source by the request itself, each call: its goal is 1.5x TokenSource,
	// 0 allocations.
	b.Run("client-token", func(b *testing.B) {
		ctx := context.Background()
		if _, err := c.Token(ctx, req); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Token(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchTokenSource(b *testing.B, ts oauth2.TokenSource) {
	if _, err := ts.Token(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := ts.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenCacheHitParallel(b *testing.B) {
	c, _, req, peer := benchSetup(b)
	for _, bc := range []struct {
		name string
		ts   oauth2.TokenSource
	}{
		{"tokenwasm", c.TokenSource(req)},
		{"x-oauth2", oauth2.ReuseTokenSource(nil, peer.TokenSource(context.Background()))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if _, err := bc.ts.Token(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bc.ts.Token(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkTokenFetch: every iteration is a real request to the fake, caches bypassed.
func BenchmarkTokenFetch(b *testing.B) {
	c, fake, req, peer := benchSetup(b)
	ctx := context.Background()
	b.Run("tokenwasm", func(b *testing.B) {
		req := req
		req.Force = true
		benchFetches(b, c, req, fake)
	})
	b.Run("x-oauth2", func(b *testing.B) {
		before := fake.Requests()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := peer.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(fake.Requests()-before)/float64(b.N), "requests/op")
	})
}

// BenchmarkCodec: encode + decode of one NikoHealth exchange, in wasm and natively: the price of the
// wasm boundary.
func BenchmarkCodec(b *testing.B) {
	req, dec := codecInputs()
	b.Run("wasm", func(b *testing.B) {
		c, err := New(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(context.Background())
		inst, err := c.pool.get(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		defer c.pool.put(context.Background(), inst)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := inst.Call(ctx, abi.ExportEncode, req); err != nil {
				b.Fatal(err)
			}
			if _, err := inst.Call(ctx, abi.ExportDecode, dec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("native", func(b *testing.B) {
		now := func() int64 { return time.Now().UnixMilli() }
		m := new(core.Memo) // as in the plugin, which keeps one per instance
		b.ReportAllocs()
		for b.Loop() {
			core.Encode(m, req, nil)
			core.Decode(m, dec, now)
		}
	})
}

// codecInputs are BenchmarkCodec's encode and decode inputs: one NikoHealth exchange.
func codecInputs() (encode, decode []byte) {
	encode = []byte(`{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"}`)
	decode = []byte(`{"request":{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"},` +
		`"response":{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"BE55CF536EC46D12F9FDBF1EFD831E086B121939B9806DF43F3A6043C67DB0AC\",\"expires_in\":1200,\"token_type\":\"Bearer\",\"scope\":\"external\"}"},"now_ms":1767225600000}`)
	return encode, decode
}

// benchPlugin is the plugin the call benchmarks run: the embedded build, or the file named by
// TOKENWASM_BENCH_WASM (to compare builds, such as TinyGo against standard Go).
func benchPlugin(b *testing.B) []byte {
	if path := os.Getenv("TOKENWASM_BENCH_WASM"); path != "" {
		wasm, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		return wasm
	}
	return Plugin()
}

// noImports answers every import with an empty object: enough for exports that do no I/O.
var noImports = map[string]extism.HostFunc{
	abi.ImportHTTPSend:    func(context.Context, []byte) []byte { return []byte(`{"error":"none"}`) },
	abi.ImportCacheGet:    func(context.Context, []byte) []byte { return []byte(`{"hit":false}`) },
	abi.ImportCacheSet:    func(context.Context, []byte) []byte { return []byte(`{}`) },
	abi.ImportCacheDelete: func(context.Context, []byte) []byte { return []byte(`{}`) },
}

// BenchmarkCall: one export through our host's kernel. The official go-sdk's side, the same export
// and input, is BenchmarkCall/go-sdk in host/gosdkwitness (a module of its own, with go-sdk).
func BenchmarkCall(b *testing.B) {
	in := []byte(`{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"}`)
	b.Run("lean", func(b *testing.B) {
		m, err := extism.Compile(context.Background(), benchPlugin(b), abi.ImportModule, noImports, extism.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close(context.Background())
		inst, err := m.Instantiate(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := inst.Call(ctx, abi.ExportEncode, in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkInstance: a new plugin instance, compiling from scratch (cold) or from a warm compilation
// cache (cached), and from an already compiled module (instantiate: what the pool pays).
func BenchmarkInstance(b *testing.B) {
	ctx := context.Background()
	newInstance := func(b *testing.B, cache wazero.CompilationCache) {
		m, err := extism.Compile(ctx, benchPlugin(b), abi.ImportModule, noImports, extism.Config{CompilationCache: cache})
		if err != nil {
			b.Fatal(err)
		}
		i, err := m.Instantiate(ctx)
		if err != nil {
			b.Fatal(err)
		}
		_ = i.Close(ctx)
		_ = m.Close(ctx)
	}
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			newInstance(b, nil)
		}
	})
	b.Run("cached", func(b *testing.B) {
		cache := wazero.NewCompilationCache()
		newInstance(b, cache)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			newInstance(b, cache)
		}
	})
	b.Run("instantiate", func(b *testing.B) {
		m, err := extism.Compile(ctx, benchPlugin(b), abi.ImportModule, noImports, extism.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close(ctx)
		var mem uint32
		b.ReportAllocs()
		for b.Loop() {
			i, err := m.Instantiate(ctx)
			if err != nil {
				b.Fatal(err)
			}
			// One real call, so the memory reported is what a pooled instance holds.
			if _, err := i.Call(ctx, abi.ExportEncode, []byte(`{"provider":"candid","client_id":"c","client_secret":"s"}`)); err != nil {
				b.Fatal(err)
			}
			mem = i.MemorySize()
			_ = i.Close(ctx)
		}
		b.ReportMetric(float64(mem)/1024, "KiB-memory")
	})
}

// BenchmarkStampede: 1,000 goroutines on a cold cache; reports requests at the fake (must be 1) and
// the callers' p50 and p99 latency.
func BenchmarkStampede(b *testing.B) {
	var p50, p99, requests float64
	for b.Loop() {
		b.StopTimer()
		fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
		c, err := New(context.Background(), WithLoopback())
		if err != nil {
			b.Fatal(err)
		}
		cfg := fake.Config()
		req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
		lat := make([]time.Duration, 1000)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range lat {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				t0 := time.Now()
				if _, err := c.Token(context.Background(), req); err != nil {
					b.Error(err)
				}
				lat[i] = time.Since(t0)
			}()
		}
		b.StartTimer()
		close(start)
		wg.Wait()
		b.StopTimer()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50 += float64(lat[500].Microseconds())
		p99 += float64(lat[990].Microseconds())
		requests += float64(fake.Requests())
		_ = c.Close(context.Background())
		fake.Close()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(requests/n, "requests/op")
	b.ReportMetric(p50/n, "p50-us")
	b.ReportMetric(p99/n, "p99-us")
}

// BenchmarkFlowDriver is one forced fetch against the loopback fake through each driver of the
// plugin's flow: the token export (imports called inline) and token_step (one plugin call per step,
// the I/O between calls). The step form's goal is at most 10% more per fetch.
func BenchmarkFlowDriver(b *testing.B) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	b.Cleanup(fake.Close)
	cfg := fake.Config()
	for _, driver := range []struct {
		name  string
		steps bool
	}{{"token", false}, {"token_step", true}} {
		b.Run(driver.name, func(b *testing.B) {
			c, err := New(context.Background(), WithLoopback(), withStepFlow(driver.steps), WithPlugin(benchPlugin(b)))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close(context.Background())
			req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
				TokenURL: fake.TokenURL(), Force: true}
			benchFetches(b, c, req, fake)
		})
	}
}

// benchFetches measures c.Token(req) (a forced request: one fetch each), with the requests the fake
// saw per iteration.
func benchFetches(b *testing.B, c *Runtime, req abi.TokenRequest, fake *providertest.Fake) {
	ctx := context.Background()
	before := fake.Requests()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Token(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(fake.Requests()-before)/float64(b.N), "requests/op")
}
