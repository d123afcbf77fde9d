package host

import (
	"errors"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// tokenResult is the token export's answer, parsed with gjson: the fetch path's hottest decode.
type tokenResult abi.Result

var errNotJSON = errors.New("plugin answered invalid JSON")

func (r *tokenResult) parse(b []byte) error {
	if err := readResult(b, (*abi.Result)(r)); err != nil {
		return err
	}
	if r.Token == nil && r.Error == nil && r.Pending == nil {
		return errors.New("plugin answered neither token, error nor pending")
	}
	return nil
}

// result is the answer of another export (encode, decode, invalidate, a token_step op's final
// answer): read as tokenResult is, {} included.
type result abi.Result

func (r *result) parse(b []byte) error { return readResult(b, (*abi.Result)(r)) }

// readResult reads a plugin's Result answer with members: of a repeated member the first is read,
// as the plugin reads its inputs (abi/ABI.md, "Shapes").
func readResult(b []byte, r *abi.Result) error {
	if !gjson.ValidBytes(b) {
		return errNotJSON
	}
	var top [8]gjson.Result
	members(gjson.ParseBytes(b), top[:], "token", "cached", "error", "pending", "request", "refresh_at_ms", "stale_at_ms", "retry")
	if f := top[0]; f.IsObject() {
		var t [7]gjson.Result
		members(f, t[:], "access_token", "token_type", "expires_in", "expires_at_ms", "issued_at_ms", "refresh_token", "scope")
		r.Token = &abi.Token{AccessToken: t[0].Str, TokenType: t[1].Str, ExpiresIn: t[2].Int(), ExpiresAtMS: t[3].Int(),
			IssuedAtMS: t[4].Int(), RefreshToken: t[5].Str, Scope: t[6].Str}
		r.Cached = top[1].Bool()
		r.RefreshAtMS, r.StaleAtMS = top[5].Int(), top[6].Int()
	}
	if top[7].IsBool() {
		retry := top[7].Bool()
		r.Retry = &retry
	}
	if e := top[2]; e.IsObject() {
		var f [7]gjson.Result
		members(e, f[:], "kind", "message", "status", "retryable", "retry_after_ms", "oauth_error", "description")
		r.Error = &abi.Error{Kind: f[0].Str, Message: f[1].Str, Status: int(f[2].Int()), Retryable: f[3].Bool(),
			RetryAfterMS: f[4].Int(), OAuthError: f[5].Str, Description: f[6].Str}
	}
	if p := top[3]; p.IsObject() {
		var f [1]gjson.Result
		members(p, f[:], "retry_after_ms")
		r.Pending = &abi.Pending{RetryAfterMS: f[0].Int()}
	}
	if q := top[4]; q.IsObject() {
		req := httpRequest(q)
		r.Request = &req
	}
	return nil
}

// httpRequest reads an HttpRequest (an encode answer, an http_send input). Of a repeated header name
// the first is read, as of any repeated member.
func httpRequest(v gjson.Result) abi.HTTPRequest {
	var f [6]gjson.Result
	members(v, f[:], "method", "url", "body", "timeout_ms", "headers", "client_cert")
	req := abi.HTTPRequest{Method: f[0].Str, URL: f[1].Str, Body: f[2].Str, TimeoutMS: f[3].Int(),
		Headers: map[string]string{}, ClientCert: f[5].Str}
	f[4].ForEach(func(k, val gjson.Result) bool {
		if _, repeated := req.Headers[k.Str]; !repeated {
			req.Headers[k.Str] = val.Str
		}
		return true
	})
	return req
}

// members reads the named members of object v in one pass into out (gjson's Get and GetMany scan the
// object once per name). It is the plugin's member reader (core.Members), so the Go host reads a
// repeated member as the plugin does, by its rule (abi/ABI.md, "Shapes"): the first is read, as with
// Get. It parses only the values it returns (gjson's ForEach parses every member's, and an answer
// carries a token and its cache entry).
func members(v gjson.Result, out []gjson.Result, names ...string) {
	var buf [8]string
	raws := buf[:0]
	if len(names) > len(buf) {
		raws = make([]string, 0, len(names))
	}
	raws = raws[:len(names)]
	core.Members(v.Raw, names, raws)
	for i, raw := range raws {
		if raw != "" {
			out[i] = gjson.Parse(raw)
		}
	}
}
