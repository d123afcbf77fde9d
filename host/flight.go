package host

import (
	"context"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
)

// Single flight (this file): a source runs one fetch at a time, which every caller that needs a token
// joins, as x/oauth2's reuseTokenSource serializes its tokenRefresher. The fetch is not any caller's:
// it runs under the Runtime's context, ends when the last caller waiting for it gives up, and a
// one-time grant's exchange (the credential is used up when sent) runs to its end. The new refresh
// token a fetch brings goes to the Runtime's hook once (rotation).

// flight is one fetch in progress; every caller that needs it waits on done. It runs on a worker
// goroutine (workers.go) under the Runtime's context, so no caller's deadline ends it for the others, and it is
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
		f = s.start(ctx, force, minTTL)
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

// start runs a new flight for the caller whose context is ctx (its profiler labels only: the flight
// runs under the Runtime's context); s.mu is held. The caller holds the Runtime open (enter), so the
// flight's own hold on it cannot race with Close.
func (s *source) start(ctx context.Context, force bool, minTTL time.Duration) *flight {
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
	s.c.workers.run(ctx, func() { s.run(fctx, f, req, force, minTTL) })
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
