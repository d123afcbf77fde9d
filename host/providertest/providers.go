package providertest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Token paths, as each provider documents them.
const (
	CandidPath     = "/api/auth/v2/token"
	PatternPath    = "/api/auth/token"
	CandescentPath = "/digitalbanking/oauth2/v1/token"
	// CandescentRevokePath is Candescent's revocation endpoint: DELETE with a form token=.
	CandescentRevokePath = "/digitalbanking/oauth2/v1/revoke"
	NikoHealthPath       = "/api/identity/connect/token"
)

// Documented lifetimes, used when Config.Lifetime is zero.
const (
	// CandidLifetime: "The bearer token expires 5 hours after it has been created", although the
	// example response says expires_in 86400. The JWT's exp carries the 5 hours, expires_in the
	// 86400: clients must take the smaller.
	CandidLifetime = 5 * time.Hour
	// candidExpiresIn is what Candid's example response says, whatever the token's real life.
	candidExpiresIn = 86400
	// PatternLifetime: the example response's expires_in, 3600000 milliseconds.
	PatternLifetime = time.Hour
	// CandescentLifetime: Candescent's captured document gives no figure; 900 s (15 minutes) is a
	// typical Apigee access token life for banking APIs and keeps tests honest about short lives.
	CandescentLifetime = 900 * time.Second
	// candescentRefreshLifetime is the refresh token's life, sent as refresh_token_expires_in.
	candescentRefreshLifetime = time.Hour
	// NikoHealthLifetime: the example response's expires_in, 1200 seconds.
	NikoHealthLifetime = 1200 * time.Second
)

// NewCandid fakes Candid Health at CandidPath: a JSON or form body with client_id and client_secret
// (415 for any other content type, 401 invalid_client for wrong or missing credentials), no
// grant_type, and an RS256 JWT access token whose exp is CandidLifetime ahead while expires_in says
// 86400, as the documentation and its example disagree.
func NewCandid(cfg Config) *Fake { return must(Server{}.NewCandid(cfg)) }

// NewPattern fakes Pattern Health at PatternPath: a form body grant_type=client_credentials (415
// for another content type, 400 unsupported_grant_type for another grant), Accept: application/json
// (406 without it), HTTP Basic base64(id:secret) as given, not form-encoded (401 otherwise), and an
// opaque token whose expires_in is in milliseconds with a lowercase "bearer".
func NewPattern(cfg Config) *Fake { return must(Server{}.NewPattern(cfg)) }

// NewCandescent fakes Candescent at CandescentPath: a form body (415 otherwise), HTTP Basic
// base64(id:secret) (401 invalid_client otherwise), the client_credentials, password,
// authorization_code and refresh_token grants, the institutionId header for all but refresh_token
// (400 invalid_request when missing or wrong), a transactionId header echoed back, expires_in and
// refresh_token_expires_in as strings, and refresh tokens that work once (rotation: a used one is
// invalid_grant, and counts in Replays). Config.Code works any number of times; codes minted by
// Authorize (or POST /_authorize) work once, as real ones do.
func NewCandescent(cfg Config) *Fake { return must(Server{}.NewCandescent(cfg)) }

// CodeTTL is how long a code minted by Authorize can be exchanged.
const CodeTTL = 10 * time.Minute

// Authorize mints a one-time authorization code for the fake's client, as its authorization
// endpoint would after a user consented: it is exchanged with Config's RedirectURI and PKCE
// verifier like Config.Code, but only once. Every token issued from it, and from the refresh tokens
// it leads to, is one lineage: accessLife (zero: the fake's lifetime) is its access tokens' life,
// and presenting the code again, or a used refresh token of the lineage, revokes every token of it
// (the API refuses its access tokens, its live refresh token is invalid_grant) and counts in
// Replays. Tests use it for a fresh grant of their own and short-lived tokens on a shared fake.
func (f *Fake) Authorize(accessLife time.Duration) string {
	code := randomHex(16)
	f.mu.Lock()
	f.codes[code] = &codeGrant{lin: &lineage{life: accessLife}, expires: time.Now().Add(CodeTTL)}
	f.mu.Unlock()
	return code
}

// serveAuthorize is Authorize over HTTP, for hosts in other languages: POST /_authorize, with an
// optional lifetime_ms (form or query; at least 1000, as Candescent counts whole seconds) answers
// {"code": "..."}.
func (f *Fake) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"message": "POST only"})
		return
	}
	var life time.Duration
	if r.ParseForm() != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "malformed form"})
		return
	}
	if v := r.Form.Get("lifetime_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 1000 || ms > int64(24*time.Hour/time.Millisecond) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "lifetime_ms must be an integer from 1000 to 86400000"})
			return
		}
		life = time.Duration(ms) * time.Millisecond
	}
	writeJSON(w, http.StatusOK, map[string]string{"code": f.Authorize(life)})
}

