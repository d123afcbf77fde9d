package providertest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// assertion builds a client assertion as a client would, signed with key (RSA: RS384, ECDSA: ES384
// unless alg says otherwise).
func assertion(t *testing.T, key crypto.Signer, alg, kid string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	in := enc(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"}) + "." + enc(claims)
	sum := sha512.Sum384([]byte(in))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, _ = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA384, sum[:])
	case *ecdsa.PrivateKey:
		r, s, _ := ecdsa.Sign(rand.Reader, k, sum[:])
		sig = append(r.FillBytes(make([]byte, 48)), s.FillBytes(make([]byte, 48))...)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestSMARTFake holds the SMART fake to what it must refuse, at the boundaries: exp at 300 s is
// accepted and at 301 s refused, a jti is refused the second time, and the wrong kid, alg, aud, iss
// or signature is invalid_client.
func TestSMARTFake(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	now := time.Unix(1767225600, 0)
	s := NewSMART(SMARTConfig{ClientID: "backend-app", Now: func() time.Time { return now },
		Keys: map[string]crypto.PublicKey{"rsa-1": &rk.PublicKey, "ec-1": &ek.PublicKey}})
	defer s.Close()
	claims := func(jti string, expIn int64, mod ...string) map[string]any {
		c := map[string]any{"iss": "backend-app", "sub": "backend-app", "aud": s.TokenURL(), "jti": jti, "iat": now.Unix(), "exp": now.Unix() + expIn}
		for i := 0; i+1 < len(mod); i += 2 {
			c[mod[i]] = mod[i+1]
		}
		return c
	}
	tests := []struct {
		name   string
		jwt    string
		status int
		why    string
	}{
		{"RS384, exp at 300 s", assertion(t, rk, "RS384", "rsa-1", claims("j1", 300)), 200, ""},
		{"ES384, exp at 1 s", assertion(t, ek, "ES384", "ec-1", claims("j2", 1)), 200, ""},
		{"exp at 301 s", assertion(t, rk, "RS384", "rsa-1", claims("j3", 301)), 401, "exp more than 5 minutes out"},
		{"exp now", assertion(t, rk, "RS384", "rsa-1", claims("j4", 0)), 401, "assertion expired"},
		{"jti reused", assertion(t, ek, "ES384", "ec-1", claims("j1", 200)), 401, "jti reused"},
		{"no jti", assertion(t, ek, "ES384", "ec-1", claims("", 200)), 401, "jti required"},
		{"unknown kid", assertion(t, ek, "ES384", "ec-9", claims("j5", 200)), 401, "unknown kid"},
		{"another key under the kid", assertion(t, other, "ES384", "ec-1", claims("j6", 200)), 401, "signature does not verify"},
		{"RS256", assertion(t, rk, "RS256", "rsa-1", claims("j7", 200)), 401, "alg must be RS384 or ES384"},
		{"ES384 header on the RSA key", assertion(t, rk, "ES384", "rsa-1", claims("j8", 200)), 401, "signature does not verify"},
		{"wrong aud", assertion(t, rk, "RS384", "rsa-1", claims("j9", 200, "aud", s.URL()+"/other")), 401, "aud must be the token URL"},
		{"wrong iss", assertion(t, rk, "RS384", "rsa-1", claims("j10", 200, "iss", "someone")), 401, "iss and sub must be the client id"},
		{"wrong sub", assertion(t, rk, "RS384", "rsa-1", claims("j11", 200, "sub", "someone")), 401, "iss and sub must be the client id"},
		{"not a JWS", "a.b", 401, "client_assertion is not a compact JWS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := url.Values{"grant_type": {"client_credentials"}, "scope": {"system/Patient.rs"},
				"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {tt.jwt}}
			r := post(t, s.TokenURL(), formType, body.Encode(), nil)
			if r.status != tt.status {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if tt.why != "" && r.json(t)["error_description"] != tt.why {
				t.Fatalf("refused for %v, want %q", r.json(t)["error_description"], tt.why)
			}
		})
	}
	r := do(t, http.MethodGet, s.FHIRBase()+"/.well-known/smart-configuration", "", "", nil)
	if conf := r.json(t); conf["token_endpoint"] != s.TokenURL() || s.Discoveries() != 1 {
		t.Fatalf("configuration %v", conf)
	}
}

// TestSMARTRegisteredJWKS: keys registered as a JWK Set (POST /_jwks) verify assertions as
// SMARTConfig.Keys do; a document the fake cannot use whole is refused and registers nothing.
func TestSMARTRegisteredJWKS(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	s := NewSMART(SMARTConfig{ClientID: "backend-app"})
	defer s.Close()
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	ecPub, _ := ek.PublicKey.Bytes()
	set := `{"keys":[{"kty":"RSA","kid":"rsa-2","use":"sig","alg":"RS384","n":"` + b64(rk.N.Bytes()) + `","e":"AQAB"},` +
		`{"kty":"EC","kid":"ec-2","use":"sig","alg":"ES384","crv":"P-384","x":"` + b64(ecPub[1:49]) + `","y":"` + b64(ecPub[49:]) + `"}]}`
	token := func(jwt string) reply {
		body := url.Values{"grant_type": {"client_credentials"}, "scope": {"system/Patient.rs"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {jwt}}
		return post(t, s.TokenURL(), formType, body.Encode(), nil)
	}
	now := time.Now().Unix()
	claims := func(jti string) map[string]any {
		return map[string]any{"iss": "backend-app", "sub": "backend-app", "aud": s.TokenURL(), "jti": jti, "iat": now, "exp": now + 240}
	}
	if r := token(assertion(t, rk, "RS384", "rsa-2", claims("r0"))); r.status != 401 {
		t.Fatalf("before registration: %d %s", r.status, r.body)
	}
	for _, bad := range []string{
		`{"keys":[{"kty":"RSA","n":"` + b64(rk.N.Bytes()) + `","e":"AQAB"}]}`,                       // no kid
		`{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}`,                                  // too short
		`{"keys":[{"kty":"EC","kid":"a","crv":"P-384","x":"` + b64(ecPub[1:49]) + `","y":"AQAB"}]}`, // off the curve
		`{"keys":[{"kty":"EC","kid":"a","crv":"P-521","x":"AQAB","y":"AQAB"}]}`,
		`{"keys":[{"kty":"oct","kid":"a","k":"AQAB"}]}`,
		`{"keys":[{"kty":"RSA","kid":"a","use":"enc","n":"` + b64(rk.N.Bytes()) + `","e":"AQAB"}]}`,
		`{"keys":[{"kty":"RSA","kid":"a","d":"AQAB","n":"` + b64(rk.N.Bytes()) + `","e":"AQAB"}]}`,
		`{"keys":[{"kty":"RSA","kid":"a","n":"` + b64(rk.N.Bytes()) + `","e":"AQAB"},{"kty":"RSA","kid":"a","n":"` + b64(rk.N.Bytes()) + `","e":"AQAB"}]}`,
		`{"keys":{}}`, `[]`,
	} {
		if r := post(t, s.URL()+SMARTJWKSPath, "application/jwk-set+json", bad, nil); r.status != 400 {
			t.Fatalf("%s: %d %s", bad, r.status, r.body)
		}
	}
	r := post(t, s.URL()+SMARTJWKSPath, "application/jwk-set+json", set, nil)
	if r.status != 200 || strings.TrimSpace(r.body) != `{"registered":["ec-2","rsa-2"]}` {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	for _, jwt := range []string{assertion(t, rk, "RS384", "rsa-2", claims("r1")), assertion(t, ek, "ES384", "ec-2", claims("e1"))} {
		if r := token(jwt); r.status != 200 {
			t.Fatalf("after registration: %d %s", r.status, r.body)
		}
	}
	if r := do(t, http.MethodGet, s.URL()+SMARTJWKSPath, "", "", nil); r.status != 405 {
		t.Fatalf("GET %s: %d", SMARTJWKSPath, r.status)
	}
}
