// Package jwtsign holds the signing rules of private_key_jwt client assertions that the Go host
// (host/signer.go) and the Envoy filter (plugin/envoy/sign.go) share: a JWS signature made with a
// crypto.Signer whose key must be of the algorithm's kind, the one client an assertion's claims
// name, and a private JWK read into a key. PEM stays with each: the host reads it with crypto/x509,
// which the filter must not link (its system root store makes the module import WASI file functions
// that older Envoys refuse), so the filter reads the DER forms with encoding/asn1. It is internal: the JavaScript package signs with WebCrypto and needs no Go.
package jwtsign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/tidwall/gjson"
)

// Sign signs input as JWS alg with s (RFC 7518 section 3: RSASSA-PKCS1-v1_5, RSASSA-PSS with the
// hash's length of salt, or ECDSA as r||s), checking that the key is of the algorithm's kind: an RSA
// key of 2048 bits or more for RS256, RS384 and PS256, a P-256 key for ES256, a P-384 key for ES384.
func Sign(s crypto.Signer, alg string, input []byte) ([]byte, error) {
	var h crypto.Hash
	var digest []byte
	switch alg {
	case "RS256", "ES256", "PS256":
		sum := sha256.Sum256(input)
		h, digest = crypto.SHA256, sum[:]
	case "RS384", "ES384":
		sum := sha512.Sum384(input)
		h, digest = crypto.SHA384, sum[:]
	default:
		return nil, fmt.Errorf("unsupported algorithm %q", alg)
	}
	var opts crypto.SignerOpts = h
	switch pub := s.Public().(type) {
	case *rsa.PublicKey:
		if alg[0] != 'R' && alg[0] != 'P' {
			return nil, fmt.Errorf("an RSA key cannot sign %s", alg)
		}
		if pub.N.BitLen() < 2048 {
			return nil, errors.New("RSA keys under 2048 bits are refused")
		}
		if alg[0] == 'P' {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		}
		sig, err := s.Sign(rand.Reader, digest, opts)
		if err != nil {
			return nil, fmt.Errorf("signer: %w", err)
		}
		if len(sig) != (pub.N.BitLen()+7)/8 {
			return nil, fmt.Errorf("signer returned %d bytes for a %d-bit key", len(sig), pub.N.BitLen())
		}
		return sig, nil
	case *ecdsa.PublicKey:
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384()}[alg]
		if want == nil || pub.Curve != want {
			return nil, fmt.Errorf("an ECDSA %s key cannot sign %s", pub.Curve.Params().Name, alg)
		}
		der, err := s.Sign(rand.Reader, digest, opts)
		if err != nil {
			return nil, fmt.Errorf("signer: %w", err)
		}
		return rawECDSA(der, (want.Params().BitSize+7)/8)
	}
	return nil, fmt.Errorf("key type %T cannot sign %s", s.Public(), alg)
}

// rawECDSA turns an ASN.1 DER ECDSA signature (what crypto.Signer returns) into JWS's r||s, each
// n bytes (RFC 7518 section 3.4).
func rawECDSA(der []byte, n int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) > 0 || sig.R == nil || sig.S == nil || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 ||
		sig.R.BitLen() > 8*n || sig.S.BitLen() > 8*n {
		return nil, errors.New("signer returned a malformed ECDSA signature")
	}
	out := make([]byte, 2*n)
	sig.R.FillBytes(out[:n])
	sig.S.FillBytes(out[n:])
	return out, nil
}

