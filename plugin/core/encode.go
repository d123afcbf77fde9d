package core

import (
	"crypto/rand"
	"encoding/base64"
	"strings"

	"github.com/tokenwasm/tokenwasm/abi"
)

// DefaultTimeoutMS bounds one token request when the caller sets no timeout_ms.
const DefaultTimeoutMS = 10000

// maxTimeoutMS is the longest timeout_ms honoured: a token endpoint slower than this is down.
const maxTimeoutMS = 120000

// HTTPRequest is an encoded token request with its headers in a fixed order, so that the same
// TokenRequest always yields the same bytes (and so the same cache key).
type HTTPRequest struct {
	Method    string
	URL       string
	Headers   []header
	Body      string
	TimeoutMS int64
	// ClientCert names the client certificate the host presents on the connection (tls_client_auth).
	ClientCert string
	// requestID is the index in Headers of the per-request id header, or -1; it is not identity.
	requestID int
	// jwt is the client assertion to send, nil for none; signed is the assertion made for the send
	// in progress (a fresh jti and time each time), added to the body then. Neither is identity but
	// through jwt.identity.
	jwt    *assertion
	signed string
	// bufs is the storage the request was encoded into (encode), nil for one of its own.
	bufs *requestBufs
}

// Encode validates r and builds the HTTP request its provider expects.
func (r *Request) Encode() (*HTTPRequest, *abi.Error) {
	b := r.encodeBufs
	if b == nil {
		b = new(requestBufs)
	}
	return r.encode(b)
}

// encode is Encode into b: the body, the headers and the Authorization value are written in b's
// buffers, which the encoded request aliases.
func (r *Request) encode(b *requestBufs) (*HTTPRequest, *abi.Error) {
	p := r.profile
	grant := r.GrantType
	if grant == "" {
		grant = abi.GrantClientCredentials
	}
	if !contains(allGrants, grant) {
		return nil, &abi.Error{Kind: abi.KindUnsupportedGrantType, Message: "unknown grant_type " + quote(grant)}
	}
	if !p.allows(grant) {
		return nil, &abi.Error{Kind: abi.KindUnsupportedGrantType, Message: p.Name + " does not offer grant_type " + grant}
	}
	if f := r.missing(grant); f != "" {
		return nil, invalidRequest(f + " is required for " + p.Name + " " + grant)
	}
	tokenURL, err := r.tokenURL()
	if err != nil {
		return nil, err
	}
	if err := r.checkTokenHost(tokenURL); err != nil {
		return nil, err
	}
	format := p.Body
	if r.Body != "" && r.Body != format {
		if !p.BodySelectable || (r.Body != BodyJSON && r.Body != BodyForm) {
			return nil, invalidRequest(p.Name + " does not accept body " + quote(r.Body))
		}
		format = r.Body
	}
	jwt, err := r.assertion(tokenURL, format)
	if err != nil {
		return nil, err
	}
	if jwt != nil {
		jwt.bufs = b
	}
	if err := r.checkScope(); err != nil {
		return nil, err
	}

	body := &body{json: format == BodyJSON, b: grow(b.body[:0], 256)}
	if p.SendGrantType {
		body.add("grant_type", grant)
	}
	for _, f := range grantFields(grant) {
		body.add(f, r.field(f))
	}
	if grant == abi.GrantAuthorizationCode && r.CodeVerifier != "" {
		body.add("code_verifier", r.CodeVerifier)
	}
	if p.SendScope && r.Scope != "" {
		body.add("scope", r.Scope)
	}
	r.bodyAuth(body)
	for _, kv := range r.Params {
		body.add(kv.name, kv.value)
	}

	h := b.hdrs[:0]
	if format == BodyJSON {
		h = append(h, header{"Content-Type", "application/json"})
	} else {
		h = append(h, header{"Content-Type", "application/x-www-form-urlencoded"})
	}
	h = append(r.headerAuth(append(h, header{"Accept", "application/json"}), &b.auth), p.Headers...)
	for _, fh := range p.FieldHeaders {
		if v := r.field(fh.Field); v != "" {
			h = setHeader(h, fh.Header, v)
		}
	}
	enc := r.request(tokenURL, h, body, jwt)
	enc.bufs, b.body, b.hdrs = b, body.b, enc.Headers
	return enc, nil
}

