package host

import (
	"errors"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// tokenResult is the token export's answer, parsed with gjson: the fetch path's hottest decode.
type tokenResult abi.Result

var errNotJSON = errors.New("plugin answered invalid JSON")

func (r *tokenResult) parse(b []byte) error {
	if !gjson.ValidBytes(b) {
		return errNotJSON
	}
	var top [4]gjson.Result
	members(gjson.ParseBytes(b), top[:], "token", "cached", "error", "pending")
	if f := top[0]; f.IsObject() {
		var t [7]gjson.Result
		members(f, t[:], "access_token", "token_type", "expires_in", "expires_at_ms", "issued_at_ms", "refresh_token", "scope")
		r.Token = &abi.Token{AccessToken: t[0].Str, TokenType: t[1].Str, ExpiresIn: t[2].Int(), ExpiresAtMS: t[3].Int(),
			IssuedAtMS: t[4].Int(), RefreshToken: t[5].Str, Scope: t[6].Str}
		r.Cached = top[1].Bool()
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
	if r.Token == nil && r.Error == nil && r.Pending == nil {
		return errors.New("plugin answered neither token, error nor pending")
	}
	return nil
}

// members reads the named members of object v in one pass into out (gjson's Get and GetMany scan the
// object once per name); of a repeated member the first wins, as with Get.
func members(v gjson.Result, out []gjson.Result, names ...string) {
	v.ForEach(func(k, val gjson.Result) bool {
		for i, n := range names {
			if k.Str == n {
				if !out[i].Exists() {
					out[i] = val
				}
				break
			}
		}
		return true
	})
}
