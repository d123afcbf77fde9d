// Package providertest runs strict fakes of the providers' token endpoints on loopback, as
// net/http/httptest does for servers: for tests, benchmarks and the demo. Each fake follows its
// provider's document in shared/seeds (content type, client authentication, units, errors) and
// counts the requests it receives, so tests can assert how many reached the provider.
package providertest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets a fake's credentials and behaviour. Zero fields take the provider's defaults.
type Config struct {
	ClientID      string `json:"client_id"`
	ClientSecret  string `json:"client_secret"`
	Username      string `json:"username,omitempty"`       // Candescent password grant
	Password      string `json:"password,omitempty"`       // Candescent password grant
	InstitutionID string `json:"institution_id,omitempty"` // Candescent institutionId header
	Code          string `json:"code,omitempty"`           // Candescent authorization_code grant
	RedirectURI   string `json:"redirect_uri,omitempty"`   // Candescent authorization_code grant
	CodeVerifier  string `json:"code_verifier,omitempty"`  // PKCE: the fake checks S256 of it
	// Lifetime is the access token's life; zero means the provider's documented one.
	Lifetime time.Duration `json:"-"`
	// MinInterval makes token requests closer together than this get 429 with Retry-After.
	MinInterval time.Duration `json:"-"`
	// RetryAfter is the Retry-After sent with a 429 ("" = MinInterval in whole seconds, at least 1).
	RetryAfter string `json:"-"`
}

// Fake is one provider's fake token endpoint, plus /api/resource, an API that accepts only the
// fake's unexpired, unrevoked tokens (200) and answers 401 otherwise.
type Fake struct {
	srv      *httptest.Server
	name     string
	path     string
	cfg      Config
	issue    func(f *Fake, w http.ResponseWriter, r *http.Request)
	requests atomic.Int64
	issued   atomic.Int64
	apiCalls atomic.Int64
	refuse   atomic.Bool

	mu          sync.Mutex
	tokens      map[string]time.Time // access token -> expiry
	refresh     map[string]bool      // live refresh tokens
	lastIssue   time.Time
	intercept   func(w http.ResponseWriter, r *http.Request) bool
	txIDs       map[string]bool
	missingTxID int64
}

func newFake(name, path string, cfg Config, issue func(*Fake, http.ResponseWriter, *http.Request)) *Fake {
	f := &Fake{name: name, path: path, cfg: cfg, issue: issue,
		tokens: map[string]time.Time{}, refresh: map[string]bool{}, txIDs: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc(path, f.serveToken)
	mux.HandleFunc("/api/resource", f.serveAPI)
	mux.HandleFunc("/_stats", f.serveStats)
	f.srv = httptest.NewServer(mux)
	return f
}

// Name returns the provider name the fake stands for ("candid", ...).
func (f *Fake) Name() string { return f.name }

// URL returns the fake's base URL (http://127.0.0.1:port).
func (f *Fake) URL() string { return f.srv.URL }

// TokenURL returns the full URL of the token endpoint.
func (f *Fake) TokenURL() string { return f.srv.URL + f.path }

// APIURL returns the URL of the protected API.
func (f *Fake) APIURL() string { return f.srv.URL + "/api/resource" }

// Config returns the fake's configuration, credentials included (they are fake).
func (f *Fake) Config() Config { return f.cfg }

// Requests returns the number of token requests received, rejected ones included.
func (f *Fake) Requests() int64 { return f.requests.Load() }

// Issued returns the number of access tokens issued.
func (f *Fake) Issued() int64 { return f.issued.Load() }

// APICalls returns the number of calls to the protected API.
func (f *Fake) APICalls() int64 { return f.apiCalls.Load() }

// Revoke makes the API refuse accessToken from now on.
func (f *Fake) Revoke(accessToken string) {
	f.mu.Lock()
	delete(f.tokens, accessToken)
	f.mu.Unlock()
}

// RevokeAll makes the API refuse every token issued so far.
func (f *Fake) RevokeAll() {
	f.mu.Lock()
	f.tokens = map[string]time.Time{}
	f.mu.Unlock()
}

// RefuseAPI makes the API answer 401 to every token, new ones included, until called with false.
func (f *Fake) RefuseAPI(refuse bool) { f.refuse.Store(refuse) }

// Intercept installs h in front of the token handler (nil removes it): when h returns true it has
// answered the request. Use it to inject faults: 5xx, stalls, HTML pages, dropped connections.
func (f *Fake) Intercept(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.intercept = h
	f.mu.Unlock()
}

// TransactionIDs returns how many distinct transactionId headers were received and how many token
// requests lacked one (Candescent).
func (f *Fake) TransactionIDs() (distinct, missing int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.txIDs)), f.missingTxID
}

