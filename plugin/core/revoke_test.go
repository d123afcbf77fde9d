package core

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// revoke drives a revoke flow through token_step on h and returns its answer.
func (h *fakeHost) revoke(t *testing.T, req string) abi.Result {
	t.Helper()
	h.calls = nil
	var res abi.Result
	if err := json.Unmarshal(h.run([]byte(req), "revoke"), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestRevoke: the token (access, else refresh) goes to the revocation URL with the token request's
// client authentication (Basic, or a host-signed assertion whose aud is the token URL); the cached
// token is dropped whatever the provider answered; a provider's error is typed.
func TestRevoke(t *testing.T) {
	const revURL = "https://auth.example.org/revoke"
	basicReq := `{"provider":"custom","client_id":"app","client_secret":"s3cret","token_url":"https://auth.example.org/token","profile":{"revocation_url":"` + revURL + `"}`
	tests := []struct {
		name, req, status, wantBody, wantKind string
	}{
		{"access token, Basic", basicReq + `,"access_token":"tok-1"}`, `200`, "token=tok-1&token_type_hint=access_token", ""},
		{"refresh token", basicReq + `,"grant_type":"refresh_token","refresh_token":"rt-1"}`, `200`, "token=rt-1&token_type_hint=refresh_token", ""},
		{"provider refuses the hint", basicReq + `,"access_token":"tok-1"}`, `400`, "token=tok-1&token_type_hint=access_token", abi.KindInvalidRequest},
		{"smart, signed", strings.Replace(smartReq("key-1", AlgES384, `,"access_token":"tok-1"`), `"token_url"`, `"revocation_url":"`+smartURL+`-revoke","token_url"`, 1), `200`, "token=tok-1&token_type_hint=access_token&client_assertion_type=", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sent abi.HTTPRequest
			h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
				sent = r
				if tt.status == "400" {
					return abi.HTTPResponse{Status: 400, Body: `{"error":"unsupported_token_type"}`}
				}
				return abi.HTTPResponse{Status: 200, Body: ``}
			})
			h.steps = true
			signer := newTestSigner(t, AlgES384)
			h.sign = signer.sign
			_, _, key, _ := (*Memo)(nil).Prepare([]byte(tt.req))
			h.cache[key] = abi.CacheSetInput{Key: key, Value: "cached", TTLMS: 1 << 60}
			res := h.revoke(t, tt.req)
			if tt.wantKind == "" && res.Error != nil || tt.wantKind != "" && (res.Error == nil || res.Error.Kind != tt.wantKind) {
				t.Fatalf("got %+v", res.Error)
			}
			if !strings.HasPrefix(sent.Body, tt.wantBody) || !strings.HasSuffix(sent.URL, "revoke") {
				t.Fatalf("sent %s %s", sent.URL, sent.Body)
			}
			if _, ok := h.cache[key]; ok {
				t.Fatal("the cached token was kept")
			}
			if strings.Contains(tt.req, "smart") {
				_, claims, in, sig := sentAssertion(t, sent.Body)
				if claims["aud"] != smartURL || !signer.verify(AlgES384, in, sig) {
					t.Fatalf("assertion claims %v", claims)
				}
				form, _ := url.ParseQuery(sent.Body)
				if form.Get("client_id") != "" {
					t.Fatal("client_id beside the assertion")
				}
			} else if sent.Headers["Authorization"] == "" {
				t.Fatal("no client authentication")
			}
		})
	}
}

// TestRevokeRefusals: nothing to revoke, no revocation URL, a built-in provider's revocation URL on
// another host: refused before anything is sent or deleted.
func TestRevokeRefusals(t *testing.T) {
	for _, tt := range []struct{ name, req, kind string }{
		{"no token", `{"provider":"custom","client_id":"a","client_secret":"s","token_url":"https://a.example/t","revocation_url":"https://a.example/r"}`, abi.KindInvalidRequest},
		{"no URL", `{"provider":"custom","client_id":"a","client_secret":"s","token_url":"https://a.example/t","access_token":"t"}`, abi.KindInvalidRequest},
		{"candid's credentials elsewhere", `{"provider":"candid","client_id":"a","client_secret":"s","access_token":"t","revocation_url":"https://evil.example/revoke"}`, abi.KindPolicy},
	} {
		t.Run(tt.name, func(t *testing.T) {
			call := func(_ string, in []byte) ([]byte, error) { return TokenStep(new(Memo), in, nil), nil }
			var n int
			out, err := conformance.Drive(call, func(conformance.Action) []byte { n++; return nil }, []byte(tt.req), "revoke")
			var res abi.Result
			json.Unmarshal(out, &res)
			if err != nil || res.Error == nil || res.Error.Kind != tt.kind || n != 0 {
				t.Fatalf("%v %+v, %d actions", err, res.Error, n)
			}
		})
	}
}
