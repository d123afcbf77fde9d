// Package providertest runs strict fakes of the providers' token endpoints on loopback, as
// net/http/httptest does for servers: for tests, benchmarks and the CLI demo, so nothing here needs a
// testing.TB.
//
// Each fake follows its provider's document (docs/providers.md) to the letter (content type, client
// authentication, required headers, units, error bodies) and refuses anything else, so a client that
// passes against the fakes sends what the real provider expects. Each also serves /api/resource, a
// protected API that accepts only the fake's own unexpired, unrevoked tokens, so clients can test
// their retry on 401; it counts the token requests it receives so tests can assert how many reached
// the provider; and it logs nothing, so no credential ever lands in test output.
//
// DefaultConfig and StartAll give obviously fake credentials:
//
//	candid      candid-client / candid-secret-f4k3
//	pattern     pattern-client / pattern-secret-f4k3
//	candescent  candescent-client / candescent-secret-f4k3, institutionId 01234,
//	            user jane.doe / "fake pass&word", code fake-auth-code with PKCE
//	nikohealth  nikohealth-client / "niko:secret+with space" (exercises RFC 6749 form-encoded Basic)
package providertest

import (
	"crypto/rand"
	"crypto/rsa"
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

// Config sets a fake's credentials and behaviour. Zero fields take the provider's defaults. The JSON
// tags let the CLI print a fake's configuration for hosts written in other languages.
type Config struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	// Username and Password are the one user the Candescent password grant accepts.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// InstitutionID is the value Candescent requires in the institutionId header for the
	// client_credentials, password and authorization_code grants.
	InstitutionID string `json:"institution_id,omitempty"`
	// Code and RedirectURI are what the Candescent authorization_code grant accepts.
	Code        string `json:"code,omitempty"`
	RedirectURI string `json:"redirect_uri,omitempty"`
	// CodeChallenge, when set, is the PKCE S256 challenge (base64url of SHA-256) the
	// authorization_code grant's code_verifier must match.
	CodeChallenge string `json:"code_challenge,omitempty"`
	// CodeVerifier is the PKCE verifier a client should send; when CodeChallenge is empty the fake
	// derives the challenge from it. It lives here so tests and the demo can read it from Config().
	CodeVerifier string `json:"code_verifier,omitempty"`
	// Lifetime is the access token's life; zero means the provider's documented one. Providers that
	// count in seconds get it truncated to whole seconds, so a fake never overstates a token's life.
	Lifetime time.Duration `json:"-"`
	// MinInterval makes token requests closer together than this get 429 with Retry-After, as Candid
	// documents for clients that do not reuse tokens; zero turns it off. A fake has one registered
	// client, so the interval is per fake.
	MinInterval time.Duration `json:"-"`
	// RetryAfter is the Retry-After value sent with a 429; "" means MinInterval in whole seconds,
	// rounded up, at least 1.
	RetryAfter string `json:"-"`
}

// challenge returns the PKCE S256 challenge the authorization_code grant enforces, "" for none.
func (c Config) challenge() string {
	if c.CodeChallenge != "" {
		return c.CodeChallenge
	}
	if c.CodeVerifier != "" {
		return S256(c.CodeVerifier)
	}
	return ""
}

