package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/internal/jwtsign"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// The filter signs private_key_jwt client assertions itself: the flow asks its host to sign
// (abi/ABI.md "The sign action"), and in Envoy the filter is that host. The key comes from the VM's
// environment (secret_env.private_key), is parsed once at start, and lives only in the plugin
// context's memory: it is never in the flow's request, in shared data, in a log or in an error.

// signingKeyField is the secret_env key that names the environment variable holding the key.
const signingKeyField = "private_key"

// keySigner answers the flow's sign action with the configured key. alg, kid and clientID are fixed
// at start: it signs only an assertion of that algorithm and key id, for that client.
type keySigner struct {
	key      crypto.Signer // *rsa.PrivateKey or *ecdsa.PrivateKey
	alg, kid string
	clientID string
}

// Format prints no key material, whatever the verb: a key must not reach a log through a %v.
func (k *keySigner) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[private key]") }

// sign answers a sign action: {"alg","kid","signing_input"} -> {"signature"} (unpadded base64url;
// ECDSA as the JWS r||s) or {"error"}. Errors name the key id and the algorithm, never key material.
func (k *keySigner) sign(action []byte) []byte {
	in := gjson.ParseBytes(action)
	alg, kid, input := in.Get("alg").Str, in.Get("kid").Str, in.Get("signing_input").Str
	if alg != k.alg || kid != k.kid || !k.signsFor(input) {
		return []byte(`{"error":"the filter signs only the configured client's assertions, with the configured key_id and assertion_alg"}`)
	}
	sig, err := jwsSign(k.key, alg, []byte(input))
	if err != nil {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		return b
	}
	return append(base64.RawURLEncoding.AppendEncode([]byte(`{"signature":"`), sig), '"', '}')
}

// signsFor reports whether input is a JWS signing input "header.payload" whose header names k's alg
// and kid and whose payload names k's client as iss and as sub (RFC 7523; the flow writes iss = sub =
// client_id), each once in any spelling a server could match (another case): servers differ on which
// of a repeated claim they read. The flow builds the input from the configuration, so this refuses
// nothing today; it keeps the key to the one assertion it is configured for.
func (k *keySigner) signsFor(input string) bool {
	header, payload, ok := strings.Cut(input, ".")
	if !ok || strings.Contains(payload, ".") {
		return false
	}
	h, err1 := base64.RawURLEncoding.DecodeString(header)
	c, err2 := base64.RawURLEncoding.DecodeString(payload)
	if err1 != nil || err2 != nil || !gjson.ValidBytes(h) || !gjson.ValidBytes(c) {
		return false
	}
	if hv := gjson.ParseBytes(h); hv.Get("alg").Str != k.alg || hv.Get("kid").Str != k.kid {
		return false
	}
	client, ok := jwtsign.Client(c)
	return ok && client == k.clientID
}

// jwsSign signs input as JWS alg with key: the rules the Go host shares (internal/jwtsign).
var jwsSign = jwtsign.Sign

// keyAlgs names what a key can sign, for the start's check and its message: an RSA key of 2048, 3072
// or 4096 bits RS256, RS384 or PS256 (the flow takes RSA signatures of those sizes), an ECDSA P-256
// key ES256, a P-384 key ES384.
func keyAlgs(key crypto.Signer) (kind string, algs []string) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return fmt.Sprintf("an RSA %d-bit key", k.N.BitLen()), []string{core.AlgRS256, core.AlgRS384, core.AlgPS256}
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return "an ECDSA P-256 key", []string{core.AlgES256}
		case elliptic.P384():
			return "an ECDSA P-384 key", []string{core.AlgES384}
		}
	}
	return "a key", nil
}

// parseSigningKey reads a private key: PEM ("PRIVATE KEY" PKCS #8, "RSA PRIVATE KEY" PKCS #1, "EC
// PRIVATE KEY" SEC 1, an "EC PARAMETERS" block before it skipped) or one JWK (RFC 7517, "kty" RSA or
// EC with its private members). kid is the JWK's "kid" ("" for PEM). Only RSA keys of 2048, 3072 or
// 4096 bits and ECDSA P-256 and P-384 keys are taken. Errors never quote the input.
func parseSigningKey(data []byte) (key crypto.Signer, kid string, err error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '{' {
		key, kid, err = parseJWK(data)
	} else {
		key, err = parsePEM(data)
	}
	if err != nil {
		return nil, "", err
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n != 2048 && n != 3072 && n != 4096 {
			return nil, "", fmt.Errorf("an RSA key must have 2048, 3072 or 4096 bits, not %d", n)
		}
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, "", errors.New("an ECDSA key must be on P-256 or P-384")
		}
	default:
		return nil, "", errors.New("the key is neither RSA nor ECDSA")
	}
	return key, kid, nil
}

