package core

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// Client authentication under attack: the client assertion's identity and redaction, revocation's
// host, and hosts that cannot sign. Each test failed on a version of the code; the comments say what
// it checks.

// TestAssertionIdentityIsUnambiguous: the key id and the client id are not in the form body of a
// private_key_jwt request, so the cache identity alone tells two credential sets apart. Joined with
// ':' and nothing else, key id "k:1" for client "c" and key id "k" for client "1:c" were one
// identity: a tenant who chose the second read the first one's token from a shared cache without
// signing anything (client ids are often URIs, holding ':').
func TestAssertionIdentityIsUnambiguous(t *testing.T) {
	key := func(kid, client string) string {
		req := strings.Replace(smartReq(kid, AlgRS384, ""), "backend-app", client, 1)
		_, _, k, err := (*Memo)(nil).Prepare([]byte(req))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	for _, tt := range []struct{ kid1, client1, kid2, client2 string }{
		{"k:1", "c", "k", "1:c"},
		{"victim-key", "https://app.example/client", "victim-key:https", "//app.example/client"},
	} {
		if key(tt.kid1, tt.client1) == key(tt.kid2, tt.client2) {
			t.Errorf("kid %q client %q and kid %q client %q share one cache identity", tt.kid1, tt.client1, tt.kid2, tt.client2)
		}
	}
}

// TestRevokeStaysOnTheTokenHost: a revocation request carries the token and the client's
// authentication, for smart a client assertion whose aud is the token URL. Sent to another host (a
// revocation_endpoint a hostile or broken SMART configuration names, a mistyped revocation_url),
// that host could replay the unused assertion at the real token endpoint within its four minutes
// and get a token for the client. A revocation URL on another host than the token URL's is refused
// before anything is signed or sent, for every profile.
func TestRevokeStaysOnTheTokenHost(t *testing.T) {
	for _, tt := range []struct{ name, req string }{
		{"smart, assertion", strings.Replace(smartReq("key-1", AlgES384, `,"access_token":"tok-1"`), `"token_url"`,
			`"revocation_url":"https://collector.example.net/revoke","token_url"`, 1)},
		{"custom, Basic", `{"provider":"custom","client_id":"a","client_secret":"s3cret","token_url":"https://auth.example.org/token","access_token":"tok-1","revocation_url":"https://auth.example.org.evil.example/revoke","profile":{}}`},
		{"custom profile's URL", `{"provider":"custom","client_id":"a","client_secret":"s3cret","token_url":"https://auth.example.org/token","access_token":"tok-1","profile":{"revocation_url":"https://other.example/revoke"}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t, okToken(3600))
			h.steps, h.sign = true, newTestSigner(t, AlgES384).sign
			res := h.revoke(t, tt.req)
			if res.Error == nil || res.Error.Kind != abi.KindPolicy || h.sends != 0 || len(h.calls) != 0 {
				t.Fatalf("got %+v after %v, %d sends", res.Error, h.calls, h.sends)
			}
		})
	}
	// The token URL's host, another path: allowed.
	h := newFakeHost(t, func(abi.HTTPRequest) abi.HTTPResponse { return abi.HTTPResponse{Status: 200} })
	h.steps = true
	res := h.revoke(t, `{"provider":"custom","client_id":"a","client_secret":"s3cret","token_url":"https://AUTH.example.org/token","access_token":"tok-1","revocation_url":"https://auth.example.org/oauth/revoke","profile":{}}`)
	if res.Error != nil || h.sends != 1 {
		t.Fatalf("same host: %+v, %d sends", res.Error, h.sends)
	}
}

// TestEchoedAssertionIsRedacted: a provider that refuses a client assertion often quotes it back
// (error_description, an HTML error page). A refused assertion's jti is usually not spent, so the
// quoted assertion, once in an error, a log or a metric label, is a credential for the token
// endpoint until it expires. It is withheld from the error like a client secret, in both drivers
// and whatever the provider wraps it in.
func TestEchoedAssertionIsRedacted(t *testing.T) {
	csjwt := `{"provider":"custom","client_id":"app","client_secret":"cs-jwt-secret-9f2","token_url":"` + smartURL +
		`","profile":{"client_auth":"client_secret_jwt"}}`
	for _, tt := range []struct {
		name, req string
		steps     bool
		echo      func(assertion string) abi.HTTPResponse
	}{
		{"private_key_jwt, error_description", smartReq("key-1", AlgES384, ""), true, func(a string) abi.HTTPResponse {
			return abi.HTTPResponse{Status: 400, Body: `{"error":"invalid_client","error_description":"assertion ` + a + ` has an unknown kid"}`}
		}},
		{"private_key_jwt, form echo in a 500 page", smartReq("key-1", AlgRS384, ""), true, func(a string) abi.HTTPResponse {
			return abi.HTTPResponse{Status: 500, Body: `<html>bad request: client_assertion=` + a + `</html>`}
		}},
		{"client_secret_jwt, token export", csjwt, false, func(a string) abi.HTTPResponse {
			return abi.HTTPResponse{Status: 401, Body: `{"error":"invalid_client","error_description":"` + a + `"}`}
		}},
		{"client_secret_jwt, token_step", csjwt, true, func(a string) abi.HTTPResponse {
			return abi.HTTPResponse{Status: 400, Body: `{"error":"invalid_grant","error_description":"jwt=` + a + `"}`}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var sent string
			h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
				form, _ := url.ParseQuery(r.Body)
				sent = form.Get("client_assertion")
				return tt.echo(sent)
			})
			h.steps = tt.steps
			if tt.steps {
				alg := AlgES384
				if strings.Contains(tt.name, "500") {
					alg = AlgRS384
				}
				h.sign = newTestSigner(t, alg).sign
			}
			res := h.token(t, tt.req)
			if res.Error == nil || sent == "" {
				t.Fatalf("got %+v, sent %q", res, sent)
			}
			all, _ := json.Marshal(res.Error)
			sig := sent[strings.LastIndexByte(sent, '.')+1:]
			if strings.Contains(string(all), sig) || strings.Contains(string(all), sent[:40]) {
				t.Fatalf("the assertion is in the error: %s", all)
			}
		})
	}
}

func TestWithoutJWS(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"no token here", "no token here"},
		{"eyJh.eyJi.c2ln", redacted},
		{"a eyJh.eyJi.c2ln b eyJh.eyJi.c2ln.", "a " + redacted + " b " + redacted + "."},
		{"two parts eyJh.eyJi and eyJ", "two parts eyJh.eyJi and eyJ"},
		{"no signature eyJh.eyJi.", "no signature eyJh.eyJi."},
		{`"eyJh.eyJi.c2ln"`, `"` + redacted + `"`},
		{"eyJeyJh.eyJi.c2ln", redacted},
	} {
		if got := withoutJWS(tt.in); got != tt.want {
			t.Errorf("withoutJWS(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestHostThatCannotSign: a host that drives token_step but does not know the sign action (the
// Node.js host, whose driver answers an unknown action with nothing) gets signing_required, as the
// token export gives, rather than kind signing, which reads as a key that failed: nothing sent, the
// lock released. A host that answers {"error"} still gets signing.
func TestHostThatCannotSign(t *testing.T) {
	for _, tt := range []struct {
		name string
		sign func([]byte) []byte
		kind string
	}{
		{"nothing", nil, abi.KindSigningRequired},
		{"null", func([]byte) []byte { return []byte("null") }, abi.KindSigningRequired},
		{"an error", func([]byte) []byte { return []byte(`{"error":"no key"}`) }, abi.KindSigning},
		{"an empty object", func([]byte) []byte { return []byte(`{}`) }, abi.KindSigning},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t, okToken(3600))
			h.steps, h.sign = true, tt.sign
			res := h.token(t, smartReq("key-1", AlgRS384, `,"fleet_lock":true`))
			if res.Error == nil || res.Error.Kind != tt.kind || h.sends != 0 {
				t.Fatalf("got %+v, %d sends", res.Error, h.sends)
			}
			for k := range h.cache {
				if strings.HasSuffix(k, lockSuffix) {
					t.Fatal("the fleet lock was not released")
				}
			}
		})
	}
}
