package core

import (
	"slices"
	"sort"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// Request is a parsed, not yet validated TokenRequest.
type Request struct {
	Provider      string
	GrantType     string
	ClientID      string
	ClientSecret  string
	TokenURL      string
	Domain        string
	Scope         string
	InstitutionID string
	Username      string
	Password      string
	Code          string
	RedirectURI   string
	CodeVerifier  string
	RefreshToken  string
	Body          string
	TimeoutMS     int64
	Params        []header // sorted by name
	Headers       []header // sorted by name
	Force         bool
	FleetLock     bool
	NowMS         int64
	MinTTLMS      int64
	AccessToken   string // invalidate: drop the cached token only if it is this one
	KeyID         string // the host-held key: signing key (private_key_jwt) or client certificate
	AssertionAlg  string // the client assertion's JWS alg; default the profile's first
	AssertionJTI  string // tests and replays, with now_ms: the assertion's jti instead of a fresh one
	RevocationURL string // revoke: the revocation endpoint, over the profile's

	profile *Profile
	// secretList is what redact looks for, built on first use (error paths only).
	secretList  []string
	secretsDone bool
}

type header struct{ name, value string }

// maxDepth bounds JSON nesting before any recursive parser sees the input: deep nesting must be a
// typed error, never a stack overflow inside wasm.
const maxDepth = 32

// MaxInputBytes bounds the input of the exports that carry a provider's response (decode, and
// token_step with http_send's answer): room for a 1 MiB response body JSON-escaped (up to 6 MiB) and
// its headers, and small enough that a hostile input cannot exhaust an instance's memory.
const MaxInputBytes = 8 << 20

// MaxRequestBytes bounds a TokenRequest: the whole input of encode, token and invalidate, and the
// request member of decode's and token_step's input. A real request is a few hundred bytes, a few
// KiB with a long scope or refresh token; the bound is a thousand times that, and small enough that
// an instance holds every request it accepts, with what is encoded from it (up to 3 times its size
// form-encoded), in a few MiB of its 32 MiB (abi/ABI.md, "Limits"; RATIONALE.md).
const MaxRequestBytes = 256 << 10

// InputTooLarge is the answer to an input over MaxInputBytes; the plugin gives it without reading
// the input into memory.
func InputTooLarge() []byte { return errorJSON(invalidRequest("input exceeds 8 MiB")) }

// RequestTooLarge is the answer to a TokenRequest over MaxRequestBytes; the plugin gives it without
// reading the request into memory when it is the whole input.
func RequestTooLarge() []byte { return errorJSON(requestTooLarge()) }

func requestTooLarge() *abi.Error { return invalidRequest("request exceeds 256 KiB") }

// parseJSON checks that b is one JSON object of bounded size and depth. The Result owns a copy of b:
// what is parsed from it may outlive b (the memo keeps the request).
func parseJSON(b []byte, what string) (gjson.Result, *abi.Error) {
	if err := checkJSON(b, what); err != nil {
		return gjson.Result{}, err
	}
	return asObject(gjson.ParseBytes(b), what)
}

// checkJSON checks that b is valid JSON of bounded size and depth.
func checkJSON(b []byte, what string) *abi.Error { return checkJSONDepth(b, what, maxDepth) }

// checkJSONDepth is checkJSON with another depth limit: token_step's input holds an import's answer
// one level down, and takes the answers token takes.
func checkJSONDepth(b []byte, what string, limit int) *abi.Error {
	switch {
	case len(b) > MaxInputBytes:
		return invalidRequest(what + " exceeds 8 MiB")
	case depth(b) > limit:
		return invalidRequest(what + " is nested too deeply")
	case !gjson.ValidBytes(b):
		return invalidRequest(what + " is not valid JSON")
	}
	return nil
}

func asObject(v gjson.Result, what string) (gjson.Result, *abi.Error) {
	if !v.IsObject() {
		return gjson.Result{}, invalidRequest(what + " must be a JSON object")
	}
	return v, nil
}

// depth returns the deepest nesting of arrays and objects in b, skipping strings. It is linear and
// allocation-free, so it is safe on any input size.
func depth(b []byte) int {
	d, max := 0, 0
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			d++
			if d > max {
				max = d
			}
		case '}', ']':
			d--
		}
	}
	return max
}

// requestMembers are the members of a TokenRequest: the string fields (stringField), then the others.
var requestMembers = [...]string{"provider", "grant_type", "client_id", "client_secret", "token_url", "domain",
	"scope", "institution_id", "username", "password", "code", "redirect_uri", "code_verifier", "refresh_token",
	"body", "access_token", "key_id", "assertion_alg", "assertion_jti", "revocation_url",
	"params", "headers", "profile", "force", "fleet_lock", "timeout_ms", "now_ms", "min_ttl_ms"}

