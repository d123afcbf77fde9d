package host

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"golang.org/x/oauth2"
)

// Provider names a token endpoint the plugin knows. docs/providers.md has each one's document, with
// what it says and what the plugin does about it.
type Provider string

// The built-in providers, and Custom for any other endpoint described by a Config's Profile.
const (
	// Candid is Candid Health (API reference, "Auth: Get token"): POST
	// https://api.joincandidhealth.com/api/auth/v2/token, id and secret in a JSON body, a JWT
	// access token whose expiry is the smaller of expires_in and the JWT's exp.
	Candid Provider = "candid"
	// Pattern is Pattern Health ("Authentication"): POST https://{Domain}/api/auth/token, HTTP Basic,
	// expires_in in milliseconds. Its host is per customer: allow it with WithAllowedHosts.
	Pattern Provider = "pattern"
	// Candescent is Candescent digital banking ("Create OAuth Token (V2)"): POST
	// https://api.candescent.com/digitalbanking/oauth2/v1/token, HTTP Basic, four grants, the
	// institutionId header (InstitutionID) for all but refresh_token.
	Candescent Provider = "candescent"
	// NikoHealth is NikoHealth ("How API Authentication and Authorization Works"): POST
	// https://{Domain}.nikohealth.com/api/identity/connect/token, HTTP Basic with id and secret
	// form-encoded first (RFC 6749 section 2.3.1).
	NikoHealth Provider = "nikohealth"
	// SMART is a SMART on FHIR server's Backend Services (Epic, Oracle Health, any certified EHR):
	// private_key_jwt with a key the Runtime holds (KeyID, WithSigner), the token endpoint found
	// from FHIRBase's .well-known/smart-configuration, scopes as system/<resource>.<access>.
	SMART Provider = "smart"
	// Custom is any other OAuth 2.0 token endpoint: TokenURL, AuthStyle and Profile describe it.
	Custom Provider = "custom"
)

// AuthStyle is how the client id and secret reach a Custom provider's endpoint. Its values are
// those of golang.org/x/oauth2's AuthStyle where the two mean the same.
type AuthStyle int

const (
	// AuthStyleAutoDetect leaves the choice to the provider: a built-in provider's documented style,
	// or the Profile's client_auth (HTTP Basic as given, when unset) for Custom. The plugin never
	// guesses by trying both: a failed attempt costs a request against a rate limit.
	AuthStyleAutoDetect AuthStyle = 0
	// AuthStyleInParams sends client_id and client_secret in the body ("body").
	AuthStyleInParams AuthStyle = 1
	// AuthStyleInHeader sends HTTP Basic with id and secret form-encoded first, as RFC 6749 section
	// 2.3.1 says and x/oauth2 does ("basic_rfc6749").
	AuthStyleInHeader AuthStyle = 2
	// AuthStyleInHeaderRaw sends HTTP Basic with id and secret as given ("basic"): what providers that
	// document base64(id:secret) decode.
	AuthStyleInHeaderRaw AuthStyle = 3
)

// clientAuth is the ABI's name for the style.
func (s AuthStyle) clientAuth() (string, bool) {
	switch s {
	case AuthStyleInParams:
		return "body", true
	case AuthStyleInHeader:
		return "basic_rfc6749", true
	case AuthStyleInHeaderRaw:
		return "basic", true
	}
	return "", s == AuthStyleAutoDetect
}