// Close shuts the fake down.
func (f *Fake) Close() { f.srv.Close() }

func (f *Fake) serveToken(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	f.mu.Lock()
	h := f.intercept
	f.mu.Unlock()
	if h != nil && h(w, r) {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if f.cfg.MinInterval > 0 && !f.admit() {
		ra := f.cfg.RetryAfter
		if ra == "" {
			ra = strconv.Itoa(max(1, int(f.cfg.MinInterval/time.Second)))
		}
		w.Header().Set("Retry-After", ra)
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"message": "Too Many Requests"})
		return
	}
	f.issue(f, w, r)
}

// admit enforces MinInterval between token requests.
func (f *Fake) admit() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if !f.lastIssue.IsZero() && now.Sub(f.lastIssue) < f.cfg.MinInterval {
		return false
	}
	f.lastIssue = now
	return true
}

func (f *Fake) serveAPI(w http.ResponseWriter, r *http.Request) {
	f.apiCalls.Add(1)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	exp, known := f.tokens[tok]
	f.mu.Unlock()
	if !ok || !known || time.Now().After(exp) || f.refuse.Load() {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_token"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (f *Fake) serveStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]int64{"requests": f.Requests(), "issued": f.Issued(), "api_calls": f.APICalls()})
}

// lifetime returns the configured life or the provider's default.
func (f *Fake) lifetime(def time.Duration) time.Duration {
	if f.cfg.Lifetime > 0 {
		return f.cfg.Lifetime
	}
	return def
}

// remember records an issued access token for the API.
func (f *Fake) remember(tok string, life time.Duration) {
	f.issued.Add(1)
	f.mu.Lock()
	f.tokens[tok] = time.Now().Add(life)
	f.mu.Unlock()
}

// mediaType returns the request's media type without parameters.
func mediaType(r *http.Request) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

const formType = "application/x-www-form-urlencoded"

// basic returns the Basic credentials; decode form-decodes them (RFC 6749 2.3.1).
func basic(r *http.Request, decode bool) (id, secret string, ok bool) {
	raw, found := strings.CutPrefix(r.Header.Get("Authorization"), "Basic ")
	if !found {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return "", "", false
	}
	id, secret, ok = strings.Cut(string(b), ":")
	if ok && decode {
		var e1, e2 error
		id, e1 = url.QueryUnescape(id)
		secret, e2 = url.QueryUnescape(secret)
		ok = e1 == nil && e2 == nil
	}
	return id, secret, ok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError answers with an RFC 6749 5.2 error body. Descriptions never echo what was sent.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// s256 is the PKCE S256 challenge of a verifier.
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Set is the four fakes, started together with default test credentials.
type Set struct {
	Candid, Pattern, Candescent, NikoHealth *Fake
}

// StartAll starts the four fakes with DefaultConfig credentials.
func StartAll() *Set {
	return &Set{
		Candid:     NewCandid(DefaultConfig("candid")),
		Pattern:    NewPattern(DefaultConfig("pattern")),
		Candescent: NewCandescent(DefaultConfig("candescent")),
		NikoHealth: NewNikoHealth(DefaultConfig("nikohealth")),
	}
}

// All returns the fakes in a fixed order.
func (s *Set) All() []*Fake { return []*Fake{s.Candid, s.Pattern, s.Candescent, s.NikoHealth} }

// Close shuts every fake down.
func (s *Set) Close() {
	for _, f := range s.All() {
		f.Close()
	}
}

// DefaultConfig returns obviously fake credentials for provider.
func DefaultConfig(provider string) Config {
	c := Config{ClientID: provider + "-client", ClientSecret: provider + "-secret-" + "f4k3"}
	if provider == "candescent" {
		c.Username, c.Password, c.InstitutionID = "jane.doe", "fake pass&word", "01234"
		c.Code, c.RedirectURI, c.CodeVerifier = "fake-auth-code", "https://app.example/callback", "fake-pkce-verifier-0123456789-abcdefghijkl"
	}
	if provider == "nikohealth" {
		c.ClientSecret = "niko:secret+with space" // exercises RFC 6749 form-encoding in Basic
	}
	return c
}
