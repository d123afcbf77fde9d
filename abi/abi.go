// Package abi is the contract between the tokenwasm plugin and its hosts: the names of the exports and
// imports, the JSON shapes they exchange, and the error kinds. ABI.md beside this file is the prose
// reference; the JSON Schemas in schema/ describe the same shapes for hosts written in other languages.
//
// The types carry encoding/json tags for Go hosts. The plugin never uses encoding/json: it parses with
// gjson and writes with its own escaper, so this package must stay free of reflection-heavy imports.
package abi

import "strconv"

// Version is the ABI identifier that describe returns. Fields may be added within a version; none is
// renamed or removed.
const Version = "tokenwasm/1"

// Exports of the plugin. Each takes its input as the Extism call input and sets its JSON result as the
// Extism output; each returns exit code 0 whatever the input.
const (
	ExportDescribe   = "describe"
	ExportEncode     = "encode"
	ExportDecode     = "decode"
	ExportToken      = "token"
	ExportInvalidate = "invalidate"
	// ExportTokenStep runs the token (or invalidate) flow one step per call, for hosts that cannot
	// block inside an import: each answer is the next import to call, or the final answer.
	ExportTokenStep = "token_step"
)

// Operations of token_step, its input's "op": the token flow (the default), invalidate's, and
// revoke's (RFC 7009).
const (
	OpToken      = "token"
	OpInvalidate = "invalidate"
	OpRevoke     = "revoke"
)

// ImportModule is the Wasm import module of the host functions below. Each takes one Extism memory
// handle (i64) to JSON bytes and returns one.
const ImportModule = "extism:host/user"

// Imports the host provides.
const (
	ImportHTTPSend    = "http_send"
	ImportCacheGet    = "cache_get"
	ImportCacheSet    = "cache_set"
	ImportCacheDelete = "cache_delete"
)

// ActionSign is the action of token_step that asks the host to sign a client assertion
// (private_key_jwt): {"alg","kid","signing_input"} -> {"signature"} | {"error"}. It is not a wasm
// import: the plugin never calls it inline, so hosts that do not sign still instantiate the plugin.
const ActionSign = "sign"

// Grant types.
const (
	GrantClientCredentials = "client_credentials"
	GrantPassword          = "password"
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
)

