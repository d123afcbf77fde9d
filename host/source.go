package host

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"golang.org/x/oauth2"
)

// Refresh timing. A token is served from memory until its refresh point, refreshed in the background
// between that point and its expiry skew (callers keep getting the valid token), and fetched in the
// caller's path only once past the skew.
const (
	maxSkew        = 60 * time.Second // as the plugin's cache skew (abi/ABI.md)
	maxAhead       = 5 * time.Minute
	fetchTimeout   = 30 * time.Second // a shared fetch outlives any one caller's context
	refreshBackoff = time.Second      // first wait after a failed background refresh; doubles to maxBackoff
	maxBackoff     = 30 * time.Second
	retryAttempts  = 3 // tries of one fetch on a transient failure
	retryBase      = 100 * time.Millisecond
)

// held is a token with its precomputed refresh points, swapped atomically so a cache hit is one
// atomic load and one clock read.
type held struct {
	tok        *abi.Token
	oauth      *oauth2.Token
	freshUntil int64 // Unix ns: before this, serve without refreshing
	validUntil int64 // Unix ns: before this, serve (and refresh in the background)
}

func newHeld(t *abi.Token) *held {
	life := time.Duration(t.ExpiresAtMS-t.IssuedAtMS) * time.Millisecond
	skew, ahead := min(maxSkew, life/4), min(maxAhead, life/3)
	exp := time.UnixMilli(t.ExpiresAtMS)
	return &held{
		tok: t,
		oauth: (&oauth2.Token{
			AccessToken:  t.AccessToken,
			TokenType:    t.TokenType,
			RefreshToken: t.RefreshToken,
			Expiry:       exp,
			ExpiresIn:    t.ExpiresIn,
		}),
		freshUntil: exp.Add(-ahead).UnixNano(),
		validUntil: exp.Add(-skew).UnixNano(),
	}
}

// source serves the tokens of one credential set: lock-free hits, one fetch at a time, refresh ahead.
type source struct {
	c   *Client
	req abi.TokenRequest

	cur        atomic.Pointer[held]
	mu         sync.Mutex // guards flight
	flight     *flight
	refreshing atomic.Bool
	retryAt    atomic.Int64 // Unix ns before which no background refresh starts
	backoff    atomic.Int64 // current background backoff, ns
}

// flight is one fetch in progress; every caller that needs it waits on done.
type flight struct {
	done chan struct{}
	h    *held
	err  error
}

// token returns a valid token, fetching only when none is held or the held one is past its skew.
func (s *source) token(ctx context.Context) (*abi.Token, error) {
	h, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	return h.tok, nil
}