// bodyAuth adds the client authentication that goes in the body (a client assertion is added when
// the request is sent).
func (r *Request) bodyAuth(b *body) {
	switch r.profile.ClientAuth {
	case AuthBody:
		b.add("client_id", r.ClientID)
		b.add("client_secret", r.ClientSecret)
	case AuthTLSClient:
		b.add("client_id", r.ClientID)
	}
}

// headerAuth adds the client authentication that goes in a header, its value written in *buf.
func (r *Request) headerAuth(h []header, buf *[]byte) []header {
	switch c := r.profile.ClientAuth; c {
	case AuthBasic, AuthBasicRFC6749:
		*buf = appendBasic((*buf)[:0], r.ClientID, r.ClientSecret, c == AuthBasicRFC6749)
		h = append(h, header{"Authorization", view(*buf)})
	}
	return h
}

// request finishes an encoded request: the caller's headers, the per-request id, the timeout.
func (r *Request) request(u string, h []header, b *body, jwt *assertion) *HTTPRequest {
	p := r.profile
	for _, kv := range r.Headers {
		h = setHeader(h, kv.name, kv.value)
	}
	requestID := -1
	if p.RequestIDHeader != "" {
		h = setHeader(h, p.RequestIDHeader, newRequestID())
		requestID = headerIndex(h, p.RequestIDHeader)
	}
	timeout := r.TimeoutMS
	if timeout <= 0 {
		timeout = DefaultTimeoutMS
	}
	if timeout > maxTimeoutMS {
		timeout = maxTimeoutMS
	}
	enc := &HTTPRequest{Method: "POST", URL: u, Headers: h, Body: b.end(), TimeoutMS: timeout, requestID: requestID, jwt: jwt}
	if p.ClientAuth == AuthTLSClient {
		enc.ClientCert = r.KeyID
	}
	return enc
}

// assertion returns the client assertion r's profile authenticates with, or nil.
func (r *Request) assertion(tokenURL, format string) (*assertion, *abi.Error) {
	p := r.profile
	if p.ClientAuth != AuthPrivateKeyJWT && p.ClientAuth != AuthClientSecretJWT {
		return nil, nil
	}
	if format != BodyForm {
		return nil, invalidRequest(p.ClientAuth + " sends its client assertion in a form body")
	}
	alg := r.AssertionAlg
	if alg == "" {
		alg = p.AssertionAlgs[0]
	}
	if !contains(p.AssertionAlgs, alg) {
		return nil, invalidRequest("assertion_alg must be one of " + strings.Join(p.AssertionAlgs, ", ") + " for " + p.Name)
	}
	if len(r.KeyID) > 256 {
		return nil, invalidRequest("key_id exceeds 256 bytes")
	}
	if r.AssertionJTI != "" && (r.NowMS == 0 || !validJTI(r.AssertionJTI)) {
		return nil, invalidRequest("assertion_jti needs now_ms, and at most 64 letters, digits, '-' or '_' (tests and replays only)")
	}
	a := &assertion{alg: alg, kid: r.KeyID, iss: r.ClientID, aud: tokenURL, jti: r.AssertionJTI}
	if alg == AlgHS256 {
		a.secret = r.ClientSecret
	}
	return a, nil
}