// revokeLineage revokes every token of lin: its access tokens stop working at the API, its live
// refresh tokens are forgotten. Called with f.mu held.
func (f *Fake) revokeLineage(lin *lineage) {
	lin.revoked = true
	for _, t := range lin.access {
		delete(f.tokens, t)
	}
	for _, rt := range lin.refresh {
		delete(f.refresh, rt)
	}
	lin.access, lin.refresh = nil, nil
}

// NewNikoHealth fakes NikoHealth's IdentityServer endpoint at NikoHealthPath: a form body (415
// otherwise), grant_type=client_credentials (400 unsupported_grant_type otherwise), client
// credentials in HTTP Basic with id and secret each form-encoded first (RFC 6749 2.3.1) or as
// client_id and client_secret form fields (401 invalid_client otherwise), an optional scope that must
// be "external" (400 invalid_scope otherwise), and a 64-hex-digit token with scope "external".
func NewNikoHealth(cfg Config) *Fake { return must(Server{}.NewNikoHealth(cfg)) }

func (f *Fake) candid(w http.ResponseWriter, r *http.Request) {
	var id, secret string
	switch mediaType(r) {
	case jsonType:
		var body struct {
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "malformed JSON body"})
			return
		}
		id, secret = body.ClientID, body.ClientSecret
	case formType:
		if r.ParseForm() != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "malformed form body"})
			return
		}
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	default:
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"message": "Invalid Content Type: use application/json or application/x-www-form-urlencoded"})
		return
	}
	if id == "" || secret == "" || id != f.cfg.ClientID || secret != f.cfg.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		return
	}
	life := f.lifetime(CandidLifetime)
	now := time.Now()
	tok := signJWT(map[string]any{"sub": id, "iat": now.Unix(), "exp": now.Add(life).Unix(), "jti": randomHex(16)})
	f.remember(tok, life)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": candidExpiresIn, "token_type": "Bearer"})
}

func (f *Fake) pattern(w http.ResponseWriter, r *http.Request) {
	if mediaType(r) != formType {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"message": "Content-Type must be application/x-www-form-urlencoded"})
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), jsonType) {
		writeJSON(w, http.StatusNotAcceptable, map[string]string{"message": "Accept: application/json required"})
		return
	}
	if id, secret, ok := basic(r, false); !ok || id != f.cfg.ClientID || secret != f.cfg.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "bad client credentials")
		return
	}
	if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials")
		return
	}
	life := f.lifetime(PatternLifetime)
	tok := randomHex(24)
	f.remember(tok, life)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": life.Milliseconds(), "token_type": "bearer"})
}

// candescentRevoke revokes as Candescent documents: DELETE, HTTP Basic, a form body token= (an
// access or a refresh token); 200 with an empty body, also for a token it does not know (RFC 7009
// 2.2). Another method is 405.
func (f *Fake) candescentRevoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodDelete {
		w.Header().Set("Allow", http.MethodDelete)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"message": "Method Not Allowed"})
		return
	}
	if id, secret, ok := basic(r, false); !ok || id != f.cfg.ClientID || secret != f.cfg.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	form, perr := url.ParseQuery(string(body))
	if err != nil || perr != nil || form.Get("token") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "token missing")
		return
	}
	tok := form.Get("token")
	f.mu.Lock()
	delete(f.tokens, tok)
	delete(f.refresh, tok)
	f.mu.Unlock()
	f.revoked.Add(1)
	w.WriteHeader(http.StatusOK)
}

