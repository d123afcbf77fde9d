package host

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// TestHostReadsFirstOfRepeatedMember: the Go host reads a plugin answer or import input with a
// repeated member as the plugin reads its inputs (abi/ABI.md, "Shapes"): the first, for the token
// export's answer, every other export's answer (read with encoding/json before, which keeps the last)
// and http_send's request, headers included.
func TestHostReadsFirstOfRepeatedMember(t *testing.T) {
	answer := `{"token":{"access_token":"first","expires_in":600,"access_token":"second","expires_in":60},` +
		`"error":{"kind":"invalid_client","kind":"server_error","retryable":false,"retryable":true},` +
		`"request":{"url":"https://first.example/","url":"https://second.example/","headers":{"X":"first","X":"second"}},` +
		`"token":{"access_token":"third"}}`
	var tr tokenResult
	var r result
	for name, parse := range map[string]func([]byte) error{"tokenResult": tr.parse, "result": r.parse} {
		if err := parse([]byte(answer)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for _, got := range []abi.Result{abi.Result(tr), abi.Result(r)} {
		if got.Token.AccessToken != "first" || got.Token.ExpiresIn != 600 {
			t.Errorf("token %+v, want the first access_token and expires_in", got.Token)
		}
		if got.Error.Kind != abi.KindInvalidClient || got.Error.Retryable {
			t.Errorf("error %+v, want the first kind and retryable", got.Error)
		}
	}
	if q := r.Request; q == nil || q.URL != "https://first.example/" || q.Headers["X"] != "first" {
		t.Errorf("request %+v, want the first url and header", q)
	}
}

// TestTokenResponseRepeatedMembers: a provider's token response that repeats access_token,
// expires_in and error gives the first of each through the built .wasm, with either driver (the
// token export, token_step) and through the decode export.
func TestTokenResponseRepeatedMembers(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		status     int
		token      string
		expiresIn  int64
		kind       string
	}{
		{"access_token and expires_in", `{"access_token":"first","expires_in":600,"access_token":"second","expires_in":60}`, 200, "first", 600, ""},
		{"a later access_token that is not one", `{"access_token":"first","access_token":"bad token"}`, 200, "first", 3600, ""},
		{"error", `{"error":"invalid_client","error":"temporarily_unavailable"}`, 400, "", 0, abi.KindInvalidClient},
		{"error then access_token", `{"error":"invalid_grant","error":"","access_token":"t"}`, 200, "", 0, abi.KindInvalidGrant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, req := nikoFake(t, providertest.DefaultConfig("nikohealth"))
			fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
				return true
			})
			check := func(driver string, tok *abi.Token, err error) {
				t.Helper()
				if tc.kind != "" {
					if kindOf(err) != tc.kind {
						t.Errorf("%s: err %v, want kind %s", driver, err, tc.kind)
					}
					return
				}
				if err != nil || tok.AccessToken != tc.token || tok.ExpiresIn != tc.expiresIn {
					t.Errorf("%s: token %+v, err %v; want %s for %d s", driver, tok, err, tc.token, tc.expiresIn)
				}
			}
			ctx := context.Background()
			for _, step := range []bool{false, true} {
				c := newRuntime(t, withStepFlow(step))
				tok, err := c.Token(ctx, req)
				check(map[bool]string{false: "token export", true: "token_step"}[step], tok, err)
			}
			tok, err := newRuntime(t).Decode(ctx, req, abi.HTTPResponse{Status: tc.status, Body: tc.body})
			check("decode export", tok, err)
		})
	}
}
