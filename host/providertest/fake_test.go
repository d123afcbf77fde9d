package providertest

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reply is one answer from a fake.
type reply struct {
	status int
	body   string
	header http.Header
}

// json decodes the body into a map, failing the test when it is not a JSON object.
func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func do(t *testing.T, method, u, ctype, body string, headers map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range headers {
		req.Header[k] = []string{v} // as given: transactionId and institutionId keep their case
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, string(b), resp.Header}
}

func post(t *testing.T, u, ctype, body string, headers map[string]string) reply {
	t.Helper()
	return do(t, http.MethodPost, u, ctype, body, headers)
}

// callAPI calls the fake's protected API with a bearer token and returns the status.
func callAPI(t *testing.T, f *Fake, tok string) int {
	t.Helper()
	r := do(t, http.MethodGet, f.APIURL(), "", "", map[string]string{"Authorization": "Bearer " + tok})
	if r.status == http.StatusOK && strings.TrimSpace(r.body) != `{"ok":true}` {
		t.Fatalf("API body %q", r.body)
	}
	return r.status
}

func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// rfc6749Basic form-encodes id and secret before base64, as RFC 6749 2.3.1 says.
func rfc6749Basic(id, secret string) string {
	return basicAuth(url.QueryEscape(id), url.QueryEscape(secret))
}

