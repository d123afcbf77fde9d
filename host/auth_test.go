package host

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// kmsSigner stands for a key in a KMS or an HSM: only Public and Sign, never the private key.
type kmsSigner struct {
	inner crypto.Signer
	calls atomic.Int64
	fail  error                   // Sign returns this error
	bend  func(sig []byte) []byte // changes the signature it returns
}

func (k *kmsSigner) Public() crypto.PublicKey { return k.inner.Public() }

func (k *kmsSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.calls.Add(1)
	if k.fail != nil {
		return nil, k.fail
	}
	sig, err := k.inner.Sign(r, digest, opts)
	if k.bend != nil {
		sig = k.bend(sig)
	}
	return sig, err
}

var (
	testKeysOnce sync.Once
	testRSA      *rsa.PrivateKey
	testEC384    *ecdsa.PrivateKey
	testEC256    *ecdsa.PrivateKey
)

func testKeys() (*rsa.PrivateKey, *ecdsa.PrivateKey, *ecdsa.PrivateKey) {
	testKeysOnce.Do(func() {
		testRSA, _ = rsa.GenerateKey(rand.Reader, 2048)
		testEC384, _ = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		testEC256, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	return testRSA, testEC384, testEC256
}

// newSMART starts a SMART fake whose client registered the RSA key as "rsa-1" and the P-384 key
// as "ec-1".
func newSMART(t *testing.T) *providertest.SMART {
	rk, ek, _ := testKeys()
	s := providertest.NewSMART(providertest.SMARTConfig{ClientID: "backend-app",
		Keys: map[string]crypto.PublicKey{"rsa-1": &rk.PublicKey, "ec-1": &ek.PublicKey}})
	t.Cleanup(s.Close)
	return s
}

func smartRequest(s *providertest.SMART, kid, alg string) abi.TokenRequest {
	return abi.TokenRequest{Provider: "smart", ClientID: "backend-app", KeyID: kid, AssertionAlg: alg,
		FHIRBase: s.FHIRBase(), Scope: "system/Patient.rs system/Observation.rs"}
}

// TestSMARTBackendServices: tokens from the SMART fake through the real plugin with an RS384 and an
// ES384 key behind a crypto.Signer: the token URL discovered once per FHIR base, the assertion
// verified by the fake (signature, iss, aud, exp, an unused jti), the token accepted by its API and
// then served from the cache; a forced refresh signs a new assertion (a reused jti is refused).
func TestSMARTBackendServices(t *testing.T) {
	rk, ek, _ := testKeys()
	rs, es := &kmsSigner{inner: rk}, &kmsSigner{inner: ek}
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		s := newSMART(t)
		ctx := context.Background()
		for _, tt := range []struct {
			kid, alg string
			signer   *kmsSigner
		}{{"rsa-1", "RS384", rs}, {"ec-1", "ES384", es}} {
			before, signs := s.Requests(), tt.signer.calls.Load()
			req := smartRequest(s, tt.kid, tt.alg)
			tok, err := c.Token(ctx, req)
			if err != nil {
				t.Fatalf("%s: %v", tt.alg, err)
			}
			if s.Requests()-before != 1 || tt.signer.calls.Load()-signs != 1 {
				t.Fatalf("%s: %d requests, %d signatures", tt.alg, s.Requests()-before, tt.signer.calls.Load()-signs)
			}
			if status := callAPI(t, s.APIURL(), tok.AccessToken); status != http.StatusOK {
				t.Fatalf("%s: API answered %d", tt.alg, status)
			}
			if again, err := c.Token(ctx, req); err != nil || again.AccessToken != tok.AccessToken || s.Requests()-before != 1 {
				t.Fatalf("%s: not served from the cache: %v", tt.alg, err)
			}
			req.Force = true
			if fresh, err := c.Token(ctx, req); err != nil || fresh.AccessToken == tok.AccessToken {
				t.Fatalf("%s: forced refresh: %v", tt.alg, err)
			}
		}
		if n := s.Discoveries(); n != 1 {
			t.Fatalf("%d discoveries for one FHIR base", n)
		}
		if n := c.Metrics().Snapshot()["signatures"]; n != 4 {
			t.Fatalf("%d signatures counted, want 4", n)
		}
	}, WithLoopback(), WithSigner("rsa-1", rs), WithSigner("ec-1", es))
}

