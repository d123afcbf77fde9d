package jwtsign

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
)

func TestClient(t *testing.T) {
	for _, tt := range []struct {
		claims, want string
		ok           bool
	}{
		{`{"iss":"app","sub":"app","aud":"x"}`, "app", true},
		{`{"iss":"app","sub":"other"}`, "", false},
		{`{"iss":"app"}`, "", false},
		{`{"iss":"app","sub":"app","ISS":"evil"}`, "", false},
		{`{"iss":"app","sub":"app","\u0073ub":"evil"}`, "", false},
		{`{"iss":1,"sub":1}`, "", false},
		{`not json`, "", false},
	} {
		if got, ok := Client([]byte(tt.claims)); got != tt.want || ok != tt.ok {
			t.Errorf("Client(%s) = %q, %v; want %q, %v", tt.claims, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSignChecksTheKeyKind(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if sig, err := Sign(key, "ES256", []byte("a.b")); err != nil || len(sig) != 64 {
		t.Fatalf("ES256: %d bytes, %v", len(sig), err)
	}
	for _, alg := range []string{"ES384", "RS256", "PS256", "HS256", ""} {
		if _, err := Sign(key, alg, []byte("a.b")); err == nil {
			t.Errorf("a P-256 key signed %q", alg)
		}
	}
}