// TokenRequest asks for a token from one provider with one set of credentials. It is the input of
// encode, token and invalidate, and the "request" of decode.
type TokenRequest struct {
	Provider      string            `json:"provider"`
	GrantType     string            `json:"grant_type,omitempty"`
	ClientID      string            `json:"client_id"`
	ClientSecret  string            `json:"client_secret"`
	TokenURL      string            `json:"token_url,omitempty"`
	Domain        string            `json:"domain,omitempty"`
	Scope         string            `json:"scope,omitempty"`
	InstitutionID string            `json:"institution_id,omitempty"`
	Username      string            `json:"username,omitempty"`
	Password      string            `json:"password,omitempty"`
	Code          string            `json:"code,omitempty"`
	RedirectURI   string            `json:"redirect_uri,omitempty"`
	CodeVerifier  string            `json:"code_verifier,omitempty"`
	RefreshToken  string            `json:"refresh_token,omitempty"`
	Body          string            `json:"body,omitempty"`
	TimeoutMS     int64             `json:"timeout_ms,omitempty"`
	Params        map[string]string `json:"params,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Profile       *Profile          `json:"profile,omitempty"`

	// Force skips the cached token (token export only). It does not bypass a closed 429 gate.
	Force bool `json:"force,omitempty"`
	// NowMS overrides the plugin's clock, in Unix milliseconds (tests and replays).
	NowMS int64 `json:"now_ms,omitempty"`
	// MinTTLMS makes the token export serve a cached token only when it has more than this much life
	// left (token export only): hosts refreshing ahead of expiry ask for a token that is not itself
	// about to be refreshed.
	MinTTLMS int64 `json:"min_ttl_ms,omitempty"`
	// FleetLock makes the token export take the identity's fetch lock in the cache (cache_set with nx)
	// before fetching, so one host of a fleet sharing the cache fetches (token export only). Hosts whose
	// cache is shared across processes set it; it costs three more cache round trips per fetch.
	FleetLock bool `json:"fleet_lock,omitempty"`
	// AccessToken makes invalidate drop the cached token only if it is this one, so many callers that
	// saw the same 401 do not throw away the new token one of them already fetched.
	AccessToken string `json:"access_token,omitempty"`

	// KeyID names the credential the host holds: the key that signs the client assertion
	// (private_key_jwt, its JWS "kid") or the client certificate (tls_client_auth).
	KeyID string `json:"key_id,omitempty"`
	// AssertionAlg is the client assertion's JWS algorithm: one of the profile's (smart: RS384,
	// ES384); default its first.
	AssertionAlg string `json:"assertion_alg,omitempty"`
	// AssertionJTI fixes the assertion's jti, with NowMS: for tests and replays only. Unset, every
	// request gets a fresh one.
	AssertionJTI string `json:"assertion_jti,omitempty"`
	// FHIRBase is a SMART server's FHIR base URL: the Go host discovers token_url from
	// {fhir_base}/.well-known/smart-configuration when token_url is empty. The plugin ignores it.
	FHIRBase string `json:"fhir_base,omitempty"`
	// RevocationURL is the RFC 7009 revocation endpoint (token_step's "revoke"), over the
	// profile's; for smart the Go host discovers it.
	RevocationURL string `json:"revocation_url,omitempty"`
}

// Profile describes a provider as data. Built-in providers have one; provider "custom" takes one in
// the request.
type Profile struct {
	Name             string            `json:"name,omitempty"`
	TokenURL         string            `json:"token_url,omitempty"`
	Body             string            `json:"body,omitempty"`        // "json" | "form"
	ClientAuth       string            `json:"client_auth,omitempty"` // "body" | "basic" | "basic_rfc6749"
	SendGrantType    *bool             `json:"send_grant_type,omitempty"`
	SendScope        *bool             `json:"send_scope,omitempty"`
	ExpiresInUnit    string            `json:"expires_in_unit,omitempty"` // "s" | "ms"
	Headers          map[string]string `json:"headers,omitempty"`
	Grants           []string          `json:"grants,omitempty"`
	AssertionAlg     string            `json:"assertion_alg,omitempty"`     // private_key_jwt: RS256 | RS384 | ES256 | ES384 | PS256
	RevocationURL    string            `json:"revocation_url,omitempty"`    // RFC 7009 endpoint, for revoke
	RevocationMethod string            `json:"revocation_method,omitempty"` // POST (default) or DELETE
}

// HTTPRequest is what encode produces and what the host's http_send performs.
type HTTPRequest struct {
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers"`
	Body      string            `json:"body"`
	TimeoutMS int64             `json:"timeout_ms"`
	// ClientCert names the client certificate the host presents (tls_client_auth, RFC 8705).
	ClientCert string `json:"client_cert,omitempty"`
}