// TestSigningFailures: a missing key id, a key of the wrong kind or curve for the algorithm, a
// signer that errors, and signatures of the wrong length end with kind signing and send nothing;
// the token export, which cannot sign, answers signing_required.
func TestSigningFailures(t *testing.T) {
	rk, ek, e256 := testKeys()
	s := newSMART(t)
	tests := []struct {
		name, kid, alg string
		signer         crypto.Signer
		kind           string
		stepFlow       bool
	}{
		{"unknown key id", "nobody", "RS384", rk, abi.KindSigning, true},
		{"RSA key for ES384", "rsa-1", "ES384", rk, abi.KindSigning, true},
		{"P-256 key for ES384", "ec-1", "ES384", e256, abi.KindSigning, true},
		{"signer error", "rsa-1", "RS384", &kmsSigner{inner: rk, fail: errors.New("kms: throttled")}, abi.KindSigning, true},
		{"RSA signature a byte short", "rsa-1", "RS384", &kmsSigner{inner: rk, bend: func(b []byte) []byte { return b[1:] }}, abi.KindSigning, true},
		{"ECDSA signature not DER", "ec-1", "ES384", &kmsSigner{inner: ek, bend: func(b []byte) []byte { return b[:len(b)-1] }}, abi.KindSigning, true},
		{"token export", "rsa-1", "RS384", rk, abi.KindSigningRequired, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newRuntime(t, WithSigner(tt.kid, tt.signer), withStepFlow(tt.stepFlow))
			if tt.name == "unknown key id" {
				c = newRuntime(t)
			}
			before := s.Requests()
			_, err := c.Token(context.Background(), smartRequest(s, tt.kid, tt.alg))
			if got := kindOf(err); got != tt.kind || s.Requests() != before {
				t.Fatalf("kind %q (%v), %d requests sent", got, err, s.Requests()-before)
			}
			var ae *abi.Error
			if errors.As(err, &ae) && ae.Retryable {
				t.Fatal("a signing failure is retryable")
			}
		})
	}
}

// TestSMARTDiscoveryPolicy: discovery goes through the host's policy, and a server that does not
// take private_key_jwt is refused before any key signs.
func TestSMARTDiscoveryPolicy(t *testing.T) {
	rk, _, _ := testKeys()
	signer := &kmsSigner{inner: rk}
	secretOnly := providertest.NewSMART(providertest.SMARTConfig{ClientID: "backend-app", AuthMethods: []string{"client_secret_basic"}})
	defer secretOnly.Close()
	s := newSMART(t)
	for _, tt := range []struct {
		name string
		c    *Runtime
		base string
		kind string
	}{
		{"loopback without the opt-in", mustNew(t, WithSigner("rsa-1", signer)), s.FHIRBase(), abi.KindPolicy}, // names WithLoopback (below)
		{"plain http elsewhere", newRuntime(t, WithSigner("rsa-1", signer)), "http://fhir.example.org/r4", abi.KindPolicy},
		{"host not allowed", newRuntime(t, WithSigner("rsa-1", signer)), "https://fhir.example.org/r4", abi.KindPolicy},
		{"no private_key_jwt", newRuntime(t, WithSigner("rsa-1", signer)), secretOnly.FHIRBase(), abi.KindPolicy},
		{"no configuration", newRuntime(t, WithSigner("rsa-1", signer)), s.URL() + "/nothing", abi.KindMalformedResponse},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := smartRequest(s, "rsa-1", "RS384")
			req.FHIRBase = tt.base
			_, err := tt.c.Token(context.Background(), req)
			if kindOf(err) != tt.kind || signer.calls.Load() != 0 || s.Requests() != 0 {
				t.Fatalf("kind %q (%v), %d signatures, %d requests", kindOf(err), err, signer.calls.Load(), s.Requests())
			}
			if tt.base == s.FHIRBase() && !strings.Contains(err.Error(), "refused by the host's policy: loopback token hosts are not allowed; host.WithLoopback()") {
				t.Fatalf("the refusal does not name the opt-in: %v", err)
			}
		})
	}
}

