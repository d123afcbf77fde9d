package host

import (
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