func (s *source) get(ctx context.Context) (*held, error) {
	h := s.cur.Load()
	if h != nil {
		n := now().UnixNano()
		if n < h.freshUntil {
			return h, nil
		}
		if n < h.validUntil {
			s.refreshAhead(h)
			return h, nil
		}
	}
	fresh, err := s.fetchShared(ctx, false, 0)
	if err != nil && h != nil && time.Now().UnixMilli() < h.tok.ExpiresAtMS {
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

// fetchShared joins the fetch in progress or runs one. The caller that starts it runs it on its own
// goroutine (a new goroutine per fetch costs more than the fetch on a loaded machine), under a
// context that its own cancellation does not end (bounded by fetchTimeout), so one caller giving up
// does not fail the others; each follower waits on its own ctx.
func (s *source) fetchShared(ctx context.Context, force bool, minTTL time.Duration) (*held, error) {
	s.mu.Lock()
	f := s.flight
	if f != nil && !force {
		s.mu.Unlock()
		select {
		case <-f.done:
			return f.h, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f = &flight{done: make(chan struct{})}
	if !force {
		s.flight = f
	}
	s.mu.Unlock()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	tok, err := s.fetchWithRetry(fctx, force, minTTL)
	cancel()
	if err == nil {
		f.h = newHeld(tok)
		s.cur.Store(f.h)
	}
	f.err = err
	s.mu.Lock()
	if s.flight == f {
		s.flight = nil
	}
	s.mu.Unlock()
	close(f.done)
	return f.h, f.err
}

// fetchWithRetry calls the plugin's token export, retrying transient failures (transport, 5xx) with
// exponential backoff and full jitter. Never 4xx, never a 429: the gate handles those.
func (s *source) fetchWithRetry(ctx context.Context, force bool, minTTL time.Duration) (*abi.Token, error) {
	req := s.req
	req.Force = force
	req.MinTTLMS = minTTL.Milliseconds()
	if sc, ok := s.c.cache.(SharedCache); ok && sc.Shared() {
		req.FleetLock = true
	}
	input, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		tok, _, err := s.c.fetch(ctx, input)
		var ae *abi.Error
		if err == nil || attempt == retryAttempts || !errors.As(err, &ae) || !ae.Retryable || ae.Kind == abi.KindRateLimited {
			return tok, err
		}
		s.c.metrics.retries.Add(1)
		wait := time.Duration(rand.Int64N(int64(retryBase << (attempt - 1))))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// refreshAhead starts one background refresh of h unless one runs or a failed one is backing off. It
// asks the plugin for a token with more life left than h's refresh window, so a token another process
// already refreshed into the shared cache is taken instead of fetching again.
func (s *source) refreshAhead(h *held) {
	if now().UnixNano() < s.retryAt.Load() || !s.refreshing.CompareAndSwap(false, true) {
		return
	}
	s.c.metrics.refreshes.Add(1)
	window := time.UnixMilli(h.tok.ExpiresAtMS).Sub(time.Unix(0, h.freshUntil)) + time.Millisecond
	s.c.wg.Add(1)
	go func() {
		defer s.c.wg.Done()
		defer s.refreshing.Store(false)
		if _, err := s.fetchShared(s.c.ctx, false, window); err != nil {
			s.c.metrics.refreshFailures.Add(1)
			b := min(max(2*time.Duration(s.backoff.Load()), refreshBackoff), maxBackoff)
			s.backoff.Store(int64(b))
			s.retryAt.Store(now().Add(b).UnixNano())
			s.c.log.Warn("tokenwasm: refresh ahead of expiry failed; serving the current token",
				"provider", s.req.Provider, "err", err)
			return
		}
		s.backoff.Store(0)
	}()
}

// invalidate drops the token (only if it is still bad, when bad is given) here and in the shared cache.
func (s *source) invalidate(ctx context.Context, bad string) error {
	if h := s.cur.Load(); h != nil && (bad == "" || h.tok.AccessToken == bad) {
		s.cur.CompareAndSwap(h, nil)
	}
	req := s.req
	req.AccessToken = bad
	var res abi.Result
	if err := s.c.callJSON(ctx, abi.ExportInvalidate, req, &res); err != nil {
		return err
	}
	if res.Error != nil {
		return res.Error
	}
	return nil
}

// sourceMap holds one source per credential set, keyed by a hash of the request (never the secret).
// It is bounded: rotating credentials (each refresh_token grant is a new set) would otherwise grow it
// for the life of the process.
type sourceMap struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*source
}

// maxSources bounds sourceMap; past it, sources without a valid token are dropped.
const maxSources = 4096

func (sm *sourceMap) init() { sm.m = make(map[[sha256.Size]byte]*source) }

func (sm *sourceMap) get(c *Client, req abi.TokenRequest) (*source, error) {
	req.Force, req.NowMS, req.MinTTLMS, req.AccessToken, req.FleetLock = false, 0, 0, "", false
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(b)
	sm.mu.Lock()
	defer sm.mu.Unlock()
	s, ok := sm.m[key]
	if !ok {
		if len(sm.m) >= maxSources {
			sm.sweep()
		}
		s = &source{c: c, req: req}
		sm.m[key] = s
	}
	return s, nil
}

// sweep drops the sources that hold no token or an expired one, or, if none does, the one whose
// token expires first. Callers holding a dropped source keep using it; it just is not shared anymore.
func (sm *sourceMap) sweep() {
	now := time.Now().UnixMilli()
	var soonest [sha256.Size]byte
	soonestAt := int64(-1)
	for k, s := range sm.m {
		h := s.cur.Load()
		if h == nil || h.tok.ExpiresAtMS <= now {
			delete(sm.m, k)
			continue
		}
		if soonestAt < 0 || h.tok.ExpiresAtMS < soonestAt {
			soonest, soonestAt = k, h.tok.ExpiresAtMS
		}
	}
	if len(sm.m) >= maxSources && soonestAt >= 0 {
		delete(sm.m, soonest)
	}
}

// TokenSource is an oauth2.TokenSource for one credential set. Token is a lock-free read while the
// held token is fresh; it never blocks on a refresh while the held token is still valid.
type TokenSource struct {
	s   *source
	err error
}

// TokenSource returns the token source for req. Sources are shared: two calls with the same request
// return sources backed by the same token.
func (c *Client) TokenSource(req abi.TokenRequest) *TokenSource {
	s, err := c.sources.get(c, req)
	return &TokenSource{s: s, err: err}
}

// Token implements oauth2.TokenSource.
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	return ts.TokenContext(context.Background())
}

// TokenContext is Token bounded by ctx.
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