// ParseRequest reads a TokenRequest from v. An unknown field is invalid_request naming it (a
// misspelt "scopes" would otherwise get a token without the scope asked for); of a repeated field
// the first is read (Members); a known field of the wrong type is invalid_request, named in the
// message.
func ParseRequest(v gjson.Result) (*Request, *abi.Error) {
	if err := unknownMember(v, requestMembers[:], "fhir_base"); err != nil {
		return nil, err
	}
	r := &Request{}
	var m [len(requestMembers)]string
	Members(v.Raw, requestMembers[:], m[:])
	var profile gjson.Result
	for i, name := range requestMembers {
		if m[i] == "" {
			continue
		}
		val := gjson.Parse(m[i])
		if s := r.stringField(name); s != nil {
			if val.Type == gjson.Null {
				continue
			}
			if val.Type != gjson.String {
				return nil, invalidRequest(name + " must be a string")
			}
			*s = val.Str
			continue
		}
		switch name {
		case "params", "headers":
			hs, e := stringMap(name, val)
			if e != nil {
				return nil, e
			}
			if name == "params" {
				r.Params = hs
			} else {
				r.Headers = hs
			}
		case "profile":
			profile = val
		case "force", "fleet_lock":
			if val.Type != gjson.True && val.Type != gjson.False && val.Type != gjson.Null {
				return nil, invalidRequest(name + " must be a boolean")
			}
			if name == "force" {
				r.Force = val.Type == gjson.True
			} else {
				r.FleetLock = val.Type == gjson.True
			}
		case "timeout_ms", "now_ms", "min_ttl_ms":
			if val.Type == gjson.Null {
				continue
			}
			if val.Type != gjson.Number || val.Num < 0 || val.Num > 1e15 {
				return nil, invalidRequest(name + " must be a non-negative number of milliseconds")
			}
			switch name {
			case "now_ms":
				r.NowMS = int64(val.Num)
			case "min_ttl_ms":
				r.MinTTLMS = int64(val.Num)
			default:
				r.TimeoutMS = int64(val.Num)
			}
		}
	}
	if err := r.resolveProfile(profile); err != nil {
		return nil, err
	}
	return r, nil
}

// stringField returns the address of the string field named name, or nil.
func (r *Request) stringField(name string) *string {
	switch name {
	case "provider":
		return &r.Provider
	case "grant_type":
		return &r.GrantType
	case "client_id":
		return &r.ClientID
	case "client_secret":
		return &r.ClientSecret
	case "token_url":
		return &r.TokenURL
	case "domain":
		return &r.Domain
	case "scope":
		return &r.Scope
	case "institution_id":
		return &r.InstitutionID
	case "username":
		return &r.Username
	case "password":
		return &r.Password
	case "code":
		return &r.Code
	case "redirect_uri":
		return &r.RedirectURI
	case "code_verifier":
		return &r.CodeVerifier
	case "refresh_token":
		return &r.RefreshToken
	case "body":
		return &r.Body
	case "access_token":
		return &r.AccessToken
	case "key_id":
		return &r.KeyID
	case "assertion_alg":
		return &r.AssertionAlg
	case "assertion_jti":
		return &r.AssertionJTI
	case "revocation_url":
		return &r.RevocationURL
	}
	return nil
}

// field returns the value of the string field named name.
func (r *Request) field(name string) string {
	if p := r.stringField(name); p != nil {
		return *p
	}
	return ""
}

func stringMap(name string, v gjson.Result) ([]header, *abi.Error) {
	if v.Type == gjson.Null {
		return nil, nil
	}
	if !v.IsObject() {
		return nil, invalidRequest(name + " must be an object of strings")
	}
	var hs []header
	var err *abi.Error
	v.ForEach(func(k, val gjson.Result) bool {
		if val.Type != gjson.String || k.Str == "" {
			err = invalidRequest(name + " must be an object of strings")
			return false
		}
		hs = append(hs, header{k.Str, val.Str})
		return true
	})
	// Of a repeated name the first is read, as of any repeated member (Members): sorted stably, the
	// first of equal names comes first, and the later ones go.
	sort.SliceStable(hs, func(i, j int) bool { return hs[i].name < hs[j].name })
	hs = slices.CompactFunc(hs, func(a, b header) bool { return a.name == b.name })
	return hs, err
}

// unknownMember returns invalid_request naming the first member of object v that is neither in
// known nor one of also (fields a host reads and the plugin ignores), or nil.
func unknownMember(v gjson.Result, known []string, also ...string) *abi.Error {
	var err *abi.Error
	v.ForEach(func(k, _ gjson.Result) bool {
		if !contains(known, k.Str) && !contains(also, k.Str) {
			err = invalidRequest("unknown field " + quote(k.Str))
			return false
		}
		return true
	})
	return err
}