func form(kv ...string) string {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

func jsonBody(id, secret string) string {
	b, _ := json.Marshal(map[string]string{"client_id": id, "client_secret": secret})
	return string(b)
}

// TestFakes sends one request per case to a fresh fake and checks status, body and counts.
func TestFakes(t *testing.T) {
	cand, pat, desc, niko := DefaultConfig("candid"), DefaultConfig("pattern"), DefaultConfig("candescent"), DefaultConfig("nikohealth")
	// Pattern's Basic is plain: a secret with '+' sent form-encoded ("%2B") must be refused.
	patPlus := pat
	patPlus.ClientSecret = "pattern+secret"
	patH := map[string]string{"Accept": jsonType, "Authorization": basicAuth(pat.ClientID, pat.ClientSecret)}
	descBasic := basicAuth(desc.ClientID, desc.ClientSecret)
	descH := map[string]string{"Authorization": descBasic, "institutionId": desc.InstitutionID, "transactionId": "tx-1"}
	nikoH := map[string]string{"Authorization": rfc6749Basic(niko.ClientID, niko.ClientSecret)}
	cc := form("grant_type", "client_credentials")
	code := func(scope, verifier string) string {
		return form("grant_type", "authorization_code", "code", desc.Code, "redirect_uri", desc.RedirectURI, "code_verifier", verifier, "scope", scope)
	}
	tests := []struct {
		name    string
		fake    func(Config) *Fake
		cfg     Config
		method  string // "" is POST
		path    string // "" is the token path
		ctype   string
		body    string
		headers map[string]string
		status  int
		want    []string // substrings of the body
		absent  []string // strings the body must not hold
	}{
		// Candid
		{name: "candid json", fake: NewCandid, cfg: cand, ctype: jsonType, body: jsonBody(cand.ClientID, cand.ClientSecret),
			status: 200, want: []string{`"expires_in":86400`, `"token_type":"Bearer"`, `"access_token":"ey`}},
		{name: "candid json charset", fake: NewCandid, cfg: cand, ctype: jsonType + "; charset=utf-8", body: jsonBody(cand.ClientID, cand.ClientSecret), status: 200},
		{name: "candid form", fake: NewCandid, cfg: cand, ctype: formType, body: form("client_id", cand.ClientID, "client_secret", cand.ClientSecret),
			status: 200, want: []string{`"expires_in":86400`, `"token_type":"Bearer"`}},
		{name: "candid text/plain 415", fake: NewCandid, cfg: cand, ctype: "text/plain", body: jsonBody(cand.ClientID, cand.ClientSecret), status: 415, want: []string{"Invalid Content Type"}},
		{name: "candid no content type 415", fake: NewCandid, cfg: cand, body: jsonBody(cand.ClientID, cand.ClientSecret), status: 415},
		{name: "candid wrong secret 401", fake: NewCandid, cfg: cand, ctype: jsonType, body: jsonBody(cand.ClientID, "wrong-secret-value"),
			status: 401, want: []string{`"error":"invalid_client"`, `"error_description"`}, absent: []string{"wrong-secret-value"}},
		{name: "candid wrong id form 401", fake: NewCandid, cfg: cand, ctype: formType, body: form("client_id", "other", "client_secret", cand.ClientSecret), status: 401, want: []string{"invalid_client"}},
		{name: "candid missing credentials 401", fake: NewCandid, cfg: cand, ctype: jsonType, body: `{}`, status: 401, want: []string{"invalid_client"}},
		{name: "candid malformed json 400", fake: NewCandid, cfg: cand, ctype: jsonType, body: `{"client_id":`, status: 400},
		{name: "candid GET 405", fake: NewCandid, cfg: cand, method: http.MethodGet, status: 405},

		// Pattern
		{name: "pattern ok", fake: NewPattern, cfg: pat, ctype: formType, body: cc, headers: patH,
			status: 200, want: []string{`"expires_in":3600000`, `"token_type":"bearer"`}},
		{name: "pattern accept list", fake: NewPattern, cfg: pat, ctype: formType, body: cc,
			headers: map[string]string{"Accept": "text/html, application/json;q=0.9", "Authorization": patH["Authorization"]}, status: 200},
		{name: "pattern json body 415", fake: NewPattern, cfg: pat, ctype: jsonType, body: `{"grant_type":"client_credentials"}`, headers: patH, status: 415},
		{name: "pattern no accept 406", fake: NewPattern, cfg: pat, ctype: formType, body: cc,
			headers: map[string]string{"Authorization": patH["Authorization"]}, status: 406, want: []string{"Accept"}},
		{name: "pattern xml accept 406", fake: NewPattern, cfg: pat, ctype: formType, body: cc,
			headers: map[string]string{"Accept": "application/xml", "Authorization": patH["Authorization"]}, status: 406},
		{name: "pattern credentials in body 401", fake: NewPattern, cfg: pat, ctype: formType,
			body:    form("grant_type", "client_credentials", "client_id", pat.ClientID, "client_secret", pat.ClientSecret),
			headers: map[string]string{"Accept": jsonType}, status: 401, want: []string{"invalid_client"}},
		{name: "pattern wrong secret 401", fake: NewPattern, cfg: pat, ctype: formType, body: cc,
			headers: map[string]string{"Accept": jsonType, "Authorization": basicAuth(pat.ClientID, "nope")}, status: 401},
		{name: "pattern plain basic with +", fake: NewPattern, cfg: patPlus, ctype: formType, body: cc,
			headers: map[string]string{"Accept": jsonType, "Authorization": basicAuth(patPlus.ClientID, patPlus.ClientSecret)}, status: 200},
		{name: "pattern form-encoded basic 401", fake: NewPattern, cfg: patPlus, ctype: formType, body: cc,
			headers: map[string]string{"Accept": jsonType, "Authorization": rfc6749Basic(patPlus.ClientID, patPlus.ClientSecret)}, status: 401},
		{name: "pattern password grant 400", fake: NewPattern, cfg: pat, ctype: formType, body: form("grant_type", "password"), headers: patH,
			status: 400, want: []string{"unsupported_grant_type"}},
		{name: "pattern no grant 400", fake: NewPattern, cfg: pat, ctype: formType, body: "", headers: patH, status: 400, want: []string{"unsupported_grant_type"}},
		{name: "pattern PUT 405", fake: NewPattern, cfg: pat, method: http.MethodPut, ctype: formType, body: cc, headers: patH, status: 405},

		// Candescent
		{name: "candescent client_credentials", fake: NewCandescent, cfg: desc, ctype: formType, body: cc, headers: descH,
			status: 200, want: []string{`"expires_in":"900"`, `"token_type":"Bearer"`, `"refresh_token_expires_in":"0"`, `"scope":""`}, absent: []string{`"refresh_token":`}},
		{name: "candescent password", fake: NewCandescent, cfg: desc, ctype: formType,
			body: form("grant_type", "password", "username", desc.Username, "password", desc.Password), headers: descH,
			status: 200, want: []string{`"refresh_token":"`, `"refresh_token_expires_in":"3600"`}, absent: []string{desc.Password}},
		{name: "candescent bad password", fake: NewCandescent, cfg: desc, ctype: formType,
			body: form("grant_type", "password", "username", desc.Username, "password", "guess"), headers: descH, status: 400, want: []string{`"error":"invalid_grant"`}},
		{name: "candescent password missing", fake: NewCandescent, cfg: desc, ctype: formType,
			body: form("grant_type", "password", "username", desc.Username), headers: descH, status: 400, want: []string{`"error":"invalid_request"`}},
		{name: "candescent code offline_access", fake: NewCandescent, cfg: desc, ctype: formType, body: code("openid offline_access", desc.CodeVerifier), headers: descH,
			status: 200, want: []string{`"refresh_token":"`, `"scope":"openid offline_access"`}},
		{name: "candescent code no offline_access", fake: NewCandescent, cfg: desc, ctype: formType, body: code("openid", desc.CodeVerifier), headers: descH,
			status: 200, want: []string{`"refresh_token_expires_in":"0"`}, absent: []string{`"refresh_token":`}},
		{name: "candescent code wrong verifier", fake: NewCandescent, cfg: desc, ctype: formType, body: code("", "not-the-verifier"), headers: descH, status: 400, want: []string{"invalid_grant"}},
		{name: "candescent code no verifier", fake: NewCandescent, cfg: desc, ctype: formType,
			body: form("grant_type", "authorization_code", "code", desc.Code, "redirect_uri", desc.RedirectURI), headers: descH, status: 400, want: []string{"invalid_grant"}},
		{name: "candescent code wrong redirect", fake: NewCandescent, cfg: desc, ctype: formType,
			body: form("grant_type", "authorization_code", "code", desc.Code, "redirect_uri", "https://evil.example/cb", "code_verifier", desc.CodeVerifier), headers: descH, status: 400, want: []string{"invalid_grant"}},
		{name: "candescent wrong code", fake: NewCandescent, cfg: desc, ctype: formType,
			body: form("grant_type", "authorization_code", "code", "other", "redirect_uri", desc.RedirectURI, "code_verifier", desc.CodeVerifier), headers: descH, status: 400, want: []string{"invalid_grant"}},
		{name: "candescent code without PKCE configured", fake: NewCandescent, cfg: Config{ClientID: "c", ClientSecret: "secret-no-pkce", InstitutionID: "i", Code: "k", RedirectURI: "https://r.example/"},
			ctype: formType, body: form("grant_type", "authorization_code", "code", "k", "redirect_uri", "https://r.example/"),
			headers: map[string]string{"Authorization": basicAuth("c", "secret-no-pkce"), "institutionId": "i"}, status: 200},
		{name: "candescent no institutionId", fake: NewCandescent, cfg: desc, ctype: formType, body: cc,
			headers: map[string]string{"Authorization": descBasic}, status: 400, want: []string{`"error":"invalid_request"`, "institutionId"}},
		{name: "candescent wrong institutionId", fake: NewCandescent, cfg: desc, ctype: formType, body: cc,
			headers: map[string]string{"Authorization": descBasic, "institutionId": "99999"}, status: 400, want: []string{"invalid_request"}},
		{name: "candescent unknown refresh token", fake: NewCandescent, cfg: desc, ctype: formType, body: form("grant_type", "refresh_token", "refresh_token", "made-up"),
			headers: map[string]string{"Authorization": descBasic}, status: 400, want: []string{"invalid_grant"}},
		{name: "candescent unsupported grant", fake: NewCandescent, cfg: desc, ctype: formType, body: form("grant_type", "implicit"), headers: descH,
			status: 400, want: []string{"unsupported_grant_type"}},
		{name: "candescent no basic", fake: NewCandescent, cfg: desc, ctype: formType,
			body:    form("grant_type", "client_credentials", "client_id", desc.ClientID, "client_secret", desc.ClientSecret),
			headers: map[string]string{"institutionId": desc.InstitutionID}, status: 401, want: []string{"invalid_client"}},
		{name: "candescent wrong secret", fake: NewCandescent, cfg: desc, ctype: formType, body: cc,
			headers: map[string]string{"Authorization": basicAuth(desc.ClientID, "nope"), "institutionId": desc.InstitutionID}, status: 401},
		{name: "candescent json 415", fake: NewCandescent, cfg: desc, ctype: jsonType, body: `{"grant_type":"client_credentials"}`, headers: descH, status: 415},

		// NikoHealth
		{name: "niko rfc6749 basic", fake: NewNikoHealth, cfg: niko, ctype: formType, body: cc, headers: nikoH,
			status: 200, want: []string{`"scope":"external"`, `"expires_in":1200`, `"token_type":"Bearer"`}},
		{name: "niko scope external", fake: NewNikoHealth, cfg: niko, ctype: formType, body: form("grant_type", "client_credentials", "scope", "external"), headers: nikoH, status: 200},
		{name: "niko form credentials", fake: NewNikoHealth, cfg: niko, ctype: formType,
			body: form("grant_type", "client_credentials", "client_id", niko.ClientID, "client_secret", niko.ClientSecret), status: 200},
		{name: "niko plain basic refused", fake: NewNikoHealth, cfg: niko, ctype: formType, body: cc,
			headers: map[string]string{"Authorization": basicAuth(niko.ClientID, niko.ClientSecret)}, status: 401, want: []string{"invalid_client"}},
		{name: "niko wrong form secret", fake: NewNikoHealth, cfg: niko, ctype: formType,
			body: form("grant_type", "client_credentials", "client_id", niko.ClientID, "client_secret", "nope"), status: 401},
		{name: "niko no credentials", fake: NewNikoHealth, cfg: niko, ctype: formType, body: cc, status: 401},
		{name: "niko password grant", fake: NewNikoHealth, cfg: niko, ctype: formType, body: form("grant_type", "password"), headers: nikoH,
			status: 400, want: []string{"unsupported_grant_type"}},
		{name: "niko bad scope", fake: NewNikoHealth, cfg: niko, ctype: formType, body: form("grant_type", "client_credentials", "scope", "admin"), headers: nikoH,
			status: 400, want: []string{"invalid_scope"}},
		{name: "niko json 415", fake: NewNikoHealth, cfg: niko, ctype: jsonType, body: `{}`, headers: nikoH, status: 415},
		{name: "niko GET 405", fake: NewNikoHealth, cfg: niko, method: http.MethodGet, headers: nikoH, status: 405},

		// Paths
		{name: "unknown path 404", fake: NewNikoHealth, cfg: niko, path: "/connect/token", ctype: formType, body: cc, headers: nikoH, status: 404},
		{name: "token path with slash 404", fake: NewCandid, cfg: cand, path: CandidPath + "/", ctype: jsonType, body: jsonBody(cand.ClientID, cand.ClientSecret), status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.fake(tt.cfg)
			defer f.Close()
			method, u := tt.method, f.TokenURL()
			if method == "" {
				method = http.MethodPost
			}
			if tt.path != "" {
				u = f.URL() + tt.path
			}
			r := do(t, method, u, tt.ctype, tt.body, tt.headers)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			for _, s := range tt.want {
				if !strings.Contains(r.body, s) {
					t.Errorf("body %s lacks %q", r.body, s)
				}
			}
			for _, s := range append(tt.absent, tt.cfg.ClientSecret) {
				if s != "" && strings.Contains(r.body, s) {
					t.Errorf("body %s holds %q", r.body, s)
				}
			}
			if r.status == 405 && r.header.Get("Allow") != http.MethodPost {
				t.Errorf("405 without Allow: POST: %v", r.header)
			}
			if r.status != 404 {
				r.json(t) // every answer of the token endpoint is JSON
			}
			wantReq, wantIssued := int64(1), int64(0)
			if tt.path != "" {
				wantReq = 0
			}
			if r.status == 200 {
				wantIssued = 1
			}
			if f.Requests() != wantReq || f.Issued() != wantIssued {
				t.Fatalf("requests %d issued %d, want %d and %d", f.Requests(), f.Issued(), wantReq, wantIssued)
			}
		})
	}
}

