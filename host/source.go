package host

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"golang.org/x/oauth2"
)

// Refresh timing. The plugin decides a token's schedule (abi/ABI.md, "The schedule"): it is served
// from memory until its refresh point, refreshed in the background between that point and its stale
// point (callers keep getting the valid token), and fetched in the caller's path only once stale.
const (
	// retryAttempts: tries of one fetch on a transient failure, each after the retry_after_ms the
	// plugin gave the failure (its fleet-wide backoff: 1 s, 2 s, ...), within the fetch's timeout.
	retryAttempts = 3
	// defaultTimeout and maxTimeout bound one fetch, retries included, as the plugin bounds timeout_ms
	// (abi/ABI.md, TokenRequest).
	defaultTimeout = 10 * time.Second
	maxTimeout     = 120 * time.Second
)

// held is a token with its refresh points, swapped atomically so a cache hit is one atomic load and
// one clock read.
type held struct {
	tok        *abi.Token
	oauth      *oauth2.Token
	freshUntil int64 // Unix ns: before this, serve without refreshing
	validUntil int64 // Unix ns: before this, serve (and refresh in the background)
}

// newHeld holds the token of a token answer, with the schedule the plugin gave it.
func newHeld(res *abi.Result) *held {
	t := res.Token
	exp := time.UnixMilli(t.ExpiresAtMS)
	return &held{
		tok: t,
		oauth: (&oauth2.Token{
			AccessToken:  t.AccessToken,
			TokenType:    t.TokenType,
			RefreshToken: t.RefreshToken,
			Expiry:       exp,
			ExpiresIn:    t.ExpiresIn,
		}).WithExtra(extra(t)),
		freshUntil: time.UnixMilli(min(res.RefreshAtMS, t.ExpiresAtMS)).UnixNano(),
		validUntil: time.UnixMilli(min(res.StaleAtMS, t.ExpiresAtMS)).UnixNano(),
	}
}

// served is h as memory serves it after the fetch: without the refresh token.
func (h *held) served() *held {
	if h.tok.RefreshToken == "" {
		return h
	}
	t := *h.tok
	t.RefreshToken = ""
	o := *h.oauth
	o.RefreshToken = ""
	return &held{tok: &t, oauth: o.WithExtra(extra(&t)), freshUntil: h.freshUntil, validUntil: h.validUntil}
}

// extra is what oauth2.Token.Extra answers: token_type, expires_in and scope, as the plugin
// normalized them (expires_in in seconds, token_type "Bearer"), typed as x/oauth2 gives a JSON
// answer's members (a number is a float64). The plugin's Token holds no other member of the response
// (abi.Token), so Extra has none of them; secrets stay in their fields only.
func extra(t *abi.Token) map[string]any {
	m := map[string]any{"token_type": t.TokenType, "expires_in": float64(t.ExpiresIn)}
	if t.Scope != "" {
		m["scope"] = t.Scope
	}
	return m
}

// source serves the tokens of one credential set: lock-free hits, one fetch at a time, refresh ahead.
type source struct {
	c *Runtime

	mu     sync.Mutex       // guards flight and lastRefresh
	req    abi.TokenRequest // the credential set as first given: the flow follows its grant's lineage
	flight *flight
	// lastRefresh is the newest refresh token the hook was given, so it gets each new value once.
	lastRefresh string

	cur        atomic.Pointer[held]
	refreshing atomic.Bool
	retryAt    atomic.Int64 // Unix ns before which no background refresh starts (the plugin's retry_after_ms)
	lastUsed   atomic.Int64 // Unix ns; the source map evicts the least recently used idle source
	active     atomic.Int32 // callers waiting on a fetch plus fetches running: never evicted while > 0
}

// flight is one fetch in progress; every caller that needs it waits on done. It runs on its own
// goroutine under the Runtime's context, so no caller's deadline ends it for the others, and it is
// canceled when the last caller waiting for it gives up.
type flight struct {
	done    chan struct{}
	h       *held
	err     error
	waiters int // guarded by source.mu
	cancel  context.CancelFunc
	oneTime bool // its grant uses up a credential: it runs to its end (see oneTime)
}