func parsePEM(data []byte) (crypto.Signer, error) {
	var key crypto.Signer
	for rest := data; len(bytes.TrimSpace(rest)) > 0; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			if key == nil {
				return nil, errors.New("it is neither PEM nor a JWK")
			}
			return nil, errors.New("something other than PEM follows the key")
		}
		if block.Type == "EC PARAMETERS" { // openssl ecparam -genkey writes the curve first
			continue
		}
		if key != nil {
			return nil, errors.New("it holds more than one PEM block: give the private key alone")
		}
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = parsePKCS8(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = parsePKCS1(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = parseSEC1(block.Bytes, nil)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the PEM key is encrypted: give it unencrypted (the variable is the secret)")
		default:
			return nil, errors.New("the PEM block is not a private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")
		}
		if err != nil {
			return nil, err
		}
	}
	if key == nil {
		return nil, errors.New("it holds no private key")
	}
	return key, nil
}

// The DER forms of private keys are read here with encoding/asn1, not crypto/x509: x509 brings the
// system root store, whose file reads make the module import WASI's path_open and path_filestat_get,
// which Envoy registers only since proxy-wasm-cpp-host PR #533 (README.md, "WASI imports"): an older
// Envoy would refuse to load the filter.

var (
	oidRSA  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEC   = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
)

// parsePKCS8 reads a PKCS #8 PrivateKeyInfo (RFC 5208) holding an RSA or an ECDSA key.
func parsePKCS8(der []byte) (crypto.Signer, error) {
	var info struct {
		Version int
		Algo    struct {
			Algorithm  asn1.ObjectIdentifier
			Parameters asn1.RawValue `asn1:"optional"`
		}
		PrivateKey []byte
		// attributes, and PKCS #8 v2's public key, are not read
	}
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) > 0 || info.Version > 1 {
		return nil, errors.New("the PEM private key (PKCS #8) cannot be read")
	}
	switch {
	case info.Algo.Algorithm.Equal(oidRSA):
		return parsePKCS1(info.PrivateKey)
	case info.Algo.Algorithm.Equal(oidEC):
		var curve asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(info.Algo.Parameters.FullBytes, &curve); err != nil || len(rest) > 0 {
			return nil, errors.New("the PEM private key (PKCS #8) names no curve")
		}
		return parseSEC1(info.PrivateKey, curve)
	}
	return nil, errors.New("the PEM private key is neither RSA nor ECDSA")
}

// parsePKCS1 reads a two-prime RSAPrivateKey (RFC 8017 appendix A.1.2).
func parsePKCS1(der []byte) (crypto.Signer, error) {
	var k struct {
		Version               int
		N                     *big.Int
		E                     int
		D, P, Q, Dp, Dq, Qinv *big.Int
		AdditionalPrimes      []asn1.RawValue `asn1:"optional,omitempty"`
	}
	if rest, err := asn1.Unmarshal(der, &k); err != nil || len(rest) > 0 || k.N == nil || k.D == nil || k.P == nil || k.Q == nil {
		return nil, errors.New("the PEM RSA private key cannot be read")
	}
	if k.Version != 0 || len(k.AdditionalPrimes) > 0 {
		return nil, errors.New("the PEM RSA private key has more than two primes")
	}
	return jwtsign.RSAKey(k.N, k.D, k.P, k.Q, k.E)
}

// parseSEC1 reads an ECPrivateKey (RFC 5915) on P-256 or P-384: the curve is its own parameters, or
// curve (PKCS #8's) when it has none. A public key it holds must be the private key's.
func parseSEC1(der []byte, curve asn1.ObjectIdentifier) (crypto.Signer, error) {
	var k struct {
		Version    int
		PrivateKey []byte
		Curve      asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
		PublicKey  asn1.BitString        `asn1:"optional,explicit,tag:1"`
	}
	if rest, err := asn1.Unmarshal(der, &k); err != nil || len(rest) > 0 || k.Version != 1 {
		return nil, errors.New("the PEM EC private key cannot be read")
	}
	if len(k.Curve) > 0 {
		if len(curve) > 0 && !curve.Equal(k.Curve) {
			return nil, errors.New("the PEM EC private key names two curves")
		}
		curve = k.Curve
	}
	var c elliptic.Curve
	switch {
	case curve.Equal(oidP256):
		c = elliptic.P256()
	case curve.Equal(oidP384):
		c = elliptic.P384()
	default:
		return nil, errors.New("an ECDSA key must be on P-256 or P-384")
	}
	n := (c.Params().BitSize + 7) / 8
	if len(k.PrivateKey) > n {
		return nil, errors.New("the PEM EC private key cannot be read")
	}
	d := make([]byte, n) // some encoders drop the scalar's leading zeros
	copy(d[n-len(k.PrivateKey):], k.PrivateKey)
	key, err := ecdsa.ParseRawPrivateKey(c, d)
	if err != nil {
		return nil, errors.New("the PEM EC private key is not a key on its curve")
	}
	if pub, _ := key.PublicKey.Bytes(); k.PublicKey.BitLength > 0 && !bytes.Equal(k.PublicKey.Bytes, pub) {
		return nil, errors.New("the PEM EC private key's public key is not its own")
	}
	return key, nil
}

// parseJWK reads one private JWK: the rules the Go host shares (internal/jwtsign).
var parseJWK = jwtsign.ParseJWK