// tokenOf gets a token from f with its default client and grant, through the documented request.
func tokenOf(t *testing.T, f *Fake) (string, map[string]any) {
	t.Helper()
	c := f.Config()
	var r reply
	switch f.Name() {
	case "candid":
		r = post(t, f.TokenURL(), jsonType, jsonBody(c.ClientID, c.ClientSecret), nil)
	case "pattern":
		r = post(t, f.TokenURL(), formType, "grant_type=client_credentials", map[string]string{"Accept": jsonType, "Authorization": basicAuth(c.ClientID, c.ClientSecret)})
	case "candescent":
		r = post(t, f.TokenURL(), formType, "grant_type=client_credentials",
			map[string]string{"Authorization": basicAuth(c.ClientID, c.ClientSecret), "institutionId": c.InstitutionID, "transactionId": randomHex(8)})
	case "nikohealth":
		r = post(t, f.TokenURL(), formType, "grant_type=client_credentials", map[string]string{"Authorization": rfc6749Basic(c.ClientID, c.ClientSecret)})
	}
	if r.status != 200 {
		t.Fatalf("%s token: %d %s", f.Name(), r.status, r.body)
	}
	m := r.json(t)
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatalf("%s: no access_token in %s", f.Name(), r.body)
	}
	return tok, m
}

