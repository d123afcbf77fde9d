package host

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"golang.org/x/oauth2"
)

// Serving (this file): a source answers from memory while its token is fresh, refreshes ahead of
// expiry in the background while it is still valid, and fetches in the caller's path only once it is
// stale. The plugin decides the schedule (abi/ABI.md, "The schedule"); the single flight every fetch
// goes through is flight.go's, the 401 policy transport.go's.

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
	c   *Runtime
	req abi.TokenRequest // the credential set as first given: the flow follows its grant's lineage

	// Serving and refreshing ahead (this file).
	cur        atomic.Pointer[held]
	refreshing atomic.Bool  // a refresh ahead runs
	retryAt    atomic.Int64 // Unix ns before which no background refresh starts (the plugin's retry_after_ms)

	// Single flight and rotation (flight.go).
	mu     sync.Mutex // guards flight and lastRefresh
	flight *flight
	// lastRefresh is the newest refresh token the hook was given, so it gets each new value once.
	lastRefresh string

	// The source map's (source.go).
	lastUsed atomic.Int64 // Unix ns; the source map evicts the least recently used idle source
	active   atomic.Int32 // callers waiting on a fetch plus fetches running: never evicted while > 0
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
		n := s.c.clock.now().UnixNano()
		if n < h.freshUntil {
			return h, nil
		}
		if n < h.validUntil {
			s.refreshAhead(h)
			return h, nil
		}
	}
	fresh, err := s.fetchShared(ctx, false, 0)
	if err != nil && h != nil && s.c.clock.now().UnixMilli() < h.tok.ExpiresAtMS && !errors.Is(err, ErrClosed) {
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

// refreshAhead starts one background refresh of h unless one runs or a failed one is backing off. It
// asks the plugin for a token with more life left than h's refresh window, so a token another process
// already refreshed into the shared cache is taken instead of fetching again.
func (s *source) refreshAhead(h *held) {
	if s.c.clock.now().UnixNano() < s.retryAt.Load() || !s.refreshing.CompareAndSwap(false, true) {
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
				retryAt = s.c.clock.now().Add(time.Duration(ae.RetryAfterMS) * time.Millisecond)
			}
			s.retryAt.Store(retryAt.UnixNano())
			kind, _ := errorKind(err)
			s.c.log.Info("tokenwasm: refresh ahead of expiry failed; serving the current token",
				"provider", providerLabel(s.req.Provider), "kind", kind, "retry_in_ms", retryAt.Sub(s.c.clock.now()).Milliseconds(), "err", err)
			return
		}
		s.c.log.Info("tokenwasm: refreshed ahead of expiry", "provider", providerLabel(s.req.Provider),
			"expires_in_s", int64(time.UnixMilli(fresh.tok.ExpiresAtMS).Sub(s.c.clock.now()).Seconds()))
	}()
}