// profileMembers are the members of a custom Profile; of a repeated one the first is read (Members).
var profileMembers = [...]string{"token_url", "revocation_url", "body", "client_auth", "assertion_alg",
	"expires_in_unit", "send_grant_type", "send_scope", "headers", "grants", "revocation_method"}

func (r *Request) resolveProfile(custom gjson.Result) *abi.Error {
	if r.Provider == "" {
		return invalidRequest("provider is required")
	}
	if r.Provider != ProviderCustom {
		if r.profile = Lookup(r.Provider); r.profile == nil {
			return invalidRequest("unknown provider " + quote(r.Provider))
		}
		return nil
	}
	if !custom.IsObject() {
		return invalidRequest(`provider "custom" needs a profile object`)
	}
	p := &Profile{
		Name:          ProviderCustom,
		Body:          BodyForm,
		ClientAuth:    AuthBasic,
		SendGrantType: true,
		SendScope:     true,
		ExpiresInUnit: UnitSeconds,
		Grants:        allGrants,
	}
	var err *abi.Error
	choice := func(name string, val gjson.Result, dst *string, allowed ...string) bool {
		if val.Type != gjson.String || !contains(allowed, val.Str) {
			err = invalidRequest("profile." + name + " must be one of " + strings.Join(allowed, ", "))
			return false
		}
		*dst = val.Str
		return true
	}
	set := func(name string, val gjson.Result) bool {
		switch name {
		case "token_url":
			if val.Type != gjson.String {
				err = invalidRequest("profile.token_url must be a string")
				return false
			}
			p.TokenURL = val.Str
		case "revocation_url":
			if val.Type != gjson.String {
				err = invalidRequest("profile.revocation_url must be a string")
				return false
			}
			p.RevocationURL = val.Str
		case "revocation_method":
			return choice("revocation_method", val, &p.RevocationMethod, "POST", "DELETE")
		case "body":
			return choice("body", val, &p.Body, BodyJSON, BodyForm)
		case "client_auth":
			return choice("client_auth", val, &p.ClientAuth, AuthBody, AuthBasic, AuthBasicRFC6749,
				AuthClientSecretJWT, AuthPrivateKeyJWT, AuthTLSClient)
		case "assertion_alg":
			var alg string
			if !choice("assertion_alg", val, &alg, append([]string{AlgHS256}, privateKeyAlgs...)...) {
				return false
			}
			p.AssertionAlgs = []string{alg}
		case "expires_in_unit":
			return choice("expires_in_unit", val, &p.ExpiresInUnit, UnitSeconds, UnitMilliseconds)
		case "send_grant_type", "send_scope":
			if val.Type != gjson.True && val.Type != gjson.False {
				err = invalidRequest("profile." + name + " must be a boolean")
				return false
			}
			if name == "send_grant_type" {
				p.SendGrantType = val.Type == gjson.True
			} else {
				p.SendScope = val.Type == gjson.True
			}
		case "headers":
			hs, e := stringMap("profile.headers", val)
			if e != nil {
				err = e
				return false
			}
			p.Headers = hs
		case "grants":
			if !val.IsArray() {
				err = invalidRequest("profile.grants must be an array of grant types")
				return false
			}
			p.Grants = nil
			val.ForEach(func(_, g gjson.Result) bool {
				if g.Type != gjson.String || !contains(allGrants, g.Str) {
					err = invalidRequest("profile.grants must be an array of grant types")
					return false
				}
				p.Grants = append(p.Grants, g.Str)
				return true
			})
			return err == nil
		}
		return true
	}
	if e := unknownMember(custom, profileMembers[:], "name"); e != nil { // name: abi.Profile's label
		e.Message = "profile: " + e.Message
		return e
	}
	var m [len(profileMembers)]string
	Members(custom.Raw, profileMembers[:], m[:])
	for i, name := range profileMembers {
		val := gjson.Parse(m[i])
		if m[i] == "" || val.Type == gjson.Null {
			continue // null is absent, as in the request (abi/ABI.md)
		}
		if !set(name, val) {
			break
		}
	}
	if err != nil {
		return err
	}
	hs := contains(p.AssertionAlgs, AlgHS256)
	switch {
	case p.ClientAuth == AuthClientSecretJWT && p.AssertionAlgs != nil && !hs,
		p.ClientAuth == AuthPrivateKeyJWT && hs:
		return invalidRequest("profile.assertion_alg: client_secret_jwt signs with HS256, private_key_jwt with a host key")
	case p.ClientAuth == AuthClientSecretJWT:
		p.AssertionAlgs = []string{AlgHS256}
	case p.ClientAuth == AuthPrivateKeyJWT && p.AssertionAlgs == nil:
		p.AssertionAlgs = privateKeyAlgs
	}
	r.profile = p
	return nil
}

// quote makes caller-supplied names safe and short for messages.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return string(appendString(nil, s))
}
