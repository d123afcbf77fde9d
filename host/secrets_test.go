package host

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// recordingCache keeps every key and value that passes through it.
type recordingCache struct {
	Cache
	mu  sync.Mutex
	all bytes.Buffer
	// lineage holds the values of grant lineages (keys ending "/grant"): the one place a refresh
	// token is meant to be (abi/ABI.md, "One-time grants and their lineage").
	lineage bytes.Buffer
}

func (r *recordingCache) record(key, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all.WriteString(key)
	r.all.WriteByte('\n')
	if strings.HasSuffix(key, "/grant") {
		r.lineage.WriteString(value)
		r.lineage.WriteByte('\n')
		return
	}
	r.all.WriteString(value)
	r.all.WriteByte('\n')
}

func (r *recordingCache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, ok, err := r.Cache.Get(ctx, key)
	r.record(key, string(v))
	return v, ok, err
}

func (r *recordingCache) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	r.record(key, string(value))
	return r.Cache.Set(ctx, key, value, ttl)
}

func (r *recordingCache) Delete(ctx context.Context, key string) error {
	r.record(key, "")
	return r.Cache.Delete(ctx, key)
}

// TestSecretsNeverLeak runs every provider and grant, every error path and the faults with canary
// secrets, and fails if a canary shows up in a log, an error, the metrics or the cache (keys, and
// values but for access tokens and the refresh tokens of grant lineages, the only credentials a cache
// may hold).
func TestSecretsNeverLeak(t *testing.T) {
	// Every canary holds the characters an encoding changes: + / = & " \ < > % and spaces.
	const special = ` +/=&"\<>% `
	secretOf := func(p string) string { return "CANARY-" + p + special + "secret" }
	password, verifier, code := "CANARY-password"+special+"x", "CANARY-pkce-verifier-0123456789"+special+"0123456789", "CANARY-auth-code"+special+"x"
	canaries := []string{secretOf("candid"), secretOf("pattern"), secretOf("candescent"), secretOf("nikohealth"), password, verifier, code}
	cfg := func(p string) providertest.Config {
		c := providertest.DefaultConfig(p)
		c.ClientSecret = secretOf(p)
		if p == "candescent" {
			c.Password, c.CodeVerifier, c.Code = password, verifier, code
		}
		return c
	}
	set := &providertest.Set{
		Candid: providertest.NewCandid(cfg("candid")), Pattern: providertest.NewPattern(cfg("pattern")),
		Candescent: providertest.NewCandescent(cfg("candescent")), NikoHealth: providertest.NewNikoHealth(cfg("nikohealth")),
	}
	defer set.Close()

	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&logs, &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	cache := &recordingCache{Cache: NewMemoryCache(0)}
	c := newRuntime(t, WithCache(cache), WithLogger(logger))
	ctx := context.Background()
	var errs bytes.Buffer
	noteErr := func(err error) {
		if err != nil {
			errs.WriteString(err.Error())
			b, _ := json.Marshal(err)
			errs.Write(b)
		}
	}

	// Every provider and grant, then the refresh grant with the refresh token issued.
	var refreshTokens []string
	for _, req := range cases(set) {
		tok, err := c.Token(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", req.Provider, err)
		}
		if tok.RefreshToken != "" {
			refreshTokens = append(refreshTokens, tok.RefreshToken)
			rt := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: req.ClientID,
				ClientSecret: req.ClientSecret, RefreshToken: tok.RefreshToken, TokenURL: req.TokenURL}
			next, err := c.Token(ctx, rt)
			noteErr(err)
			if next != nil {
				refreshTokens = append(refreshTokens, next.RefreshToken)
			}
			rt.Force = true // reuse of a rotated refresh token: invalid_grant
			_, err = c.Token(ctx, rt)
			noteErr(err)
		}
		noteErr(c.Invalidate(ctx, req))
	}
	// Error paths: wrong secrets, a provider that echoes what it got, faults.
	for _, req := range cases(set) {
		wrong := req
		wrong.ClientSecret = secretOf("wrong")
		_, err := c.Token(ctx, wrong)
		noteErr(err)
	}
	canaries = append(canaries, secretOf("wrong"))
	echo := func(w http.ResponseWriter, r *http.Request) bool {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		desc, _ := json.Marshal(echoed(string(body), r.Header.Get("Authorization")))
		_, _ = w.Write([]byte(`{"error":"invalid_request","error_description":` + string(desc) + `}`))
		return true
	}
	faults := []func(http.ResponseWriter, *http.Request) bool{
		echo,
		func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(503); return true },
		func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			return true
		},
		func(w http.ResponseWriter, r *http.Request) bool { resetConn(w, r); return true },
		func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = w.Write([]byte("<html>" + r.URL.RawQuery))
			return true
		},
	}
	for _, fault := range faults {
		for _, f := range set.All() {
			f.Intercept(fault)
		}
		for _, req := range cases(set) {
			req.Force = true
			_, err := c.Token(ctx, req)
			noteErr(err)
		}
	}
	// A transport whose error message echoes the request: the plugin redacts host messages too.
	echoing := newRuntime(t, WithCache(cache), WithLogger(logger), WithHTTPTransport(echoTransport{}))
	for _, req := range cases(set) {
		req.Force = true
		_, err := echoing.Token(ctx, req)
		if err == nil {
			t.Fatal("the echoing transport gave a token")
		}
		noteErr(err)
	}
	if errs.Len() == 0 {
		t.Fatal("the error paths produced no errors: the test is not testing")
	}
	if !strings.Contains(errs.String(), "[redacted]") {
		t.Fatal("nothing was redacted: the echoes did not reach an error")
	}

	cacheText := cache.all.String()
	metrics := c.Metrics().String() + echoing.Metrics().String()
	for _, req := range cases(set) {
		for _, secret := range []string{req.ClientSecret, req.Password, req.Code, req.CodeVerifier} {
			if secret == "" {
				continue
			}
			for name, sp := range spellings(req.ClientID, secret) {
				for where, text := range map[string]string{"logs": logs.String(), "errors": errs.String(), "metrics": metrics, "cache": cacheText} {
					if strings.Contains(text, sp) {
						t.Errorf("%s of the %s canary appears in %s", name, req.Provider, where)
					}
				}
			}
		}
	}
	for _, secret := range canaries {
		if b64 := base64.StdEncoding.EncodeToString([]byte(secret)); strings.Contains(logs.String()+errs.String()+cacheText, b64[:len(b64)-4]) {
			t.Errorf("%q appears base64-encoded", secret)
		}
	}
	for _, req := range cases(set) { // the Basic credentials a provider could echo
		for _, cred := range []string{req.ClientID + ":" + req.ClientSecret, url.QueryEscape(req.ClientID) + ":" + url.QueryEscape(req.ClientSecret)} {
			if strings.Contains(errs.String()+logs.String(), base64.StdEncoding.EncodeToString([]byte(cred))) {
				t.Errorf("Basic credentials of %s appear in errors or logs", req.Provider)
			}
		}
	}
	for _, secret := range append(canaries, refreshTokens...) {
		for where, text := range map[string]string{"logs": logs.String(), "errors": errs.String(),
			"metrics": metrics, "cache": cacheText} {
			if strings.Contains(text, secret) {
				t.Errorf("%q appears in %s", secret, where)
			}
		}
		// An escaped form would leak as much.
		if esc, _ := json.Marshal(secret); strings.Contains(logs.String()+errs.String()+cacheText, strings.Trim(string(esc), `"`)) {
			t.Errorf("%q appears escaped", secret)
		}
	}
	if logs.Len() == 0 || !strings.Contains(cacheText, "tokenwasm/1/") {
		t.Fatal("nothing was logged or cached: the test is not testing")
	}
	// The lineages hold refresh tokens and nothing else of the canaries.
	lineage := cache.lineage.String()
	if !strings.Contains(lineage, `"refresh_token"`) {
		t.Fatal("no grant lineage was written: the test is not testing")
	}
	for _, secret := range canaries {
		if strings.Contains(lineage, secret) {
			t.Errorf("%q appears in a lineage", secret)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// echoed is what a provider (or a transport) that echoes everything writes back: the body and the
// Authorization header as sent, the body with %20 for spaces, and JSON-escaped copies (as Go and as
// JavaScript escape it).
func echoed(body, auth string) string {
	goJSON, _ := json.Marshal(body)
	js := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(body)
	return strings.Join([]string{body, auth, strings.ReplaceAll(body, "+", "%20"), string(goJSON), js}, " | ")
}

// echoTransport fails every request with an error that echoes it.
type echoTransport struct{}

func (echoTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(r.Body)
	return nil, errors.New("connection reset; sent: " + echoed(string(body), r.Header.Get("Authorization")))
}

// spellings lists the encodings a secret travels or is echoed in: raw, form-encoded with + and with
// %20, JSON-escaped (Go's HTML-safe and the minimal form), and base64 of it and of the Basic
// credentials (as given and form-encoded first, standard and URL-safe alphabets).
func spellings(id, secret string) map[string]string {
	goJSON, _ := json.Marshal(secret)
	form := url.QueryEscape(secret)
	out := map[string]string{
		"raw": secret, "form +": form, "form %20": strings.ReplaceAll(form, "+", "%20"),
		"json (Go)": strings.Trim(string(goJSON), `"`), "json (minimal)": strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(secret),
		"base64": base64.RawStdEncoding.EncodeToString([]byte(secret)), "base64url": base64.RawURLEncoding.EncodeToString([]byte(secret)),
	}
	for name, cred := range map[string]string{"id:secret": id + ":" + secret, "rfc6749 id:secret": url.QueryEscape(id) + ":" + url.QueryEscape(secret)} {
		out["base64 "+name] = base64.RawStdEncoding.EncodeToString([]byte(cred))
		out["base64url "+name] = base64.RawURLEncoding.EncodeToString([]byte(cred))
	}
	return out
}
