package host

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// publishedKey is a JWK as a verifier reads it from the document: only public members.
type publishedKey struct {
	Kty, Kid, Use, Alg, N, E, Crv, X, Y, D string
}

// verifyWithJWKS checks a compact JWS against a JWK Set document alone: the key its kid names,
// rebuilt from the document's members, and the signature as RFC 7518 defines it for the header's
// alg (ECDSA r||s). It is what a server does with a client's jwks_uri.
func verifyWithJWKS(t *testing.T, doc []byte, jws string) error {
	t.Helper()
	var set struct{ Keys []publishedKey }
	if err := json.Unmarshal(doc, &set); err != nil {
		return err
	}
	parts := strings.Split(jws, ".")
	var h struct{ Alg, Kid string }
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || json.Unmarshal(hb, &h) != nil {
		return io.ErrUnexpectedEOF
	}
	num := func(s string) *big.Int {
		b, _ := base64.RawURLEncoding.DecodeString(s)
		return new(big.Int).SetBytes(b)
	}
	input := []byte(parts[0] + "." + parts[1])
	for _, k := range set.Keys {
		if k.Kid != h.Kid {
			continue
		}
		if k.Alg != "" && k.Alg != h.Alg {
			return io.ErrShortBuffer
		}
		switch h.Alg {
		case "RS256", "PS256":
			sum := sha256.Sum256(input)
			pub := &rsa.PublicKey{N: num(k.N), E: int(num(k.E).Int64())}
			if h.Alg == "PS256" {
				return rsa.VerifyPSS(pub, crypto.SHA256, sum[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
			}
			return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
		case "RS384":
			sum := sha512.Sum384(input)
			return rsa.VerifyPKCS1v15(&rsa.PublicKey{N: num(k.N), E: int(num(k.E).Int64())}, crypto.SHA384, sum[:], sig)
		case "ES256", "ES384":
			curve, n, digest := elliptic.P256(), 32, sha256.Sum256(input)
			d := digest[:]
			if h.Alg == "ES384" {
				sum := sha512.Sum384(input)
				curve, n, d = elliptic.P384(), 48, sum[:]
			}
			if len(sig) != 2*n || k.Kty != "EC" {
				return io.ErrShortWrite
			}
			point := append([]byte{4}, append(num(k.X).FillBytes(make([]byte, n)), num(k.Y).FillBytes(make([]byte, n))...)...)
			pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
			if err != nil {
				return err
			}
			if !ecdsa.Verify(pub, d, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])) {
				return io.ErrNoProgress
			}
			return nil
		}
	}
	return io.EOF
}