func TestCandidJWT(t *testing.T) {
	for _, tt := range []struct {
		name     string
		lifetime time.Duration
		wantExp  time.Duration
	}{
		{"documented 5h", 0, 5 * time.Hour},
		{"configured", 90 * time.Second, 90 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig("candid")
			cfg.Lifetime = tt.lifetime
			f := NewCandid(cfg)
			defer f.Close()
			tok, resp := tokenOf(t, f)
			if resp["expires_in"] != float64(86400) || resp["token_type"] != "Bearer" || len(resp) != 3 {
				t.Fatalf("response %v, want exactly access_token, expires_in 86400, token_type Bearer", resp)
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("not a JWT: %q", tok)
			}
			header, _ := base64.RawURLEncoding.DecodeString(parts[0])
			if string(header) != `{"alg":"RS256","typ":"JWT"}` {
				t.Fatalf("header %s", header)
			}
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
			if err := rsa.VerifyPKCS1v15(f.PublicKey(), crypto.SHA256, sum[:], sig); err != nil {
				t.Fatalf("signature: %v", err)
			}
			// The check can fail: a flipped signature bit does not verify.
			sig[len(sig)-1] ^= 1
			if rsa.VerifyPKCS1v15(f.PublicKey(), crypto.SHA256, sum[:], sig) == nil {
				t.Fatal("a tampered signature verified")
			}
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var claims struct {
				Sub      string
				Iat, Exp int64
				Jti      string
			}
			if err := json.Unmarshal(payload, &claims); err != nil {
				t.Fatal(err)
			}
			if claims.Sub != cfg.ClientID || claims.Jti == "" || time.Since(time.Unix(claims.Iat, 0)) > time.Minute {
				t.Fatalf("claims %+v", claims)
			}
			if d := time.Until(time.Unix(claims.Exp, 0)); d < tt.wantExp-time.Minute || d > tt.wantExp {
				t.Fatalf("exp in %v, want about %v", d, tt.wantExp)
			}
			if other, _ := tokenOf(t, f); other == tok {
				t.Fatal("two tokens alike: jti is not random")
			}
			if callAPI(t, f, tok) != 200 {
				t.Fatal("the API refused the JWT")
			}
		})
	}
	if f := NewPattern(DefaultConfig("pattern")); f.PublicKey() != nil {
		f.Close()
		t.Fatal("an opaque-token fake has a public key")
	} else {
		f.Close()
	}
}

// TestExpiryUnits checks each provider's expires_in: its unit and its JSON type.
func TestExpiryUnits(t *testing.T) {
	for _, tt := range []struct {
		fake     func(Config) *Fake
		provider string
		lifetime time.Duration
		want     any
	}{
		{NewPattern, "pattern", 0, float64(3600000)},
		{NewPattern, "pattern", 90 * time.Second, float64(90000)},
		{NewCandescent, "candescent", 0, "900"},
		{NewCandescent, "candescent", 90 * time.Second, "90"},
		{NewNikoHealth, "nikohealth", 0, float64(1200)},
		{NewNikoHealth, "nikohealth", 90 * time.Second, float64(90)},
		{NewCandid, "candid", 90 * time.Second, float64(86400)}, // the JWT carries the configured life
	} {
		cfg := DefaultConfig(tt.provider)
		cfg.Lifetime = tt.lifetime
		f := tt.fake(cfg)
		_, resp := tokenOf(t, f)
		f.Close()
		if resp["expires_in"] != tt.want {
			t.Errorf("%s lifetime %v: expires_in %#v, want %#v", tt.provider, tt.lifetime, resp["expires_in"], tt.want)
		}
	}
}