func mustNew(t *testing.T, opts ...Option) *Runtime {
	t.Helper()
	c, err := New(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestMutualTLS: tls_client_auth gets a token from a loopback TLS fake that requires a client
// certificate; another certificate's subject is invalid_client, a certificate id the host does not
// hold is a policy refusal, and no certificate at all fails the handshake.
func TestMutualTLS(t *testing.T) {
	m := providertest.NewMTLS("bank-app")
	defer m.Close()
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.RootCAs(), MinVersion: tls.VersionTLS12}}
	c := newRuntime(t, WithHTTPTransport(transport),
		WithClientCertificate("cert-1", m.ClientCertificate("bank-app")),
		WithClientCertificate("cert-other", m.ClientCertificate("other-app")))
	req := func(certID string) abi.TokenRequest {
		return abi.TokenRequest{Provider: "custom", ClientID: "bank-app", KeyID: certID, TokenURL: m.TokenURL(),
			Profile: &abi.Profile{ClientAuth: "tls_client_auth"}}
	}
	ctx := context.Background()
	if _, err := c.Token(ctx, req("cert-1")); err != nil || m.Issued() != 1 {
		t.Fatalf("%v, %d issued", err, m.Issued())
	}
	if _, err := c.Token(ctx, req("cert-1")); err != nil || m.Requests() != 1 {
		t.Fatalf("not cached: %v, %d requests", err, m.Requests())
	}
	if _, err := c.Token(ctx, req("cert-other")); kindOf(err) != abi.KindInvalidClient {
		t.Fatalf("another certificate: %v", err)
	}
	if _, err := c.Token(ctx, req("cert-missing")); kindOf(err) != abi.KindPolicy {
		t.Fatalf("an unknown certificate id: %v", err)
	}
	plain := newRuntime(t, WithHTTPTransport(transport.Clone()))
	noCert := req("cert-1")
	noCert.Profile = &abi.Profile{ClientAuth: "body"}
	noCert.ClientSecret = "x"
	if _, err := plain.Token(ctx, noCert); kindOf(err) != abi.KindTransport {
		t.Fatalf("no certificate: %v", err)
	}
	if _, err := New(ctx, WithHTTPTransport(roundTripFunc(nil)), WithClientCertificate("c", tls.Certificate{})); err == nil {
		t.Fatal("client certificates over a transport that cannot carry them")
	}
}

