package host

import (
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/internal/extism"
)

// Plugin returns a copy of the TinyGo build of the plugin, committed so that Go users need no wasm
// toolchain (New runs it unless WithPlugin names another). A copy, because the bytes are the
// default of every Runtime in the process: a caller that wrote into a shared slice would change
// what the others compile. Rebuild it from the repository root with:
//
//	./build.sh --embed
func Plugin() []byte { return append([]byte(nil), pluginWasm...) }

//go:embed tokenwasm.wasm
var pluginWasm []byte

// Runtime runs the plugin. It is safe for concurrent use; Close releases it.
type Runtime struct {
	module    *extism.Module
	pool      *pool
	cache     Cache
	sender    *sender
	log       *slog.Logger
	metrics   *Metrics
	observers []Observer
	sources   sourceMap
	workers   *workers        // the goroutines fetches run on (workers.go)
	ctx       context.Context // canceled by Close: ends fetches and background refreshes
	cancel    context.CancelFunc

	onRefreshToken func(ctx context.Context, req abi.TokenRequest, refreshToken string)
	stepFlow       bool                  // drive the flow through token_step (step.go; the default), not the token export
	clock          clock                 // the time tokens live by (clock.go); nil: the wall clock
	signers        map[string]signingKey // private_key_jwt keys by key id (signer.go)
	discovery      discoveryCache        // SMART configurations by FHIR base URL (discovery.go)

	mu       sync.Mutex // guards the transition to closed against inflight.Add
	closed   atomic.Bool
	inflight sync.WaitGroup // calls and fetches in progress: Close waits for them
}

// ErrClosed is returned by every call on a Runtime after Close.
var ErrClosed = errors.New("tokenwasm: runtime is closed")

// Option configures a Runtime.
type Option func(*config)

type config struct {
	wasm          []byte
	cache         Cache
	transport     http.RoundTripper
	allowed       []string
	allowLoopback bool
	logger        *slog.Logger
	maxInstances  int
	warm          int
	memoryPages   uint32
	compileCache  wazero.CompilationCache
	stepFlow      bool
	clock         clock
	onRefresh     func(ctx context.Context, req abi.TokenRequest, refreshToken string)
	observers     []Observer
	signers       map[string]signingKey
	clientCerts   map[string]tls.Certificate
}

// WithPlugin runs another build of the plugin (for example the standard Go build) instead of the
// embedded one (Plugin).
func WithPlugin(wasm []byte) Option { return func(c *config) { c.wasm = wasm } }

// WithCache sets the token cache; the default is a MemoryCache. Share one Cache (such as Redis) across
// processes to share tokens and 429 gates across them.
func WithCache(cache Cache) Option { return func(c *config) { c.cache = cache } }

// WithHTTPTransport sets the transport http_send uses for token requests.
func WithHTTPTransport(rt http.RoundTripper) Option { return func(c *config) { c.transport = rt } }

// WithAllowedHosts adds token hosts http_send may reach ("host" or "*.domain"), to
// DefaultAllowedHosts(). Pattern's per-customer host must be added here.
func WithAllowedHosts(hosts ...string) Option {
	return func(c *config) { c.allowed = append(c.allowed, hosts...) }
}

// WithLoopback lets http_send reach loopback addresses, over plain http too: for tests and the
// demo against local fake providers. Never enable it where token_url comes from untrusted input.
func WithLoopback() Option { return func(c *config) { c.allowLoopback = true } }

// WithLogger sets the logger; records never carry secrets or tokens.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithMaxInstances bounds the plugin instances run at once (default 32); callers beyond it wait.
func WithMaxInstances(n int) Option { return func(c *config) { c.maxInstances = n } }

// WithWarmInstances creates n instances in New (default 1), so the first calls do not pay for
// instantiation (about 90 us each for the TinyGo build).
func WithWarmInstances(n int) Option { return func(c *config) { c.warm = n } }

// WithMemoryLimit caps each instance's wasm memories in 64 KiB pages (default 512: 32 MiB): the
// plugin's, and its kernel's, which holds what one call passes through the imports.
func WithMemoryLimit(pages uint32) Option { return func(c *config) { c.memoryPages = pages } }

// WithCompilationCache sets wazero's compilation cache. By default every Runtime of the process shares
// one in memory, so only the first compiles the plugin; wazero.NewCompilationCacheWithDir also saves
// the compile across restarts.
func WithCompilationCache(cc wazero.CompilationCache) Option {
	return func(c *config) { c.compileCache = cc }
}