// oneTime reports whether req's grant uses up a credential when sent: a refresh token the provider
// may rotate, or an authorization code, which works once.
func oneTime(req abi.TokenRequest) bool {
	return req.GrantType == abi.GrantRefreshToken || req.GrantType == abi.GrantAuthorizationCode
}

// request returns the credential set as first given; the flow sends its grant's newest refresh
// token in place of the request's.
func (s *source) request() abi.TokenRequest { return s.req }

// token returns a valid token, fetching only when none is held or the held one is past its skew.
func (s *source) token(ctx context.Context) (*abi.Token, error) {
	h, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	return h.tok, nil
}

func (s *source) get(ctx context.Context) (*held, error) {
	if s.c.closed.Load() {
		return nil, ErrClosed
	}
	h := s.cur.Load()
	if h != nil {
		n := s.c.clock().UnixNano()
		if n < h.freshUntil {
			return h, nil
		}
		if n < h.validUntil {
			s.refreshAhead(h)
			return h, nil
		}
	}
	fresh, err := s.fetchShared(ctx, false, 0)
	if err != nil && h != nil && s.c.clock().UnixMilli() < h.tok.ExpiresAtMS && !errors.Is(err, ErrClosed) {
		// The provider failed, but the held token has not expired yet: serve it rather than fail.
		s.c.log.Warn("tokenwasm: fetch failed inside the expiry skew; serving the current token",
			"provider", s.req.Provider, "err", err)
		return h, nil
	}
	return fresh, err
}

// refresh fetches a new token now (force skips every cache).
func (s *source) refresh(ctx context.Context, force bool) (*abi.Token, error) {
	h, err := s.fetchShared(ctx, force, 0)
	if err != nil {
		return nil, err
	}
	return h.tok, nil
}

// fetchShared joins the fetch in progress (a forced one starts its own, unless its grant is one-time)
// and waits for it until ctx ends. A context already done sends nothing.
func (s *source) fetchShared(ctx context.Context, force bool, minTTL time.Duration) (*held, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.c.enter(); err != nil {
		return nil, err
	}
	defer s.c.leave()
	s.active.Add(1)
	defer s.active.Add(-1)

	s.mu.Lock()
	f := s.flight
	// A grant that uses up its credential (a refresh token that rotates, an authorization code) is
	// never sent twice at once: a forced fetch joins the one in flight, whose token is new anyway.
	if f == nil || force && !f.oneTime {
		f = s.start(force, minTTL)
	}
	f.waiters++
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.h, f.err
	case <-ctx.Done():
		s.mu.Lock()
		if f.waiters--; f.waiters == 0 && !f.oneTime {
			// Nobody waits any more: stop retrying, and let the next caller start afresh. A one-time
			// grant's exchange is left to finish (within timeout_ms): canceled mid-way, the provider
			// has used up the credential and the new one would be lost.
			f.cancel()
			if s.flight == f {
				s.flight = nil
			}
		}
		s.mu.Unlock()
		return nil, ctx.Err()
	}
}

// start runs a new flight; s.mu is held. The caller holds the Runtime open (enter), so the flight's
// own hold on it cannot race with Close.
func (s *source) start(force bool, minTTL time.Duration) *flight {
	f := &flight{done: make(chan struct{}), oneTime: oneTime(s.req)}
	parent := s.c.ctx
	if f.oneTime {
		parent = context.WithoutCancel(parent) // not even Close cuts it off: timeout_ms bounds it
	}
	fctx, cancel := context.WithCancel(parent)
	f.cancel = cancel
	if !force || f.oneTime {
		s.flight = f
	}
	req := s.req
	s.c.inflight.Add(1)
	s.active.Add(1)
	go s.run(fctx, f, req, force, minTTL)
	return f
}

func (s *source) run(ctx context.Context, f *flight, req abi.TokenRequest, force bool, minTTL time.Duration) {
	defer s.c.inflight.Done()
	defer s.active.Add(-1)
	res, err := s.fetchWithRetry(ctx, req, force, minTTL)
	if err == nil {
		// The callers of this fetch get the refresh token it brought; later ones are served the token
		// from memory without it, as the ABI serves a cached token.
		f.h = newHeld(res)
		s.cur.Store(f.h.served())
		s.newRefreshToken(ctx, req, res.Token)
	}
	f.err = err
	s.mu.Lock()
	if s.flight == f {
		s.flight = nil
	}
	s.mu.Unlock()
	f.cancel()
	close(f.done)
}

