package host

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/internal/jwtsign"
)

// Client assertions of private_key_jwt are signed here, never in the plugin: the plugin builds the
// JWS signing input and asks for a signature with token_step's "sign" action (abi/ABI.md); this
// host answers it with the crypto.Signer registered for the key id. Any crypto.Signer works, so
// keys held in a KMS or an HSM never leave it.

// WithSigner registers the key that signs client assertions for key id kid (a request's key_id,
// the assertion's "kid"): an *rsa.PrivateKey or *ecdsa.PrivateKey (ParseSigner reads PEM and JWK),
// or any crypto.Signer whose Public() is an RSA key of 2048 bits or more or an ECDSA P-256 or P-384
// key (a KMS or HSM key). crypto.Signer takes no context: the fetch waits for a signature no longer than its
// context allows, and a signer that can block (a remote KMS) should still bound its own calls.
//
// clientIDs, when given, are the only clients the key signs for (the assertion's iss): a key id is
// public (it is in the JWKS), so a Runtime that serves requests from more than one tenant binds each
// key to its client, or a request naming another client's kid gets that client's tokens signed. An
// empty list that is not nil (WithSigner(kid, s, ids...) with ids loaded empty) binds the key to no
// client: it signs nothing, rather than for every client.
func WithSigner(kid string, s crypto.Signer, clientIDs ...string) Option {
	return func(c *config) {
		if c.signers == nil {
			c.signers = map[string]signingKey{}
		}
		k := signingKey{Signer: s}
		if clientIDs != nil {
			k.clients = clientSet(clientIDs)
		}
		c.signers[kid] = k
	}
}

// clientSet is a bound key's clients: never nil, so an empty list binds to none.
func clientSet(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// signingKey is a registered key and the clients it signs for (nil: any).
type signingKey struct {
	crypto.Signer
	clients map[string]bool
}

// signsFor reports whether k may sign the JWS signing input "header.payload": when k is bound, its
// payload names one of k's clients as iss and as sub (RFC 7523; the plugin writes iss = sub =
// client_id), each once. A repeated iss or sub, in any spelling a server could match (an escape, another
// case), is refused: servers differ on which of a repeat they read (encoding/json and JSON.parse keep
// the last, gjson the first), so such a payload could name another client to the server.
func (k signingKey) signsFor(input []byte) bool {
	if k.clients == nil {
		return true
	}
	_, payload, ok := bytes.Cut(input, []byte{'.'})
	if !ok {
		return false
	}
	claims, err := base64.RawURLEncoding.DecodeString(string(payload))
	if err != nil {
		return false
	}
	client, ok := jwtsign.Client(claims)
	return ok && k.clients[client]
}

// sign answers a sign action: {"alg","kid","signing_input"} -> {"signature"} (base64url; ECDSA as
// the JWS r||s, not DER) or {"error"}. Errors name the key id and the algorithm, never key material.
func (c *Runtime) sign(ctx context.Context, in []byte) []byte {
	var f [3]gjson.Result
	members(gjson.ParseBytes(in), f[:], "alg", "kid", "signing_input")
	alg, kid, input := f[0].Str, f[1].Str, f[2].Str
	sig, err := c.signWith(ctx, alg, kid, []byte(input))
	if err != nil {
		c.log.Warn("tokenwasm: signing a client assertion failed", "kid", kid, "alg", alg, "err", err)
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		return b
	}
	c.metrics.signatures.Add(1)
	b, _ := json.Marshal(map[string]string{"signature": base64.RawURLEncoding.EncodeToString(sig)})
	return b
}

func (c *Runtime) signWith(ctx context.Context, alg, kid string, input []byte) ([]byte, error) {
	s, ok := c.signers[kid]
	if !ok {
		return nil, fmt.Errorf("no signing key for key id %q", kid)
	}
	if !s.signsFor(input) {
		return nil, fmt.Errorf("key id %q does not sign for this client", kid)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// crypto.Signer takes no context: a remote key (a KMS, an HSM over the network) that hangs must
	// not hold the caller past its deadline, so the signature is awaited no longer than ctx allows.
	// A signer left running finishes (or not) on its own; its answer is dropped.
	type signed struct {
		sig []byte
		err error
	}
	done := make(chan signed, 1)
	go func() {
		sig, err := jwsSign(s, alg, input)
		done <- signed{sig, err}
	}()
	select {
	case r := <-done:
		return r.sig, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("signer did not answer in time: %w", ctx.Err())
	}
}

// jwsSign signs input as JWS alg with s, checking that the key is of the algorithm's kind (the rules
// the Envoy filter shares: internal/jwtsign).
var jwsSign = jwtsign.Sign

// ParseSigner reads a private key for WithSigner: PEM ("PRIVATE KEY" PKCS #8, "RSA PRIVATE KEY"
// PKCS #1, "EC PRIVATE KEY" SEC 1) or a JWK (RFC 7517: "kty" RSA or EC with its private members).
// kid is the JWK's "kid", "" for PEM. Errors never quote the input.
func ParseSigner(data []byte) (s crypto.Signer, kid string, err error) {
	if gjson.ValidBytes(data) && gjson.ParseBytes(data).IsObject() {
		return parseJWK(data)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("tokenwasm: key is neither PEM nor a JWK")
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, "", fmt.Errorf("tokenwasm: PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, "", errors.New("tokenwasm: unreadable " + block.Type)
	}
	if s, ok := key.(crypto.Signer); ok {
		return s, "", nil
	}
	return nil, "", fmt.Errorf("tokenwasm: %T cannot sign", key)
}

// parseJWK reads one private JWK with the rules the Envoy filter shares (internal/jwtsign).
func parseJWK(data []byte) (crypto.Signer, string, error) {
	s, kid, err := jwtsign.ParseJWK(data)
	if err != nil {
		return nil, "", fmt.Errorf("tokenwasm: %w", err)
	}
	return s, kid, nil
}