// HTTPResponse is what http_send returns: a response, or Error for a transport failure.
type HTTPResponse struct {
	Status  int               `json:"status,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	Error   string            `json:"error,omitempty"`
	// Policy, with Error, says the host refused to send the request by its own policy (a host outside
	// its allow-list, plain http, loopback without opt-in): the plugin answers KindPolicy, not
	// retryable, since sending the same request again will be refused again.
	Policy bool `json:"policy,omitempty"`
}

// DecodeInput is the input of the decode export.
type DecodeInput struct {
	Request  TokenRequest `json:"request"`
	Response HTTPResponse `json:"response"`
	NowMS    int64        `json:"now_ms,omitempty"`
}

// Token is the normalized token: token_type is "Bearer" whatever the case the provider used, and
// expires_in is in seconds whatever unit the provider used.
type Token struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	ExpiresAtMS  int64  `json:"expires_at_ms"`
	IssuedAtMS   int64  `json:"issued_at_ms"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// Result is the output of encode, decode, token and invalidate: exactly one of its fields is set,
// except for invalidate, whose success is the empty object.
type Result struct {
	Request *HTTPRequest `json:"request,omitempty"`
	Token   *Token       `json:"token,omitempty"`
	Cached  bool         `json:"cached,omitempty"`
	// RefreshAtMS and StaleAtMS (token only) are the token's schedule, decided by the plugin
	// (ABI.md, "The schedule"): refresh in the background from RefreshAtMS; from StaleAtMS a caller
	// waits for a fetch, and is served the token until its expiry if that fetch fails.
	RefreshAtMS int64  `json:"refresh_at_ms,omitempty"`
	StaleAtMS   int64  `json:"stale_at_ms,omitempty"`
	Error       *Error `json:"error,omitempty"`
	// Retry (invalidate with an access_token only) tells whether a new token is worth trying: false
	// when a token of this identity was already dropped for a 401 within the window (ABI.md,
	// "invalidate"), so the 401 is the API's answer.
	Retry *bool `json:"retry,omitempty"`
	// Pending (token only) says another host sharing the cache is fetching this token: call token again
	// after RetryAfterMS. Only a host whose cache_set honours "nx" ever sees it.
	Pending *Pending `json:"pending,omitempty"`
}

// Pending is the token export's answer while another host holds the identity's fetch lock.
type Pending struct {
	RetryAfterMS int64 `json:"retry_after_ms"`
}

// Error is a typed failure. Status is set only when the provider answered; Message and Description
// never contain a secret, password, refresh token or access token.
type Error struct {
	Kind         string `json:"kind"`
	Message      string `json:"message"`
	Status       int    `json:"status,omitempty"`
	Retryable    bool   `json:"retryable"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	OAuthError   string `json:"oauth_error,omitempty"`
	Description  string `json:"description,omitempty"`
}

// Error implements error. It prints kind, status and message: all free of secrets by contract.
func (e *Error) Error() string {
	s := "tokenwasm: " + e.Kind
	if e.Status != 0 {
		s += " (HTTP " + strconv.Itoa(e.Status) + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	// What the provider said, as x/oauth2's RetrieveError prints it: its error code when it is not
	// the kind already named, and its description (both redacted by the plugin).
	if e.OAuthError != "" && e.OAuthError != e.Kind {
		s += "; provider error " + strconv.Quote(e.OAuthError)
	}
	if e.Description != "" {
		s += "; provider says " + strconv.Quote(e.Description)
	}
	return s
}

// Error kinds. The first seven are RFC 6749 section 5.2 codes.
const (
	KindInvalidRequest       = "invalid_request"
	KindInvalidClient        = "invalid_client"
	KindInvalidGrant         = "invalid_grant"
	KindUnauthorizedClient   = "unauthorized_client"
	KindUnsupportedGrantType = "unsupported_grant_type"
	KindInvalidScope         = "invalid_scope"
	KindAccessDenied         = "access_denied"
	KindRateLimited          = "rate_limited"
	KindUnsupportedMediaType = "unsupported_media_type"
	KindServerError          = "server_error"
	KindMalformedResponse    = "malformed_response"
	KindTransport            = "transport"
	// KindPolicy is a request refused before it was sent, by the host's policy or by the plugin's
	// binding of a provider's credentials to that provider's hosts. Never retryable: the same request
	// is refused again, so a caller that retries on Retryable does not loop on a typo.
	KindPolicy = "policy"
	// KindSigning is a client assertion the host did not sign: its sign answer was an error, not a
	// signature, or a signature of the wrong form or length for its algorithm. Nothing was sent.
	KindSigning = "signing"
	// KindSigningRequired answers token or encode for a request whose client assertion the host must
	// sign (private_key_jwt): only token_step asks the host for a signature. Nothing was sent.
	KindSigningRequired = "signing_required"
)

// CacheGetInput, CacheSetInput and CacheDeleteInput are the inputs of the cache imports;
// CacheGetOutput is cache_get's result. cache_set and cache_delete return {} (or {"error"}).
type CacheGetInput struct {
	Key string `json:"key"`
}

// CacheGetOutput is the result of cache_get.
type CacheGetOutput struct {
	Hit   bool   `json:"hit"`
	Value string `json:"value,omitempty"`
	// Error says the cache failed: a miss, except for a grant's lineage, which the flow does not
	// guess (ABI.md, "One-time grants and their lineage").
	Error string `json:"error,omitempty"`
}

// CacheSetInput is the input of cache_set. With NX the value is stored only if the key is absent
// (the fetch lock of fleet single-flight); the answer is CacheSetOutput.
type CacheSetInput struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	TTLMS int64  `json:"ttl_ms"`
	NX    bool   `json:"nx,omitempty"`
}

// CacheSetOutput is the result of cache_set: whether the value was stored, or an error.
type CacheSetOutput struct {
	Stored bool   `json:"stored"`
	Error  string `json:"error,omitempty"`
}

// CacheDeleteInput is the input of cache_delete. With IfValue the key is deleted only while it holds
// that value (a lock is released only by its owner).
type CacheDeleteInput struct {
	Key     string `json:"key"`
	IfValue string `json:"if_value,omitempty"`
}