// TestPrivateKeysNeverLeak: the PEM of the key, its JWK's private members and the client secret of
// client_secret_jwt appear in no log, error, cache entry or request sent, on success and on every
// failure path.
func TestPrivateKeysNeverLeak(t *testing.T) {
	rk, ek, _ := testKeys()
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	signer, _, err := ParseSigner(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	jwk, _ := json.Marshal(map[string]string{"kty": "EC", "kid": "ec-1", "crv": "P-384",
		"x": b64(ek.X.FillBytes(make([]byte, 48))), "y": b64(ek.Y.FillBytes(make([]byte, 48))), "d": b64(ek.D.FillBytes(make([]byte, 48)))})
	ecSigner, kid, err := ParseSigner(jwk)
	if err != nil || kid != "ec-1" {
		t.Fatalf("JWK: %v, kid %q", err, kid)
	}
	const secret = "CANARY-cs-jwt +/=&\"\\<>% secret"
	canaries := map[string]string{
		"PEM":          string(pemKey),
		"PKCS8 base64": base64.StdEncoding.EncodeToString(der)[64:128],
		"RSA d":        b64(rk.D.Bytes()),
		"RSA p":        b64(rk.Primes[0].Bytes()),
		"EC d":         b64(ek.D.FillBytes(make([]byte, 48))),
		"EC d hex":     ek.D.Text(16),
		"secret":       secret,
	}
	var sent bytes.Buffer
	var sentMu sync.Mutex
	s := newSMART(t)
	s.Intercept(func(_ http.ResponseWriter, r *http.Request) bool {
		b, _ := io.ReadAll(r.Body)
		sentMu.Lock()
		sent.Write(b)
		sentMu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		return false
	})
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&logs, &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	cache := &recordingCache{Cache: NewMemoryCache(0)}
	c := newRuntime(t, WithCache(cache), WithLogger(logger), WithSigner("rsa-1", signer), WithSigner("ec-1", ecSigner),
		WithSigner("broken", &kmsSigner{inner: rk, fail: errors.New("hsm offline")}))
	ctx := context.Background()
	var errs bytes.Buffer
	for _, req := range []abi.TokenRequest{
		smartRequest(s, "rsa-1", "RS384"), smartRequest(s, "ec-1", "ES384"),
		smartRequest(s, "broken", "RS384"), smartRequest(s, "ec-1", "RS384"), smartRequest(s, "missing", "ES384"),
		{Provider: "custom", ClientID: "backend-app", ClientSecret: secret, TokenURL: s.TokenURL(), Profile: &abi.Profile{ClientAuth: "client_secret_jwt"}},
	} {
		if _, err := c.Token(ctx, req); err != nil {
			errs.WriteString(err.Error())
			b, _ := json.Marshal(err)
			errs.Write(b)
		}
		_ = c.Invalidate(ctx, req)
	}
	if !strings.Contains(errs.String(), "hsm offline") || !strings.Contains(errs.String(), "invalid_client") {
		t.Fatalf("the failure paths did not run: %s", errs.String())
	}
	for name, canary := range canaries {
		for where, text := range map[string]string{"logs": logs.String(), "errors": errs.String(), "cache": cache.all.String(), "requests sent": sent.String()} {
			if strings.Contains(text, canary) {
				t.Errorf("%s appears in %s", name, where)
			}
		}
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestParseSigner: PEM in its three forms and JWKs read into keys that sign; anything else is an
// error that does not quote the input.
func TestParseSigner(t *testing.T) {
	rk, ek, _ := testKeys()
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ek)
	sec1, _ := x509.MarshalECPrivateKey(ek)
	rsaJWK, _ := json.Marshal(map[string]string{"kty": "RSA", "kid": "r", "n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes()),
		"d": b64(rk.D.Bytes()), "p": b64(rk.Primes[0].Bytes()), "q": b64(rk.Primes[1].Bytes())})
	wrongX, _ := json.Marshal(map[string]string{"kty": "EC", "crv": "P-384", "x": b64(make([]byte, 48)), "d": b64(ek.D.FillBytes(make([]byte, 48)))})
	tests := []struct {
		name string
		in   []byte
		alg  string
		ok   bool
	}{
		{"PKCS8 EC", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), "ES384", true},
		{"SEC1 EC", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), "ES384", true},
		{"PKCS1 RSA", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), "PS256", true},
		{"RSA JWK", rsaJWK, "RS384", true},
		{"EC JWK with another key's x", wrongX, "", false},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("SECRETBYTES")}), "", false},
		{"garbage PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("SECRETBYTES")}), "", false},
		{"neither", []byte("SECRETBYTES"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, err := ParseSigner(tt.in)
			if !tt.ok {
				if err == nil || strings.Contains(err.Error(), "SECRETBYTES") || strings.Contains(err.Error(), "U0VDUkVU") {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sig, err := jwsSign(s, tt.alg, []byte("a.b"))
			if err != nil || len(sig) == 0 {
				t.Fatalf("sign: %v", err)
			}
		})
	}
}

// TestRevoke: a SMART token revoked through the discovered revocation endpoint (a host-signed
// assertion, like a token request) stops working at the API and leaves no cached copy: the next
// Token fetches a new one. A revocation the provider refuses is a typed error, and the cached
// token is dropped anyway.
func TestRevoke(t *testing.T) {
	_, ek, _ := testKeys()
	signer := &kmsSigner{inner: ek}
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		s := newSMART(t)
		ctx := context.Background()
		req := smartRequest(s, "ec-1", "ES384")
		tok, err := c.Token(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		rev := req
		rev.AccessToken = tok.AccessToken
		if err := c.Revoke(ctx, rev); err != nil {
			t.Fatal(err)
		}
		if s.Revocations() != 1 || callAPI(t, s.APIURL(), tok.AccessToken) != http.StatusUnauthorized {
			t.Fatalf("%d revocations; the revoked token still works", s.Revocations())
		}
		next, err := c.Token(ctx, req)
		if err != nil || next.AccessToken == tok.AccessToken || s.Requests() != 2 {
			t.Fatalf("after revoke: %v, %d token requests", err, s.Requests())
		}
		rev.AccessToken, rev.KeyID = next.AccessToken, "nobody"
		if err := c.Revoke(ctx, rev); kindOf(err) != abi.KindSigning {
			t.Fatalf("revoke with an unknown key: %v", err)
		}
		rev.KeyID, rev.RevocationURL = "ec-1", s.URL()+"/nowhere"
		if err := c.Revoke(ctx, rev); kindOf(err) == "" {
			t.Fatal("a revocation endpoint that answers 404 was a success")
		}
		if again, err := c.Token(ctx, req); err != nil || again.AccessToken == next.AccessToken {
			t.Fatalf("a failed revocation kept the cached token: %v", err)
		}
	}, WithLoopback(), WithSigner("ec-1", signer))
}

