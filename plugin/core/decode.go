package core

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// Limits and defaults of decoding, documented in abi/ABI.md.
const (
	MaxBodyBytes        = 1 << 20                         // larger bodies are not parsed
	DefaultExpiresIn    = 3600                            // seconds, when neither expires_in nor a JWT exp exists
	MaxExpiresIn        = 365 * 24 * 3600                 // seconds: longer lives are clamped
	DefaultRetryAfterMS = 30000                           // a 429 without a usable Retry-After
	MinRetryAfterMS     = 1000                            // bounds of the 429 gate
	MaxRetryAfterMS     = 24 * 3600 * 1000                //
	maxDescription      = 512                             // bytes of a provider's error_description kept
	httpDate            = "Mon, 02 Jan 2006 15:04:05 GMT" // RFC 9110 IMF-fixdate
)

// Response is a parsed HttpResponse.
type Response struct {
	Status    int
	Headers   gjson.Result
	Body      string
	Transport string // set when the host could not get a response
}

// ParseResponse reads an HttpResponse.
func ParseResponse(v gjson.Result) (*Response, *abi.Error) {
	if !v.IsObject() {
		return nil, invalidRequest("response must be a JSON object")
	}
	r := &Response{}
	if e := v.Get("error"); e.Exists() {
		if e.Type != gjson.String {
			return nil, invalidRequest("response.error must be a string")
		}
		r.Transport = e.Str
		if r.Transport == "" {
			r.Transport = "transport failed"
		}
		return r, nil
	}
	s := v.Get("status")
	if s.Type != gjson.Number || s.Num < 100 || s.Num > 999 || s.Num != float64(int(s.Num)) {
		return nil, invalidRequest("response.status must be an HTTP status code")
	}
	r.Status = int(s.Num)
	if h := v.Get("headers"); h.Exists() && h.Type != gjson.Null {
		if !h.IsObject() {
			return nil, invalidRequest("response.headers must be an object")
		}
		r.Headers = h
	}
	if b := v.Get("body"); b.Exists() && b.Type != gjson.Null {
		if b.Type != gjson.String {
			return nil, invalidRequest("response.body must be a string")
		}
		r.Body = b.Str
	}
	return r, nil
}

// header returns the first response header named name, compared without case.
func (r *Response) header(name string) string {
	var out string
	r.Headers.ForEach(func(k, v gjson.Result) bool {
		if strings.EqualFold(k.Str, name) {
			if v.Type == gjson.String {
				out = v.Str
			} else if v.IsArray() {
				out = v.Get("0").String()
			}
			return false
		}
		return true
	})
	return out
}

// Decode turns a provider's response into a token or a typed error. The first matching rule wins;
// the order is normative (abi/ABI.md, "Decoding").
func (r *Request) Decode(resp *Response, nowMS int64) (*abi.Token, *abi.Error) {
	if resp.Transport != "" {
		return nil, &abi.Error{Kind: abi.KindTransport, Retryable: true, Message: "token request failed: " + r.scrub(resp.Transport)}
	}
	var doc gjson.Result
	isJSON := false
	if len(resp.Body) <= MaxBodyBytes && depth([]byte(resp.Body)) <= maxDepth && gjson.Valid(resp.Body) {
		doc = gjson.Parse(resp.Body)
		isJSON = doc.IsObject()
	}
	if isJSON {
		if code := doc.Get("error"); code.Type == gjson.String && code.Str != "" {
			return nil, r.oauthError(resp, code.Str, doc.Get("error_description").String(), nowMS)
		}
	}
	if resp.Status < 200 || resp.Status > 299 {
		return nil, r.statusError(resp, nowMS)
	}
	switch {
	case len(resp.Body) > MaxBodyBytes:
		return nil, malformed(resp.Status, "response body exceeds 1 MiB")
	case !isJSON:
		return nil, malformed(resp.Status, "response body is not a JSON object")
	}
	at := doc.Get("access_token")
	if at.Type != gjson.String || at.Str == "" {
		return nil, malformed(resp.Status, "response has no access_token string")
	}
	t := &abi.Token{AccessToken: at.Str, IssuedAtMS: nowMS}
	t.TokenType = normalizeTokenType(doc.Get("token_type"))
	t.ExpiresIn = r.expiresIn(doc.Get("expires_in"), at.Str, nowMS)
	t.ExpiresAtMS = nowMS + t.ExpiresIn*1000
	if rt := doc.Get("refresh_token"); rt.Type == gjson.String {
		t.RefreshToken = rt.Str
	}
	if sc := doc.Get("scope"); sc.Type == gjson.String {
		t.Scope = sc.Str
	}
	return t, nil
}

func normalizeTokenType(v gjson.Result) string {
	if v.Type != gjson.String || v.Str == "" || strings.EqualFold(v.Str, "bearer") {
		return "Bearer"
	}
	return v.Str
}

