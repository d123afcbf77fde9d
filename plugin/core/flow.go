package core

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// Imports carries JSON between the token flow and the host. The plugin implements it with the
// extism:host/user imports; native tests implement it in Go with the same JSON, so the flow is tested
// exactly as it runs in wasm.
type Imports interface {
	HTTPSend(httpRequest []byte) []byte // HttpRequest -> HttpResponse
	CacheGet(in []byte) []byte          // {"key"} -> {"hit","value"?}
	CacheSet(in []byte) []byte          // {"key","value","ttl_ms"} -> {}
	CacheDelete(in []byte) []byte       // {"key"} -> {}
}

// Clock returns the current Unix time in milliseconds. It is a variable so the plugin's clock (WASI)
// and the tests' clock are one seam.
type Clock func() int64

// MaxSkewMS is the longest margin before expiry at which a cached token stops being served.
const MaxSkewMS = 60000

// skewMS is how long before its expiry a token is treated as expired: a minute, or a quarter of a
// short life, so even a 1-second token is served from the cache for most of its life.
func skewMS(t *abi.Token) int64 {
	life := t.ExpiresAtMS - t.IssuedAtMS
	if s := life / 4; s < MaxSkewMS {
		return s
	}
	return MaxSkewMS
}

// CacheKey names the cached token of one identity: tokenwasm/1/<provider>/<hex sha256>. The hash
// covers the request as sent (method, URL, headers but the per-request id, body): whatever reaches
// the provider defines the token, and a rotated secret gets a new key. No secret appears in clear.
func CacheKey(provider string, h *HTTPRequest) string {
	k := keyHash{h: sha256.New()}
	k.identity(h)
	sum := k.sum()
	key := make([]byte, 0, len("tokenwasm/1/")+len(provider)+1+2*sha256.Size)
	key = append(append(append(key, "tokenwasm/1/"...), provider...), '/')
	key = hex.AppendEncode(key, sum[:])
	return string(key)
}

// identity hashes the bytes that define a token: the request as sent, but the per-request id, and
// a client assertion or certificate by what it names (see CacheKey).
func (k *keyHash) identity(h *HTTPRequest) {
	k.str(h.Method)
	k.byte('\n')
	k.str(h.URL)
	k.byte('\n')
	for i, kv := range h.Headers {
		if i != h.requestID {
			for j := 0; j < len(kv.name); j++ { // lower-case names: header names are case-insensitive
				c := kv.name[j]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				k.byte(c)
			}
			k.byte(':')
			k.str(kv.value)
			k.byte('\n')
		}
	}
	k.byte('\n')
	k.str(h.Body)
	if h.jwt != nil {
		h.jwt.identity(k)
	}
	if h.ClientCert != "" {
		k.str("\nclient_cert:")
		k.str(h.ClientCert)
	}
}

// stateKey is the key that authenticates a token_step state (step.go): a hash of the request's
// identity under another label than the cache key's, so it cannot be derived from a cache key, and
// every instance that is given the request (secret included) derives the same one.
func stateKey(h *HTTPRequest) [sha256.Size]byte {
	k := keyHash{h: sha256.New()}
	k.str("tokenwasm/state-key/1\n")
	k.identity(h)
	return k.sum()
}

// keyHash hashes what identifies a request as it is written, through a small buffer: it is as long
// as the request, and no copy of it is made (a new copy per call is memory TinyGo may never give
// back: rawjson.go).
type keyHash struct {
	h   hash.Hash
	buf [256]byte
	n   int
}

func (k *keyHash) byte(c byte) {
	if k.n == len(k.buf) {
		k.flush()
	}
	k.buf[k.n] = c
	k.n++
}

func (k *keyHash) str(s string) {
	for len(s) > 0 {
		if k.n == len(k.buf) {
			k.flush()
		}
		c := copy(k.buf[k.n:], s)
		k.n += c
		s = s[c:]
	}
}

func (k *keyHash) flush() {
	k.h.Write(k.buf[:k.n])
	k.n = 0
}

func (k *keyHash) sum() [sha256.Size]byte {
	k.flush()
	var s [sha256.Size]byte
	k.h.Sum(s[:0])
	return s
}

// The suffixes of an identity's 429 gate, fetch lock and grant lineage keys.
const (
	gateSuffix  = "/gate"
	lockSuffix  = "/lock"
	grantSuffix = "/grant" // a one-time grant's lineage: its newest refresh token, or that its code was used
	sentSuffix  = "/sent"  // a one-time grant's exchange in progress, until its new refresh token is stored
)

