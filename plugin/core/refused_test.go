package core

import (
	"encoding/base64"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// TestOnlyARefusalEndsTheLineage: an invalid_grant error code in a 5xx answer (a gateway or a
// provider whose refresh-token lookup failed, quoting the OAuth code) is the server's failure, not
// its refusal of the refresh token: the lineage keeps its newest refresh token, which the next flow
// sends, and gets a token. Marking it refused would drop the only copy of that refresh token (the
// filter has no refresh-token hook) and answer invalid_grant for 90 days to a grant that still
// works. A 4xx invalid_grant (RFC 6749 5.2's 400) still ends it (rotation_refused*.json).
func TestOnlyARefusalEndsTheLineage(t *testing.T) {
	const req = `{"provider":"candescent","grant_type":"refresh_token","client_id":"cd","client_secret":"cd-secret-1","refresh_token":"rt-0","token_url":"https://api.candescent.com/digitalbanking/oauth2/v1/token"}`
	for _, tt := range []struct {
		status  int
		refused bool
	}{
		{500, false},
		{502, false},
		{503, false},
		{400, true},
		{401, true},
	} {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			var sent []string
			live, rotated, failOnce := "rt-0", 0, false
			h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
				v, _ := url.ParseQuery(r.Body)
				rt := v.Get("refresh_token")
				sent = append(sent, rt)
				if failOnce {
					failOnce = false
					return abi.HTTPResponse{Status: tt.status, Headers: map[string]string{"Content-Type": "application/json"},
						Body: `{"error":"invalid_grant","error_description":"refresh token lookup failed"}`}
				}
				if rt != live {
					return abi.HTTPResponse{Status: 400, Body: `{"error":"invalid_grant"}`}
				}
				rotated++
				live = "rt-" + strconv.Itoa(rotated)
				return abi.HTTPResponse{Status: 200, Body: `{"access_token":"tok-` + strconv.Itoa(rotated) + `","expires_in":1,"refresh_token":"` + live + `"}`}
			})
			if first := h.token(t, req); first.Token == nil {
				t.Fatalf("first exchange: %+v", first.Error)
			}
			h.advance(2000)
			failOnce = true
			if second := h.token(t, req); second.Error == nil || second.Error.Kind != abi.KindInvalidGrant {
				t.Fatalf("the failing exchange: %+v", second)
			}
			h.advance(60_000) // past any gate
			third := h.token(t, req)
			if tt.refused {
				if third.Error == nil || third.Error.Kind != abi.KindInvalidGrant || len(sent) != 2 {
					t.Fatalf("after a %d invalid_grant: %+v, sent %v; want invalid_grant and nothing sent", tt.status, third, sent)
				}
				return
			}
			if third.Token == nil || len(sent) != 3 || sent[2] != "rt-1" {
				t.Fatalf("after a %d invalid_grant: %+v, sent %v; want a token for rt-1, the lineage's newest", tt.status, third.Error, sent)
			}
		})
	}
}

// TestWrongSecretRefusalStaysWithIt: a provider that answers a wrong client secret with a 400
// invalid_grant (not RFC 6749's invalid_client) marks that credential set refused; the corrected
// secret is another identity (the key covers the request as sent), which sends the refresh token the
// refused call did not use and gets a token. The mark stays on the wrong secret's set only.
func TestWrongSecretRefusalStaysWithIt(t *testing.T) {
	const wrong = `{"provider":"candescent","grant_type":"refresh_token","client_id":"cd","client_secret":"cd-secret-wrong","refresh_token":"rt-0","token_url":"https://api.candescent.com/digitalbanking/oauth2/v1/token"}`
	right := strings.Replace(wrong, "cd-secret-wrong", "cd-secret-1", 1)
	goodAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("cd:cd-secret-1"))
	h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
		if r.Headers["Authorization"] != goodAuth {
			return abi.HTTPResponse{Status: 400, Body: `{"error":"invalid_grant","error_description":"bad client credentials"}`}
		}
		return abi.HTTPResponse{Status: 200, Body: `{"access_token":"tok-1","expires_in":600,"refresh_token":"rt-1"}`}
	})
	if r := h.token(t, wrong); r.Error == nil || r.Error.Kind != abi.KindInvalidGrant || h.sends != 1 {
		t.Fatalf("the wrong secret: %+v, %d sends", r, h.sends)
	}
	if r := h.token(t, right); r.Token == nil || h.sends != 2 {
		t.Fatalf("the corrected secret: %+v, %d sends; want a token", r.Error, h.sends)
	}
	if r := h.token(t, wrong); r.Error == nil || r.Error.Kind != abi.KindInvalidGrant || h.sends != 2 {
		t.Fatalf("the wrong secret again: %+v, %d sends; want invalid_grant, nothing sent", r, h.sends)
	}
}
