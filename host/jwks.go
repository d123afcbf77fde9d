package host

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"slices"
)

// A server verifies a private_key_jwt assertion with the client's public keys, which the client
// registers or publishes as a JWK Set (RFC 7517) at a URL the server fetches (SMART's jwks_uri).
// JWKS and JWKSHandler give that document for the keys registered with WithSigner.
//
// Rotation: publish the next key (WithSigner under a new key id, beside the current one) before any
// request names it, long enough for the servers that cache the document to have fetched it again
// (the handler says max-age 300 s; a server may keep it longer); then move the requests' key_id to
// it. Keep the old key in the document until the last assertion it signed has expired: an
// assertion lives 240 s (abi/ABI.md, "Client authentication"), so 240 s after the last request
// that named it, plus clock skew. Then drop it.

// jwksMaxAge is the Cache-Control max-age of JWKSHandler's document, in seconds.
const jwksMaxAge = 300

// jwk is one public key of a JWK Set, its members in the order RFC 7638 lists them per kty.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// JWKS returns the public keys of the Runtime's signers (WithSigner) as a JWK Set, ordered by key
// id: {"keys": [{"kty", "kid", "use": "sig", ...}]}, RSA keys with n and e, ECDSA keys with crv, x,
// y and alg (ES256 for P-256, ES384 for P-384: a curve signs one algorithm). An RSA key has no alg:
// it signs RS256, RS384 or PS256 as each request's assertion_alg asks, and alg is optional (RFC
// 7517 section 4.4). Only public values are read (the signers' Public()). A signer whose key could
// not sign (RSA under 2048 bits, another curve or key type) is an error, not left out: a document
// without a key the requests name fails at the server, later and less clearly.
func (c *Runtime) JWKS() ([]byte, error) {
	kids := make([]string, 0, len(c.signers))
	for kid := range c.signers {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	keys := make([]jwk, 0, len(kids))
	for _, kid := range kids {
		k, err := publicJWK(kid, c.signers[kid].Public())
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return json.Marshal(struct {
		Keys []jwk `json:"keys"`
	}{keys})
}

// JWKSHandler serves JWKS (GET and HEAD) as application/jwk-set+json, cacheable for 300 s: mount it
// at the URL registered with the servers (a jwks_uri). The document is made once, here: the signers
// of a Runtime do not change. The error is JWKS's.
func (c *Runtime) JWKSHandler() (http.Handler, error) {
	doc, err := c.JWKS()
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/jwk-set+json")
		h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", jwksMaxAge))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Length", fmt.Sprint(len(doc)))
		if r.Method == http.MethodGet {
			w.Write(doc)
		}
	}), nil
}

// publicJWK is the JWK of a signer's public key, refused unless jwsSign would sign with it.
func publicJWK(kid string, pub any) (jwk, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return jwk{}, fmt.Errorf("tokenwasm: key id %q: RSA keys under 2048 bits are refused", kid)
		}
		return jwk{Kty: "RSA", Kid: kid, Use: "sig", N: b64(k.N.Bytes()), E: b64(big.NewInt(int64(k.E)).Bytes())}, nil
	case *ecdsa.PublicKey:
		var alg, crv string
		switch k.Curve {
		case elliptic.P256():
			alg, crv = "ES256", "P-256"
		case elliptic.P384():
			alg, crv = "ES384", "P-384"
		default:
			return jwk{}, fmt.Errorf("tokenwasm: key id %q: ECDSA keys must be on P-256 or P-384", kid)
		}
		point, err := k.Bytes() // 0x04 || X || Y, each the curve's size
		if err != nil {
			return jwk{}, fmt.Errorf("tokenwasm: key id %q: %w", kid, err)
		}
		n := (len(point) - 1) / 2
		return jwk{Kty: "EC", Kid: kid, Use: "sig", Alg: alg, Crv: crv, X: b64(point[1 : 1+n]), Y: b64(point[1+n:])}, nil
	}
	return jwk{}, fmt.Errorf("tokenwasm: key id %q: a %T cannot sign client assertions", kid, pub)
}
