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
	"testing"
	"time"
)

type call struct {
	name    string
	fake    func(Config) *Fake
	cfg     Config
	ctype   string
	body    string
	headers map[string]string
	status  int
	want    string // substring of the response body
}

func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

func TestFakes(t *testing.T) {
	cand, pat, desc, niko := DefaultConfig("candid"), DefaultConfig("pattern"), DefaultConfig("candescent"), DefaultConfig("nikohealth")
	form := "application/x-www-form-urlencoded"
	descH := map[string]string{"Authorization": basicAuth(desc.ClientID, desc.ClientSecret), "institutionId": desc.InstitutionID, "transactionId": "tx-1"}
	nikoRFC := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(niko.ClientID)+":"+url.QueryEscape(niko.ClientSecret)))
	tests := []call{
		{"candid json", NewCandid, cand, "application/json", `{"client_id":"candid-client","client_secret":"` + cand.ClientSecret + `"}`, nil, 200, `"expires_in":86400`},
		{"candid form", NewCandid, cand, form, "client_id=candid-client&client_secret=" + cand.ClientSecret, nil, 200, `"token_type":"Bearer"`},
		{"candid 415", NewCandid, cand, "text/plain", "x", nil, 415, "Invalid Content Type"},
		{"candid 401", NewCandid, cand, "application/json", `{"client_id":"candid-client","client_secret":"wrong"}`, nil, 401, "invalid_client"},
		{"pattern ok", NewPattern, pat, form, "grant_type=client_credentials", map[string]string{"Accept": "application/json", "Authorization": basicAuth(pat.ClientID, pat.ClientSecret)}, 200, `"expires_in":3600000`},
		{"pattern bearer lowercase", NewPattern, pat, form, "grant_type=client_credentials", map[string]string{"Accept": "application/json", "Authorization": basicAuth(pat.ClientID, pat.ClientSecret)}, 200, `"token_type":"bearer"`},
		{"pattern 406", NewPattern, pat, form, "grant_type=client_credentials", map[string]string{"Authorization": basicAuth(pat.ClientID, pat.ClientSecret)}, 406, "Accept"},
		{"pattern no basic", NewPattern, pat, form, "grant_type=client_credentials&client_id=pattern-client", map[string]string{"Accept": "application/json"}, 401, "invalid_client"},
		{"pattern grant", NewPattern, pat, form, "grant_type=password", map[string]string{"Accept": "application/json", "Authorization": basicAuth(pat.ClientID, pat.ClientSecret)}, 400, "unsupported_grant_type"},
		{"candescent cc", NewCandescent, desc, form, "grant_type=client_credentials", descH, 200, `"expires_in":"900"`},
		{"candescent no institution", NewCandescent, desc, form, "grant_type=client_credentials", map[string]string{"Authorization": descH["Authorization"]}, 400, "institutionId"},
		{"candescent password", NewCandescent, desc, form, "grant_type=password&username=jane.doe&password=" + url.QueryEscape(desc.Password), descH, 200, "refresh_token"},
		{"candescent bad password", NewCandescent, desc, form, "grant_type=password&username=jane.doe&password=x", descH, 400, "invalid_grant"},
		{"candescent code no verifier", NewCandescent, desc, form, "grant_type=authorization_code&code=fake-auth-code&redirect_uri=" + url.QueryEscape(desc.RedirectURI), descH, 400, "invalid_grant"},
		{"candescent json 415", NewCandescent, desc, "application/json", "{}", descH, 415, "Unsupported"},
		{"niko basic rfc6749", NewNikoHealth, niko, form, "grant_type=client_credentials", map[string]string{"Authorization": nikoRFC}, 200, `"scope":"external"`},
		{"niko plain basic refused", NewNikoHealth, niko, form, "grant_type=client_credentials", map[string]string{"Authorization": basicAuth(niko.ClientID, niko.ClientSecret)}, 401, "invalid_client"},
		{"niko body creds", NewNikoHealth, niko, form, "grant_type=client_credentials&client_id=nikohealth-client&client_secret=" + url.QueryEscape(niko.ClientSecret), nil, 200, `"expires_in":1200`},
		{"niko scope", NewNikoHealth, niko, form, "grant_type=client_credentials&scope=admin", map[string]string{"Authorization": nikoRFC}, 400, "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.fake(tt.cfg)
			defer f.Close()
			status, body, _ := post(t, f.TokenURL(), tt.ctype, tt.body, tt.headers)
			if status != tt.status || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d %s, want %d with %q", status, body, tt.status, tt.want)
			}
			if strings.Contains(body, tt.cfg.ClientSecret) {
				t.Fatal("response echoes the secret")
			}
			if f.Requests() != 1 || (status == 200) != (f.Issued() == 1) {
				t.Fatalf("requests %d issued %d", f.Requests(), f.Issued())
			}
		})
	}
}

