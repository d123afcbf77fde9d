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
	MaxRetryAfterMS     = 3600 * 1000                     // one hour: a 429 with 86400 must not gate a fleet for a day
	maxDescription      = 512                             // bytes of a provider's error_description kept
	maxMessage          = 512                             // bytes of a host's transport message kept
	httpDate            = "Mon, 02 Jan 2006 15:04:05 GMT" // RFC 9110 IMF-fixdate
)

// Response is a parsed HttpResponse.
type Response struct {
	Status    int
	Headers   gjson.Result
	Body      string
	Transport string // set when the host could not get a response
	// Policy, with Transport, says the host refused to send the request by its own policy.
	Policy bool
}

// ParseResponse reads an HttpResponse in one pass over its fields.
func ParseResponse(v gjson.Result) (*Response, *abi.Error) { return parseResponse(v, nil) }

// responseMembers are the members of an HttpResponse, in the order parseResponse checks them.
var responseMembers = [...]string{"error", "policy", "status", "headers", "body"}

// parseResponse is ParseResponse with a body buffer to reuse (nil: none). It unescapes the body
// only, and only up to MaxBodyBytes + 1 bytes: past that its length alone decides (rawjson.go).
func parseResponse(v gjson.Result, scratch *[]byte) (*Response, *abi.Error) {
	if !v.IsObject() {
		return nil, invalidRequest("response must be a JSON object")
	}
	var m [len(responseMembers)]string
	Members(v.Raw, responseMembers[:], m[:])
	transport, policy, status, headers, body := m[0], m[1], m[2], m[3], m[4]
	r := &Response{}
	if transport != "" {
		val := gjson.Parse(transport)
		if val.Type != gjson.String {
			return nil, invalidRequest("response.error must be a string")
		}
		r.Transport = val.Str
	}
	if policy != "" {
		val := gjson.Parse(policy)
		if val.Type != gjson.True && val.Type != gjson.False && val.Type != gjson.Null {
			return nil, invalidRequest("response.policy must be a boolean")
		}
		r.Policy = val.Type == gjson.True
	}
	if headers != "" {
		val := gjson.Parse(headers)
		if val.Type != gjson.Null && !val.IsObject() {
			return nil, invalidRequest("response.headers must be an object")
		}
		r.Headers = val
	}
	switch {
	case body == "", body == "null":
	case body[0] != '"':
		return nil, invalidRequest("response.body must be a string")
	default:
		r.Body = unescapeString(body, scratch, MaxBodyBytes)
	}
	if transport != "" {
		if r.Transport == "" {
			r.Transport = "transport failed"
		}
		return r, nil
	}
	st := parseValue(status)
	if st.Type != gjson.Number || st.Num < 100 || st.Num > 999 || st.Num != float64(int(st.Num)) {
		return nil, invalidRequest("response.status must be an HTTP status code")
	}
	r.Status = int(st.Num)
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
	t, _, err := r.decode(resp, nowMS)
	return t, err
}

// decode is Decode, with the refresh token's lifetime in ms when the provider gave one
// (refresh_token_expires_in, as Candescent's v1 endpoint does), else 0: a grant's lineage lives
// as long as its refresh token.
func (r *Request) decode(resp *Response, nowMS int64) (*abi.Token, int64, *abi.Error) {
	f, isJSON, err := r.responseError(resp, nowMS)
	if err != nil {
		return nil, 0, err
	}
	switch {
	case len(resp.Body) > MaxBodyBytes:
		return nil, 0, malformed(resp.Status, "response body exceeds 1 MiB")
	case !isJSON:
		return nil, 0, malformed(resp.Status, "response body is not a JSON object")
	}
	t, err := r.token(resp, &f, nowMS)
	if err != nil {
		return nil, 0, err
	}
	return t, refreshLifeMS(f.refreshExpiresIn), nil
}

// refreshLifeMS reads refresh_token_expires_in (seconds, a number or a numeric string), clamped to
// [1 minute, 1 year]; 0 when absent or unreadable.
func refreshLifeMS(v gjson.Result) int64 {
	var n float64
	switch v.Type {
	case gjson.Number:
		n = v.Num
	case gjson.String:
		f, err := strconv.ParseFloat(strings.TrimSpace(v.Str), 64)
		if err != nil || f != f {
			return 0
		}
		n = f
	default:
		return 0
	}
	if n <= 0 {
		return 0
	}
	return int64(clampFloat(n, 60, MaxExpiresIn)) * 1000
}

// responseError is the error of a provider's answer, whatever it answers to (a token or a
// revocation request): no response, an RFC 6749 error in a JSON body, or a status other than 2xx.
// Otherwise it returns the body's token fields and whether it is a JSON object.
func (r *Request) responseError(resp *Response, nowMS int64) (tokenFields, bool, *abi.Error) {
	var f tokenFields
	if resp.Transport != "" {
		if resp.Policy { // sending it again is refused again: not retryable
			return f, false, &abi.Error{Kind: abi.KindPolicy, Message: "token request refused by the host's policy: " + r.redact(resp.Transport, maxMessage)}
		}
		return f, false, &abi.Error{Kind: abi.KindTransport, Retryable: true, Message: "token request failed: " + r.redact(resp.Transport, maxMessage)}
	}
	isJSON := len(resp.Body) <= MaxBodyBytes && validJSONString(resp.Body, maxDepth)
	if isJSON {
		doc := gjson.Parse(resp.Body)
		isJSON = doc.IsObject()
		if isJSON {
			f.read(doc)
		}
	}
	if isJSON && f.err.Type == gjson.String && f.err.Str != "" {
		return f, isJSON, r.oauthError(resp, f.err.Str, f.description.String(), nowMS)
	}
	if resp.Status < 200 || resp.Status > 299 {
		return f, isJSON, r.statusError(resp, nowMS)
	}
	return f, isJSON, nil
}