// Config describes one credential set at one provider, as golang.org/x/oauth2/clientcredentials.Config
// does, plus the grant inputs the providers take. Its TokenSource, Client and Token methods are
// x/oauth2's; the plugin behind them speaks each provider's dialect. A Config converts once to the
// ABI's abi.TokenRequest (TokenRequest), which Runtime's lower-level methods take.
type Config struct {
	// Provider is the token endpoint's dialect: a built-in provider, or Custom.
	Provider Provider
	// ClientID and ClientSecret are the client's credentials. The secret never appears in a log,
	// error, metric or cache key.
	ClientID     string
	ClientSecret string
	// TokenURL overrides the provider's endpoint (a sandbox, a local fake); Custom requires it unless
	// Profile.TokenURL is set. A built-in provider's credentials are only sent to its own hosts.
	TokenURL string
	// Domain fills the provider's per-customer endpoint: Pattern's API host, NikoHealth's customer.
	Domain string
	// Scopes are sent space-separated where the provider takes a scope.
	Scopes []string
	// EndpointParams are extra body fields, sent after the plugin's own; one value per key, and none
	// of the request's own fields (client_id, grant_type, ...: set those in their fields).
	EndpointParams url.Values
	// AuthStyle chooses how a Custom provider gets the client's credentials; built-in providers use
	// their documented style and accept only AuthStyleAutoDetect.
	AuthStyle AuthStyle

	// GrantType is one of abi.GrantClientCredentials (the default), abi.GrantPassword,
	// abi.GrantAuthorizationCode and abi.GrantRefreshToken, where the provider allows it.
	GrantType string
	// Username and Password are the password grant's.
	Username string
	Password string
	// Code, RedirectURI and CodeVerifier (PKCE) are the authorization_code grant's. A code works once:
	// the Runtime then follows the refresh token the provider returns (see WithRefreshTokenHook).
	Code         string
	RedirectURI  string
	CodeVerifier string
	// RefreshToken is the refresh_token grant's; the Runtime follows the provider's rotation of it.
	RefreshToken string
	// InstitutionID is Candescent's institutionId header.
	InstitutionID string

	// KeyID names the key the Runtime signs client assertions with (WithSigner; private_key_jwt), or
	// the certificate it presents (WithClientCertificate; tls_client_auth).
	KeyID string
	// AssertionAlg is the client assertion's algorithm where the profile allows several (RS384 or
	// ES384 for SMART).
	AssertionAlg string
	// FHIRBase is a SMART server's FHIR base URL: its token and revocation endpoints are discovered
	// from it.
	FHIRBase string
	// RevocationURL is the RFC 7009 endpoint Runtime.Revoke uses, where discovery or the profile
	// gives none.
	RevocationURL string

	// BodyFormat is "json" or "form", where the provider accepts both (Candid).
	BodyFormat string
	// Headers are extra request headers; a header the plugin sets is replaced.
	Headers map[string]string
	// Timeout bounds one fetch, retries included (default 10 s, at most 120 s).
	Timeout time.Duration
	// Profile describes a Custom provider's endpoint (body format, expires_in unit, grants); nil
	// takes the ABI's defaults. abi/ABI.md, "Profile", lists its fields.
	Profile *abi.Profile

	// Host is the Runtime that runs the plugin; nil is a Runtime shared by the process, made on first
	// use with New's defaults (no extra allowed hosts, so Pattern needs a Host of its own).
	Host *Runtime
}

// TokenRequest converts c to the ABI's request: what Runtime.Token, Encode and the other exports take.
// An inconsistent Config is an *abi.Error of kind invalid_request, as the plugin reports its own.
func (c *Config) TokenRequest() (abi.TokenRequest, error) {
	req := abi.TokenRequest{
		Provider:      string(c.Provider),
		GrantType:     c.GrantType,
		ClientID:      c.ClientID,
		ClientSecret:  c.ClientSecret,
		TokenURL:      c.TokenURL,
		Domain:        c.Domain,
		Scope:         strings.Join(c.Scopes, " "),
		InstitutionID: c.InstitutionID,
		KeyID:         c.KeyID,
		AssertionAlg:  c.AssertionAlg,
		FHIRBase:      c.FHIRBase,
		RevocationURL: c.RevocationURL,
		Username:      c.Username,
		Password:      c.Password,
		Code:          c.Code,
		RedirectURI:   c.RedirectURI,
		CodeVerifier:  c.CodeVerifier,
		RefreshToken:  c.RefreshToken,
		Body:          c.BodyFormat,
		Headers:       cloneMap(c.Headers),
		Profile:       cloneProfile(c.Profile),
	}
	if c.Timeout > 0 {
		req.TimeoutMS = max(1, c.Timeout.Milliseconds())
	}
	if len(c.EndpointParams) > 0 {
		req.Params = make(map[string]string, len(c.EndpointParams))
		for k, vs := range c.EndpointParams {
			if slices.Contains(ownParams, k) {
				return abi.TokenRequest{}, configError("EndpointParams[" + k + "] is a field of the request: set it in its Config field")
			}
			if len(vs) != 1 {
				return abi.TokenRequest{}, configError("EndpointParams[" + k + "] must hold exactly one value")
			}
			req.Params[k] = vs[0]
		}
	}
	auth, ok := c.AuthStyle.clientAuth()
	switch {
	case !ok:
		return abi.TokenRequest{}, configError("unknown AuthStyle")
	case c.Provider == Custom && auth != "":
		if req.Profile == nil {
			req.Profile = &abi.Profile{}
		}
		req.Profile.ClientAuth = auth
	case c.Provider == Custom && req.Profile == nil:
		req.Profile = &abi.Profile{}
	case c.Provider != Custom && auth != "":
		return abi.TokenRequest{}, configError("AuthStyle applies to Custom only: " + string(c.Provider) + " uses its documented style")
	case c.Provider != Custom && c.Profile != nil:
		return abi.TokenRequest{}, configError("Profile applies to Custom only")
	}
	return req, nil
}

