package core

// The TokenRequest's fields, once: what each is and who reads it. The plugin's parser reads this
// table; hosts read it to tell a credential set from a call's options (the Go host's source map and
// index, the Envoy filter's configuration). A test holds it to abi.TokenRequest, abi.Profile and
// the JSON schemas in abi/schema, so a field cannot be added in one place only.

// FieldType is a field's JSON type.
type FieldType uint8

// The JSON types of the fields.
const (
	FieldString FieldType = iota + 1
	FieldMap              // an object of strings
	FieldBool
	FieldNumber // a non-negative integer: milliseconds
	FieldObject // the profile
	FieldArray  // an array of strings: a profile's grants
)

// FieldUse says who reads a field besides its type.
type FieldUse uint8

const (
	// UsePlugin: the plugin reads it.
	UsePlugin FieldUse = iota
	// UseReplay: the plugin reads it, for tests and replays only: it fixes what the plugin would
	// otherwise make fresh (the clock, an assertion's jti).
	UseReplay
	// UseHost: the plugin accepts it and ignores it: a host's (fhir_base, from which the Go host
	// discovers token_url) or a label (a profile's name).
	UseHost
)

// Field is one member of a TokenRequest (or of a Profile).
type Field struct {
	Name string // the JSON member
	Type FieldType
	// Secret: a credential, never in a log, an error or a key; the Envoy filter may read it from
	// the environment.
	Secret bool
	// Identity: part of the credential set, which names a token. A field that is not is an option
	// of one call (or, revocation_url, of one operation): hosts clear it before keying or comparing
	// credential sets, and the Envoy filter sets the flow's own.
	Identity bool
	Use      FieldUse
}

// requestFields is the table, in the order the parser reads the fields (its first error names the
// first bad field in this order): the strings, then the others.
var requestFields = [...]Field{
	{Name: "provider", Type: FieldString, Identity: true},
	{Name: "grant_type", Type: FieldString, Identity: true},
	{Name: "client_id", Type: FieldString, Identity: true},
	{Name: "client_secret", Type: FieldString, Identity: true, Secret: true},
	{Name: "token_url", Type: FieldString, Identity: true},
	{Name: "domain", Type: FieldString, Identity: true},
	{Name: "scope", Type: FieldString, Identity: true},
	{Name: "institution_id", Type: FieldString, Identity: true},
	{Name: "username", Type: FieldString, Identity: true},
	{Name: "password", Type: FieldString, Identity: true, Secret: true},
	{Name: "code", Type: FieldString, Identity: true, Secret: true},
	{Name: "redirect_uri", Type: FieldString, Identity: true},
	{Name: "code_verifier", Type: FieldString, Identity: true, Secret: true},
	{Name: "refresh_token", Type: FieldString, Identity: true, Secret: true},
	{Name: "body", Type: FieldString, Identity: true},
	{Name: "access_token", Type: FieldString, Secret: true},
	{Name: "key_id", Type: FieldString, Identity: true},
	{Name: "assertion_alg", Type: FieldString, Identity: true},
	{Name: "assertion_jti", Type: FieldString, Identity: true, Use: UseReplay},
	// Where to revoke is not part of the credential set: a token is revoked and dropped whatever
	// endpoint discovery or the caller names.
	{Name: "revocation_url", Type: FieldString},
	{Name: "params", Type: FieldMap, Identity: true},
	{Name: "headers", Type: FieldMap, Identity: true},
	{Name: "profile", Type: FieldObject, Identity: true},
	{Name: "force", Type: FieldBool},
	{Name: "fleet_lock", Type: FieldBool},
	{Name: "timeout_ms", Type: FieldNumber, Identity: true},
	{Name: "now_ms", Type: FieldNumber, Use: UseReplay},
	{Name: "min_ttl_ms", Type: FieldNumber},
	{Name: "fhir_base", Type: FieldString, Identity: true, Use: UseHost},
}

// profileFields are a Profile's members (provider "custom"), in the order the parser reads them.
// Every one is part of the credential set, and none is a secret; name is a label the parser ignores.
var profileFields = [...]Field{
	{Name: "token_url", Type: FieldString, Identity: true},
	{Name: "revocation_url", Type: FieldString, Identity: true},
	{Name: "body", Type: FieldString, Identity: true},
	{Name: "client_auth", Type: FieldString, Identity: true},
	{Name: "assertion_alg", Type: FieldString, Identity: true},
	{Name: "expires_in_unit", Type: FieldString, Identity: true},
	{Name: "send_grant_type", Type: FieldBool, Identity: true},
	{Name: "send_scope", Type: FieldBool, Identity: true},
	{Name: "headers", Type: FieldMap, Identity: true},
	{Name: "grants", Type: FieldArray, Identity: true},
	{Name: "revocation_method", Type: FieldString, Identity: true},
	{Name: "name", Type: FieldString, Identity: true, Use: UseHost},
}

// RequestFields returns the TokenRequest's fields (a copy: the table is not the caller's to change).
func RequestFields() []Field { return append([]Field(nil), requestFields[:]...) }

// ProfileFields returns a Profile's fields (a copy).
func ProfileFields() []Field { return append([]Field(nil), profileFields[:]...) }

// requestMembers and profileMembers are the tables' names, as Members and unknownMember take them.
var (
	requestMembers = names(requestFields[:])
	profileMembers = names(profileFields[:])
)

func names(fs []Field) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Name
	}
	return out
}
