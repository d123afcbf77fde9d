package providertest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SMART on FHIR Backend Services (HL7 SMART App Launch 2.2): the client authenticates with a JWT
// it signs (RFC 7523, private_key_jwt), checked against the public keys it registered (its JWKS).
// The fake refuses, with invalid_client, an assertion that is not RS384 or ES384, names an unknown
// kid, does not verify, has iss or sub other than the client id, aud other than the token URL, an
// exp in the past or more than five minutes ahead, or a jti it has seen before (until that jti's
// exp).
//
// A client registers its public keys as it would in an EHR's developer portal: SMARTConfig.Keys, or
// its JWK Set (the document it publishes) with RegisterJWKS or POST /_jwks, which add keys to the
// ones the fake knows.

// SMARTPath is the SMART fake's token endpoint; FHIRPath its FHIR base, under which
// .well-known/smart-configuration is served.
const (
	SMARTPath = "/oauth2/token"
	// SMARTRevokePath is its RFC 7009 revocation endpoint.
	SMARTRevokePath = "/oauth2/revoke"
	// SMARTJWKSPath registers a client's JWK Set (POST, the document as its body).
	SMARTJWKSPath = "/_jwks"
	FHIRPath      = "/fhir"
	// SMARTLifetime is the life of the fake's access tokens (EHRs commonly give five minutes).
	SMARTLifetime = 5 * time.Minute
	// MaxAssertionLife is how far ahead an assertion's exp may be (SMART: no more than five minutes).
	MaxAssertionLife = 5 * time.Minute
)

// SMARTConfig configures a SMART fake.
type SMARTConfig struct {
	ClientID string
	// Keys is the client's JWKS: its public keys by kid (*rsa.PublicKey, *ecdsa.PublicKey).
	Keys map[string]crypto.PublicKey
	// AuthMethods is token_endpoint_auth_methods_supported; nil means ["private_key_jwt"].
	AuthMethods []string
	// Now is the fake's clock (tests set it to hit exp boundaries); nil means time.Now.
	Now func() time.Time
}

// SMART is a fake SMART on FHIR server: discovery document, token endpoint and API.
type SMART struct {
	*Fake
	scfg        SMARTConfig
	discoveries atomic.Int64
	revocations atomic.Int64
	mu          sync.Mutex
	seen        map[string]time.Time        // jti -> its assertion's exp
	keys        map[string]crypto.PublicKey // the client's public keys by kid: Keys, then registered ones
}

// NewSMART starts a SMART fake on loopback.
func NewSMART(cfg SMARTConfig) *SMART { return must(Server{}.NewSMART(cfg)) }

// NewSMART is NewSMART served as s says.
func (sv Server) NewSMART(cfg SMARTConfig) (*SMART, error) {
	if cfg.AuthMethods == nil {
		cfg.AuthMethods = []string{"private_key_jwt"}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &SMART{scfg: cfg, seen: map[string]time.Time{}, keys: map[string]crypto.PublicKey{}}
	for kid, k := range cfg.Keys {
		s.keys[kid] = k
	}
	f, mux := unstartedFake("smart", SMARTPath, Config{ClientID: cfg.ClientID}, func(_ *Fake, w http.ResponseWriter, r *http.Request) { s.token(w, r) })
	mux.HandleFunc(FHIRPath+"/.well-known/smart-configuration", s.configuration)
	mux.HandleFunc(SMARTRevokePath, s.revoke)
	mux.HandleFunc(SMARTJWKSPath, s.registerJWKS)
	s.Fake = f
	return started(s, f.start(sv, mux, nil))
}

// FHIRBase is the fake's FHIR base URL: what a smart request's fhir_base names.
func (s *SMART) FHIRBase() string { return s.URL() + FHIRPath }

// Revocations counts the tokens revoked at the revocation endpoint.
func (s *SMART) Revocations() int64 { return s.revocations.Load() }

// RegisterJWKS adds the public keys of a JWK Set (a client's published document) to the keys the
// fake verifies assertions with; a kid it knows is replaced. It returns the kids it added.
func (s *SMART) RegisterJWKS(doc []byte) ([]string, error) {
	keys, err := ParseJWKS(doc)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kids := make([]string, 0, len(keys))
	for kid, k := range keys {
		s.keys[kid] = k
		kids = append(kids, kid)
	}
	sort.Strings(kids)
	return kids, nil
}

// registerJWKS is POST /_jwks: the body a JWK Set; answers {"registered": [kid...]}.
func (s *SMART) registerJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST a JWK Set")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
		return
	}
	kids, err := s.RegisterJWKS(body)
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"registered": kids})
}

