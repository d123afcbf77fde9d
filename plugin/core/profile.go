package core

import "github.com/tokenwasm/tokenwasm/abi"

// Body formats and client authentication methods of a profile.
const (
	BodyJSON = "json"
	BodyForm = "form"

	AuthBody = "body" // client_id and client_secret in the body
	// AuthBasic sends base64(id:secret) as given (what Pattern and Candescent document).
	AuthBasic = "basic"
	// AuthBasicRFC6749 form-encodes id and secret before base64 (RFC 6749 section 2.3.1), as
	// IdentityServer decodes them.
	AuthBasicRFC6749 = "basic_rfc6749"
	// AuthPrivateKeyJWT signs a client assertion (RFC 7523 section 2.2) with a key the host holds:
	// the plugin builds the JWS signing input, the host signs it (token_step's "sign" action).
	AuthPrivateKeyJWT = "private_key_jwt"
	// AuthClientSecretJWT signs the client assertion with HMAC-SHA256 under the client secret, in
	// the plugin (the secret comes with the request).
	AuthClientSecretJWT = "client_secret_jwt"
	// AuthTLSClient is mutual TLS (RFC 8705 section 2): client_id in the body, the host presents the
	// client certificate named by key_id on the connection.
	AuthTLSClient = "tls_client_auth"

	UnitSeconds      = "s"
	UnitMilliseconds = "ms"
)

var allGrants = []string{abi.GrantClientCredentials, abi.GrantPassword, abi.GrantAuthorizationCode, abi.GrantRefreshToken}

// Profile is everything that makes one provider's token endpoint differ from another's. A provider's
// whole behaviour is its row in providers (Providers returns a copy); there are no per-provider code paths.
type Profile struct {
	Name string
	Doc  string // the document the row was written from (docs/providers.md)
	// TokenURL may hold {domain}, filled from the request's domain; the request's token_url wins.
	TokenURL string
	Body     string
	// BodySelectable lets the request's "body" choose json or form (Candid accepts both).
	BodySelectable bool
	ClientAuth     string
	SendGrantType  bool
	SendScope      bool
	ExpiresInUnit  string
	Headers        []header // sent as is
	Grants         []string
	// FieldHeaders sends request fields as headers, required for some grants (Candescent's institutionId).
	FieldHeaders []FieldHeader
	// RequestIDHeader gets a fresh random id per request (Candescent's transactionId). It is left out
	// of the cache identity.
	RequestIDHeader string
	// TokenHosts are the hosts this provider's credentials may be sent to ("*.example.com": any
	// subdomain; AnyTokenHost: any host but another built-in provider's). A token URL elsewhere is
	// refused at encode with kind policy; loopback hosts stay allowed for local fakes. Empty: not
	// bound (the custom provider, whose token_url is its own).
	TokenHosts []string
	// AssertionAlgs are the JWS algorithms a client assertion may use, the first the default
	// (private_key_jwt and client_secret_jwt only).
	AssertionAlgs []string
	// ScopePrefix, when set, is the prefix every scope must have (SMART Backend Services: "system/").
	ScopePrefix string
	// RevocationURL is the RFC 7009 revocation endpoint, if the provider has one; the request's
	// revocation_url wins (smart: the host discovers revocation_endpoint).
	RevocationURL string
	// RevocationMethod is the revocation request's HTTP method: POST (RFC 7009, the default) or
	// DELETE (Candescent documents DELETE /oauth2/v1/revoke with a form token=).
	RevocationMethod string
	// Discovery names where a host finds the token URL when the request has none (SMART's
	// ".well-known/smart-configuration" under fhir_base); the plugin itself never fetches it.
	Discovery string
}

// FieldHeader sends the request field Field in the header Header; the field is required for the
// grants in RequiredFor.
type FieldHeader struct {
	Field       string
	Header      string
	RequiredFor []string
}

// Providers returns the table of built-in providers, a copy of each row: the contract exports no
// mutable variable, so no caller can change the profile another request is encoded with.
func Providers() []*Profile {
	out := make([]*Profile, len(providers))
	for i, p := range providers {
		out[i] = p.clone()
	}
	return out
}

// clone returns a copy of p that shares nothing mutable with it.
func (p *Profile) clone() *Profile {
	c := *p
	c.Headers = append([]header(nil), p.Headers...)
	c.Grants = append([]string(nil), p.Grants...)
	c.TokenHosts = append([]string(nil), p.TokenHosts...)
	c.AssertionAlgs = append([]string(nil), p.AssertionAlgs...)
	c.FieldHeaders = make([]FieldHeader, len(p.FieldHeaders))
	for i, f := range p.FieldHeaders {
		f.RequiredFor = append([]string(nil), f.RequiredFor...)
		c.FieldHeaders[i] = f
	}
	return &c
}