// fetchWithRetry calls the plugin's token export, retrying transient failures (transport, 5xx) with
// exponential backoff and full jitter. Never 4xx, never a 429 (the gate handles those), never a
// policy refusal. The request's timeout_ms bounds the whole fetch, retries included.
func (s *source) fetchWithRetry(ctx context.Context, req abi.TokenRequest, force bool, minTTL time.Duration) (*abi.Result, error) {
	timeout := defaultTimeout
	if req.TimeoutMS > 0 {
		timeout = min(time.Duration(req.TimeoutMS)*time.Millisecond, maxTimeout)
	}
	deadline := now().Add(timeout)
	// The deadline bounds the HTTP exchanges and the waits, not the plugin's execution: a call stopped
	// inside wasm costs its instance, and the plugin answers a timed-out http_send with a typed error.
	ctx = withFetchLabels(context.WithValue(ctx, fetchDeadlineKey{}, deadline), &req)
	req.Force = force
	req.MinTTLMS = minTTL.Milliseconds()
	if s.c.testClock {
		req.NowMS = s.c.clock().UnixMilli() // the plugin judges expiry by the same clock as the source
	}
	if sc, ok := s.c.cache.(SharedCache); ok && sc.Shared() {
		req.FleetLock = true
	}
	req, err := s.c.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	input, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		at := time.Now()
		res, err := s.c.fetch(ctx, input)
		cached := res != nil && res.Cached
		s.c.observeAttempt(ctx, newFetch(&req, attempt, at, cached, err))
		var ae *abi.Error
		if err == nil || attempt == retryAttempts || !errors.As(err, &ae) || !ae.Retryable || ae.Kind == abi.KindRateLimited {
			s.c.observeFetch(ctx, newFetch(&req, attempt, start, cached, err))
			return res, err
		}
		wait := time.Duration(ae.RetryAfterMS) * time.Millisecond
		if now().Add(wait).After(deadline) {
			s.c.observeFetch(ctx, newFetch(&req, attempt, start, false, err))
			return nil, err // no time left for another try
		}
		s.c.metrics.retries.Add(1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			s.c.observeFetch(ctx, newFetch(&req, attempt, start, false, err))
			return nil, err
		}
	}
}

// fetchDeadlineKey carries a fetch's deadline (timeout_ms, retries included) to http_send and to
// the waits for another process's fetch.
type fetchDeadlineKey struct{}

// fetchDeadline returns ctx's fetch deadline, if it has one.
func fetchDeadline(ctx context.Context) (time.Time, bool) {
	d, ok := ctx.Value(fetchDeadlineKey{}).(time.Time)
	return d, ok
}

// newRefreshToken gives the Runtime's hook each new refresh token the provider returned, to persist
// it beyond the cache's life. Following it is the flow's (the grant's lineage, abi/ABI.md): the next
// fetch sends it, in this process and in every one sharing the cache.
func (s *source) newRefreshToken(ctx context.Context, used abi.TokenRequest, tok *abi.Token) {
	rt := tok.RefreshToken
	s.mu.Lock()
	seen := rt == "" || rt == s.lastRefresh || rt == used.RefreshToken
	if !seen {
		s.lastRefresh = rt
	}
	s.mu.Unlock()
	if seen {
		return
	}
	s.c.metrics.rotations.Add(1)
	if hook := s.c.onRefreshToken; hook != nil {
		hook(ctx, used, rt)
	}
}