// token reads the token of a 2xx JSON answer.
func (r *Request) token(resp *Response, f *tokenFields, nowMS int64) (*abi.Token, *abi.Error) {
	if f.accessToken.Type != gjson.String || f.accessToken.Str == "" {
		return nil, malformed(resp.Status, "response has no access_token string")
	}
	at := f.accessToken.Str
	if msg := checkToken("access_token", at); msg != "" {
		return nil, malformed(resp.Status, msg)
	}
	if f.tokenType.Type == gjson.String && f.tokenType.Str != "" {
		if msg := checkToken("token_type", f.tokenType.Str); msg != "" {
			return nil, malformed(resp.Status, msg)
		}
	}
	if f.refreshToken.Type == gjson.String && f.refreshToken.Str != "" {
		if msg := checkRefreshToken(f.refreshToken.Str); msg != "" {
			return nil, malformed(resp.Status, msg)
		}
	}
	t := &abi.Token{AccessToken: at, IssuedAtMS: nowMS}
	t.TokenType = normalizeTokenType(f.tokenType)
	t.ExpiresIn = r.expiresIn(f.expiresIn, at, nowMS)
	t.ExpiresAtMS = nowMS + t.ExpiresIn*1000
	if f.refreshToken.Type == gjson.String {
		t.RefreshToken = f.refreshToken.Str
	}
	if f.scope.Type == gjson.String {
		if len(f.scope.Str) > MaxTokenBytes { // it is copied into every answer and cache entry
			return nil, malformed(resp.Status, "scope exceeds 32 KiB")
		}
		t.Scope = f.scope.Str
	}
	return t, nil
}

// MaxTokenBytes bounds an access or refresh token: a token travels in an HTTP header, which servers
// and proxies cap at 8 to 64 KiB, and a megabyte token is an attack on the host, not a credential.
const MaxTokenBytes = 32 << 10

// checkToken returns why v is not a usable access token or token type, or "". Both go into an
// Authorization header as they are: anything but visible ASCII (RFC 6750's b64token is a subset)
// could inject header lines (CR, LF) or confuse the upstream, so it is refused, never cached, in
// every host.
func checkToken(name, v string) string { return checkChars(name, v, 0x21) }

// checkRefreshToken is checkToken for a refresh token, which RFC 6749 (A.17) lets hold spaces: it
// travels form-encoded in a body, never in a header. Control characters are still refused.
func checkRefreshToken(v string) string { return checkChars("refresh_token", v, 0x20) }

func checkChars(name, v string, lowest byte) string {
	if len(v) > MaxTokenBytes {
		return name + " exceeds 32 KiB"
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < lowest || c > 0x7e {
			return name + " holds a character outside visible ASCII"
		}
	}
	return ""
}

// tokenFields are the fields of a token response the decoder reads, gathered in one pass.
type tokenFields struct {
	err, description, accessToken, tokenType, expiresIn, refreshToken, scope, refreshExpiresIn gjson.Result
}

// tokenMembers are the names of tokenFields' fields, in their order.
var tokenMembers = [...]string{"error", "error_description", "access_token", "token_type", "expires_in", "refresh_token", "scope", "refresh_token_expires_in"}

// read gathers the fields from doc, parsing no other member: an extra field of a megabyte costs
// no allocation (rawjson.go). Of a repeated member the first is read (Members).
func (f *tokenFields) read(doc gjson.Result) {
	var m [len(tokenMembers)]string
	Members(doc.Raw, tokenMembers[:], m[:])
	for i, dst := range [...]*gjson.Result{&f.err, &f.description, &f.accessToken, &f.tokenType, &f.expiresIn, &f.refreshToken, &f.scope, &f.refreshExpiresIn} {
		switch {
		case m[i] == "":
		case m[i][0] == '"' && (dst == &f.accessToken || dst == &f.tokenType || dst == &f.refreshToken || dst == &f.scope):
			// Refused over MaxTokenBytes, so unescaped no further (cut at MaxTokenBytes + 1):
			// gjson.Parse unescapes a string whole, and a scope of half a million \" cost a new
			// megabyte per call, which TinyGo's collector mostly keeps (an instance at 24 MiB, and
			// now and then a trap).
			*dst = gjson.Result{Type: gjson.String, Raw: m[i], Str: unescapeString(m[i], nil, MaxTokenBytes)}
		default:
			*dst = parseValue(m[i])
		}
	}
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
	if err != nil || !validJSON(payload, maxDepth) {
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
	e.OAuthError = r.redact(code, 64)
	e.Description = r.redact(description, maxDescription)
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