// Client returns the client an assertion's claims (its JWS payload, decoded) name: iss, when iss and
// sub are the same string (RFC 7523; the plugin writes iss = sub = client_id) and each appears once
// in any spelling a server could match (another case). Servers differ on which of a repeated claim
// they read (encoding/json and JSON.parse keep the last, gjson the first), so a repeat could name
// another client to the server: it is refused.
func Client(claims []byte) (string, bool) {
	if !gjson.ValidBytes(claims) {
		return "", false
	}
	var iss, sub gjson.Result
	single := true
	gjson.ParseBytes(claims).ForEach(func(key, v gjson.Result) bool {
		dst := &iss
		switch {
		case strings.EqualFold(key.Str, "iss"):
		case strings.EqualFold(key.Str, "sub"):
			dst = &sub
		default:
			return true
		}
		single = single && !dst.Exists()
		*dst = v
		return single
	})
	if !single || iss.Type != gjson.String || sub.Type != gjson.String || iss.Str != sub.Str {
		return "", false
	}
	return iss.Str, true
}

// RSAKey makes an RSA key from its numbers, checked to be one key of 2048, 3072 or 4096 bits (the
// sizes whose signatures the flow takes).
func RSAKey(n, d, p, q *big.Int, e int) (*rsa.PrivateKey, error) {
	if n.Sign() <= 0 || d.Sign() <= 0 || p.Sign() <= 0 || q.Sign() <= 0 || e < 3 {
		return nil, errors.New("the RSA key's numbers do not make one key")
	}
	if b := n.BitLen(); b != 2048 && b != 3072 && b != 4096 {
		return nil, fmt.Errorf("an RSA key must have 2048, 3072 or 4096 bits, not %d", b)
	}
	key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: e}, D: d, Primes: []*big.Int{p, q}}
	if key.Validate() != nil {
		return nil, errors.New("the RSA key's numbers do not make one key")
	}
	key.Precompute()
	return key, nil
}

// ParseJWK reads one private JWK (RFC 7517): "kty" RSA (n, e, d, p and q; RSAKey's sizes) or EC
// (crv P-256 or P-384 and d; x and y, when given, must be d's). kid is its "kid". A JWK Set and a
// public JWK are refused. Errors never quote the input.
func ParseJWK(data []byte) (crypto.Signer, string, error) {
	var k struct {
		Kty, Kid, Crv, X, Y, D, N, E, P, Q string
		Keys                               json.RawMessage
	}
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, "", errors.New("the JWK is not a JSON object of strings")
	}
	if k.Keys != nil {
		return nil, "", errors.New("it is a JWK Set: give the one private JWK")
	}
	if k.D == "" {
		return nil, "", errors.New("the JWK has no private part (d): it is a public key")
	}
	num := func(s string) (*big.Int, bool) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		return new(big.Int).SetBytes(b), err == nil && len(b) > 0
	}
	switch k.Kty {
	case "RSA":
		n, ok1 := num(k.N)
		e, ok2 := num(k.E)
		d, ok3 := num(k.D)
		p, ok4 := num(k.P)
		q, ok5 := num(k.Q)
		if !(ok1 && ok2 && ok3 && ok4 && ok5) || !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, "", errors.New("an RSA JWK needs n, e, d, p and q (unpadded base64url)")
		}
		key, err := RSAKey(n, d, p, q, int(e.Int64()))
		return key, k.Kid, err
	case "EC":
		curve := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384()}[k.Crv]
		d, err := base64.RawURLEncoding.DecodeString(k.D)
		if curve == nil || err != nil {
			return nil, "", errors.New("an EC JWK needs crv P-256 or P-384 and d (unpadded base64url)")
		}
		key, err := ecdsa.ParseRawPrivateKey(curve, d)
		if err != nil {
			return nil, "", errors.New("the EC JWK's d is not a key on its curve")
		}
		pub, _ := key.PublicKey.Bytes() // 0x04 || X || Y
		n := (curve.Params().BitSize + 7) / 8
		for i, c := range [...]string{k.X, k.Y} {
			if c == "" {
				continue
			}
			if b, err := base64.RawURLEncoding.DecodeString(c); err != nil || !bytes.Equal(b, pub[1+i*n:1+(i+1)*n]) {
				return nil, "", errors.New("the EC JWK's x or y does not match its d")
			}
		}
		return key, k.Kid, nil
	}
	return nil, "", errors.New("the JWK's kty must be RSA or EC")
}