// TestJWKSVerifiesAssertions: an assertion signed through the sign action, for RSA (RS256, RS384,
// PS256) and ECDSA (ES256, ES384), verifies with the served JWK Set alone; the document holds public
// members only, use "sig", an EC key's alg, and is served as application/jwk-set+json, cacheable.
func TestJWKSVerifiesAssertions(t *testing.T) {
	rk, e384, e256 := testKeys()
	c, err := New(context.Background(), WithSigner("rsa-1", &kmsSigner{inner: rk}), WithSigner("ec-384", e384), WithSigner("ec-256", e256, "backend-app"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	h, err := c.JWKSHandler()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); resp.StatusCode != 200 || ct != "application/jwk-set+json" || cc != "public, max-age=300" {
		t.Fatalf("%d %q %q", resp.StatusCode, ct, cc)
	}
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(doc, &set); err != nil || len(set.Keys) != 3 {
		t.Fatalf("%s: %v", doc, err)
	}
	for i, want := range []string{
		`{"kty":"EC","kid":"ec-256","use":"sig","alg":"ES256","crv":"P-256"`,
		`{"kty":"EC","kid":"ec-384","use":"sig","alg":"ES384","crv":"P-384"`,
		`{"kty":"RSA","kid":"rsa-1","use":"sig","n":`,
	} {
		b, _ := json.Marshal(set.Keys[i])
		var k publishedKey
		json.Unmarshal(b, &k)
		if !strings.Contains(string(doc), want) || k.D != "" || len(set.Keys[i]) != map[bool]int{true: 5, false: 7}[k.Kty == "RSA"] {
			t.Fatalf("key %d: %s", i, b)
		}
	}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tt := range []struct{ kid, alg string }{{"rsa-1", "RS256"}, {"rsa-1", "RS384"}, {"rsa-1", "PS256"}, {"ec-256", "ES256"}, {"ec-384", "ES384"}} {
		input := enc(`{"alg":"`+tt.alg+`","typ":"JWT","kid":"`+tt.kid+`"}`) + "." + enc(`{"iss":"backend-app","sub":"backend-app","aud":"https://ehr.example/token","jti":"j","iat":1,"exp":241}`)
		in, _ := json.Marshal(map[string]string{"alg": tt.alg, "kid": tt.kid, "signing_input": input})
		var out struct{ Signature, Error string }
		if err := json.Unmarshal(c.sign(context.Background(), in), &out); err != nil || out.Error != "" {
			t.Fatalf("%s: %v %s", tt.alg, err, out.Error)
		}
		jws := input + "." + out.Signature
		if err := verifyWithJWKS(t, doc, jws); err != nil {
			t.Fatalf("%s with %s: does not verify with the JWKS: %v", tt.alg, tt.kid, err)
		}
		tampered := input[:len(input)-2] + "x" + input[len(input)-1:] + "." + out.Signature
		if verifyWithJWKS(t, doc, tampered) == nil {
			t.Fatalf("%s: a changed input verifies", tt.alg)
		}
	}
	if r, _ := http.Post(srv.URL, "text/plain", nil); r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", r.StatusCode)
	}
}

// TestJWKSRefusesKeysThatCannotSign: a signer whose key sign would refuse (RSA under 2048 bits, a
// P-521 or Ed25519 key) makes JWKS and JWKSHandler an error rather than a document without it.
func TestJWKSRefusesKeysThatCannotSign(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for name, s := range map[string]crypto.Signer{"rsa-1024": small, "p-521": p521, "ed25519": ed} {
		c, err := New(context.Background(), WithSigner(name, s))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.JWKSHandler(); err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s: %v", name, err)
		}
		c.Close(context.Background())
	}
	c, _ := New(context.Background())
	defer c.Close(context.Background())
	if doc, err := c.JWKS(); err != nil || string(doc) != `{"keys":[]}` {
		t.Fatalf("no signers: %s %v", doc, err)
	}
}

// TestJWKSRegisteredAtTheServer: the SMART fake, knowing no key of the client, is given the
// Runtime's published document (as a developer portal takes it) and then accepts its RS384 and
// ES384 assertions: the token URL discovered, the assertion verified with the document's keys.
func TestJWKSRegisteredAtTheServer(t *testing.T) {
	rk, ek, _ := testKeys()
	s := providertest.NewSMART(providertest.SMARTConfig{ClientID: "backend-app"})
	defer s.Close()
	c, err := New(context.Background(), WithLoopback(), WithSigner("rsa-9", rk, "backend-app"), WithSigner("ec-9", ek, "backend-app"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	req := smartRequest(s, "rsa-9", "RS384")
	if _, err := c.Token(context.Background(), req); err == nil || !strings.Contains(err.Error(), "unknown kid") {
		t.Fatalf("before registration: %v", err)
	}
	doc, err := c.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterJWKS(doc); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ kid, alg string }{{"rsa-9", "RS384"}, {"ec-9", "ES384"}} {
		req := smartRequest(s, r.kid, r.alg)
		req.Force = true
		if tok, err := c.Token(context.Background(), req); err != nil || callAPI(t, s.APIURL(), tok.AccessToken) != 200 {
			t.Fatalf("%s: %v", r.alg, err)
		}
	}
}
