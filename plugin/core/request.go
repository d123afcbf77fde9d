package core

import (
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

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
	// encodeBufs is where Encode writes: with Memo.Reuse, storage the memo keeps for encoding its
	// request again (the flow sends a grant's newest refresh token in place of the request's); nil,
	// new buffers.
	encodeBufs *requestBufs
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

// checkJSON checks that b is valid JSON of bounded size and depth.
func checkJSON(b []byte, what string) *abi.Error { return checkJSONDepth(b, what, maxDepth) }

// checkJSONDepth is checkJSON with another depth limit: token_step's input holds an import's answer
// one level down, and takes the answers token takes.
func checkJSONDepth(b []byte, what string, limit int) *abi.Error {
	switch {
	case len(b) > MaxInputBytes:
		return invalidRequest(what + " exceeds 8 MiB")
	case validJSON(b, limit):
		return nil
	case depth(b) > limit: // which of the two it is, as when they were checked one after the other
		return invalidRequest(what + " is nested too deeply")
	}
	return invalidRequest(what + " is not valid JSON")
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

// ParseRequest reads a TokenRequest from v. An unknown field is invalid_request naming it (a
// misspelt "scopes" would otherwise get a token without the scope asked for); of a repeated field
// the first is read (Members); a known field of the wrong type is invalid_request, named in the
// message.
func ParseRequest(v gjson.Result) (*Request, *abi.Error) {
	return parseRequest(v.Raw, new(requestBufs))
}

// parseRequest is ParseRequest of raw, a valid JSON value, into b: the request's strings are
// substrings of raw, or unescaped into b, and its lists are b's. It unescapes no value it does not
// keep and allocates nothing in proportion to raw once b has grown (gjson's Str and ForEach
// allocate every escaped string anew: see rawjson.go for why megabytes per call must not be).
func parseRequest(raw string, b *requestBufs) (*Request, *abi.Error) {
	if err := unknownMember(raw, requestMembers); err != nil {
		return nil, err
	}
	b.startParse(len(raw))
	r := &Request{}
	var m [len(requestFields)]string
	Members(raw, requestMembers, m[:])
	var profile string
	for i, f := range requestFields {
		val, name := m[i], f.Name
		if val == "" || f.Use == UseHost {
			continue
		}
		switch f.Type {
		case FieldString:
			if val == "null" {
				continue
			}
			if val[0] != '"' {
				return nil, invalidRequest(name + " must be a string")
			}
			*r.stringField(name) = b.str(val)
		case FieldMap:
			dst, field := &b.params, &r.Params
			if name == "headers" {
				dst, field = &b.headers, &r.Headers
			}
			hs, e := b.stringMap(name, val, dst)
			if e != nil {
				return nil, e
			}
			*field = hs
		case FieldObject:
			profile = val
		case FieldBool:
			if val != "true" && val != "false" && val != "null" {
				return nil, invalidRequest(name + " must be a boolean")
			}
			if name == "force" {
				r.Force = val == "true"
			} else {
				r.FleetLock = val == "true"
			}
		case FieldNumber:
			if val == "null" {
				continue
			}
			n, ok := number(val)
			if !ok || n < 0 || n > 1e15 {
				return nil, invalidRequest(name + " must be a non-negative number of milliseconds")
			}
			switch name {
			case "now_ms":
				r.NowMS = int64(n)
			case "min_ttl_ms":
				r.MinTTLMS = int64(n)
			default:
				r.TimeoutMS = int64(n)
			}
		}
	}
	if err := r.resolveProfile(profile, b); err != nil {
		return nil, err
	}
	return r, nil
}

// number reads raw, a JSON value, as a number (a string is not parsed: gjson would unescape it).
func number(raw string) (float64, bool) {
	if raw == "" || raw[0] < '-' || raw[0] > '9' {
		return 0, false
	}
	v := gjson.Parse(raw)
	return v.Num, v.Type == gjson.Number
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

// stringMap reads raw, a JSON object of strings (or null), into *dst's array, sorted by name.
func (b *requestBufs) stringMap(name, raw string, dst *[]header) ([]header, *abi.Error) {
	if raw == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, invalidRequest(name + " must be an object of strings")
	}
	hs := (*dst)[:0]
	var err *abi.Error
	eachMember(raw, func(k, val string) bool {
		key := b.str(k)
		if val[0] != '"' || key == "" {
			err = invalidRequest(name + " must be an object of strings")
			return false
		}
		hs = append(hs, header{key, b.str(val)})
		return true
	})
	// Of a repeated name the first is read, as of any repeated member (Members): sorted stably, the
	// first of equal names comes first, and the later ones go.
	sort.SliceStable(hs, func(i, j int) bool { return hs[i].name < hs[j].name })
	*dst = hs
	hs = slices.CompactFunc(hs, func(a, b header) bool { return a.name == b.name })
	return hs, err
}

// unknownMember returns invalid_request naming the first member of obj, a JSON object, that is not
// in known, or nil. Keys are compared as Members compares them: unescaped into a buffer of
// maxNameBytes, nothing allocated however long a key (gjson's ForEach unescapes every key and value anew).
func unknownMember(obj string, known []string) *abi.Error {
	var err *abi.Error
	var buf [maxNameBytes + utf8.UTFMax]byte
	eachMember(obj, func(k, _ string) bool {
		key := k[1 : len(k)-1]
		if strings.IndexByte(key, '\\') >= 0 {
			key = unescapeKey(key, &buf)
		}
		if !contains(known, key) {
			err = invalidRequest("unknown field " + quote(key))
			return false
		}
		return true
	})
	return err
}

func (r *Request) resolveProfile(custom string, b *requestBufs) *abi.Error {
	if r.Provider == "" {
		return invalidRequest("provider is required")
	}
	if r.Provider != ProviderCustom {
		if r.profile = Lookup(r.Provider); r.profile == nil {
			return invalidRequest("unknown provider " + quote(r.Provider))
		}
		return nil
	}
	if custom == "" || custom[0] != '{' {
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
	// Values are raw JSON: a string is unescaped into b only when it is kept (see parseRequest).
	choice := func(name string, val string, dst *string, allowed ...string) bool {
		s := ""
		if val[0] == '"' {
			s = b.str(val)
		}
		if !contains(allowed, s) {
			err = invalidRequest("profile." + name + " must be one of " + strings.Join(allowed, ", "))
			return false
		}
		*dst = s
		return true
	}
	set := func(name string, val string) bool {
		switch name {
		case "token_url":
			if val[0] != '"' {
				err = invalidRequest("profile.token_url must be a string")
				return false
			}
			p.TokenURL = b.str(val)
		case "revocation_url":
			if val[0] != '"' {
				err = invalidRequest("profile.revocation_url must be a string")
				return false
			}
			p.RevocationURL = b.str(val)
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
			if val != "true" && val != "false" {
				err = invalidRequest("profile." + name + " must be a boolean")
				return false
			}
			if name == "send_grant_type" {
				p.SendGrantType = val == "true"
			} else {
				p.SendScope = val == "true"
			}
		case "headers":
			hs, e := b.stringMap("profile.headers", val, &b.profileHeaders)
			if e != nil {
				err = e
				return false
			}
			p.Headers = hs
		case "grants":
			if val[0] != '[' {
				err = invalidRequest("profile.grants must be an array of grant types")
				return false
			}
			p.Grants = nil
			eachElement(val, func(g string) bool {
				i := -1
				if g[0] == '"' {
					i = slices.Index(allGrants, b.str(g))
				}
				if i < 0 {
					err = invalidRequest("profile.grants must be an array of grant types")
					return false
				}
				if !contains(p.Grants, allGrants[i]) { // a repeated grant adds nothing (allows)
					p.Grants = append(p.Grants, allGrants[i])
				}
				return true
			})
			return err == nil
		}
		return true
	}
	if e := unknownMember(custom, profileMembers); e != nil {
		e.Message = "profile: " + e.Message
		return e
	}
	// Of a repeated member the first is read (Members).
	var m [len(profileFields)]string
	Members(custom, profileMembers, m[:])
	for i, f := range profileFields {
		val, name := m[i], f.Name
		if val == "" || val == "null" || f.Use == UseHost {
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
