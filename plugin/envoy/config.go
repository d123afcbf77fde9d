package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// Config is the filter's plugin configuration (JSON). Every field is in plugin/envoy/README.md.
// Unknown fields and invalid values stop the filter at start with a message that names the field,
// never its value: a typo must not put a token on every request, and the request holds a secret.
type Config struct {
	Request         json.RawMessage   `json:"request"`
	Name            string            `json:"name"`
	SecretEnv       map[string]string `json:"secret_env"`
	Cluster         string            `json:"cluster"`
	Header          string            `json:"header"`
	Paths           []string          `json:"paths"`
	Hosts           []string          `json:"hosts"`
	RefreshAheadMS  *int64            `json:"refresh_ahead_ms"`
	FailureStatus   *int64            `json:"failure_status"`
	FailureMemoryMS *int64            `json:"failure_memory_ms"`
	WaitMS          *int64            `json:"wait_ms"`
	MaxWaiting      *int64            `json:"max_waiting"`
}

// settings is a validated configuration with its defaults filled in.
type settings struct {
	input           []byte // the TokenRequest with its secrets and "fleet_lock": true, as the flow reads it
	provider        string
	key             string // the identity's cache key: the filter's own shared-data key derives from it
	lockKey         string // the flow's fleet lock for that identity
	cluster         string
	name            string // the filter's name in its metric names (metrics.go)
	header          string
	scope           scope
	refreshAheadSet bool // refresh_ahead_ms was given: accepted, and ignored (README.md)
	failureMemSet   bool // failure_memory_ms was given: it remembers non-retryable failures only
	failureStatus   uint32
	failureMemoryMS int64
	waitMS          int64
	maxWaiting      int
	signer          *keySigner // private_key_jwt: signs the flow's client assertions (sign.go)
}

// requestFields are the TokenRequest fields a configuration may set (plugin/core's field table): the
// credential set's. The per-call fields are the filter's to set, or (revocation_url: the filter
// never revokes) unused; assertion_jti (tests and replays) is refused: every token call gets a fresh
// one; fhir_base is the Go host's (discovery).
var requestFields, secretFields = configFields()

// configFields returns the fields a configuration may set, and of those the secrets secret_env may
// fill from the VM's environment.
func configFields() (fields, secrets map[string]bool) {
	fields, secrets = map[string]bool{}, map[string]bool{}
	for _, f := range core.RequestFields() {
		if f.Identity && f.Use == core.UsePlugin {
			fields[f.Name], secrets[f.Name] = true, f.Secret
		}
	}
	return fields, secrets
}

// reservedHeaders are header names the token must never be written into: they route or frame the
// request, and an access log records some of them.
var reservedHeaders = map[string]bool{
	"host": true, "content-length": true, "transfer-encoding": true, "connection": true, "keep-alive": true,
	"proxy-connection": true, "te": true, "trailer": true, "upgrade": true,
}

// checkMembers refuses a repeated key and a null value among an object's members: encoding/json keeps
// the last of a repeated key and reads null as absent, so {"paths":["/api"],"paths":null} would put
// the token on every request. encoding/json also matches a key without case (Unicode folding: "Paths"
// and "pathſ" are paths), so keys are compared folded. Messages name the key, never a value.
func checkMembers(where string, v gjson.Result) error {
	seen := map[string]bool{}
	var err error
	v.ForEach(func(k, x gjson.Result) bool {
		folded := strings.ToUpper(strings.ToLower(k.Str)) // as encoding/json folds a key
		switch {
		case seen[folded]:
			err = fmt.Errorf("configuration: %s%q is given twice", where, k.Str)
		case x.Type == gjson.Null:
			err = fmt.Errorf("configuration: %s%q is null: leave it out for its default", where, k.Str)
		}
		seen[folded] = true
		return err == nil
	})
	return err
}