// validJTI keeps a jti to a form that needs no escaping in the flow's state.
func validJTI(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkScope holds scopes to the profile's form (SMART Backend Services: system/<resource>.<access>).
func (r *Request) checkScope() *abi.Error {
	prefix := r.profile.ScopePrefix
	if prefix == "" {
		return nil
	}
	for s := range strings.FieldsSeq(r.Scope) { // not Fields: a slice of every scope, per call
		if !strings.HasPrefix(s, prefix) || !strings.Contains(s[len(prefix):], ".") {
			return invalidRequest(r.profile.Name + " scopes have the form " + prefix + "<resource>.<access>, not " + quote(s))
		}
	}
	return nil
}

// missing returns the first field grant needs that r lacks (Profile.required, without building it).
func (r *Request) missing(grant string) string {
	p := r.profile
	switch {
	case r.ClientID == "":
		return "client_id"
	case p.usesSecret() && r.ClientSecret == "":
		return "client_secret"
	case p.hostKey() && r.KeyID == "":
		return "key_id"
	}
	if hasDomain(p.TokenURL) && r.TokenURL == "" && r.Domain == "" {
		return "domain"
	}
	for _, f := range grantFields(grant) {
		if r.field(f) == "" {
			return f
		}
	}
	for _, fh := range p.FieldHeaders {
		if contains(fh.RequiredFor, grant) && r.field(fh.Field) == "" {
			return fh.Field
		}
	}
	return ""
}

func (r *Request) tokenURL() (string, *abi.Error) {
	if r.TokenURL != "" {
		return r.TokenURL, nil
	}
	t := r.profile.TokenURL
	if t == "" && r.profile.Discovery != "" {
		return "", invalidRequest("token_url is required for " + r.profile.Name + ": the token_endpoint of {fhir_base}" + r.profile.Discovery)
	}
	if t == "" {
		return "", invalidRequest("token_url is required for " + r.profile.Name)
	}
	if !hasDomain(t) {
		return t, nil
	}
	if !validDomain(r.Domain) {
		return "", invalidRequest("domain must be a host name (letters, digits, '.', '-', and an optional :port)")
	}
	return strings.Replace(t, "{domain}", r.Domain, 1), nil
}

func hasDomain(template string) bool { return strings.Contains(template, "{domain}") }

// validDomain keeps a domain from changing which host a URL template points at ("evil.com/x?").
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// appendBasic appends the Basic Authorization value of id and secret: "Basic " base64(id:secret),
// with id and secret form-encoded first for RFC 6749 (section 2.3.1). It is written straight into b,
// without the intermediate strings.
func appendBasic(b []byte, id, secret string, rfc6749 bool) []byte {
	n := len(id) + 1 + len(secret)
	if rfc6749 {
		n = queryEscapedLen(id) + 1 + queryEscapedLen(secret)
	}
	w := base64Writer{b: append(grow(b, len(b)+6+base64.StdEncoding.EncodedLen(n)), "Basic "...)}
	w.str(id, rfc6749)
	w.byte(':')
	w.str(secret, rfc6749)
	return w.end()
}

// base64Writer appends standard base64 of the bytes written to b: 3-byte groups as they come, so the
// output is that of the whole input encoded at once.
type base64Writer struct {
	b   []byte
	buf [48]byte
	n   int
}

func (w *base64Writer) byte(c byte) {
	w.buf[w.n] = c
	if w.n++; w.n == len(w.buf) {
		w.b = base64.StdEncoding.AppendEncode(w.b, w.buf[:])
		w.n = 0
	}
}

// str writes s, form-encoded (as url.QueryEscape) with escape.
func (w *base64Writer) str(s string, escape bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case !escape || unreservedQuery(c):
			w.byte(c)
		case c == ' ':
			w.byte('+')
		default:
			w.byte('%')
			w.byte(upperHex[c>>4])
			w.byte(upperHex[c&15])
		}
	}
}

func (w *base64Writer) end() []byte {
	if w.n > 0 {
		w.b = base64.StdEncoding.AppendEncode(w.b, w.buf[:w.n])
	}
	return w.b
}

const upperHex = "0123456789ABCDEF"

