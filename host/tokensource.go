package host

import (
	"context"

	"github.com/tokenwasm/tokenwasm/abi"
	"golang.org/x/oauth2"
)

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