func TestCandescentRefreshRotationAndTransactionID(t *testing.T) {
	cfg := DefaultConfig("candescent")
	f := NewCandescent(cfg)
	defer f.Close()
	auth := basicAuth(cfg.ClientID, cfg.ClientSecret)
	r := post(t, f.TokenURL(), formType, form("grant_type", "password", "username", cfg.Username, "password", cfg.Password, "scope", "accounts"),
		map[string]string{"Authorization": auth, "institutionId": cfg.InstitutionID, "transactionId": "tx-42"})
	if r.status != 200 || r.header.Get("transactionId") != "tx-42" {
		t.Fatalf("password grant: %d, transactionId echoed %q", r.status, r.header.Get("transactionId"))
	}
	first := r.json(t)
	rt1, _ := first["refresh_token"].(string)
	if rt1 == "" || first["refresh_token_expires_in"] != "3600" {
		t.Fatalf("password grant: %v", first)
	}

	// No institutionId on the refresh grant: it is not required there.
	refresh := func(rt, tx string) reply {
		return post(t, f.TokenURL(), formType, form("grant_type", "refresh_token", "refresh_token", rt), map[string]string{"Authorization": auth, "transactionId": tx})
	}
	r = refresh(rt1, "tx-43")
	if r.status != 200 {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	second := r.json(t)
	rt2, _ := second["refresh_token"].(string)
	if rt2 == "" || rt2 == rt1 || second["access_token"] == first["access_token"] || second["scope"] != "accounts" {
		t.Fatalf("refresh did not rotate or lost the scope: %v", second)
	}
	if callAPI(t, f, second["access_token"].(string)) != 200 {
		t.Fatal("API refused the refreshed token")
	}
	// Reuse of the rotated-away token fails, as an error that does not echo it; the new one works.
	r = refresh(rt1, "tx-44")
	if r.status != 400 || !strings.Contains(r.body, `"invalid_grant"`) || strings.Contains(r.body, rt1) {
		t.Fatalf("reused refresh token: %d %s", r.status, r.body)
	}
	if r.header.Get("transactionId") != "tx-44" {
		t.Fatal("transactionId not echoed on an error")
	}
	if r = refresh(rt2, "tx-45"); r.status != 200 {
		t.Fatalf("the rotated refresh token: %d %s", r.status, r.body)
	}
	// The reuse of rt1 counts as a replay (a made-up token would not); outside a minted code's
	// lineage it revokes nothing, which is why rt2 still worked.
	if f.Replays() != 1 {
		t.Fatalf("replays %d, want 1", f.Replays())
	}

	// A request without transactionId is counted; a repeated id is not a new distinct one.
	post(t, f.TokenURL(), formType, "grant_type=client_credentials", map[string]string{"Authorization": auth, "institutionId": cfg.InstitutionID})
	post(t, f.TokenURL(), formType, "grant_type=client_credentials", map[string]string{"Authorization": auth, "institutionId": cfg.InstitutionID, "transactionId": "tx-45"})
	distinct, missing := f.TransactionIDs()
	if distinct != 4 || missing != 1 || f.MissingTransactionID() != 1 || f.Requests() != 6 || f.Replays() != 1 {
		t.Fatalf("transaction ids: %d distinct, %d missing (%d), %d requests; want 4, 1, 6", distinct, missing, f.MissingTransactionID(), f.Requests())
	}
}

// TestNikoHealthBasicRoundTrip: ids and secrets with ':', '+', '%' and spaces survive RFC 6749 Basic.
func TestNikoHealthBasicRoundTrip(t *testing.T) {
	for _, c := range []struct{ id, secret string }{
		{"nikohealth-client", "niko:secret+with space"},
		{"id:with colon", "a+b c:d%e&f="},
	} {
		f := NewNikoHealth(Config{ClientID: c.id, ClientSecret: c.secret})
		ok := post(t, f.TokenURL(), formType, "grant_type=client_credentials", map[string]string{"Authorization": rfc6749Basic(c.id, c.secret)})
		plain := post(t, f.TokenURL(), formType, "grant_type=client_credentials", map[string]string{"Authorization": basicAuth(c.id, c.secret)})
		f.Close()
		if ok.status != 200 || plain.status != 401 {
			t.Errorf("%q/%q: form-encoded Basic %d (want 200), plain Basic %d (want 401)", c.id, c.secret, ok.status, plain.status)
		}
	}
}

func TestRateLimit(t *testing.T) {
	for _, tt := range []struct {
		name        string
		fake        func(Config) *Fake
		provider    string
		minInterval time.Duration
		retryAfter  string
		want        string
	}{
		{"candid derived", NewCandid, "candid", time.Hour, "", "3600"},
		{"rounded up", NewNikoHealth, "nikohealth", 1500 * time.Millisecond, "", "2"},
		{"at least 1", NewPattern, "pattern", 900 * time.Millisecond, "", "1"},
		{"configured", NewCandescent, "candescent", time.Hour, "7", "7"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig(tt.provider)
			cfg.MinInterval, cfg.RetryAfter = tt.minInterval, tt.retryAfter
			f := tt.fake(cfg)
			defer f.Close()
			tokenOf(t, f)
			// Re-send the same request at once: 429 with a JSON body and Retry-After.
			var r reply
			c := f.Config()
			switch tt.provider {
			case "candid":
				r = post(t, f.TokenURL(), jsonType, jsonBody(c.ClientID, c.ClientSecret), nil)
			default:
				r = post(t, f.TokenURL(), formType, "grant_type=client_credentials", map[string]string{"Accept": jsonType,
					"Authorization": basicAuth(c.ClientID, c.ClientSecret), "institutionId": c.InstitutionID})
			}
			if r.status != 429 || r.header.Get("Retry-After") != tt.want {
				t.Fatalf("second request: %d, Retry-After %q, want 429 and %q", r.status, r.header.Get("Retry-After"), tt.want)
			}
			r.json(t)
			if f.Requests() != 2 || f.Issued() != 1 {
				t.Fatalf("requests %d issued %d", f.Requests(), f.Issued())
			}
		})
	}
	// Once the interval has passed the client is admitted again.
	cfg := DefaultConfig("nikohealth")
	cfg.MinInterval = 50 * time.Millisecond
	f := NewNikoHealth(cfg)
	defer f.Close()
	tokenOf(t, f)
	time.Sleep(60 * time.Millisecond)
	tokenOf(t, f)
}