// parseConfig validates a plugin configuration. Its errors name fields, never values.
func parseConfig(data []byte) (*settings, error) {
	v := gjson.ParseBytes(data)
	if !gjson.ValidBytes(data) || !v.IsObject() {
		return nil, errors.New("configuration is not one valid JSON object (nothing after it)")
	}
	if err := checkMembers("", v); err != nil {
		return nil, err
	}
	if r := v.Get("request"); r.IsObject() {
		if err := checkMembers("request.", r); err != nil {
			return nil, err
		}
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, configError(err)
	}
	s := &settings{cluster: c.Cluster, header: c.Header}
	if s.cluster == "" || !visibleASCII(s.cluster) {
		return nil, errors.New("cluster is required: the Envoy cluster that reaches the token endpoint")
	}
	if s.name = c.Name; s.name == "" {
		s.name = metricSegment(s.cluster)
	} else if s.name != metricSegment(s.name) || len(s.name) > 64 {
		return nil, errors.New("name must be 1 to 64 letters, digits, '_' or '-': it is a segment of the filter's metric names")
	}
	if s.header == "" {
		s.header = "Authorization"
	}
	if !isToken(s.header) {
		return nil, errors.New("header must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")
	}
	if reservedHeaders[strings.ToLower(s.header)] {
		return nil, errors.New("header must not be one that routes or frames the request (host, content-length, transfer-encoding, connection and other hop-by-hop headers)")
	}
	if c.Paths != nil && len(c.Paths) == 0 || c.Hosts != nil && len(c.Hosts) == 0 {
		return nil, errors.New("paths and hosts must not be empty lists: leave a field out to match everything")
	}
	var err error
	if s.scope, err = newScope(c.Paths, c.Hosts); err != nil {
		return nil, err
	}
	var refreshAheadMS int64 // validated for compatibility; the plugin's schedule decides
	ints := []struct {
		name     string
		v        *int64
		def, lo  int64
		hi       int64
		dst      *int64
		sentence string
	}{
		{"refresh_ahead_ms", c.RefreshAheadMS, 60000, 0, 3600000, &refreshAheadMS, ""},
		{"failure_memory_ms", c.FailureMemoryMS, 1000, 0, 300000, &s.failureMemoryMS, ""},
		{"wait_ms", c.WaitMS, 10000, 1, 120000, &s.waitMS, ""},
	}
	for _, f := range ints {
		*f.dst = f.def
		if f.v != nil {
			if *f.v < f.lo || *f.v > f.hi {
				return nil, fmt.Errorf("%s must be between %d and %d", f.name, f.lo, f.hi)
			}
			*f.dst = *f.v
		}
	}
	s.refreshAheadSet, s.failureMemSet = c.RefreshAheadMS != nil, c.FailureMemoryMS != nil
	s.failureStatus = 503
	if c.FailureStatus != nil {
		if *c.FailureStatus < 400 || *c.FailureStatus > 599 {
			return nil, errors.New("failure_status must be an HTTP error status, 400 to 599")
		}
		s.failureStatus = uint32(*c.FailureStatus)
	}
	s.maxWaiting = 1000
	if c.MaxWaiting != nil {
		if *c.MaxWaiting < 1 || *c.MaxWaiting > 100000 {
			return nil, errors.New("max_waiting must be between 1 and 100000")
		}
		s.maxWaiting = int(*c.MaxWaiting)
	}
	if s.input, err = tokenRequest(c.Request, c.SecretEnv); err != nil {
		return nil, err
	}
	// The filter drives the flow for every token call, so a client assertion is made per call, with a
	// fresh jti and iat (core.Prepare refuses one: it is for entry points that send the encoded request
	// as is).
	r, enc, key, aerr := (*core.Memo)(nil).Prepare(s.input)
	if aerr != nil { // the core's messages name fields, never their values
		return nil, errors.New("request: " + aerr.Kind + ": " + aerr.Message)
	}
	if enc.ClientCert != "" {
		// key_id is accepted for private_key_jwt; tls_client_auth would need the token call to present
		// the certificate it names, which a proxy_http_call cannot ask for.
		return nil, errors.New("request: tls_client_auth is not supported by the filter: its token call cannot present the client certificate key_id names")
	}
	if !strings.HasPrefix(strings.ToLower(enc.URL), "https://") {
		return nil, errors.New("request: the token URL must be https (the cluster may still terminate TLS elsewhere; credentials never go out as plain http)")
	}
	if s.signer, err = assertionSigner(s.input, r.ClientID, c.SecretEnv); err != nil {
		return nil, err
	}
	s.provider, s.key, s.lockKey = r.Provider, key, core.LockKey(key)
	return s, nil
}