// WithRefreshTokenHook sets a function called with each new refresh token a provider returns, so it
// can be persisted: req is the credential set as it was before (the refresh token it replaces, or the
// authorization code it follows), refreshToken the new value, which the Runtime uses from then on.
// The hook runs before the token is handed to callers, on the fetch's goroutine: keep it short. The
// Runtime never logs either value.
func WithRefreshTokenHook(hook func(ctx context.Context, req abi.TokenRequest, refreshToken string)) Option {
	return func(c *config) { c.onRefresh = hook }
}

// sharedCompilationCache is the default compilation cache of every Runtime in the process.
var sharedCompilationCache = wazero.NewCompilationCache()

// New compiles the plugin and returns a Runtime. Instances are created on demand and reused.
func New(ctx context.Context, opts ...Option) (*Runtime, error) {
	cfg := config{wasm: pluginWasm, maxInstances: 32, warm: 1, memoryPages: 512, compileCache: sharedCompilationCache, stepFlow: true}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.cache == nil {
		mc := NewMemoryCache(0)
		mc.clock = cfg.clock // the default cache's entries expire by the Runtime's clock
		cfg.cache = mc
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	sender, err := newSender(cfg.transport, append(DefaultAllowedHosts(), cfg.allowed...), cfg.allowLoopback, cfg.clientCerts)
	if err != nil {
		return nil, err
	}
	c := &Runtime{
		cache:     cfg.cache,
		sender:    sender,
		log:       cfg.logger,
		metrics:   newMetrics(),
		observers: cfg.observers,

		onRefreshToken: cfg.onRefresh,
		stepFlow:       cfg.stepFlow,
		clock:          cfg.clock,
		signers:        cfg.signers,
	}
	imports := map[string]extism.HostFunc{
		abi.ImportHTTPSend:    c.httpSend,
		abi.ImportCacheGet:    c.cacheGet,
		abi.ImportCacheSet:    c.cacheSet,
		abi.ImportCacheDelete: c.cacheDelete,
	}
	m, err := extism.Compile(ctx, cfg.wasm, abi.ImportModule, imports, extism.Config{
		MemoryLimitPages: cfg.memoryPages,
		CompilationCache: cfg.compileCache,
		Logger:           cfg.logger,
	})
	if err != nil {
		return nil, fmt.Errorf("tokenwasm: compile plugin: %w", err)
	}
	c.module = m
	c.pool = newPool(m, cfg.maxInstances)
	if err := c.pool.warm(ctx, min(cfg.warm, cfg.maxInstances)); err != nil {
		_ = m.Close(ctx)
		return nil, err
	}
	c.sources.init()
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.workers = newWorkers(c.ctx)
	return c, nil
}

// Close refuses new calls, waits for the calls and fetches in progress until ctx ends (as
// http.Server.Shutdown does), then releases the plugin. If ctx ends first, Close returns its error at
// once, stops what still runs and releases the plugin in the background when that has stopped (an
// exchange of a refresh token or an authorization code is let finish, within its timeout_ms, so the
// new refresh token reaches the hook). Calls after Close fail with ErrClosed.
func (c *Runtime) Close(ctx context.Context) error {
	c.mu.Lock()
	already := c.closed.Swap(true)
	c.mu.Unlock()
	if already {
		return nil
	}
	done := make(chan struct{})
	go func() {
		c.inflight.Wait()
		close(done)
	}()
	release := func() error {
		c.pool.close(context.WithoutCancel(ctx))
		return c.module.Close(context.WithoutCancel(ctx))
	}
	select {
	case <-done:
		c.cancel()
		return release()
	case <-ctx.Done():
		// Stop what still runs (a one-time grant's exchange excepted: canceled, its new refresh
		// token would be lost) and release the plugin once it has.
		c.cancel()
		go func() {
			<-done
			_ = release()
		}()
		return ctx.Err()
	}
}

// enter holds the Runtime open for one call; leave releases it.
func (c *Runtime) enter() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	c.inflight.Add(1)
	return nil
}

func (c *Runtime) leave() { c.inflight.Done() }

// Metrics returns the client's counters.
func (c *Runtime) Metrics() *Metrics { return c.metrics }

// call runs one export on a pooled instance and decodes its JSON answer into out. A token call that
// fails inside the plugin (trap, deadline) releases the fetch locks it took, so the other callers do
// not wait for the lock's TTL.
func (c *Runtime) call(ctx context.Context, export string, input []byte, out any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	inst, err := c.instance(ctx)
	if err != nil {
		return err
	}
	c.metrics.pluginCalls.Add(1)
	var locks *heldLocks
	if export == abi.ExportToken {
		locks = &heldLocks{}
		ctx = context.WithValue(ctx, heldLocksKey{}, locks)
	}
	b, err := inst.Call(ctx, export, input)
	if err != nil && locks != nil {
		locks.release(context.WithoutCancel(ctx), c.cache)
	}
	if err == nil {
		if p, ok := out.(interface{ parse([]byte) error }); ok {
			err = p.parse(b)
		} else {
			err = json.Unmarshal(b, out)
		}
	}
	c.pool.put(ctx, inst)
	if err != nil {
		c.metrics.pluginFaults.Add(1)
		c.log.Warn("tokenwasm: plugin call failed", "export", export, "err", err)
		return fmt.Errorf("tokenwasm: %s: %w", export, err)
	}
	return nil
}