// TestConcurrent hits each fake from 1000 goroutines: every request is counted and, under a rate
// limit, exactly one token is issued.
func TestConcurrent(t *testing.T) {
	const n = 1000
	for _, limited := range []bool{false, true} {
		cfg := DefaultConfig("nikohealth")
		if limited {
			cfg.MinInterval = time.Hour
		}
		f := NewNikoHealth(cfg)
		auth := rfc6749Basic(cfg.ClientID, cfg.ClientSecret)
		var wg sync.WaitGroup
		var mu sync.Mutex
		statuses := map[int]int{}
		sem := make(chan struct{}, 64) // bounds open connections, not concurrency at the fake's counters
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				req, _ := http.NewRequest(http.MethodPost, f.TokenURL(), strings.NewReader("grant_type=client_credentials"))
				req.Header.Set("Content-Type", formType)
				req.Header.Set("Authorization", auth)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "3600" {
					t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
				}
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		f.Close()
		want := map[int]int{200: n}
		if limited {
			want = map[int]int{200: 1, 429: n - 1}
		}
		if len(statuses) != len(want) || statuses[200] != want[200] || statuses[429] != want[429] ||
			f.Requests() != n || f.Issued() != int64(want[200]) {
			t.Fatalf("limited=%v: statuses %v, requests %d, issued %d", limited, statuses, f.Requests(), f.Issued())
		}
	}
}

func TestAPIAndRevoke(t *testing.T) {
	set := StartAll()
	defer set.Close()
	for _, f := range set.All() {
		t.Run(f.Name(), func(t *testing.T) {
			a, _ := tokenOf(t, f)
			b, _ := tokenOf(t, f)
			if callAPI(t, f, a) != 200 || callAPI(t, f, b) != 200 {
				t.Fatal("API refused a fresh token")
			}
			if r := do(t, http.MethodGet, f.APIURL(), "", "", map[string]string{"Authorization": "bearer " + a}); r.status != 200 {
				t.Fatal("API refused a lowercase bearer scheme")
			}
			for _, h := range []string{"", "Bearer", "Bearer made-up", "Basic " + a, "Bearer " + a + "x"} {
				if r := do(t, http.MethodGet, f.APIURL(), "", "", map[string]string{"Authorization": h}); r.status != 401 || r.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("Authorization %q: %d, want 401 with WWW-Authenticate", h, r.status)
				}
			}
			f.Revoke(a)
			if callAPI(t, f, a) != 401 || callAPI(t, f, b) != 200 {
				t.Fatal("Revoke: the revoked token works or the other one does not")
			}
			f.RevokeAll()
			if callAPI(t, f, b) != 401 {
				t.Fatal("RevokeAll: a token still works")
			}
			c, _ := tokenOf(t, f)
			if callAPI(t, f, c) != 200 {
				t.Fatal("a token issued after RevokeAll is refused")
			}
			f.RefuseAPI(true)
			if callAPI(t, f, c) != 401 {
				t.Fatal("RefuseAPI(true): a token works")
			}
			f.RefuseAPI(false)
			if callAPI(t, f, c) != 200 {
				t.Fatal("RefuseAPI(false): the token is refused")
			}
			if f.Issued() != 3 || f.Requests() != 3 {
				t.Fatalf("issued %d, requests %d, want 3 and 3", f.Issued(), f.Requests())
			}
		})
	}
}

func TestExpiredTokenRefused(t *testing.T) {
	cfg := DefaultConfig("pattern")
	cfg.Lifetime = 400 * time.Millisecond
	f := NewPattern(cfg)
	defer f.Close()
	tok, resp := tokenOf(t, f)
	if resp["expires_in"] != float64(400) {
		t.Fatalf("expires_in %v, want 400 ms", resp["expires_in"])
	}
	if callAPI(t, f, tok) != 200 {
		t.Fatal("fresh token refused")
	}
	time.Sleep(500 * time.Millisecond)
	if callAPI(t, f, tok) != 401 {
		t.Fatal("expired token accepted")
	}
}