// expiresIn converts expires_in from the provider's unit to seconds, takes the smaller of it and a
// JWT access token's exp, and clamps the result to [1, MaxExpiresIn].
func (r *Request) expiresIn(v gjson.Result, accessToken string, nowMS int64) int64 {
	secs, ok := int64(0), false
	var n float64
	switch v.Type {
	case gjson.Number:
		n, ok = v.Num, true
	case gjson.String:
		f, err := strconv.ParseFloat(strings.TrimSpace(v.Str), 64)
		n, ok = f, err == nil && f == f // not NaN
	}
	if ok {
		if r.profile.ExpiresInUnit == UnitMilliseconds {
			n /= 1000
		}
		secs = int64(clampFloat(n, 0, MaxExpiresIn))
	}
	if exp, isJWT := jwtExp(accessToken); isJWT {
		if left := exp - nowMS/1000; !ok || left < secs {
			secs, ok = left, true
		}
	}
	if !ok {
		secs = DefaultExpiresIn
	}
	return clamp(secs, 1, MaxExpiresIn)
}

func clampFloat(v, lo, hi float64) float64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// jwtExp returns the exp claim (Unix seconds) of a JWT, if token is one.
func jwtExp(token string) (int64, bool) {
	first := strings.IndexByte(token, '.')
	if first < 0 {
		return 0, false
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second < 0 || second > 8192 {
		return 0, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(rest[:second], "="))
	if err != nil || depth(payload) > maxDepth || !gjson.ValidBytes(payload) {
		return 0, false
	}
	exp := gjson.GetBytes(payload, "exp")
	if exp.Type != gjson.Number || exp.Num <= 0 || exp.Num > 1e13 {
		return 0, false
	}
	return int64(exp.Num), true
}

func (r *Request) oauthError(resp *Response, code, description string, nowMS int64) *abi.Error {
	var e *abi.Error
	switch code {
	case abi.KindInvalidRequest, abi.KindInvalidClient, abi.KindInvalidGrant, abi.KindUnauthorizedClient,
		abi.KindUnsupportedGrantType, abi.KindInvalidScope, abi.KindAccessDenied:
		e = &abi.Error{Kind: code, Message: "provider refused the token request"}
	case "server_error", "temporarily_unavailable":
		e = &abi.Error{Kind: abi.KindServerError, Retryable: true, Message: "provider is unavailable"}
	default:
		if resp.Status >= 200 && resp.Status <= 299 {
			e = &abi.Error{Kind: abi.KindServerError, Message: "provider answered with an unknown error code"}
		} else {
			e = r.statusError(resp, nowMS)
		}
	}
	e.Status = resp.Status
	e.OAuthError = truncate(r.scrub(code), 64)
	e.Description = truncate(r.scrub(description), maxDescription)
	return e
}

func (r *Request) statusError(resp *Response, nowMS int64) *abi.Error {
	e := &abi.Error{Status: resp.Status}
	switch s := resp.Status; {
	case s == 429:
		e.Kind, e.Retryable, e.Message = abi.KindRateLimited, true, "provider rate-limited token requests"
		e.RetryAfterMS = retryAfter(resp.header("Retry-After"), nowMS)
	case s == 415:
		e.Kind, e.Message = abi.KindUnsupportedMediaType, "provider refused the request's content type"
	case s == 400:
		e.Kind, e.Message = abi.KindInvalidRequest, "provider refused the request as invalid"
	case s == 401:
		e.Kind, e.Message = abi.KindInvalidClient, "provider refused the client credentials"
	case s == 403:
		e.Kind, e.Message = abi.KindAccessDenied, "provider denied access"
	case s == 408 || s >= 500:
		e.Kind, e.Retryable, e.Message = abi.KindServerError, true, "provider failed with HTTP "+strconv.Itoa(s)
	default:
		e.Kind, e.Message = abi.KindServerError, "provider answered HTTP "+strconv.Itoa(s)
	}
	return e
}

// retryAfter reads Retry-After as delay-seconds or an HTTP date, clamped to the gate's bounds.
func retryAfter(v string, nowMS int64) int64 {
	v = strings.TrimSpace(v)
	ms := int64(DefaultRetryAfterMS)
	if v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			if n > MaxRetryAfterMS/1000 {
				n = MaxRetryAfterMS / 1000
			}
			ms = n * 1000
		} else if t, err := time.Parse(httpDate, v); err == nil {
			ms = t.UnixMilli() - nowMS
		} else if t, err := time.Parse(time.RFC1123, v); err == nil {
			ms = t.UnixMilli() - nowMS
		}
	}
	return clamp(ms, MinRetryAfterMS, MaxRetryAfterMS)
}

func malformed(status int, msg string) *abi.Error {
	return &abi.Error{Kind: abi.KindMalformedResponse, Status: status, Message: msg}
}

func invalidRequest(msg string) *abi.Error {
	return &abi.Error{Kind: abi.KindInvalidRequest, Message: msg}
}

// scrub removes every secret of the request from s: providers sometimes echo what they were sent.
// A secret too short to replace without mangling the text withholds the whole text instead.
func (r *Request) scrub(s string) string {
	for _, secret := range r.secrets() {
		if secret == "" || !strings.Contains(s, secret) {
			continue
		}
		if len(secret) < 4 {
			return "[redacted]"
		}
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func clamp(v, lo, hi int64) int64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}
