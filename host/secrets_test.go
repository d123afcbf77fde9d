package host

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
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
}

func (r *recordingCache) record(parts ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range parts {
		r.all.WriteString(p)
		r.all.WriteByte('\n')
	}
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
	r.record(key)
	return r.Cache.Delete(ctx, key)
}

// TestSecretsNeverLeak runs every provider and grant, every error path and the faults with canary
// secrets, and fails if a canary shows up in a log, an error, the metrics or the cache (keys, and
// values but for access tokens, the only credential a cache may hold).
func TestSecretsNeverLeak(t *testing.T) {
	canaries := []string{"CANARY-candid-secret", "CANARY-pattern-secret", "CANARY-candescent-secret",
		"CANARY:niko secret+", "CANARY-password", "CANARY-pkce-verifier-0123456789-0123456789", "CANARY-auth-code"}
	cfg := func(p string) providertest.Config {
		c := providertest.DefaultConfig(p)
		c.ClientSecret = "CANARY-" + p + "-secret"
		if p == "nikohealth" {
			c.ClientSecret = "CANARY:niko secret+"
		}
		if p == "candescent" {
			c.Password, c.CodeVerifier, c.Code = "CANARY-password", "CANARY-pkce-verifier-0123456789-0123456789", "CANARY-auth-code"
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
	c := newClient(t, WithCache(cache), WithLogger(logger))
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
		wrong.ClientSecret = "CANARY-wrong-secret"
		_, err := c.Token(ctx, wrong)
		noteErr(err)
	}
	canaries = append(canaries, "CANARY-wrong-secret")
	echo := func(w http.ResponseWriter, r *http.Request) bool {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		desc, _ := json.Marshal(string(body) + " " + r.Header.Get("Authorization"))
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
	if errs.Len() == 0 {
		t.Fatal("the error paths produced no errors: the test is not testing")
	}

	cacheText := cache.all.String()
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
			"metrics": c.Metrics().String(), "cache": cacheText} {
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
