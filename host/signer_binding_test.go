package host

import (
	"encoding/base64"
	"testing"
)

// TestSignerBindingReadsTheAssertion: a bound key signs a JWS signing input only when the payload
// names, without ambiguity, one of its clients as iss. The plugin writes one iss (= sub); an input
// any reader could take for another client is refused, whichever rule a server has for a repeated
// member (encoding/json and JSON.parse keep the last, gjson the first) and however the key is spelled.
func TestSignerBindingReadsTheAssertion(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	header := enc([]byte(`{"alg":"RS256","kid":"k1","typ":"JWT"}`))
	input := func(payload string) []byte { return []byte(header + "." + enc([]byte(payload))) }
	bound := func(ids ...string) signingKey { return signingKey{clients: clientSet(ids)} }
	tests := []struct {
		name  string
		key   signingKey
		input []byte
		want  bool
	}{
		{"its client", bound("a"), input(`{"iss":"a","sub":"a","aud":"u"}`), true},
		{"another client", bound("a"), input(`{"iss":"b","sub":"b"}`), false},
		{"unbound key: any client", signingKey{}, input(`{"iss":"b","sub":"b"}`), true},
		{"bound to an empty list: no client", bound(), input(`{"iss":"a","sub":"a"}`), false},
		{"iss repeated, its client first", bound("a"), input(`{"iss":"a","sub":"a","iss":"b"}`), false},
		{"iss repeated, its client last", bound("a"), input(`{"iss":"b","sub":"a","iss":"a"}`), false},
		{"iss repeated with an escaped key", bound("a"), input(`{"iss":"a","sub":"a","\u0069ss":"b"}`), false},
		{"iss repeated in another case", bound("a"), input(`{"iss":"a","sub":"a","ISS":"b"}`), false},
		{"escaped key alone", bound("a"), input(`{"\u0069ss":"a","sub":"a"}`), true},
		{"sub names another client", bound("a"), input(`{"iss":"a","sub":"b"}`), false},
		{"sub repeated", bound("a"), input(`{"iss":"a","sub":"a","sub":"b"}`), false},
		{"iss in the header only", bound("a"), []byte(enc([]byte(`{"alg":"RS256","iss":"a"}`)) + "." + enc([]byte(`{"sub":"a"}`))), false},
		{"iss not a string", bound("a"), input(`{"iss":["a"],"sub":"a"}`), false},
		{"payload padded base64", bound("a"), []byte(header + "." + base64.URLEncoding.EncodeToString([]byte(`{"iss":"a","sub":"a" }`))), false},
		{"payload standard base64", bound("a"), []byte(header + "." + base64.StdEncoding.EncodeToString([]byte(`{"iss":"a","sub":">?>"}`))), false},
		{"payload not JSON", bound("a"), input(`{"iss":"a"`), false},
		{"payload an array", bound("a"), input(`[{"iss":"a","sub":"a"}]`), false},
		{"no payload", bound("a"), []byte(header), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.signsFor(tt.input); got != tt.want {
				t.Fatalf("signsFor = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestWithSignerEmptyListBindsToNone: WithSigner(kid, s, ids...) with ids loaded empty (not nil)
// signs for no client; it signed for every client, as if unbound.
func TestWithSignerEmptyListBindsToNone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ids   []string
		signs bool
	}{{"no list", nil, true}, {"empty list", []string{}, false}, {"its client", []string{"a"}, true}, {"another client", []string{"b"}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg config
			WithSigner("k1", nil, tc.ids...)(&cfg)
			in := base64.RawURLEncoding.EncodeToString([]byte(`{}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"a","sub":"a"}`))
			if got := cfg.signers["k1"].signsFor([]byte(in)); got != tc.signs {
				t.Fatalf("signsFor = %v, want %v", got, tc.signs)
			}
		})
	}
}