func post(t *testing.T, u, ctype, body string, headers map[string]string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestCandidJWT(t *testing.T) {
	f := NewCandid(DefaultConfig("candid"))
	defer f.Close()
	_, body, _ := post(t, f.TokenURL(), "application/json", `{"client_id":"candid-client","client_secret":"`+f.Config().ClientSecret+`"}`, nil)
	var resp struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(resp.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", resp.AccessToken)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(PublicKey(), crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("signature: %v", err)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Exp int64 `json:"exp"`
	}
	_ = json.Unmarshal(payload, &claims)
	if d := time.Until(time.Unix(claims.Exp, 0)); d < 5*time.Hour-time.Minute || d > 5*time.Hour {
		t.Fatalf("exp in %v, want 5h", d)
	}
}

func TestCandescentRefreshRotationAndTransactionID(t *testing.T) {
	cfg := DefaultConfig("candescent")
	f := NewCandescent(cfg)
	defer f.Close()
	h := map[string]string{"Authorization": basicAuth(cfg.ClientID, cfg.ClientSecret), "institutionId": cfg.InstitutionID, "transactionId": "tx-42"}
	_, body, hdr := post(t, f.TokenURL(), formType, "grant_type=password&username=jane.doe&password="+url.QueryEscape(cfg.Password), h)
	if hdr.Get("transactionId") != "tx-42" {
		t.Fatalf("transactionId not echoed: %v", hdr)
	}
	var r struct {
		RefreshToken string `json:"refresh_token"`
	}
	_ = json.Unmarshal([]byte(body), &r)
	delete(h, "institutionId") // not required for refresh_token
	refresh := "grant_type=refresh_token&refresh_token=" + r.RefreshToken
	if s, b, _ := post(t, f.TokenURL(), formType, refresh, h); s != 200 || strings.Contains(b, r.RefreshToken) {
		t.Fatalf("refresh: %d %s", s, b)
	}
	if s, _, _ := post(t, f.TokenURL(), formType, refresh, h); s != 400 {
		t.Fatalf("reused refresh token: %d, want 400", s)
	}
	if distinct, missing := f.TransactionIDs(); distinct != 1 || missing != 0 {
		t.Fatalf("transaction ids: %d distinct, %d missing", distinct, missing)
	}
}

func TestRateLimitAndAPI(t *testing.T) {
	cfg := DefaultConfig("nikohealth")
	cfg.MinInterval = time.Hour
	f := NewNikoHealth(cfg)
	defer f.Close()
	h := map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(cfg.ClientID)+":"+url.QueryEscape(cfg.ClientSecret)))}
	var wg sync.WaitGroup
	statuses := make(chan int, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _, hdr := post(t, f.TokenURL(), formType, "grant_type=client_credentials", h)
			if s == 429 && hdr.Get("Retry-After") != "3600" {
				t.Errorf("Retry-After = %q", hdr.Get("Retry-After"))
			}
			statuses <- s
		}()
	}
	wg.Wait()
	close(statuses)
	ok := 0
	for s := range statuses {
		if s == 200 {
			ok++
		}
	}
	if ok != 1 || f.Requests() != 20 || f.Issued() != 1 {
		t.Fatalf("%d successes, %d requests, %d issued", ok, f.Requests(), f.Issued())
	}
	f.RevokeAll()
	req, _ := http.NewRequest(http.MethodGet, f.APIURL(), nil)
	req.Header.Set("Authorization", "Bearer nope")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("API with an unknown token: %d", resp.StatusCode)
	}
}