// providers is the table of built-in providers.
var providers = []*Profile{
	{
		Name:           "candid",
		Doc:            "Candid Health API reference, Auth: Get token (POST /api/auth/v2/token)",
		TokenURL:       "https://api.joincandidhealth.com/api/auth/v2/token",
		Body:           BodyJSON,
		BodySelectable: true,
		ClientAuth:     AuthBody,
		ExpiresInUnit:  UnitSeconds,
		Grants:         []string{abi.GrantClientCredentials},
		TokenHosts:     []string{"api.joincandidhealth.com"},
	},
	{
		Name:          "pattern",
		Doc:           "Pattern Health API, Authentication (POST /api/auth/token)",
		TokenURL:      "https://{domain}/api/auth/token",
		Body:          BodyForm,
		ClientAuth:    AuthBasic,
		SendGrantType: true,
		ExpiresInUnit: UnitMilliseconds,
		Grants:        []string{abi.GrantClientCredentials},
		TokenHosts:    []string{AnyTokenHost}, // per customer
	},
	{
		Name:          "candescent",
		Doc:           "Candescent API reference, Create OAuth Token V2 (POST /oauth2/v1/token)",
		TokenURL:      "https://api.candescent.com/digitalbanking/oauth2/v1/token",
		Body:          BodyForm,
		ClientAuth:    AuthBasic,
		SendGrantType: true,
		SendScope:     true,
		ExpiresInUnit: UnitSeconds,
		Grants:        allGrants,
		FieldHeaders: []FieldHeader{{
			Field:       "institution_id",
			Header:      "institutionId",
			RequiredFor: []string{abi.GrantClientCredentials, abi.GrantPassword, abi.GrantAuthorizationCode},
		}},
		RequestIDHeader: "transactionId",
		TokenHosts:      []string{"api.candescent.com"},
		// Candescent's reference and its TypeScript SDK revoke with DELETE and a form token=.
		RevocationURL:    "https://api.candescent.com/digitalbanking/oauth2/v1/revoke",
		RevocationMethod: "DELETE",
	},
	{
		Name:          "nikohealth",
		Doc:           "NikoHealth help center, How API Authentication and Authorization Works",
		TokenURL:      "https://{domain}.nikohealth.com/api/identity/connect/token",
		Body:          BodyForm,
		ClientAuth:    AuthBasicRFC6749,
		SendGrantType: true,
		SendScope:     true,
		ExpiresInUnit: UnitSeconds,
		Grants:        []string{abi.GrantClientCredentials},
		TokenHosts:    []string{"*.nikohealth.com"},
	},
	{
		Name: "smart",
		Doc:  "HL7 SMART App Launch 2.2, Backend Services (client_credentials with a signed client assertion)",
		// The token URL is the token_endpoint of {fhir_base}/.well-known/smart-configuration: the host
		// discovers it (through its http_send policy) and sends it as token_url.
		Body:          BodyForm,
		ClientAuth:    AuthPrivateKeyJWT,
		SendGrantType: true,
		SendScope:     true,
		ExpiresInUnit: UnitSeconds,
		Grants:        []string{abi.GrantClientCredentials},
		TokenHosts:    []string{AnyTokenHost}, // each EHR's own
		AssertionAlgs: []string{AlgRS384, AlgES384},
		ScopePrefix:   "system/",
		Discovery:     SMARTDiscoveryPath,
	},
}

// SMARTDiscoveryPath is where a SMART server describes itself, under its FHIR base URL.
const SMARTDiscoveryPath = "/.well-known/smart-configuration"

// ProviderCustom is the provider name whose profile comes in the request.
const ProviderCustom = "custom"

// Lookup returns the built-in profile named name, or nil. It is the table's own row, shared by every
// request the plugin encodes (no copy on the hot path): read it, never write it; Providers gives
// copies.
func Lookup(name string) *Profile {
	for _, p := range providers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (p *Profile) allows(grant string) bool { return contains(p.Grants, grant) }

// grantFields lists the request fields each grant needs, in the order they are sent.
func grantFields(grant string) []string {
	switch grant {
	case abi.GrantPassword:
		return []string{"username", "password"}
	case abi.GrantAuthorizationCode:
		return []string{"code", "redirect_uri"}
	case abi.GrantRefreshToken:
		return []string{"refresh_token"}
	}
	return nil
}

// required lists the fields a request for grant must carry, for describe and validation messages.
func (p *Profile) required(grant string) []string {
	r := []string{"client_id"}
	if p.usesSecret() {
		r = append(r, "client_secret")
	}
	if p.hostKey() {
		r = append(r, "key_id")
	}
	if hasDomain(p.TokenURL) {
		r = append(r, "domain")
	}
	if p.TokenURL == "" && p.Name != ProviderCustom {
		r = append(r, "token_url")
	}
	r = append(r, grantFields(grant)...)
	for _, fh := range p.FieldHeaders {
		if contains(fh.RequiredFor, grant) {
			r = append(r, fh.Field)
		}
	}
	return r
}

// usesSecret reports whether the profile's client authentication needs the client secret.
func (p *Profile) usesSecret() bool {
	return p.ClientAuth != AuthPrivateKeyJWT && p.ClientAuth != AuthTLSClient
}

// hostKey reports whether the host holds the credential, named by key_id: a signing key or a client
// certificate.
func (p *Profile) hostKey() bool {
	return p.ClientAuth == AuthPrivateKeyJWT || p.ClientAuth == AuthTLSClient
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