// Fake is one provider's fake token endpoint, plus /api/resource, an API that answers 200
// {"ok":true} only to a bearer token the fake issued that is unexpired and unrevoked, and 401
// otherwise. All its methods are safe for concurrent use.
type Fake struct {
	srv   *httptest.Server
	name  string
	path  string
	cfg   Config // never written after construction, so read without the lock
	issue func(f *Fake, w http.ResponseWriter, r *http.Request)
	jwt   bool // the access tokens are RS256 JWTs (Candid)

	requests  atomic.Int64
	issued    atomic.Int64
	apiCalls  atomic.Int64
	missingTx atomic.Int64
	replays   atomic.Int64
	revoked   atomic.Int64 // revocation requests served (Candescent's DELETE endpoint)
	refuse    atomic.Bool

	mu        sync.Mutex
	tokens    map[string]time.Time     // live access token -> expiry
	refresh   map[string]refreshRecord // live refresh tokens (Candescent)
	spent     map[string]*lineage      // used refresh tokens, to count replays; nil lineage: not a minted code's
	codes     map[string]*codeGrant    // authorization codes minted by Authorize (Candescent)
	txIDs     map[string]struct{}      // distinct transactionId values (Candescent)
	lastAdmit time.Time                // last token request let through the MinInterval gate
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

// refreshRecord is what a refresh token stands for: when it stops working, the scope it carries
// over to the tokens it refreshes, and the lineage it belongs to (nil: not a minted code's).
type refreshRecord struct {
	expires time.Time
	scope   string
	lin     *lineage
}

// lineage is everything one minted authorization code (Authorize) granted: the access and refresh
// tokens issued from it and from the refresh tokens it led to. Presenting its code again, or one of
// its used refresh tokens, revokes all of them, as RFC 6749 4.1.2 and RFC 9700 4.14.2 ask of a
// server that detects a replay.
type lineage struct {
	life    time.Duration // its access tokens' life; zero: the fake's
	access  []string
	refresh []string
	revoked bool
}

// codeGrant is one minted authorization code: it works once, for CodeTTL.
type codeGrant struct {
	lin     *lineage
	expires time.Time
	used    bool
}

// APIPath is the path of every fake's protected API.
const APIPath = "/api/resource"

// unstartedFake is a fake whose server the caller starts (f.start), after adding its own routes.
func unstartedFake(name, path string, cfg Config, issue func(*Fake, http.ResponseWriter, *http.Request)) (*Fake, *http.ServeMux) {
	f := &Fake{name: name, path: path, cfg: cfg, issue: issue,
		tokens: map[string]time.Time{}, refresh: map[string]refreshRecord{}, txIDs: map[string]struct{}{},
		spent: map[string]*lineage{}, codes: map[string]*codeGrant{}}
	// Exact-path patterns: anything else is the mux's 404, as on a real host.
	mux := http.NewServeMux()
	mux.HandleFunc(path, f.serveToken)
	mux.HandleFunc(APIPath, f.serveAPI)
	mux.HandleFunc("/_stats", f.serveStats)
	return f, mux
}

// Name returns the provider the fake stands for: "candid", "pattern", "candescent" or "nikohealth".
func (f *Fake) Name() string { return f.name }

// URL returns the fake's base URL: http://127.0.0.1:port, or as its Server says (https, another
// address).
func (f *Fake) URL() string { return f.srv.URL }

// TokenURL returns the full URL of the token endpoint, at the provider's documented path.
func (f *Fake) TokenURL() string { return f.srv.URL + f.path }

// APIURL returns the full URL of the protected API, /api/resource.
func (f *Fake) APIURL() string { return f.srv.URL + APIPath }

// Config returns the fake's configuration, credentials included: they are fake, and clients under
// test need them.
func (f *Fake) Config() Config { return f.cfg }

// Requests returns the number of token requests received, rejected and intercepted ones included.
func (f *Fake) Requests() int64 { return f.requests.Load() }

// Issued returns the number of access tokens issued.
func (f *Fake) Issued() int64 { return f.issued.Load() }

// APICalls returns the number of calls to the protected API, refused ones included.
func (f *Fake) APICalls() int64 { return f.apiCalls.Load() }

// PublicKey returns the key that verifies the fake's JWT access tokens (Candid), or nil for a fake
// whose tokens are opaque. The key is shared by every fake in the process.
func (f *Fake) PublicKey() *rsa.PublicKey {
	if !f.jwt {
		return nil
	}
	return &signingKey().PublicKey
}

// Revoke makes the API refuse accessToken from now on, as a provider does after a revocation or a
// key rotation, so clients can test their retry on 401.
func (f *Fake) Revoke(accessToken string) {
	f.mu.Lock()
	delete(f.tokens, accessToken)
	f.mu.Unlock()
}

// RevokeAll makes the API refuse every token issued so far; tokens issued later work.
func (f *Fake) RevokeAll() {
	f.mu.Lock()
	clear(f.tokens)
	f.mu.Unlock()
}

// RefuseAPI makes the API answer 401 to every token, new ones included, until called with false.
func (f *Fake) RefuseAPI(refuse bool) { f.refuse.Store(refuse) }

// Intercept installs h in front of the token handler (nil removes it). h sees every token request
// first, whatever its method; when it returns true it has answered and the fake does nothing more
// (the request still counts in Requests). Use it to inject faults: 5xx, stalls, HTML pages, dropped
// connections (hijack the ResponseWriter).
func (f *Fake) Intercept(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.intercept = h
	f.mu.Unlock()
}

// Replays returns how many token requests presented a credential that had already been used: a
// rotated-away refresh token, or a minted authorization code sent a second time (Candescent). A
// client that follows rotation correctly keeps it at zero.
func (f *Fake) Replays() int64 { return f.replays.Load() }

// Revocations returns how many revocation requests the fake served (Candescent's DELETE endpoint).
func (f *Fake) Revocations() int64 { return f.revoked.Load() }

// MissingTransactionID returns how many token requests reaching the Candescent handler lacked a
// transactionId header.
func (f *Fake) MissingTransactionID() int64 { return f.missingTx.Load() }

// TransactionIDs returns how many distinct transactionId headers the Candescent handler received and
// how many of its requests lacked one. Distinct equal to the number of requests that carried one
// means the client made a fresh id per request.
func (f *Fake) TransactionIDs() (distinct, missing int64) {
	f.mu.Lock()
	distinct = int64(len(f.txIDs))
	f.mu.Unlock()
	return distinct, f.missingTx.Load()
}

// Close shuts the fake down, waiting for requests in flight.
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
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "the token endpoint accepts POST only")
		return
	}
	// Token requests are small; a cap keeps a runaway client from filling memory.
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if f.cfg.MinInterval > 0 && !f.admit() {
		w.Header().Set("Retry-After", f.retryAfter())
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"message": "Too Many Requests"})
		return
	}
	f.issue(f, w, r)
}

