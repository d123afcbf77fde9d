package core

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// The token_step vectors of testdata/flow are written from these scripts by
// `go test ./plugin/core -run TestWriteFlowVectors -update`, then reviewed: each script is a request
// and the answers its imports give, in order. TestVectors holds every host to the files.
func TestWriteFlowVectors(t *testing.T) {
	if !*update {
		t.Skip("writes testdata/flow with -update")
	}
	const now = `"now_ms":1767225600000`
	niko := `{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme",` + now
	req := niko + `}`
	fleet := niko + `,"fleet_lock":true}`
	cachedTok := `{"hit":true,"value":"{\"access_token\":\"cached-tok\",\"token_type\":\"Bearer\",\"expires_in\":3600,\"expires_at_ms\":1767229200000,\"issued_at_ms\":1767225600000,\"id\":\"de31598ff01ef13602ab0336049a7787\"}"}`
	nearExpiry := `{"hit":true,"value":"{\"access_token\":\"old-tok\",\"token_type\":\"Bearer\",\"expires_in\":3600,\"expires_at_ms\":1767225630000,\"issued_at_ms\":1767222030000,\"id\":\"de31598ff01ef13602ab0336049a7787\"}"}`
	miss := `{"hit":false}`
	smart := `{"provider":"smart","client_id":"backend-app","key_id":"key-1","token_url":"https://ehr.example.org/oauth2/token","scope":"system/Patient.rs","assertion_jti":"jti-0001",` + now
	zeros := func(n int) string { return `{"signature":"` + strings.Repeat("A", n*4/3) + `"}` } // base64url of n zero bytes, n%3 == 0
	csJWT := `{"provider":"custom","client_id":"app","client_secret":"cs-jwt-secret-1","token_url":"https://auth.example.org/token","profile":{"client_auth":"client_secret_jwt"},"assertion_jti":"jti-0002",` + now + `}`
	ok := `{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"new-tok\",\"token_type\":\"bearer\",\"expires_in\":3600,\"refresh_token\":\"rt-1\"}"}`
	// One-time grants (Candescent): their lineage, the newest refresh token or a used code, names
	// the identity as a cached token does.
	cdRefresh := `{"provider":"candescent","grant_type":"refresh_token","client_id":"cd-client","client_secret":"cd-secret-1","refresh_token":"rt-0",` + now + `}`
	cdFleet := strings.Replace(cdRefresh, `{`, `{"fleet_lock":true,`, 1)
	cdCode := `{"provider":"candescent","grant_type":"authorization_code","client_id":"cd-client","client_secret":"cd-secret-1","institution_id":"inst-1","code":"code-1","redirect_uri":"https://app.example.org/cb",` + now + `}`
	id := func(req string) string {
		_, _, key, err := Prepare([]byte(req))
		if err != nil {
			t.Fatal(err)
		}
		return key[len(key)-bindingChars:]
	}
	lineage := func(req, rt string) string {
		if rt == "" {
			return `{"hit":true,"value":"{\"used\":true,\"id\":\"` + id(req) + `\"}"}`
		}
		return `{"hit":true,"value":"{\"refresh_token\":\"` + rt + `\",\"id\":\"` + id(req) + `\"}"}`
	}
	refused := func(req string) string {
		return `{"hit":true,"value":"{\"refused\":true,\"id\":\"` + id(req) + `\"}"}`
	}
	invalidGrant := `{"status":400,"headers":{"Content-Type":"application/json"},"body":"{\"error\":\"invalid_grant\"}"}`
	rotated := `{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"new-tok\",\"token_type\":\"Bearer\",\"expires_in\":3600,\"refresh_token\":\"rt-2\"}"}`
	noRefresh := `{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"new-tok\",\"token_type\":\"Bearer\",\"expires_in\":3600}"}`
	// A cached value names its identity ("id": the last 32 hex digits of the key): these are the
	// request's. A value of another identity is a miss (cached_other_identity).
	scripts := []struct {
		name, doc, request, op string
		answers                []string
		state                  string // forged state for the second call
		other                  string // another request for the second call
	}{
		{"cold_fetch", "a miss, an open gate, one request: the token, then cache_set of it without its refresh token", req, "", []string{miss, miss, ok}, "", ""},
		{"cached_hit", "a cached token with more than the skew left is the answer; nothing else is asked", req, "", []string{cachedTok}, "", ""},
		{"cached_other_identity", "a cached token that names another identity (an answer given to the wrong flow) is a miss", req, "", []string{strings.Replace(cachedTok, "de31598ff01ef13602ab0336049a7787", "00000000000000000000000000000000", 1), miss, ok}, "", ""},
		{"gate_other_identity", "a gate that names another identity does not hold this one", req, "", []string{miss, `{"hit":true,"value":"{\"until_ms\":1767225630000,\"id\":\"00000000000000000000000000000000\"}"}`, ok}, "", ""},
		{"inside_skew", "a cached token within 60 s of expiry is refetched", req, "", []string{nearExpiry, miss, ok}, "", ""},
		{"min_ttl", "min_ttl_ms asks for more life than the cached token has: fetch", niko + `,"min_ttl_ms":3600000}`, "", []string{cachedTok, miss, ok}, "", ""},
		{"gate_closed", "a closed 429 gate answers rate_limited with the time left; nothing is sent", req, "", []string{miss, `{"hit":true,"value":"{\"until_ms\":1767225630000,\"id\":\"de31598ff01ef13602ab0336049a7787\"}"}`}, "", ""},
		{"rate_limited", "a 429 closes the gate for Retry-After", req, "", []string{miss, miss, `{"status":429,"headers":{"Retry-After":"120"},"body":""}`}, "", ""},
		{"server_error", "a 503 is a retryable server_error; no token is cached, the gate remembers the failure for 1 s (the first backoff)", req, "", []string{miss, miss, `{"status":503,"headers":{},"body":"unavailable"}`}, "", ""},
		{"transport_error", "no response: a retryable transport error, remembered for 1 s", req, "", []string{miss, miss, `{"error":"connection refused"}`}, "", ""},
		{"policy_refusal", "the host refused by its policy: policy, not retryable", req, "", []string{miss, miss, `{"error":"host not allowed","policy":true}`}, "", ""},
		{"force", "force skips the cached token but not the gate", niko + `,"force":true}`, "", []string{miss, ok}, "", ""},
		{"fleet_pending", "another host holds the fleet lock: pending, nothing sent", fleet, "", []string{miss, miss, `{"stored":false}`}, "", ""},
		{"fleet_fetch", "with the lock: a second look, the request, the token stored, the lock released last", fleet, "", []string{miss, miss, `{"stored":true}`, miss, ok}, "", ""},
		{"fleet_recheck_hit", "the previous lock holder stored the token: it is served and the lock released", fleet, "", []string{miss, miss, `{"stored":true}`, cachedTok}, "", ""},
		{"fleet_host_ignores_nx", "a host that answers nothing to nx fetches without the fleet guarantee", fleet, "", []string{miss, miss, ``, miss, ok}, "", ""},
		{"invalidate", "invalidate without access_token deletes the cached token", req, "invalidate", nil, "", ""},
		{"invalidate_same_token", "invalidate with the cached access_token opens the 401 window (nx, 30 s) and deletes it: retry with a fresh token", niko + `,"access_token":"cached-tok"}`, "invalidate", []string{cachedTok, `{"stored":true}`}, "", ""},
		{"invalidate_window_closed", "a token was already dropped for a 401 within 30 s, by any host sharing the cache: nothing deleted, the 401 is the API's answer (retry false)", niko + `,"access_token":"cached-tok"}`, "invalidate", []string{cachedTok, `{"stored":false}`}, "", ""},
		{"invalidate_other_token", "invalidate with another access_token keeps the cached (fresher) token: retry with it", niko + `,"access_token":"stale-tok"}`, "invalidate", []string{cachedTok}, "", ""},
		{"failure_remembered", "a transient failure remembered in the gate: its error, retryable, with the time left; nothing sent", req, "", []string{miss, `{"hit":true,"value":"{\"until_ms\":1767225602000,\"fails\":2,\"error\":{\"kind\":\"server_error\",\"message\":\"provider failed with HTTP 503\",\"status\":503,\"retryable\":true},\"id\":\"de31598ff01ef13602ab0336049a7787\"}"}`}, "", ""},
		{"failure_backoff_doubles", "after two failures in a row (the gate open again), a third: retry_after_ms 4 s, fails 3", req, "", []string{miss, `{"hit":true,"value":"{\"until_ms\":1767225500000,\"fails\":2,\"id\":\"de31598ff01ef13602ab0336049a7787\"}"}`, `{"status":503,"headers":{},"body":"unavailable"}`}, "", ""},
		{"failure_cleared", "a token after failures clears the count (the gate's delete after the token's store)", req, "", []string{miss, `{"hit":true,"value":"{\"until_ms\":1767225500000,\"fails\":2,\"id\":\"de31598ff01ef13602ab0336049a7787\"}"}`, ok}, "", ""},
		{"sign_fetch", "private_key_jwt: before the request, the host signs the assertion's signing input; the signature completes the assertion in the body", smart + `}`, "", []string{miss, miss, zeros(384), ok}, "", ""},
		{"sign_refused", "the host could not sign: kind signing, nothing sent", smart + `}`, "", []string{miss, miss, `{"error":"no signing key key-1"}`}, "", ""},
		{"sign_wrong_length", "an ES384 signature must be 96 bytes of r||s: a 64-byte one is refused, nothing sent", smart + `,"assertion_alg":"ES384"}`, "", []string{miss, miss, zeros(63)}, "", ""},
		{"client_secret_jwt", "client_secret_jwt: the plugin signs the assertion with HMAC-SHA256 under the secret; the secret is not sent", csJWT, "", []string{miss, miss, ok}, "", ""},
		{"revoke", "revoke (RFC 7009): the token to the revocation URL, authenticated as the token request (here a host-signed assertion), then the cached token dropped", smart + `,"access_token":"tok-1","revocation_url":"https://ehr.example.org/oauth2/revoke"}`, "revoke", []string{zeros(384), `{"status":200,"headers":{},"body":""}`}, "", ""},
		{"rotation_first", "refresh_token grant, no lineage yet: the request's refresh token is sent; the new one becomes the lineage's newest, stored after the token", cdRefresh, "", []string{miss, miss, `{"stored":true}`, miss, rotated}, "", ""},
		{"rotation_newest", "refresh_token grant with a lineage: its newest refresh token is sent, never the request's used one", cdRefresh, "", []string{miss, miss, `{"stored":true}`, lineage(cdRefresh, "rt-1"), rotated}, "", ""},
		{"rotation_refresh_lifetime", "a provider that says how long its refresh token lives (refresh_token_expires_in, a string as Candescent's v1 sends it): the lineage lives that long", cdRefresh, "", []string{miss, miss, `{"stored":true}`, miss, `{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"new-tok\",\"token_type\":\"Bearer\",\"expires_in\":\"3600\",\"refresh_token\":\"rt-2\",\"refresh_token_expires_in\":\"86400\"}"}`}, "", ""},
		{"rotation_not_rotated", "a provider that returns no new refresh token: the lineage is kept as it is", cdRefresh, "", []string{miss, miss, `{"stored":true}`, lineage(cdRefresh, "rt-1"), noRefresh}, "", ""},
		{"rotation_fleet", "with the fleet lock: the lineage is read holding it, written after the token and before the lock's release", cdFleet, "", []string{miss, miss, `{"stored":true}`, miss, `{"stored":true}`, lineage(cdFleet, "rt-1"), rotated}, "", ""},
		{"rotation_echo_withheld", "a provider's error answer to the lineage's refresh token loses its description (it may quote that token, which the later step cannot redact); kind and RFC 6749 code stay", cdRefresh, "", []string{miss, miss, `{"stored":true}`, lineage(cdRefresh, "rt-secret-1"), `{"status":400,"headers":{},"body":"{\"error\":\"invalid_grant\",\"error_description\":\"refresh token rt-secret-1 is not valid\"}"}`}, "", ""},
		{"rotation_cache_error", "the cache could not be read for the lineage: nothing is sent (the request's refresh token may be a used one)", cdRefresh, "", []string{miss, miss, `{"stored":true}`, `{"error":"cache down"}`}, "", ""},
		{"rotation_mark_left", "an earlier exchange left its mark (its new refresh token could not be stored: a cache failure): the lineage is stale, nothing is sent (failing closed, never a replay)", cdRefresh, "", []string{miss, miss, `{"stored":false}`}, "", ""},
		{"rotation_mark_failed", "the cache could not store the exchange's mark: nothing is sent, retryable", cdRefresh, "", []string{miss, miss, `{"stored":true,"error":"cache down"}`}, "", ""},
		{"rotation_refused", "the provider answers invalid_grant to the refresh token sent: the lineage is marked refused (K/grant), so that no host sharing the cache sends it again", cdRefresh, "", []string{miss, miss, `{"stored":true}`, miss, invalidGrant}, "", ""},
		{"rotation_5xx_invalid_grant", "a 5xx quoting invalid_grant is the server failing, not a refusal: the lineage is not marked refused (its newest refresh token stays), only the exchange's mark goes", cdRefresh, "", []string{miss, miss, `{"stored":true}`, miss, strings.Replace(invalidGrant, `"status":400`, `"status":503`, 1)}, "", ""},
		{"rotation_refused_lineage", "a lineage the provider refused (another replica, vm_id or an earlier process got its invalid_grant): invalid_grant, not retryable, nothing sent", cdRefresh, "", []string{miss, miss, `{"stored":true}`, refused(cdRefresh)}, "", ""},
		{"code_refused", "the provider answers invalid_grant to the authorization code sent: the lineage is marked refused, nothing is sent for it after", cdCode, "", []string{miss, miss, `{"stored":true}`, miss, `{"stored":true}`, invalidGrant}, "", ""},
		{"code_first", "authorization_code: the code is marked used (nx) before it is sent; the refresh token it returns becomes the lineage's newest", cdCode, "", []string{miss, miss, `{"stored":true}`, miss, `{"stored":true}`, rotated}, "", ""},
		{"code_followed", "authorization_code whose code was exchanged: the lineage's refresh token is sent with the refresh_token grant, never the code", cdCode, "", []string{miss, miss, `{"stored":true}`, lineage(cdCode, "rt-1"), rotated}, "", ""},
		{"code_used", "authorization_code whose code was used and brought no refresh token: invalid_grant, nothing sent", cdCode, "", []string{miss, miss, `{"stored":true}`, lineage(cdCode, "")}, "", ""},
		{"code_marked_elsewhere", "another host marked the code first: pending, nothing sent", cdCode, "", []string{miss, miss, `{"stored":true}`, miss, `{"stored":false}`}, "", ""},
		{"revoke_lineage", "revoking a refresh_token grant revokes its lineage's newest refresh token (the request's own was used long ago), then drops the cached token and the lineage", cdRefresh, "revoke", []string{lineage(cdRefresh, "rt-5"), `{"status":200,"headers":{},"body":""}`}, "", ""},
		{"revoke_candescent", "Candescent revokes with DELETE /oauth2/v1/revoke and a form token= (its reference and SDK), Basic-authenticated as the token request", `{"provider":"candescent","grant_type":"client_credentials","client_id":"cd-client","client_secret":"cd-secret-1","institution_id":"inst-1","access_token":"tok-1",` + now + `}`, "revoke", []string{`{"status":200,"headers":{},"body":""}`}, "", ""},
		{"encode_error", "an invalid request ends at once", `{"provider":"nikohealth","client_id":"c",` + now + `}`, "", nil, "", ""},
		{"state_of_another_request", "a state resumes only with the request it began with", req, "", []string{miss}, "", strings.Replace(req, "niko-secret-1", "niko-secret-2", 1)},
		{"forged_state", "a state the plugin did not give is refused", req, "", []string{miss}, "tw2.t50.1767225600000.12000.de31598ff01ef13602ab0336049a7787..00000000000000000000000000000000", ""},
	}
	for _, s := range scripts {
		input := `{"request":` + s.request
		if s.op != "" {
			input += `,"op":"` + s.op + `"`
		}
		input += "}"
		v := conformance.Vector{Name: "flow/" + s.name, Doc: s.doc, Export: "token_step", Input: json.RawMessage(input)}
		m := new(Memo)
		out := TokenStep(m, []byte(input), nil)
		for i := 0; ; i++ {
			var a struct {
				Next  json.RawMessage `json:"next"`
				State string          `json:"state"`
			}
			json.Unmarshal(out, &a)
			if a.Next == nil {
				break
			}
			if i >= len(s.answers) && !(i == 0 && (s.state != "" || s.other != "")) {
				t.Fatalf("%s: unscripted step %d: %s", s.name, i, a.Next)
			}
			step := conformance.Step{Want: json.RawMessage(`{"next":` + string(a.Next) + `}`)}
			next := map[string]json.RawMessage{"request": json.RawMessage(s.request), "state": json.RawMessage(mustJSON(a.State))}
			if i < len(s.answers) && s.answers[i] != "" {
				step.Answer = json.RawMessage(s.answers[i])
				next["answer"] = step.Answer
			}
			if s.op != "" {
				next["op"] = json.RawMessage(mustJSON(s.op))
			}
			if s.state != "" {
				step.State = &s.state
				next["state"] = json.RawMessage(mustJSON(s.state))
			}
			if s.other != "" {
				step.Request = json.RawMessage(s.other)
				next["request"] = step.Request
			}
			v.Steps = append(v.Steps, step)
			b, _ := json.Marshal(next)
			out = TokenStep(m, b, nil)
			if s.state != "" || s.other != "" {
				break
			}
		}
		v.Path = filepath.Join("../../testdata/flow", s.name+".json")
		os.MkdirAll(filepath.Dir(v.Path), 0o755)
		if err := conformance.Update(v, out); err != nil {
			t.Fatal(err)
		}
	}
}