// Discoveries counts the configuration documents served.
func (s *SMART) Discoveries() int64 { return s.discoveries.Load() }

func (s *SMART) configuration(w http.ResponseWriter, _ *http.Request) {
	s.discoveries.Add(1)
	writeJSON(w, http.StatusOK, map[string]any{
		"revocation_endpoint":                              s.URL() + SMARTRevokePath,
		"token_endpoint":                                   s.TokenURL(),
		"token_endpoint_auth_methods_supported":            s.scfg.AuthMethods,
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
		"grant_types_supported":                            []string{"client_credentials"},
		"scopes_supported":                                 []string{"system/*.rs", "system/Patient.rs", "system/Observation.rs"},
		"capabilities":                                     []string{"client-confidential-asymmetric"},
	})
}

// revoke is RFC 7009: the client authenticates as at the token endpoint; the token stops working.
func (s *SMART) revoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || mediaType(r) != formType || r.ParseForm() != nil || r.PostForm.Get("token") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	if r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client_assertion_type must be jwt-bearer")
		return
	}
	if why := s.CheckAssertion(r.PostForm.Get("client_assertion")); why != "" {
		oauthError(w, http.StatusUnauthorized, "invalid_client", why)
		return
	}
	if h := r.PostForm.Get("token_type_hint"); h != "" && h != "access_token" && h != "refresh_token" {
		oauthError(w, http.StatusBadRequest, "unsupported_token_type", "")
		return
	}
	s.revocations.Add(1)
	s.Revoke(r.PostForm.Get("token")) // an unknown token is answered 200 too (RFC 7009 section 2.2)
	w.WriteHeader(http.StatusOK)
}

func (s *SMART) token(w http.ResponseWriter, r *http.Request) {
	if !clientCredentialsForm(w, r) {
		return
	}
	if r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client_assertion_type must be jwt-bearer")
		return
	}
	if r.PostForm.Has("client_secret") {
		oauthError(w, http.StatusBadRequest, "invalid_request", "no client_secret with an assertion")
		return
	}
	if why := s.CheckAssertion(r.PostForm.Get("client_assertion")); why != "" {
		oauthError(w, http.StatusUnauthorized, "invalid_client", why)
		return
	}
	scope := r.PostForm.Get("scope")
	for _, sc := range strings.Fields(scope) {
		if !strings.HasPrefix(sc, "system/") {
			oauthError(w, http.StatusBadRequest, "invalid_scope", "")
			return
		}
	}
	tok := randomHex(24)
	s.remember(tok, SMARTLifetime)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "bearer",
		"expires_in": int64(SMARTLifetime / time.Second), "scope": scope})
}

