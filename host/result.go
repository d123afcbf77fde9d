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
	v := gjson.ParseBytes(b)
	if f := v.Get("token"); f.IsObject() {
		r.Token = &abi.Token{
			AccessToken:  f.Get("access_token").Str,
			TokenType:    f.Get("token_type").Str,
			ExpiresIn:    f.Get("expires_in").Int(),
			ExpiresAtMS:  f.Get("expires_at_ms").Int(),
			IssuedAtMS:   f.Get("issued_at_ms").Int(),
			RefreshToken: f.Get("refresh_token").Str,
			Scope:        f.Get("scope").Str,
		}
		r.Cached = v.Get("cached").Bool()
	}
	if e := v.Get("error"); e.IsObject() {
		r.Error = &abi.Error{
			Kind:         e.Get("kind").Str,
			Message:      e.Get("message").Str,
			Status:       int(e.Get("status").Int()),
			Retryable:    e.Get("retryable").Bool(),
			RetryAfterMS: e.Get("retry_after_ms").Int(),
			OAuthError:   e.Get("oauth_error").Str,
			Description:  e.Get("description").Str,
		}
	}
	if p := v.Get("pending"); p.IsObject() {
		r.Pending = &abi.Pending{RetryAfterMS: p.Get("retry_after_ms").Int()}
	}
	if r.Token == nil && r.Error == nil && r.Pending == nil {
		return errors.New("plugin answered neither token, error nor pending")
	}
	return nil
}