// unreservedQuery reports whether url.QueryEscape leaves c as it is.
func unreservedQuery(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// appendQueryEscape appends s as url.QueryEscape writes it, without its intermediate string.
func appendQueryEscape(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case unreservedQuery(c):
			b = append(b, c)
		case c == ' ':
			b = append(b, '+')
		default:
			b = append(b, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return b
}

// queryEscapedLen is the length of url.QueryEscape(s).
func queryEscapedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; !unreservedQuery(c) && c != ' ' {
			n += 2
		}
	}
	return n
}

// setHeader replaces the header named name (case-insensitively) or appends it.
func setHeader(h []header, name, value string) []header {
	if i := headerIndex(h, name); i >= 0 {
		h[i].value = value
		return h
	}
	return append(h, header{name, value})
}

func headerIndex(h []header, name string) int {
	for i := range h {
		if strings.EqualFold(h[i].name, name) {
			return i
		}
	}
	return -1
}

// newRequestID returns a random UUID v4: Candescent asks for a unique transactionId per request.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const n = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, n[c>>4], n[c&0xf])
	}
	return string(out)
}

// body builds a JSON or form body with fields in insertion order.
type body struct {
	json bool
	b    []byte
}

func newBody(format string) *body { return &body{json: format == BodyJSON, b: make([]byte, 0, 256)} }

func (b *body) add(k, v string) {
	if b.json {
		if len(b.b) == 0 {
			b.b = append(b.b, '{')
		} else {
			b.b = append(b.b, ',')
		}
		b.b = appendString(b.b, k)
		b.b = append(b.b, ':')
		b.b = appendString(b.b, v)
		return
	}
	if len(b.b) > 0 {
		b.b = append(b.b, '&')
	}
	b.b = appendQueryEscape(b.b, k)
	b.b = append(b.b, '=')
	b.b = appendQueryEscape(b.b, v)
}

// end finishes the body and returns it, a view of b.b.
func (b *body) end() string {
	if b.json {
		if len(b.b) == 0 {
			return "{}"
		}
		b.b = append(b.b, '}')
	}
	return view(b.b)
}

// HeaderPairs returns the headers in order, as name/value pairs.
func (h *HTTPRequest) HeaderPairs() [][2]string {
	out := make([][2]string, len(h.Headers))
	for i, kv := range h.Headers {
		out[i] = [2]string{kv.name, kv.value}
	}
	return out
}

// jsonSize bounds the length of JSON, so it is written into one allocation of about its size (the
// body can be hundreds of KiB: twice its length, as once estimated, is memory an instance keeps).
func (h *HTTPRequest) jsonSize() int {
	n := 128 + stringLen(h.URL) + stringLen(h.Body) + len(h.signed) + stringLen(h.ClientCert)
	if h.signed != "" {
		n += len("&client_assertion_type=" + clientAssertionType + "&client_assertion=")
	}
	for _, kv := range h.Headers {
		n += stringLen(kv.name) + stringLen(kv.value) + 2
	}
	return n
}

// JSON renders the request as the ABI's HttpRequest.
func (h *HTTPRequest) JSON(b []byte) []byte {
	o := newObject(b)
	o.str("method", h.Method)
	o.str("url", h.URL)
	o.headers("headers", h.Headers)
	if h.signed == "" {
		o.str("body", h.Body)
	} else {
		o.key("body") // form fields, then the assertion: base64url and '.', nothing to escape
		o.b = appendString(o.b, h.Body)
		o.b = o.b[:len(o.b)-1]
		if h.Body != "" {
			o.b = append(o.b, '&')
		}
		o.b = append(o.b, "client_assertion_type="+clientAssertionType+"&client_assertion="...)
		o.b = append(append(o.b, h.signed...), '"')
	}
	o.int("timeout_ms", h.TimeoutMS)
	o.strOmit("client_cert", h.ClientCert)
	return o.end()
}