// assertionSigner returns the signer of the flow's client assertions when the request signs one with
// a private key (private_key_jwt): the key in the environment variable secret_env.private_key names,
// for the algorithm and key id the flow asks for. It returns nil when the flow asks for no signature.
// Errors name fields and the variable, never the key.
func assertionSigner(input []byte, clientID string, secretEnv map[string]string) (*keySigner, error) {
	alg, kid, err := signAction(input)
	if err != nil {
		return nil, err
	}
	name, named := secretEnv[signingKeyField]
	switch {
	case alg == "" && !named:
		return nil, nil
	case alg == "":
		return nil, errors.New("secret_env.private_key: the request signs no client assertion with a private key (client_auth private_key_jwt, as in the smart profile)")
	case !named:
		return nil, errors.New("request: private_key_jwt: the filter signs the client assertion with a private key from the VM's environment: set secret_env.private_key to the environment variable that holds it (PEM or JWK)")
	}
	v, ok := syscall.Getenv(name)
	if !ok || v == "" {
		return nil, fmt.Errorf("secret_env.private_key: environment variable %s is not set (vm_config.environment_variables)", shownVar(name))
	}
	key, jwkKid, err := parseSigningKey([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("secret_env.private_key: environment variable %s holds no usable private key: %v", shownVar(name), err)
	}
	if jwkKid != "" && jwkKid != kid {
		return nil, fmt.Errorf("secret_env.private_key: the JWK in environment variable %s has a kid other than request.key_id", shownVar(name))
	}
	if kind, algs := keyAlgs(key); !slices.Contains(algs, alg) {
		return nil, fmt.Errorf("request: the client assertion's algorithm is %s (request.assertion_alg, or the profile's default), which %s (secret_env.private_key) cannot sign: set request.assertion_alg to %s, if the provider takes it",
			alg, kind, strings.Join(algs, " or "))
	}
	return &keySigner{key: key, alg: alg, kid: kid, clientID: clientID}, nil
}

// signAction runs the flow for input up to its first send, on an empty cache and with no I/O (cache
// actions answered as a miss, or stored), and returns the alg and kid of the sign action it asks for
// when its host must sign the client assertion (private_key_jwt); "" when it sends without one
// (client_secret_jwt signs inside the flow). It is what every token call will ask, read from the flow
// itself rather than from the profile rules.
func signAction(input []byte) (alg, kid string, err error) {
	f, out := core.NewFlow(nil, input, core.OpToken, func() int64 { return time.Now().UnixMilli() })
	if f == nil {
		e := gjson.GetBytes(out, "error")
		return "", "", errors.New("request: " + e.Get("kind").Str + ": " + e.Get("message").Str)
	}
	var answer []byte
	for range 16 {
		next, _ := f.Step(answer)
		switch next.Import {
		case core.ImportSign:
			v := gjson.ParseBytes(next.Input)
			return v.Get("alg").Str, v.Get("kid").Str, nil
		case abi.ImportCacheGet:
			answer = []byte(`{"hit":false}`)
		case abi.ImportCacheSet:
			answer = []byte(`{"stored":true}`)
		case abi.ImportCacheDelete:
			answer = []byte(`{}`)
		default: // http_send with no signature asked, or the flow's answer
			return "", "", nil
		}
	}
	return "", "", nil
}

// tokenRequest builds the flow's TokenRequest from the configured one: only TokenRequest fields,
// the secrets named in secretEnv read from the environment (Envoy's vm_config.environment_variables),
// and "fleet_lock": true so exactly one worker fetches.
func tokenRequest(raw json.RawMessage, secretEnv map[string]string) ([]byte, error) {
	var req map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &req) != nil || req == nil {
		return nil, errors.New("request is required: a TokenRequest object (abi/ABI.md)")
	}
	for _, k := range sortedKeys(req) {
		if !requestFields[k] {
			return nil, fmt.Errorf("request: unknown or filter-owned field %q", k)
		}
	}
	for _, field := range sortedKeys(secretEnv) {
		name := secretEnv[field]
		switch {
		case field == signingKeyField && envName(name):
			continue // the signing key: read by assertionSigner, and never part of the request
		case !secretFields[field] && field != signingKeyField:
			return nil, fmt.Errorf("secret_env: %q is not a secret field (client_secret, password, refresh_token, code, code_verifier, private_key)", field)
		case !envName(name):
			return nil, fmt.Errorf("secret_env.%s must name an environment variable", field)
		case field != signingKeyField && name == secretEnv[signingKeyField]:
			return nil, fmt.Errorf("secret_env.%s names %s, the signing key's variable (secret_env.private_key): the key would be sent as %s; name another variable", field, shownVar(name), field)
		case req[field] != nil:
			return nil, fmt.Errorf("secret_env.%s: request.%s is set too; give the secret once", field, field)
		}
		v, ok := syscall.Getenv(name)
		if !ok || v == "" {
			return nil, fmt.Errorf("secret_env.%s: environment variable %s is not set (vm_config.environment_variables)", field, shownVar(name))
		}
		req[field], _ = json.Marshal(v)
	}
	req["fleet_lock"] = json.RawMessage("true")
	return json.Marshal(req)
}

// configError turns a JSON decoding error into a message that names the field, never a value.
func configError(err error) error {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Errorf("configuration: %s must be %s", typeErr.Field, typeErr.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("configuration: unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return errors.New("configuration is not a valid JSON object")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// isToken reports whether s is an RFC 9110 token (a header name).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// shownVar is an environment variable's name as a message may show it: a conventional name
// (upper-case words joined by '_', as NIKO_CLIENT_SECRET), else a placeholder. secret_env takes any
// valid name, and a random alphanumeric secret is one: an operator who pasted the secret where its
// variable's name belongs must not find it in Envoy's log.
func shownVar(name string) string {
	words := strings.Split(name, "_")
	conventional := len(name) <= 64 && len(words) > 1
	for _, w := range words {
		for i := 0; i < len(w); i++ {
			if !('A' <= w[i] && w[i] <= 'Z' || '0' <= w[i] && w[i] <= '9') {
				conventional = false
			}
		}
	}
	if conventional {
		return name
	}
	return "(its name withheld: not upper-case words joined by '_', it may be a secret pasted in its place)"
}

func envName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
