// Package jwtsign holds the signing rules of private_key_jwt client assertions that the Go host
// (host/signer.go) and the Envoy filter (plugin/envoy/sign.go) share: a JWS signature made with a
// crypto.Signer whose key must be of the algorithm's kind, and the one client an assertion's claims
// name. Key parsing stays with each: the host reads keys with crypto/x509 and takes any
// crypto.Signer (a KMS key), while the filter must not link crypto/x509 (its system root store makes
// the module import WASI file functions that older Envoys refuse) and takes only the key sizes the
// flow verifies. It is internal: the JavaScript package signs with WebCrypto and needs no Go.
package jwtsign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
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