// refreshAhead starts one background refresh of h unless one runs or a failed one is backing off. It
// asks the plugin for a token with more life left than h's refresh window, so a token another process
// already refreshed into the shared cache is taken instead of fetching again.
func (s *source) refreshAhead(h *held) {
	if s.c.clock().UnixNano() < s.retryAt.Load() || !s.refreshing.CompareAndSwap(false, true) {
		return
	}
	if s.c.enter() != nil {
		s.refreshing.Store(false)
		return
	}
	s.c.metrics.refreshes.Add(1)
	window := time.UnixMilli(h.tok.ExpiresAtMS).Sub(time.Unix(0, h.freshUntil)) + time.Millisecond
	go func() {
		defer s.c.leave()
		defer s.refreshing.Store(false)
		fresh, err := s.fetchShared(s.c.ctx, false, window)
		if err != nil {
			// The plugin says when to try again (retry_after_ms, its fleet-wide backoff); a failure it
			// does not call retryable ends refreshing ahead: callers fetch once the token is stale.
			s.c.metrics.refreshFailures.Add(1)
			retryAt := time.Unix(0, h.validUntil)
			var ae *abi.Error
			if errors.As(err, &ae) && ae.Retryable && ae.RetryAfterMS > 0 {
				retryAt = s.c.clock().Add(time.Duration(ae.RetryAfterMS) * time.Millisecond)
			}
			s.retryAt.Store(retryAt.UnixNano())
			kind, _ := errorKind(err)
			s.c.log.Info("tokenwasm: refresh ahead of expiry failed; serving the current token",
				"provider", providerLabel(s.req.Provider), "kind", kind, "retry_in_ms", time.Until(retryAt).Milliseconds(), "err", err)
			return
		}
		s.c.log.Info("tokenwasm: refreshed ahead of expiry", "provider", providerLabel(s.req.Provider),
			"expires_in_s", int64(time.Until(time.UnixMilli(fresh.tok.ExpiresAtMS)).Seconds()))
	}()
}

// invalidate drops the token (only if it is still bad, when bad is given) here and in the shared
// cache, and reports whether a new token is worth trying (the plugin's 401 window, for bad).
func (s *source) invalidate(ctx context.Context, bad string) (bool, error) {
	req := s.request()
	req.AccessToken = bad
	retry, err := s.c.invalidateFlow(ctx, req)
	// For a 401 (bad), dropped from memory only when the plugin says a new token is worth trying:
	// with the cache failing, the 401 window cannot be kept, and dropping would fetch a token per
	// API call.
	if h := s.cur.Load(); h != nil && (bad == "" || h.tok.AccessToken == bad && retry) {
		s.cur.CompareAndSwap(h, nil)
	}
	return retry, err
}

// unauthorized handles an API's 401 to a request sent with h and reports whether a new token is worth
// trying. The plugin decides, fleet-wide: a token is dropped for a 401 at most once per window per
// identity (abi/ABI.md, "invalidate"), and within it a 401 is the API's answer: an API that refuses
// every token would otherwise cost a fetch per request, in every process.
func (s *source) unauthorized(ctx context.Context, h *held) (bool, error) {
	if cur := s.cur.Load(); cur == nil || cur.tok.AccessToken != h.tok.AccessToken {
		return true, nil // already replaced: retry with the new one
	}
	retry, err := s.invalidate(ctx, h.tok.AccessToken)
	if retry {
		s.c.metrics.invalidations.Add(1)
	}
	return retry, err
}

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
	req.Force, req.NowMS, req.MinTTLMS, req.AccessToken, req.FleetLock = false, 0, 0, "", false
	req.RevocationURL = "" // where to revoke is not part of the credential set
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
	n := now().UnixNano()
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

// TokenSource is an oauth2.TokenSource for one credential set. Token is a lock-free read while the
// held token is fresh; it never blocks on a refresh while the held token is still valid.
type TokenSource struct {
	s   *source
	err error
	ctx context.Context // Token's context (Config.TokenSource); nil: context.Background
}

// TokenSource returns the token source for req. Sources are shared: two calls with the same request
// return sources backed by the same token.
func (c *Runtime) TokenSource(req abi.TokenRequest) *TokenSource {
	s, err := c.sources.get(c, req)
	return &TokenSource{s: s, err: err}
}

// Token implements oauth2.TokenSource.
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	if ts.ctx != nil {
		return ts.TokenContext(ts.ctx)
	}
	return ts.TokenContext(context.Background())
}

// TokenContext is Token bounded by ctx: it returns by ctx's deadline, with an error that
// errors.Is(err, ctx.Err()) when it ended first.
func (ts *TokenSource) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	if ts.err != nil {
		return nil, ts.err
	}
	h, err := ts.s.get(ctx)
	if err != nil {
		return nil, err
	}
	return h.oauth, nil
}