func TestIntercept(t *testing.T) {
	f := NewNikoHealth(DefaultConfig("nikohealth"))
	defer f.Close()
	var seen atomic.Int64
	f.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		seen.Add(1)
		if r.Header.Get("X-Fault") == "" {
			return false // fall through to the real handler
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>bad gateway</html>")
		return true
	})
	c := f.Config()
	h := map[string]string{"Authorization": rfc6749Basic(c.ClientID, c.ClientSecret), "X-Fault": "1"}
	if r := post(t, f.TokenURL(), formType, "grant_type=client_credentials", h); r.status != 502 || !strings.Contains(r.body, "<html>") {
		t.Fatalf("intercepted: %d %s", r.status, r.body)
	}
	delete(h, "X-Fault")
	if r := post(t, f.TokenURL(), formType, "grant_type=client_credentials", h); r.status != 200 {
		t.Fatalf("not intercepted: %d %s", r.status, r.body)
	}
	f.Intercept(nil)
	h["X-Fault"] = "1"
	if r := post(t, f.TokenURL(), formType, "grant_type=client_credentials", h); r.status != 200 {
		t.Fatalf("after Intercept(nil): %d", r.status)
	}
	if seen.Load() != 2 || f.Requests() != 3 || f.Issued() != 2 {
		t.Fatalf("interceptor saw %d, requests %d, issued %d; want 2, 3, 2", seen.Load(), f.Requests(), f.Issued())
	}
}

func TestStartAll(t *testing.T) {
	set := StartAll()
	paths := map[string]string{"candid": CandidPath, "pattern": PatternPath, "candescent": CandescentPath, "nikohealth": NikoHealthPath}
	urls := map[string]bool{}
	for _, f := range set.All() {
		u, err := url.Parse(f.TokenURL())
		if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Path != paths[f.Name()] {
			t.Fatalf("%s: token URL %q", f.Name(), f.TokenURL())
		}
		if f.APIURL() != f.URL()+"/api/resource" {
			t.Fatalf("%s: API URL %q", f.Name(), f.APIURL())
		}
		urls[f.URL()] = true
		if c := f.Config(); c.ClientID != f.Name()+"-client" || !strings.Contains(c.ClientSecret, "secret") {
			t.Fatalf("%s: default credentials %q", f.Name(), c.ClientID)
		}
		tokenOf(t, f)
	}
	if len(urls) != 4 {
		t.Fatalf("%d distinct servers, want 4", len(urls))
	}
	set.Close()
	if _, err := http.Post(set.Candid.TokenURL(), jsonType, strings.NewReader("{}")); err == nil {
		t.Fatal("a closed fake still answers")
	}
}

// TestCandescentPKCE: CodeChallenge, when set, is what code_verifier must hash to; otherwise the
// challenge is derived from CodeVerifier.
func TestCandescentPKCE(t *testing.T) {
	const verifier = "client-made-verifier-0123456789-0123456789"
	withChallenge := DefaultConfig("candescent")
	withChallenge.CodeChallenge = S256(verifier) // wins over DefaultConfig's CodeVerifier
	if S256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" {
		t.Fatal("S256 differs from RFC 7636 appendix B")
	}
	for _, tt := range []struct {
		name     string
		cfg      Config
		verifier string
		status   int
	}{
		{"challenge, right verifier", withChallenge, verifier, 200},
		{"challenge, configured verifier", withChallenge, withChallenge.CodeVerifier, 400},
		{"challenge, no verifier", withChallenge, "", 400},
		{"derived, configured verifier", DefaultConfig("candescent"), DefaultConfig("candescent").CodeVerifier, 200},
		{"derived, other verifier", DefaultConfig("candescent"), verifier, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := NewCandescent(tt.cfg)
			defer f.Close()
			c := tt.cfg
			r := post(t, f.TokenURL(), formType, form("grant_type", "authorization_code", "code", c.Code, "redirect_uri", c.RedirectURI, "code_verifier", tt.verifier),
				map[string]string{"Authorization": basicAuth(c.ClientID, c.ClientSecret), "institutionId": c.InstitutionID, "transactionId": "t"})
			if r.status != tt.status || tt.status == 400 && !strings.Contains(r.body, `"invalid_grant"`) {
				t.Fatalf("%d %s, want %d", r.status, r.body, tt.status)
			}
		})
	}
}

