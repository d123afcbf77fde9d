package core

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// Canaries hold every character that an encoding changes: + / = & " \ < > % and spaces.
const (
	canaryID       = `client id+1`
	canarySecret   = `CANARY-secret +/=&"\<>% end`
	canaryPassword = `CANARY-pass word&"<>/=+%`
	canaryRefresh  = `CANARY-refresh\"+ /=%25&<>`
	canaryCode     = `CANARY-code <>&"\ %+/=`
	canaryVerifier = `CANARY-verifier-0123456789-0123456789 +/=&"\<>%`
	canaryAccess   = `CANARY-access %"\<>&+/= x`
)

var canaries = []string{canarySecret, canaryPassword, canaryRefresh, canaryCode, canaryVerifier, canaryAccess}

// spellings lists the ways a secret can travel: as sent, and as encoders write it.
func spellings(id, secret string) map[string]string {
	goJSON, _ := json.Marshal(secret) // HTML-safe: \u003c \u003e \u0026
	form := url.QueryEscape(secret)
	out := map[string]string{
		"raw":               secret,
		"form +":            form,
		"form %20":          strings.ReplaceAll(form, "+", "%20"),
		"path-escaped":      url.PathEscape(secret),
		"form lower hex":    lowerHex(form),
		"json (Go)":         strings.Trim(string(goJSON), `"`),
		"json (minimal)":    minimalJSON(secret),
		"json (slash)":      strings.ReplaceAll(minimalJSON(secret), "/", `\/`),
		"json (.NET)":       dotnetJSON(secret),
		"html":              html.EscapeString(secret),
		"json of form":      dotnetJSON(form),
		"form of json":      url.QueryEscape(minimalJSON(secret)),
		"base64(secret)":    base64.StdEncoding.EncodeToString([]byte(secret)),
		"base64url(secret)": base64.RawURLEncoding.EncodeToString([]byte(secret)),
	}
	if id != "" {
		for name, cred := range map[string]string{"id:secret": id + ":" + secret, "rfc6749 id:secret": url.QueryEscape(id) + ":" + url.QueryEscape(secret)} {
			out["base64 "+name] = base64.StdEncoding.EncodeToString([]byte(cred))
			out["base64 raw "+name] = base64.RawStdEncoding.EncodeToString([]byte(cred))
			out["base64url "+name] = base64.URLEncoding.EncodeToString([]byte(cred))
		}
	}
	return out
}

func minimalJSON(s string) string { return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) }

// dotnetJSON escapes as System.Text.Json's default encoder does: HTML-sensitive characters and "+"
// as upper-case \u escapes.
func dotnetJSON(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\u0022`, `<`, `\u003C`, `>`, `\u003E`, `&`, `\u0026`, `+`, `\u002B`, `'`, `\u0027`).Replace(s)
}

var hexRe = regexp.MustCompile(`%[0-9A-F]{2}`)

func lowerHex(s string) string { return hexRe.ReplaceAllStringFunc(s, strings.ToLower) }

// echoDescription is what a provider that echoes everything would put in error_description: the
// body and the Authorization header as sent, the body form-encoded with %20 and lower-case hex, the
// body JSON-escaped three ways, HTML-escaped, and the decoded secrets.
func echoDescription(enc *HTTPRequest) string {
	auth := ""
	for _, kv := range enc.Headers {
		if kv.name == "Authorization" {
			auth = kv.value
		}
	}
	b := enc.Body
	goJSON, _ := json.Marshal(b)
	parts := []string{b, auth, strings.ReplaceAll(b, "+", "%20"), lowerHex(b), string(goJSON), minimalJSON(b), dotnetJSON(b), html.EscapeString(b)}
	return strings.Join(append(parts, canaries...), " | ")
}