// admit enforces MinInterval: it lets a request through when the last one let through is at least
// MinInterval old.
func (f *Fake) admit() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if !f.lastAdmit.IsZero() && now.Sub(f.lastAdmit) < f.cfg.MinInterval {
		return false
	}
	f.lastAdmit = now
	return true
}

// retryAfter is the configured Retry-After, or MinInterval in whole seconds rounded up (a client
// that waits that long is admitted), at least 1.
func (f *Fake) retryAfter() string {
	if f.cfg.RetryAfter != "" {
		return f.cfg.RetryAfter
	}
	secs := (f.cfg.MinInterval + time.Second - 1) / time.Second
	return strconv.FormatInt(max(1, int64(secs)), 10)
}

func (f *Fake) serveAPI(w http.ResponseWriter, r *http.Request) {
	f.apiCalls.Add(1)
	tok, ok := cutScheme(r.Header.Get("Authorization"), "Bearer")
	f.mu.Lock()
	exp, known := f.tokens[tok]
	f.mu.Unlock()
	if !ok || !known || !time.Now().Before(exp) || f.refuse.Load() {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// serveStats serves the counters as JSON, for the CLI's fakes command and hosts in other languages.
func (f *Fake) serveStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]int64{"requests": f.Requests(), "issued": f.Issued(), "api_calls": f.APICalls(), "replays": f.Replays()})
}

// lifetime returns the configured access token life or the provider's default.
func (f *Fake) lifetime(def time.Duration) time.Duration {
	if f.cfg.Lifetime > 0 {
		return f.cfg.Lifetime
	}
	return def
}

// remember records an issued access token, so the API accepts it until it expires.
func (f *Fake) remember(tok string, life time.Duration) {
	f.issued.Add(1)
	f.mu.Lock()
	f.tokens[tok] = time.Now().Add(life)
	f.mu.Unlock()
}