// TestSignerBoundToItsClients: a key registered for some clients signs only their assertions. A key
// id is public (it is in the JWKS), so on a Runtime serving several tenants a request naming another
// client's kid must not get that client's assertion signed: kind signing, nothing sent. A key
// registered without clients signs for any (the single-tenant case).
func TestSignerBoundToItsClients(t *testing.T) {
	rk, _, _ := testKeys()
	bound := &kmsSigner{inner: rk}
	s := newSMART(t)
	c, err := New(context.Background(), WithLoopback(), WithSigner("rsa-1", bound, "backend-app", "other-app"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Token(context.Background(), smartRequest(s, "rsa-1", "RS384")); err != nil {
		t.Fatalf("the bound client: %v", err)
	}
	stranger := smartRequest(s, "rsa-1", "RS384")
	stranger.ClientID = "stranger-app"
	before, signs := s.Requests(), bound.calls.Load()
	_, err = c.Token(context.Background(), stranger)
	var e *abi.Error
	if !errors.As(err, &e) || e.Kind != abi.KindSigning || s.Requests() != before || bound.calls.Load() != signs {
		t.Fatalf("another client with the bound kid: %v; %d requests, %d signatures", err, s.Requests()-before, bound.calls.Load()-signs)
	}
}

// TestDiscoveryReadsTheFirstOfARepeatedMember: a configuration document naming token_endpoint twice
// (or again in another case) is read as every reader here reads JSON: the first, exactly named. The
// later spelling, pointing at a host outside the allow-list, is never used.
func TestDiscoveryReadsTheFirstOfARepeatedMember(t *testing.T) {
	rk, _, _ := testKeys()
	s := newSMART(t)
	doc := `{"token_endpoint":"` + s.TokenURL() + `","token_endpoint_auth_methods_supported":["private_key_jwt"],` +
		`"token_endpoint":"https://evil.example/token","Token_Endpoint":"https://evil.example/token"}`
	conf := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(doc))
	}))
	defer conf.Close()
	c, err := New(context.Background(), WithLoopback(), WithSigner("rsa-1", rk))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	req := smartRequest(s, "rsa-1", "RS384")
	req.FHIRBase = conf.URL + "/fhir"
	if _, err := c.Token(context.Background(), req); err != nil || s.Requests() != 1 {
		t.Fatalf("%v, %d requests at the first token_endpoint", err, s.Requests())
	}
}

// dropFailingCache is a memory cache whose deletes fail, as a shared cache that cannot be reached.
type dropFailingCache struct{ *MemoryCache }

func (dropFailingCache) Delete(context.Context, string) error { return errors.New("cache unreachable") }

