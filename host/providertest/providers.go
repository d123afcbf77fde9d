package providertest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
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
	NikoHealthPath = "/api/identity/connect/token"
)

// NewCandid fakes Candid Health: JSON or form body with client_id and client_secret (415 for any
// other content type), no grant_type, and an RS256 JWT access token whose exp is 5 hours ahead while
// expires_in says 86400, as the documentation and its example disagree.
func NewCandid(cfg Config) *Fake {
	return newFake("candid", CandidPath, cfg, func(f *Fake, w http.ResponseWriter, r *http.Request) {
		var id, secret string
		switch mediaType(r) {
		case "application/json":
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
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"message": "Invalid Content Type"})
			return
		}
		if id != f.cfg.ClientID || secret != f.cfg.ClientSecret {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
			return
		}
		life := f.lifetime(5 * time.Hour)
		tok := signJWT(map[string]any{"sub": id, "iat": time.Now().Unix(), "exp": time.Now().Add(life).Unix(), "jti": randomHex(8)})
		f.remember(tok, life)
		writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": 86400, "token_type": "Bearer"})
	})
}

// NewPattern fakes Pattern Health: HTTP Basic base64(id:secret), a form body
// grant_type=client_credentials, Accept: application/json, and expires_in in milliseconds with a
// lowercase "bearer".
func NewPattern(cfg Config) *Fake {
	return newFake("pattern", PatternPath, cfg, func(f *Fake, w http.ResponseWriter, r *http.Request) {
		if mediaType(r) != formType {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"message": "form body required"})
			return
		}
		if !strings.Contains(r.Header.Get("Accept"), "application/json") {
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
		life := f.lifetime(time.Hour)
		tok := "pat_" + randomHex(24)
		f.remember(tok, life)
		writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": life.Milliseconds(), "token_type": "bearer"})
	})
}

// NewCandescent fakes Candescent: form body, HTTP Basic, four grants, the institutionId header for
// client_credentials, password and authorization_code, a transactionId echoed back, expires_in as a
// string, and refresh tokens that rotate (a used one is invalid_grant). Default life: 900 s.
func NewCandescent(cfg Config) *Fake {
	return newFake("candescent", CandescentPath, cfg, func(f *Fake, w http.ResponseWriter, r *http.Request) {
		tx := r.Header.Get("transactionId")
		f.mu.Lock()
		if tx == "" {
			f.missingTxID++
		} else {
			f.txIDs[tx] = true
		}
		f.mu.Unlock()
		if tx != "" {
			w.Header().Set("transactionId", tx)
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
		if grant != "refresh_token" && r.Header.Get("institutionId") != f.cfg.InstitutionID {
			oauthError(w, http.StatusBadRequest, "invalid_request", "institutionId header missing or unknown")
			return
		}
		withRefresh := false
		switch grant {
		case "client_credentials":
		case "password":
			if form.Get("username") != f.cfg.Username || form.Get("password") != f.cfg.Password {
				oauthError(w, http.StatusBadRequest, "invalid_grant", "invalid user credentials")
				return
			}
			withRefresh = true
		case "authorization_code":
			if form.Get("code") != f.cfg.Code || form.Get("redirect_uri") != f.cfg.RedirectURI ||
				f.cfg.CodeVerifier != "" && s256(form.Get("code_verifier")) != s256(f.cfg.CodeVerifier) {
				oauthError(w, http.StatusBadRequest, "invalid_grant", "invalid authorization code or verifier")
				return
			}
			withRefresh = strings.Contains(form.Get("scope"), "offline_access")
		case "refresh_token":
			rt := form.Get("refresh_token")
			f.mu.Lock()
			live := f.refresh[rt]
			delete(f.refresh, rt) // rotation: a refresh token works once
			f.mu.Unlock()
			if !live {
				oauthError(w, http.StatusBadRequest, "invalid_grant", "refresh token invalid or already used")
				return
			}
			withRefresh = true
		default:
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "unsupported grant_type")
			return
		}
		life := f.lifetime(900 * time.Second)
		tok := "cds_" + randomHex(24)
		f.remember(tok, life)
		resp := map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": strconv.Itoa(int(life / time.Second))}
		if withRefresh {
			rt := "cdsr_" + randomHex(24)
			f.mu.Lock()
			f.refresh[rt] = true
			f.mu.Unlock()
			resp["refresh_token"], resp["refresh_token_expires_in"] = rt, "3600"
		}
		if s := form.Get("scope"); s != "" {
			resp["scope"] = s
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

// NewNikoHealth fakes NikoHealth's IdentityServer endpoint: form body, grant_type=client_credentials,
// client credentials in HTTP Basic (each form-encoded first, RFC 6749 2.3.1) or in the form, an
// optional scope that must be "external".
func NewNikoHealth(cfg Config) *Fake {
	return newFake("nikohealth", NikoHealthPath, cfg, func(f *Fake, w http.ResponseWriter, r *http.Request) {
		if mediaType(r) != formType {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"message": "Unsupported Media Type"})
			return
		}
		if r.ParseForm() != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
			return
		}
		id, secret, ok := basic(r, true)
		if !ok {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != f.cfg.ClientID || secret != f.cfg.ClientSecret {
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
		life := f.lifetime(1200 * time.Second)
		tok := strings.ToUpper(randomHex(32))
		f.remember(tok, life)
		writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": int(life / time.Second), "token_type": "Bearer", "scope": "external"})
	})
}

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
)

// signingKey is one RSA key per process: generating one per fake would make every test slow.
func signingKey() *rsa.PrivateKey {
	keyOnce.Do(func() {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return key
}

// PublicKey returns the key that verifies the fake Candid's JWTs.
func PublicKey() *rsa.PublicKey { return &signingKey().PublicKey }

func signJWT(claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, signingKey(), crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}