// CheckAssertion verifies a client assertion as the token endpoint does and remembers its jti; it
// returns why it is refused, "" when it is accepted.
func (s *SMART) CheckAssertion(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "client_assertion is not a compact JWS"
	}
	var h struct{ Alg, Kid, Typ string }
	var c struct {
		Iss, Sub, Aud, Jti string
		Exp                *int64
	}
	if !decodePart(parts[0], &h) || !decodePart(parts[1], &c) {
		return "client_assertion is not JSON"
	}
	if h.Alg != "RS384" && h.Alg != "ES384" {
		return "alg must be RS384 or ES384"
	}
	s.mu.Lock()
	key, ok := s.keys[h.Kid]
	s.mu.Unlock()
	if !ok {
		return "unknown kid"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !verify(h.Alg, key, parts[0]+"."+parts[1], sig) {
		return "signature does not verify"
	}
	now := s.scfg.Now()
	switch {
	case c.Iss != s.scfg.ClientID || c.Sub != s.scfg.ClientID:
		return "iss and sub must be the client id"
	case c.Aud != s.TokenURL():
		return "aud must be the token URL"
	case c.Exp == nil || !now.Before(time.Unix(*c.Exp, 0)):
		return "assertion expired"
	case time.Unix(*c.Exp, 0).Sub(now) > MaxAssertionLife:
		return "exp more than 5 minutes out"
	case c.Jti == "":
		return "jti required"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for j, exp := range s.seen {
		if !now.Before(exp) {
			delete(s.seen, j)
		}
	}
	if _, used := s.seen[c.Jti]; used {
		return "jti reused"
	}
	s.seen[c.Jti] = time.Unix(*c.Exp, 0)
	return ""
}

func decodePart(p string, v any) bool {
	b, err := base64.RawURLEncoding.DecodeString(p)
	return err == nil && json.Unmarshal(b, v) == nil
}

// verify checks an RS384 (PKCS #1 v1.5) or ES384 (r||s on P-384) signature.
func verify(alg string, key crypto.PublicKey, input string, sig []byte) bool {
	sum := sha512.Sum384([]byte(input))
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == "RS384" && rsa.VerifyPKCS1v15(k, crypto.SHA384, sum[:], sig) == nil
	case *ecdsa.PublicKey:
		return alg == "ES384" && k.Curve == elliptic.P384() && len(sig) == 96 &&
			ecdsa.Verify(k, sum[:], new(big.Int).SetBytes(sig[:48]), new(big.Int).SetBytes(sig[48:]))
	}
	return false
}

// ParseJWKS reads a JWK Set's public keys by kid: RSA (n, e) and EC on P-256 or P-384 (x, y, checked
// to be on the curve). A key without a kid, of another kty or curve, with private members, or whose
// use is not "sig", is an error, and so is a kid given twice: a client's document must be usable
// whole.
func ParseJWKS(doc []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty, Kid, Use, Alg, N, E, Crv, X, Y, D string
		}
	}
	if err := json.Unmarshal(doc, &set); err != nil || set.Keys == nil {
		return nil, errors.New("not a JWK Set")
	}
	num := func(s string) (*big.Int, bool) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		return new(big.Int).SetBytes(b), err == nil && len(b) > 0
	}
	out := map[string]crypto.PublicKey{}
	for i, k := range set.Keys {
		switch {
		case k.Kid == "":
			return nil, fmt.Errorf("key %d has no kid", i)
		case out[k.Kid] != nil:
			return nil, fmt.Errorf("kid %q is given twice", k.Kid)
		case k.D != "":
			return nil, fmt.Errorf("key %q holds a private key", k.Kid)
		case k.Use != "" && k.Use != "sig":
			return nil, fmt.Errorf("key %q: use %q", k.Kid, k.Use)
		}
		switch k.Kty {
		case "RSA":
			n, ok1 := num(k.N)
			e, ok2 := num(k.E)
			if !ok1 || !ok2 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || n.BitLen() < 2048 {
				return nil, fmt.Errorf("key %q: RSA n and e (2048 bits or more)", k.Kid)
			}
			out[k.Kid] = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			curve := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384()}[k.Crv]
			x, ok1 := num(k.X)
			y, ok2 := num(k.Y)
			if curve == nil || !ok1 || !ok2 {
				return nil, fmt.Errorf("key %q: EC crv P-256 or P-384 with x and y", k.Kid)
			}
			size := (curve.Params().BitSize + 7) / 8
			if x.BitLen() > 8*size || y.BitLen() > 8*size {
				return nil, fmt.Errorf("key %q: not a point of %s", k.Kid, k.Crv)
			}
			point := append([]byte{4}, append(x.FillBytes(make([]byte, size)), y.FillBytes(make([]byte, size))...)...)
			pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
			if err != nil {
				return nil, fmt.Errorf("key %q: not a point of %s", k.Kid, k.Crv)
			}
			out[k.Kid] = pub
		default:
			return nil, fmt.Errorf("key %q: kty %q (RSA or EC)", k.Kid, k.Kty)
		}
	}
	return out, nil
}

// clientCredentialsForm reads a form-encoded client_credentials request, or answers the error.
func clientCredentialsForm(w http.ResponseWriter, r *http.Request) bool {
	if mediaType(r) != formType || r.ParseForm() != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "form body expected")
		return false
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return false
	}
	return true
}