// TestCandescentAuthorizedCode: a code minted by Authorize works once; presenting it again is a
// replay that revokes everything it granted; its lineage's access tokens have the life asked for;
// Config.Code keeps working any number of times.
func TestCandescentAuthorizedCode(t *testing.T) {
	cfg := DefaultConfig("candescent")
	f := NewCandescent(cfg)
	defer f.Close()
	h := map[string]string{"Authorization": basicAuth(cfg.ClientID, cfg.ClientSecret), "institutionId": cfg.InstitutionID, "transactionId": "tx-1"}
	exchange := func(code, verifier string) reply {
		return post(t, f.TokenURL(), formType, form("grant_type", "authorization_code", "code", code, "redirect_uri", cfg.RedirectURI,
			"code_verifier", verifier, "scope", "openid offline_access"), h)
	}
	refresh := func(rt string) reply {
		return post(t, f.TokenURL(), formType, form("grant_type", "refresh_token", "refresh_token", rt), h)
	}

	// Minted over HTTP, as hosts in other languages do, with 2 s access tokens.
	r := post(t, f.URL()+"/_authorize", formType, "lifetime_ms=2000", nil)
	code, _ := r.json(t)["code"].(string)
	if r.status != 200 || code == "" {
		t.Fatalf("/_authorize: %d %s", r.status, r.body)
	}
	if r = exchange(code, "wrong-verifier-0123456789-0123456789-0123"); r.status != 400 || f.Replays() != 0 {
		t.Fatalf("a wrong verifier: %d %s, replays %d (it spends nothing)", r.status, r.body, f.Replays())
	}
	r = exchange(code, cfg.CodeVerifier)
	first := r.json(t)
	at1, _ := first["access_token"].(string)
	rt1, _ := first["refresh_token"].(string)
	if r.status != 200 || first["expires_in"] != "2" || at1 == "" || rt1 == "" {
		t.Fatalf("exchange: %d %s", r.status, r.body)
	}
	r = refresh(rt1)
	second := r.json(t)
	at2, _ := second["access_token"].(string)
	rt2, _ := second["refresh_token"].(string)
	if r.status != 200 || second["expires_in"] != "2" || rt2 == "" {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	if callAPI(t, f, at1) != 200 || callAPI(t, f, at2) != 200 || f.Replays() != 0 {
		t.Fatalf("before any replay: replays %d", f.Replays())
	}
	// The code again: refused, counted, and every token of the lineage revoked.
	if r = exchange(code, cfg.CodeVerifier); r.status != 400 || !strings.Contains(r.body, `"invalid_grant"`) || f.Replays() != 1 {
		t.Fatalf("the code again: %d %s, replays %d", r.status, r.body, f.Replays())
	}
	if callAPI(t, f, at1) != 401 || callAPI(t, f, at2) != 401 {
		t.Fatal("the lineage's access tokens still work after the code's replay")
	}
	if r = refresh(rt2); r.status != 400 || f.Replays() != 1 {
		t.Fatalf("the lineage's live refresh token after the replay: %d %s, replays %d (revoked, not replayed)", r.status, r.body, f.Replays())
	}

	// A used refresh token of a lineage presented again revokes the lineage too.
	code2 := f.Authorize(0)
	r = exchange(code2, cfg.CodeVerifier)
	rtA, _ := r.json(t)["refresh_token"].(string)
	if r.status != 200 || r.json(t)["expires_in"] != "900" {
		t.Fatalf("exchange with the fake's lifetime: %d %s", r.status, r.body)
	}
	r = refresh(rtA)
	atB, _ := r.json(t)["access_token"].(string)
	rtB, _ := r.json(t)["refresh_token"].(string)
	if r = refresh(rtA); r.status != 400 || f.Replays() != 2 {
		t.Fatalf("a used refresh token again: %d %s, replays %d", r.status, r.body, f.Replays())
	}
	if callAPI(t, f, atB) != 401 {
		t.Fatal("the lineage's access token works after a refresh token's replay")
	}
	if r = refresh(rtB); r.status != 400 {
		t.Fatalf("the lineage's newest refresh token after a replay: %d %s", r.status, r.body)
	}

	// Config.Code is not minted: it works every time, and counts no replay.
	for i := 0; i < 2; i++ {
		if r = exchange(cfg.Code, cfg.CodeVerifier); r.status != 200 {
			t.Fatalf("Config.Code, exchange %d: %d %s", i+1, r.status, r.body)
		}
	}
	var stats map[string]int64
	if err := json.Unmarshal([]byte(do(t, http.MethodGet, f.URL()+"/_stats", "", "", nil).body), &stats); err != nil || stats["replays"] != 2 {
		t.Fatalf("/_stats: %v %v, want replays 2", stats, err)
	}
	for _, bad := range []string{"lifetime_ms=999", "lifetime_ms=x"} {
		if r = post(t, f.URL()+"/_authorize", formType, bad, nil); r.status != 400 {
			t.Fatalf("/_authorize %s: %d", bad, r.status)
		}
	}
	if r = do(t, http.MethodGet, f.URL()+"/_authorize", "", "", nil); r.status != 405 {
		t.Fatalf("GET /_authorize: %d", r.status)
	}
}

// TestCandescentCodeRace: of concurrent exchanges of one minted code, one gets tokens and every other
// one is a replay.
func TestCandescentCodeRace(t *testing.T) {
	cfg := DefaultConfig("candescent")
	f := NewCandescent(cfg)
	defer f.Close()
	code := f.Authorize(0)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := post(t, f.TokenURL(), formType, form("grant_type", "authorization_code", "code", code, "redirect_uri", cfg.RedirectURI, "code_verifier", cfg.CodeVerifier),
				map[string]string{"Authorization": basicAuth(cfg.ClientID, cfg.ClientSecret), "institutionId": cfg.InstitutionID, "transactionId": randomHex(8)})
			if r.status == 200 {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || f.Replays() != 7 {
		t.Fatalf("%d exchanges succeeded, %d replays; want 1 and 7", ok.Load(), f.Replays())
	}
}