// GateKey names the 429 gate of one identity.
func GateKey(tokenKey string) string { return tokenKey + gateSuffix }

// LockKey names the fetch lock of one identity: held by the one host fetching its token.
func LockKey(tokenKey string) string { return tokenKey + lockSuffix }

// GrantKey names the lineage of one identity's one-time grant (refresh_token, authorization_code):
// the newest refresh token the provider returned, which the flow sends instead of the request's.
func GrantKey(tokenKey string) string { return tokenKey + grantSuffix }

const (
	lockMarginMS   = 2000 // a lock outlives its fetch's timeout by this much; a crashed owner costs no more
	pendingRetryMS = 50   // how soon a host asks again while another one fetches
)

// Token is the token export: the cached token unless it is inside its expiry skew, else one request
// to the provider, whose token is cached for no longer than its life. A 429 closes a gate in the cache
// that every instance, process and node sharing the cache honours until it ends. It runs the flow of
// step.go, calling the imports inline.
func Token(m *Memo, input []byte, host Imports, now Clock) []byte {
	f, out := m.stepFlow(input, OpToken, now, false)
	if f == nil {
		return out
	}
	return f.Run(host)
}

// Invalidate is the invalidate export: it drops the cached token (the API answered 401 with it), or,
// when the request names an access_token, only if the cached token is that one.
func Invalidate(m *Memo, input []byte, host Imports) []byte {
	f, out := m.stepFlow(input, OpInvalidate, nil, false)
	if f == nil {
		return out
	}
	return f.Run(host)
}

// Prepare parses and encodes a request and names its cache entry, remembering nothing: for entry
// points that send the encoded request as is. A request with a client assertion is refused
// (signing_required): its assertion is made per request, by the token flow. (The Envoy filter is a
// host of that flow, stepping a Flow from NewFlow as token_step does, and checks its configuration
// with Memo.Prepare, which keeps the assertion.)
func Prepare(input []byte) (*Request, *HTTPRequest, string, *abi.Error) {
	r, enc, key, err := (*Memo)(nil).Prepare(input)
	if err == nil && enc.jwt != nil {
		return nil, nil, "", &abi.Error{Kind: abi.KindSigningRequired,
			Message: r.profile.ClientAuth + ": the client assertion is made per request by the token flow (token_step), not sent as encoded"}
	}
	return r, enc, key, err
}

// parseAndEncode parses and encodes the request in b.input, which it must own: what is parsed
// aliases it and b's other buffers (the memo keeps the request). The encode export needs no cache key.
func parseAndEncode(b *requestBufs) (*Request, *HTTPRequest, *abi.Error) {
	if err := checkJSON(b.input, "input"); err != nil {
		return nil, nil, err
	}
	v, err := asObject(gjson.Parse(view(b.input)), "input")
	if err != nil {
		return nil, nil, err
	}
	r, err := parseRequest(v.Raw, b)
	if err != nil {
		return nil, nil, err
	}
	enc, err := r.encode(b)
	if err != nil {
		return nil, nil, err
	}
	return r, enc, nil
}

func (r *Request) now(clock Clock) int64 {
	if r.NowMS > 0 || clock == nil { // invalidate reads no clock
		return r.NowMS
	}
	return clock()
}

// parseHostResponse reads what http_send returned; a host that answers garbage is a transport error.
// The response aliases b and scratch (rawjson.go): it must not outlive the call.
func parseHostResponse(b []byte, scratch *[]byte) (*Response, *abi.Error) {
	v, err := parseJSONView(b, "http_send result")
	if err == nil {
		var resp *Response
		if resp, err = parseResponse(v, scratch); err == nil {
			return resp, nil
		}
	}
	return nil, &abi.Error{Kind: abi.KindTransport, Retryable: true, Message: "host http_send: " + err.Message}
}

// pendingJSON answers a token call while another host fetches the same identity's token: ask again.
func pendingJSON(retryMS int64) []byte {
	o := newObject(nil)
	o.key("pending")
	inner := newObject(o.b)
	inner.int("retry_after_ms", retryMS)
	o.b = inner.end()
	return o.end()
}