// instance takes an instance from the pool: an idle one at once, else waiting until ctx ends or, in
// a fetch, until its timeout_ms does.
func (c *Runtime) instance(ctx context.Context) (*extism.Instance, error) {
	if inst, ok := c.pool.tryGet(); ok {
		return inst, nil
	}
	if d, ok := fetchDeadline(ctx); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	return c.pool.get(ctx)
}

// Describe returns the plugin's ABI version and providers.
func (c *Runtime) Describe(ctx context.Context) (json.RawMessage, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	var out json.RawMessage
	if err := c.call(ctx, abi.ExportDescribe, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Encode returns the HTTP request the provider expects for req, without sending it.
func (c *Runtime) Encode(ctx context.Context, req abi.TokenRequest) (*abi.HTTPRequest, error) {
	var res abi.Result
	if err := c.callJSON(ctx, abi.ExportEncode, req, (*result)(&res)); err != nil {
		return nil, err
	}
	if res.Error != nil {
		return nil, res.Error
	}
	return res.Request, nil
}

// Decode turns a provider's response to req into a token or a typed *abi.Error.
func (c *Runtime) Decode(ctx context.Context, req abi.TokenRequest, resp abi.HTTPResponse) (*abi.Token, error) {
	var res abi.Result
	if err := c.callJSON(ctx, abi.ExportDecode, abi.DecodeInput{Request: req, Response: resp}, (*result)(&res)); err != nil {
		return nil, err
	}
	if res.Error != nil {
		return nil, res.Error
	}
	return res.Token, nil
}

// callJSON runs one export outside a fetch, holding the Runtime open for it.
func (c *Runtime) callJSON(ctx context.Context, export string, in, out any) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("tokenwasm: %w", err)
	}
	return c.call(ctx, export, b, out)
}

// fetch runs the plugin's token export with an already encoded request. While another process
// sharing the cache fetches the same token, the plugin answers pending: wait and ask again (a cache
// hit once that process is done, or the lock once it has died and its lock expired).
func (c *Runtime) fetch(ctx context.Context, input []byte) (*abi.Result, error) {
	var res abi.Result
	for {
		res = abi.Result{}
		if err := c.runToken(ctx, input, &res); err != nil {
			return nil, err
		}
		if res.Pending == nil {
			break
		}
		c.metrics.pendingWaits.Add(1)
		wait := time.Duration(res.Pending.RetryAfterMS) * time.Millisecond
		if d, ok := fetchDeadline(ctx); ok && time.Now().Add(wait).After(d) {
			return nil, &abi.Error{Kind: abi.KindTransport, Retryable: true,
				Message: "timed out waiting for another process's fetch of this token"}
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if res.Error != nil {
		c.metrics.countError(res.Error.Kind)
		return nil, res.Error
	}
	if res.Token == nil {
		return nil, errors.New("tokenwasm: token export answered neither token nor error")
	}
	if res.Cached {
		c.metrics.sharedHits.Add(1)
	}
	return &res, nil
}

// Token returns a valid token for req: from the in-process cache, else from the plugin (shared cache,
// then the provider). Concurrent calls for the same credentials share one fetch. A typed failure is
// an *abi.Error (use errors.As). Of req's per-call fields only Force is read: the Runtime sets
// now_ms, min_ttl_ms and fleet_lock itself (its clock, refresh ahead, a shared cache).
func (c *Runtime) Token(ctx context.Context, req abi.TokenRequest) (*abi.Token, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	s, err := c.sources.lookup(c, &req)
	if err != nil {
		return nil, err
	}
	if req.Force {
		return s.refresh(ctx, true)
	}
	return s.token(ctx)
}

// Invalidate drops the cached token for req everywhere (in-process and in the shared cache). Call it
// when an API answers 401 with a token that should still be valid. It drops whatever token is held:
// req.AccessToken is not read (Config.Client's transport drops a token only if it is the one the API
// refused).
func (c *Runtime) Invalidate(ctx context.Context, req abi.TokenRequest) error {
	s, err := c.sources.get(c, req)
	if err != nil {
		return err
	}
	_, err = s.invalidate(ctx, "")
	return err
}