func (f *Fake) candescent(w http.ResponseWriter, r *http.Request) {
	// The transactionId is echoed on every answer, errors included, as support needs it most there.
	if tx := r.Header.Get("transactionId"); tx == "" {
		f.missingTx.Add(1)
	} else {
		w.Header().Set("transactionId", tx)
		f.mu.Lock()
		f.txIDs[tx] = struct{}{}
		f.mu.Unlock()
	}
	if mediaType(r) != formType {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"message": "Unsupported Media Type"})
		return
	}
	if id, secret, ok := basic(r, false); !ok || id != f.cfg.ClientID || secret != f.cfg.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if r.ParseForm() != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return
	}
	form := r.PostForm
	grant := form.Get("grant_type")
	switch grant {
	case "":
		oauthError(w, http.StatusBadRequest, "invalid_request", "grant_type missing")
		return
	case "client_credentials", "password", "authorization_code":
		if r.Header.Get("institutionId") == "" || r.Header.Get("institutionId") != f.cfg.InstitutionID {
			oauthError(w, http.StatusBadRequest, "invalid_request", "institutionId header missing or unknown")
			return
		}
	case "refresh_token":
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "unsupported grant_type")
		return
	}
	scope := form.Get("scope")
	withRefresh := false
	var lin *lineage // a minted code's lineage, which what is issued here joins
	switch grant {
	case "password":
		if form.Get("username") == "" || form.Get("password") == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "username and password required")
			return
		}
		if form.Get("username") != f.cfg.Username || form.Get("password") != f.cfg.Password {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "invalid user credentials")
			return
		}
		withRefresh = true
	case "authorization_code":
		code := form.Get("code")
		if code == "" || form.Get("redirect_uri") == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "code and redirect_uri required")
			return
		}
		challenge := f.cfg.challenge()
		proof := form.Get("redirect_uri") == f.cfg.RedirectURI && (challenge == "" || S256(form.Get("code_verifier")) == challenge)
		f.mu.Lock()
		g, minted := f.codes[code]
		replay := minted && g.used
		ok := proof && (minted && !replay && time.Now().Before(g.expires) || !minted && code == f.cfg.Code)
		switch {
		case replay:
			f.revokeLineage(g.lin) // RFC 6749 4.1.2: a code used twice revokes what it granted
		case ok && minted:
			g.used, lin = true, g.lin
		}
		f.mu.Unlock()
		if replay {
			f.replays.Add(1)
			oauthError(w, http.StatusBadRequest, "invalid_grant", "authorization code already used")
			return
		}
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "invalid authorization code, redirect_uri or code_verifier")
			return
		}
		withRefresh = slices.Contains(strings.Fields(scope), "offline_access")
	case "refresh_token":
		rt := form.Get("refresh_token")
		if rt == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "refresh_token required")
			return
		}
		f.mu.Lock()
		rec, live := f.refresh[rt]
		delete(f.refresh, rt) // rotation: a refresh token works once
		valid := live && time.Now().Before(rec.expires)
		spentLin, replay := f.spent[rt]
		if valid {
			f.spent[rt] = rec.lin
		} else if replay && spentLin != nil {
			f.revokeLineage(spentLin) // RFC 9700 4.14.2: a used refresh token presented again
		}
		f.mu.Unlock()
		if !valid {
			if replay {
				f.replays.Add(1)
			}
			oauthError(w, http.StatusBadRequest, "invalid_grant", "refresh token invalid, expired or already used")
			return
		}
		if scope == "" {
			scope = rec.scope
		}
		lin = rec.lin
		withRefresh = true
	}
	life := f.lifetime(CandescentLifetime)
	if lin != nil && lin.life > 0 {
		life = lin.life
	}
	tok := randomHex(24)
	f.remember(tok, life)
	resp := map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": strconv.FormatInt(int64(life/time.Second), 10), "refresh_token_expires_in": "0", "scope": scope}
	var rt string
	if withRefresh {
		rt = randomHex(24)
		resp["refresh_token"] = rt
		resp["refresh_token_expires_in"] = strconv.FormatInt(int64(candescentRefreshLifetime/time.Second), 10)
	}
	f.mu.Lock()
	if rt != "" {
		f.refresh[rt] = refreshRecord{expires: time.Now().Add(candescentRefreshLifetime), scope: scope, lin: lin}
	}
	if lin != nil {
		if lin.revoked { // revoked while this request was answered: what it issues is revoked too
			delete(f.tokens, tok)
			delete(f.refresh, rt)
		} else {
			lin.access = append(lin.access, tok)
			if rt != "" {
				lin.refresh = append(lin.refresh, rt)
			}
		}
	}
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, resp)
}

func (f *Fake) nikoHealth(w http.ResponseWriter, r *http.Request) {
	if mediaType(r) != formType {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"message": "Unsupported Media Type"})
		return
	}
	if r.ParseForm() != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	// IdentityServer tries the Basic header first and falls back to the form fields.
	id, secret, ok := basic(r, true)
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id == "" || id != f.cfg.ClientID || secret != f.cfg.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "")
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	if s := r.PostForm.Get("scope"); s != "" && s != "external" {
		oauthError(w, http.StatusBadRequest, "invalid_scope", "")
		return
	}
	life := f.lifetime(NikoHealthLifetime)
	tok := strings.ToUpper(randomHex(32))
	f.remember(tok, life)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": int64(life / time.Second), "token_type": "Bearer", "scope": "external"})
}

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
)

// signingKey is one 2048-bit RSA key per process, made on first use: generating one per fake would
// make every test that starts a Candid fake pay for it.
func signingKey() *rsa.PrivateKey {
	keyOnce.Do(func() {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic("providertest: generating the JWT key: " + err.Error())
		}
	})
	return key
}

// signJWT returns an RS256 JWT (RFC 7515 compact serialization) of claims.
func signJWT(claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, signingKey(), crypto.SHA256, sum[:])
	if err != nil {
		panic("providertest: signing a JWT: " + err.Error())
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}