func TestRedactEverySpelling(t *testing.T) {
	type grantCase struct {
		name string
		req  map[string]any
	}
	base := func(provider string, extra map[string]any) map[string]any {
		m := map[string]any{"provider": provider, "client_id": canaryID, "client_secret": canarySecret,
			"access_token": canaryAccess, "token_url": "http://127.0.0.1:9/token"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	custom := func(auth, body string) map[string]any {
		return map[string]any{"profile": map[string]any{"client_auth": auth, "body": body}}
	}
	cases := []grantCase{
		{"candid/json", base("candid", nil)},
		{"candid/form", base("candid", map[string]any{"body": "form"})},
		{"pattern", base("pattern", nil)},
		{"nikohealth", base("nikohealth", nil)},
		{"candescent/client_credentials", base("candescent", map[string]any{"institution_id": "inst"})},
		{"candescent/password", base("candescent", map[string]any{"institution_id": "inst", "grant_type": "password", "username": "u", "password": canaryPassword})},
		{"candescent/authorization_code", base("candescent", map[string]any{"institution_id": "inst", "grant_type": "authorization_code",
			"code": canaryCode, "code_verifier": canaryVerifier, "redirect_uri": "https://app.example/cb"})},
		{"candescent/refresh_token", base("candescent", map[string]any{"grant_type": "refresh_token", "refresh_token": canaryRefresh})},
		{"custom/basic", base("custom", custom("basic", "form"))},
		{"custom/basic_rfc6749", base("custom", custom("basic_rfc6749", "form"))},
		{"custom/body json", base("custom", custom("body", "json"))},
	}
	clock := func() int64 { return 1767225600000 }
	for _, gc := range cases {
		in, _ := json.Marshal(gc.req)
		r, enc, aerr := parseAndEncode(&requestBufs{input: in})
		if aerr != nil {
			t.Fatalf("%s: encode: %v", gc.name, aerr)
		}
		secrets := []string{r.ClientSecret, r.Password, r.RefreshToken, r.Code, r.CodeVerifier, r.AccessToken}
		echo := echoDescription(enc)
		for _, pad := range []int{0, 497, 505} { // 497 and 505: the 512-byte cut falls inside a secret
			desc := strings.Repeat("x", pad) + echo
			body, _ := json.Marshal(map[string]string{"error": "invalid_request", "error_description": desc})
			responses := map[string]abi.HTTPResponse{
				"description":  {Status: 400, Body: string(body)},
				"oauth_error":  {Status: 400, Body: `{"error":` + mustJSON(url.QueryEscape(canarySecret)+" "+desc) + `}`},
				"transport":    {Error: desc},
				"policy":       {Error: desc, Policy: true},
				"200 with err": {Status: 200, Body: string(body)},
			}
			for where, resp := range responses {
				t.Run(fmt.Sprintf("%s/%s/pad%d", gc.name, where, pad), func(t *testing.T) {
					input, _ := json.Marshal(map[string]any{"request": json.RawMessage(in), "response": resp})
					out := Decode(nil, input, clock)
					var res abi.Result
					if err := json.Unmarshal(out, &res); err != nil || res.Error == nil {
						t.Fatalf("decode answered %s", out)
					}
					e := res.Error
					shown := e.Message + "\n" + e.Description + "\n" + e.OAuthError
					if (pad == 0 || where == "oauth_error") && !strings.Contains(shown, "[redacted]") {
						t.Fatalf("nothing redacted: the test is not testing: %s", out)
					}
					for _, sec := range secrets {
						if sec == "" {
							continue
						}
						id := ""
						if sec == canarySecret {
							id = canaryID
						}
						for name, sp := range spellings(id, sec) {
							if strings.Contains(shown, sp) || strings.Contains(string(out), sp) {
								t.Errorf("%s of %q appears in %s", name, sec, out)
							}
							for _, field := range []string{e.Description, e.Message, e.OAuthError} {
								if cut, ok := strings.CutSuffix(field, "..."); ok {
									for n := 6; n < len(sp); n++ {
										if strings.HasSuffix(cut, sp[:n]) {
											t.Errorf("the cut leaves the start of %s of %q: %q", name, sec, cut)
										}
									}
								}
							}
						}
					}
				})
			}
		}
	}
}

func mustJSON(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestRedactRules: what is kept, what is replaced, and when the whole text is withheld.
func TestRedactRules(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		text   string
		want   string
	}{
		{"no secret in text", "s3cret-value", "bad client", "bad client"},
		{"raw", "s3cret-value", "got s3cret-value here", "got [redacted] here"},
		{"form-encoded", "s3 cret&v", "got s3+cret%26v here", "got [redacted] here"},
		{"form-encoded %20 lower hex", "s3 cret&v", "got s3%20cret%26v here", "got [redacted] here"},
		{"json escaped upper hex", `a"b<c`, `got a\u0022b\u003Cc here`, "got [redacted] here"},
		{"json in form", `a"bc`, `got a%5C%22bc here`, "got [redacted] here"},
		{"html", `a"b<c`, `got a&quot;b&lt;c here`, "got [redacted] here"},
		{"non-ascii as \\u", "s3crét-x", `got s3cr\u00e9t-x here`, "got [redacted] here"},
		{"past U+FFFF as a \\u surrogate pair", "s3cr\U0001F511-x", `got s3cr\ud83d\udd11-x here`, "got [redacted] here"},
		{"surrogate pair, upper hex", "s3cr\U0001F511-x", `got s3cr\uD83D\uDD11-x here`, "got [redacted] here"},
		{"raw backslashes", `a\\b\c`, `got a\\b\c here`, "got [redacted] here"},
		{"escaped backslashes", `a\\b\c`, `got a\\\\b\\c here`, "got [redacted] here"},
		{"short secret withholds all", "abc", "code abc was wrong", "[redacted]"},
		{"short secret absent", "abc", "nothing here", "nothing here"},
		{"near miss kept", "s3cret-value", "s3cret-valu", "s3cret-valu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Request{ClientID: "id", ClientSecret: tt.secret}
			if got := r.redact(tt.text, 512); got != tt.want {
				t.Fatalf("redact(%q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}

// TestRedactExtraParamsAndHeaders: values of a caller's params and headers of 8 bytes or more (a
// client_assertion, an API key) are secrets too; shorter ones are not, so they withhold nothing.
func TestRedactExtraParamsAndHeaders(t *testing.T) {
	r := &Request{ClientID: "id", ClientSecret: "s3cret-value",
		Params:  []header{{"client_assertion", "eyJhbGciOi.assertion+/="}, {"audience", "api"}},
		Headers: []header{{"X-Api-Key", "key 0123456789"}}}
	for _, tt := range []struct{ text, want string }{
		{"bad assertion eyJhbGciOi.assertion%2B%2F%3D", "bad assertion [redacted]"},
		{`key "key 0123456789" refused`, `key "[redacted]" refused`},
		{"unknown api audience", "unknown api audience"},
	} {
		if got := r.redact(tt.text, 512); got != tt.want {
			t.Fatalf("redact(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

// TestRedactBounded: a hostile text built to make the matcher slow is withheld, not scanned forever.
func TestRedactBounded(t *testing.T) {
	secret := strings.Repeat("a", 4000) + "b"
	r := &Request{ClientID: "id", ClientSecret: secret}
	if got := r.redact(strings.Repeat("a", 1<<20), 512); got != "[redacted]" {
		t.Fatalf("got %d bytes, want the text withheld", len(got))
	}
}
