package core

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// Client assertions (RFC 7523 section 2.2, SMART Backend Services): a JWT that authenticates the
// client at the token endpoint, iss = sub = client_id, aud = the token URL, a jti never reused and an
// exp a few minutes ahead. client_secret_jwt signs it here with HMAC under the client secret;
// private_key_jwt hands the signing input to the host (token_step's "sign" action), so private keys
// never enter the plugin. The jti and the time claims change on every request and are kept out of
// the cache identity; the algorithm, the key id and the client id are in it.

// JWS algorithms of client assertions.
const (
	AlgHS256 = "HS256"
	AlgRS256 = "RS256"
	AlgRS384 = "RS384"
	AlgES256 = "ES256"
	AlgES384 = "ES384"
	AlgPS256 = "PS256"
)

// privateKeyAlgs are the algorithms a host key may sign with.
var privateKeyAlgs = []string{AlgRS256, AlgRS384, AlgES256, AlgES384, AlgPS256}

// AssertionLifeS is how far ahead of its iat an assertion expires: SMART allows at most five
// minutes; one is left for clocks that disagree.
const AssertionLifeS = 240

// ImportSign is the token_step action that asks the host for a signature. It is not an import of the
// wasm module (a new import would keep today's hosts from instantiating the plugin): only token_step
// ever asks for it.
const ImportSign = abi.ActionSign

// clientAssertionType is client_assertion_type, form-encoded.
const clientAssertionType = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"

// assertion is what a client assertion is built from, less its per-request claims.
type assertion struct {
	alg, kid, iss, aud string
	secret             string // client_secret_jwt's HMAC key
	jti                string // the request's assertion_jti (tests, replays); "" for a fresh one
	// bufs holds the claims and the assertion made for each send (the request's storage, or nil
	// for buffers of their own): the claims are as long as client_id and the token URL, and a
	// send must not allocate that much anew (rawjson.go).
	bufs *requestBufs
}

// hostSigns reports whether the host must sign (private_key_jwt).
func (a *assertion) hostSigns() bool { return a.alg != AlgHS256 }

// identity hashes what identifies the assertion's signer into a cache key's input: a new key, kid or
// client is a new identity; the per-request claims are not part of it. Each field is preceded by its
// length: neither the kid nor the client id is in the body, and joined by a separator they could
// hold ("k:1" for client "c" and "k" for client "1:c"), two credential sets would be one identity.
func (a *assertion) identity(k *keyHash) {
	k.str("\nassertion")
	var n [20]byte
	for _, f := range [...]string{a.alg, a.kid, a.iss, a.secret} { // the secret hashed with the rest, as a Basic header is
		k.byte(':')
		k.str(view(strconv.AppendInt(n[:0], int64(len(f)), 10)))
		k.byte(':')
		k.str(f)
	}
}

// signingInput appends the JWS signing input, base64url(header) "." base64url(claims), for the
// jti and iat (Unix seconds) given. The same inputs always give the same bytes.
func (a *assertion) signingInput(b []byte, jti string, iat int64) []byte {
	h := newObject(make([]byte, 0, 64+len(a.kid)))
	h.str("alg", a.alg)
	h.str("typ", "JWT")
	h.strOmit("kid", a.kid)
	b = base64.RawURLEncoding.AppendEncode(b, h.end())
	c := newObject(grow(a.buffers().claims[:0], 128+2*len(a.iss)+len(a.aud)+len(jti)))
	c.str("iss", a.iss)
	c.str("sub", a.iss)
	c.str("aud", a.aud)
	c.str("jti", jti)
	c.int("iat", iat)
	c.int("exp", iat+AssertionLifeS)
	claims := c.end()
	a.bufs.claims = claims
	b = grow(b, len(b)+1+base64.RawURLEncoding.EncodedLen(len(claims))+128) // and a signature
	return base64.RawURLEncoding.AppendEncode(append(b, '.'), claims)
}

// buffers returns a's buffers, made on first use when it has none.
func (a *assertion) buffers() *requestBufs {
	if a.bufs == nil {
		a.bufs = new(requestBufs)
	}
	return a.bufs
}

// hmacSigned returns the whole client_secret_jwt assertion, written in a's buffers: valid until the
// next assertion is made from them.
func (a *assertion) hmacSigned(jti string, iat int64) string {
	in := a.signingInput(a.buffers().jws[:0], jti, iat)
	mac := hmac.New(sha256.New, a.hmacKey())
	mac.Write(in)
	var sum [sha256.Size]byte
	in = base64.RawURLEncoding.AppendEncode(append(in, '.'), mac.Sum(sum[:0]))
	a.bufs.jws = in
	return view(in)
}

// hmacKey returns the HMAC key of the secret as crypto/hmac would use it: a secret longer than
// SHA-256's block is hashed first (RFC 2104), here without copying it.
func (a *assertion) hmacKey() []byte {
	if len(a.secret) <= sha256.BlockSize {
		return []byte(a.secret)
	}
	k := keyHash{h: sha256.New()}
	k.str(a.secret)
	sum := k.sum()
	return sum[:]
}

// signatureLen reports whether n bytes is the length of an alg signature: the JWS form of ECDSA
// (r||s, 64 or 96 bytes, not DER), an RSA signature of a 2048-, 3072- or 4096-bit key.
func signatureLen(alg string, n int) bool {
	switch alg {
	case AlgES256:
		return n == 64
	case AlgES384:
		return n == 96
	}
	return n == 256 || n == 384 || n == 512
}

// signed reads the host's answer to a sign action and returns the whole assertion.
func (a *assertion) signed(r *Request, answer []byte, checked bool, jti string, iat int64) (string, *abi.Error) {
	if !checked && !validJSON(answer, maxDepth) {
		return "", signingError("the host's sign answer is not JSON")
	}
	v := gjson.Parse(view(answer)) // nothing read from it outlives the call
	if e := v.Get("error"); e.Exists() {
		return "", signingError("the host could not sign with key " + quote(a.kid) + " (" + a.alg + "): " + r.redact(e.String(), 200))
	}
	sig := v.Get("signature")
	if sig.Type != gjson.String {
		return "", signingError("the host's sign answer has no signature")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(sig.Str)
	if err != nil {
		return "", signingError("the host's signature is not unpadded base64url")
	}
	if !signatureLen(a.alg, len(raw)) {
		return "", signingError("the host's " + a.alg + " signature is " + strconv.Itoa(len(raw)) +
			" bytes (ECDSA must be r||s, not DER)")
	}
	in := a.signingInput(a.buffers().jws[:0], jti, iat)
	in = append(append(in, '.'), sig.Str...)
	a.bufs.jws = in
	return view(in), nil
}

// signAction writes the input of the sign action: {"alg","kid","signing_input"}.
func (a *assertion) signAction(o object, jti string, iat int64) object {
	o.str("alg", a.alg)
	o.str("kid", a.kid)
	o.key("signing_input")
	o.b = append(a.signingInput(append(o.b, '"'), jti, iat), '"') // base64url needs no escaping
	return o
}

func signingError(msg string) *abi.Error {
	return &abi.Error{Kind: abi.KindSigning, Message: msg}
}

// SigningRequired is the answer of token and encode to a request the host must sign: those exports
// call imports inline, and signing is an action of token_step only.
func SigningRequired() *abi.Error {
	return &abi.Error{Kind: abi.KindSigningRequired,
		Message: "private_key_jwt needs the host to sign the client assertion: run this request through token_step"}
}