// mediaType returns the request's media type without parameters, lowercased; "" when absent or
// unparsable.
func mediaType(r *http.Request) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

const (
	formType = "application/x-www-form-urlencoded"
	jsonType = "application/json"
)

// cutScheme returns the credentials after an Authorization scheme, matched without case as RFC 9110
// says.
func cutScheme(header, scheme string) (string, bool) {
	if len(header) <= len(scheme) || header[len(scheme)] != ' ' || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	return header[len(scheme)+1:], true
}

// basic returns the HTTP Basic credentials, split on the first ':'. With formEncoded it also
// form-decodes each half, as RFC 6749 2.3.1 has clients encode them and IdentityServer decodes them.
func basic(r *http.Request, formEncoded bool) (id, secret string, ok bool) {
	raw, found := cutScheme(r.Header.Get("Authorization"), "Basic")
	if !found {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return "", "", false
	}
	id, secret, ok = strings.Cut(string(b), ":")
	if ok && formEncoded {
		var e1, e2 error
		id, e1 = url.QueryUnescape(id)
		secret, e2 = url.QueryUnescape(secret)
		ok = e1 == nil && e2 == nil
	}
	return id, secret, ok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", jsonType)
	w.Header().Set("Cache-Control", "no-store") // RFC 6749 5.1, on every answer alike
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError answers with an RFC 6749 5.2 error body. Descriptions are fixed strings: they never
// echo what the client sent, so a wrong secret cannot leak through an error message.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	body := map[string]string{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	writeJSON(w, status, body)
}

// randomHex returns n random bytes in hex: unguessable tokens and ids.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// S256 returns the PKCE S256 challenge of a verifier (RFC 7636 4.2): base64url, unpadded, of its
// SHA-256. Use it to set Config.CodeChallenge from a verifier.
func S256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Set is the four fakes, started together with DefaultConfig credentials: one call gives the CLI
// demo and end-to-end tests every provider's token URL and credentials.
type Set struct {
	Candid, Pattern, Candescent, NikoHealth *Fake
}

// StartAll starts the four fakes with DefaultConfig credentials. Close them with Set.Close.
func StartAll() *Set {
	return &Set{
		Candid:     NewCandid(DefaultConfig("candid")),
		Pattern:    NewPattern(DefaultConfig("pattern")),
		Candescent: NewCandescent(DefaultConfig("candescent")),
		NikoHealth: NewNikoHealth(DefaultConfig("nikohealth")),
	}
}

// All returns the fakes in a fixed order: Candid, Pattern, Candescent, NikoHealth.
func (s *Set) All() []*Fake { return []*Fake{s.Candid, s.Pattern, s.Candescent, s.NikoHealth} }

// Close shuts every fake down.
func (s *Set) Close() {
	for _, f := range s.All() {
		f.Close()
	}
}

// DefaultConfig returns obviously fake credentials for provider ("candid", "pattern",
// "candescent" or "nikohealth"; any other name gets a client id and secret only). NikoHealth's secret
// holds ':', '+' and a space, which survive only RFC 6749 form-encoded Basic; Candescent's password
// holds a space and '&', which survive only proper form encoding.
func DefaultConfig(provider string) Config {
	c := Config{ClientID: provider + "-client", ClientSecret: provider + "-secret-f4k3"}
	switch provider {
	case "candescent":
		c.Username, c.Password, c.InstitutionID = "jane.doe", "fake pass&word", "01234"
		c.Code, c.RedirectURI = "fake-auth-code", "https://app.example/callback"
		// CodeChallenge stays empty: the fake derives it from CodeVerifier, so a test that swaps the
		// verifier needs to set one field only.
		c.CodeVerifier = "fake-pkce-verifier-0123456789-abcdefghijkl"
	case "nikohealth":
		c.ClientSecret = "niko:secret+with space"
	}
	return c
}
