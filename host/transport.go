package host

import (
	"context"
	"io"
	"net/http"

	"github.com/tokenwasm/tokenwasm/abi"
)

// Transport returns an http.RoundTripper that sets "Authorization: Bearer <token>" for req's
// credentials on every request through base (http.DefaultTransport when nil). When the API answers 401
// it invalidates that token, gets a new one and retries once, if the request body can be replayed;
// a source drops a token for a 401 at most once every 30 s, so an API that refuses every token costs
// no fetch per request: its 401 is returned.
func (c *Runtime) Transport(base http.RoundTripper, req abi.TokenRequest) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	s, err := c.sources.get(c, req)
	return &transport{base: base, src: s, err: err}
}

type transport struct {
	base http.RoundTripper
	src  *source
	err  error
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.err != nil {
		closeBody(r) // the RoundTripper contract: the body is closed, errors included
		return nil, t.err
	}
	h, err := t.src.get(r.Context())
	if err != nil {
		closeBody(r)
		return nil, err
	}
	resp, err := t.base.RoundTrip(authorized(r, h))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	// The token was refused: drop it (once per token, and once per source in a while: an API that
	// refuses every token gets its 401 back instead of a fetch per request) and try once more, if
	// the body can be sent again; if not, the dropped token still spares the next request.
	again, err := t.src.unauthorized(r.Context(), h)
	if err != nil || !again || !replayable(r) {
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if h, err = t.src.get(r.Context()); err != nil {
		return nil, err
	}
	retry := authorized(r, h)
	if r.GetBody != nil {
		if retry.Body, err = r.GetBody(); err != nil {
			return nil, err
		}
	}
	return t.base.RoundTrip(retry)
}

// authorized clones r with the token's Authorization header (a RoundTripper must not modify r).
func authorized(r *http.Request, h *held) *http.Request {
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", h.oauth.Type()+" "+h.tok.AccessToken)
	return r2
}

func replayable(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
}

// The 401 policy: what a source does when an API refuses its token. The transport above applies it
// to every request it sends; Runtime.Invalidate drops a token on the caller's word.

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