// parseToken reads a Token written by tokenJSONCached.
func parseToken(v gjson.Result) (*abi.Token, bool) {
	at := v.Get("access_token")
	exp := v.Get("expires_at_ms")
	if at.Type != gjson.String || at.Str == "" || exp.Type != gjson.Number || checkToken("access_token", at.Str) != "" {
		return nil, false // a cache entry no decode could have written (a poisoned shared cache) is a miss
	}
	t := &abi.Token{
		AccessToken: at.Str,
		TokenType:   v.Get("token_type").String(),
		ExpiresAtMS: int64(exp.Num),
		IssuedAtMS:  v.Get("issued_at_ms").Int(),
		ExpiresIn:   v.Get("expires_in").Int(),
		Scope:       v.Get("scope").String(),
	}
	if t.TokenType == "" {
		t.TokenType = "Bearer"
	} else if checkToken("token_type", t.TokenType) != "" {
		return nil, false
	}
	return t, true
}

// writeToken writes t's fields; the cached copy leaves out the refresh token, so access tokens are
// the only credentials a cache ever holds.
func writeToken(o *object, t *abi.Token, withRefresh bool) {
	o.str("access_token", t.AccessToken)
	o.str("token_type", t.TokenType)
	o.int("expires_in", t.ExpiresIn)
	o.int("expires_at_ms", t.ExpiresAtMS)
	o.int("issued_at_ms", t.IssuedAtMS)
	if withRefresh {
		o.strOmit("refresh_token", t.RefreshToken)
	}
	o.strOmit("scope", t.Scope)
}

// tokenJSONCached writes the cached copy of t, naming the identity it belongs to (id, see
// Flow.ours).
func tokenJSONCached(t *abi.Token, id string) []byte {
	o := newObject(make([]byte, 0, 192+len(t.AccessToken)+len(t.Scope)))
	writeToken(&o, t, false)
	o.str("id", id)
	return o.end()
}

// tokenJSON writes {"token":...,"cached":...,"refresh_at_ms":...,"stale_at_ms":...} for the token
// export, or {"token":...} for decode (cached < 0). A cached token never carries a refresh token.
func tokenJSON(t *abi.Token, cached bool) []byte { return tokenResult(t, b2i(cached)) }

func tokenResult(t *abi.Token, cached int) []byte {
	o := newObject(make([]byte, 0, 300+len(t.AccessToken)+len(t.RefreshToken)))
	o.key("token")
	inner := newObject(o.b)
	writeToken(&inner, t, cached != 1)
	o.b = inner.end()
	if cached >= 0 {
		o.bool("cached", cached == 1)
		o.int("refresh_at_ms", RefreshAtMS(t))
		o.int("stale_at_ms", StaleAtMS(t))
	}
	return o.end()
}

// The schedule of a held token, decided here once for every host (abi/ABI.md, "The schedule"):
// before RefreshAtMS a host serves it; from then on it serves it and refreshes in the background;
// from StaleAtMS a caller waits for a fetch, and is still served the token until expires_at_ms if
// that fetch fails.
const maxAheadMS = 5 * 60 * 1000

// RefreshAtMS is when a held token is due for a refresh ahead of expiry: five minutes before it
// expires, or a third of its life when that is shorter.
func RefreshAtMS(t *abi.Token) int64 {
	return t.ExpiresAtMS - min(maxAheadMS, max(0, t.ExpiresAtMS-t.IssuedAtMS)/3)
}

// StaleAtMS is when a held token stops being served without a fetch: the cache's skew before its
// expiry.
func StaleAtMS(t *abi.Token) int64 { return servedUntil(t, 0) }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ErrorJSON writes {"error": e}, the ABI's error answer.
func ErrorJSON(e *abi.Error) []byte { return errorJSON(e) }

func errorJSON(e *abi.Error) []byte {
	o := newObject(make([]byte, 0, 96+len(e.Message)+len(e.Description)))
	o.key("error")
	inner := newObject(o.b)
	inner.str("kind", e.Kind)
	inner.str("message", e.Message)
	if e.Status != 0 {
		inner.int("status", int64(e.Status))
	}
	inner.bool("retryable", e.Retryable)
	if e.RetryAfterMS > 0 {
		inner.int("retry_after_ms", e.RetryAfterMS)
	}
	inner.strOmit("oauth_error", e.OAuthError)
	inner.strOmit("description", e.Description)
	o.b = inner.end()
	return o.end()
}