// ownParams are the body fields the request itself sends: as x/oauth2 does, EndpointParams may not
// send them again (a provider reading the last copy would see another client, secret or grant).
var ownParams = []string{"grant_type", "client_id", "client_secret", "scope", "username", "password",
	"code", "redirect_uri", "code_verifier", "refresh_token", "client_assertion", "client_assertion_type"}

func configError(msg string) *abi.Error {
	return &abi.Error{Kind: abi.KindInvalidRequest, Message: "Config: " + msg}
}

// Token returns a valid token, from the Host's cache when it holds one.
func (c *Config) Token(ctx context.Context) (*oauth2.Token, error) {
	return c.TokenSource(ctx).Token()
}

// TokenSource returns a source of tokens for c's credentials, reused until they near expiry.
// Sources are shared: two Configs that convert to the same request share one token and one fetch.
// Its Token honours ctx's deadline and cancellation (as x/oauth2's does); TokenContext takes a context
// per call instead. Unlike x/oauth2, an *http.Client in ctx does not reach the token endpoint: the
// Host's transport (WithHTTPTransport), under its host policy, does.
func (c *Config) TokenSource(ctx context.Context) *TokenSource {
	h, err := c.host()
	if err != nil {
		return &TokenSource{err: err}
	}
	req, err := c.TokenRequest()
	if err != nil {
		return &TokenSource{err: err}
	}
	ts := h.TokenSource(req)
	ts.ctx = ctx
	return ts
}

// Client returns an HTTP client that sends c's token on every request and, when the API answers 401,
// drops it and retries once with a new one (Client.Transport). As with x/oauth2, an *http.Client in
// ctx under oauth2.HTTPClient supplies the transport underneath, for the API's requests; the token
// endpoint is reached through the Host's transport (WithHTTPTransport), as TokenSource says.
func (c *Config) Client(ctx context.Context) *http.Client {
	var base http.RoundTripper
	if hc, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && hc != nil {
		base = hc.Transport
	}
	h, err := c.host()
	if err != nil {
		return &http.Client{Transport: &transport{err: err}}
	}
	req, err := c.TokenRequest()
	if err != nil {
		return &http.Client{Transport: &transport{err: err}}
	}
	return &http.Client{Transport: h.Transport(base, req)}
}

func (c *Config) host() (*Runtime, error) {
	if c.Host != nil {
		return c.Host, nil
	}
	return defaultHost()
}

// defaultHost is the Runtime of Configs without a Host: made once, never closed.
var defaultHost = sync.OnceValues(func() (*Runtime, error) { return New(context.Background()) })

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// cloneProfile copies p deeply, so a caller changing its Profile later cannot change a source's.
func cloneProfile(p *abi.Profile) *abi.Profile {
	if p == nil {
		return nil
	}
	q := *p
	q.Headers = cloneMap(p.Headers)
	q.Grants = append([]string(nil), p.Grants...)
	if p.SendGrantType != nil {
		v := *p.SendGrantType
		q.SendGrantType = &v
	}
	if p.SendScope != nil {
		v := *p.SendScope
		q.SendScope = &v
	}
	return &q
}