// TestRevokeSaysWhatItCouldNotDo: a revocation the provider accepted but whose token the cache
// could not drop is an error that says both, not nil; one the provider refused says that too.
func TestRevokeSaysWhatItCouldNotDo(t *testing.T) {
	_, ek, _ := testKeys()
	s := newSMART(t)
	ctx := context.Background()
	c := newRuntime(t, WithLoopback(), WithSigner("ec-1", &kmsSigner{inner: ek}), WithCache(dropFailingCache{NewMemoryCache(0)}))
	req := smartRequest(s, "ec-1", "ES384")
	tok, err := c.Token(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	rev := req
	rev.AccessToken = tok.AccessToken
	var nd *NotDroppedError
	if err := c.Revoke(ctx, rev); !errors.As(err, &nd) || !nd.Revoked || nd.Err != nil || s.Revocations() != 1 {
		t.Fatalf("revoked, not dropped: %v (%d revocations)", err, s.Revocations())
	}
	rev.RevocationURL = s.URL() + "/nowhere"
	if err := c.Revoke(ctx, rev); !errors.As(err, &nd) || nd.Revoked || kindOf(err) == "" {
		t.Fatalf("refused, not dropped: %v", err)
	}
	if err := c.Invalidate(ctx, req); !errors.As(err, &nd) {
		t.Fatalf("invalidate, not dropped: %v", err)
	}
}

// TestRevokeCandescent: Candescent's revocation is DELETE with a form token= (its reference and
// SDK): through the Go host's flow the fake revokes the token, which then fails at its API.
func TestRevokeCandescent(t *testing.T) {
	cfg := providertest.DefaultConfig("candescent")
	fake := providertest.NewCandescent(cfg)
	defer fake.Close()
	c := newRuntime(t, WithLoopback())
	ctx := context.Background()
	req := abi.TokenRequest{Provider: "candescent", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		InstitutionID: cfg.InstitutionID, TokenURL: fake.TokenURL()}
	tok, err := c.Token(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if callAPI(t, fake.URL()+providertest.APIPath, tok.AccessToken) != http.StatusOK {
		t.Fatal("the token does not work before its revocation")
	}
	rev := req
	rev.AccessToken, rev.RevocationURL = tok.AccessToken, fake.URL()+providertest.CandescentRevokePath
	if err := c.Revoke(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if fake.Revocations() != 1 || callAPI(t, fake.URL()+providertest.APIPath, tok.AccessToken) != http.StatusUnauthorized {
		t.Fatalf("%d revocations; the revoked token still works", fake.Revocations())
	}
	// The method is the profile's: a POST to the same endpoint is refused by the fake (405).
	resp, err := http.Post(rev.RevocationURL, "application/x-www-form-urlencoded", strings.NewReader("token=x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to the revocation endpoint: %d, want 405", resp.StatusCode)
	}
}

// TestRevokeRotatedGrant: revoking a refresh_token grant whose refresh token rotated revokes the
// newest one (the request's own was used long ago), and no later fetch sends a used one.
func TestRevokeRotatedGrant(t *testing.T) {
	cfg := providertest.DefaultConfig("candescent")
	cfg.Lifetime = time.Second
	fake := providertest.NewCandescent(cfg)
	defer fake.Close()
	c := newRuntime(t, WithLoopback())
	ctx := context.Background()
	pw, err := c.Token(ctx, abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantPassword, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		InstitutionID: cfg.InstitutionID, Username: cfg.Username, Password: cfg.Password, TokenURL: fake.TokenURL()})
	if err != nil {
		t.Fatal(err)
	}
	req := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		RefreshToken: pw.RefreshToken, TokenURL: fake.TokenURL(), RevocationURL: fake.URL() + providertest.CandescentRevokePath}
	var newest string
	for range 2 { // two rotations
		req.Force = true
		tok, err := c.Token(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		newest = tok.RefreshToken
	}
	req.Force = false
	if err := c.Revoke(ctx, req); err != nil {
		t.Fatal(err)
	}
	if fake.Revocations() != 1 {
		t.Fatalf("%d revocations", fake.Revocations())
	}
	// The newest refresh token no longer works at the provider: it was the one revoked.
	if _, err := c.Token(ctx, abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: cfg.ClientID,
		ClientSecret: cfg.ClientSecret, RefreshToken: newest, TokenURL: fake.TokenURL()}); kindOf(err) != abi.KindInvalidGrant {
		t.Fatalf("the newest refresh token after the revocation: %v", err)
	}
	replays := fake.Replays()
	req.Force = true
	if _, err := c.Token(ctx, req); kindOf(err) != abi.KindInvalidGrant || fake.Replays() != replays {
		t.Fatalf("a fetch after the revocation: %v, replays %d -> %d (nothing must be sent)", err, replays, fake.Replays())
	}
}
