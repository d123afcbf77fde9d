package core

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// TestFlowThroughSteps runs the flow tests again with every host driving the flow through the
// token_step export: one flow, and both drivers hold to the same tests.
func TestFlowThroughSteps(t *testing.T) {
	stepDriver = true
	defer func() { stepDriver = false }()
	for name, test := range map[string]func(*testing.T){
		"CachesUntilSkew":      TestTokenCachesUntilSkew,
		"ForceAndInvalidate":   TestTokenForceAndInvalidate,
		"KeySeparates":         TestTokenKeySeparatesIdentities,
		"CandescentRequestID":  TestCandescentRequestIDIsNotIdentity,
		"Gate":                 TestTokenGate,
		"FailuresRemembered":   TestTransientFailuresAreRemembered,
		"LineageLostFailsShut": TestLineageWriteLostFailsClosed,
		"MinTTL":               TestTokenMinTTL,
		"InvalidateOnlyTheBad": TestInvalidateOnlyTheBadToken,
		"FleetSingleFlight":    TestFleetSingleFlight,
		"CharactersRefused":    TestTokenCharactersRefused,
	} {
		t.Run(name, test)
	}
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`)

// TestStepDriversSendTheSameBytes plays the same sequence of calls through the token export and
// through token_step on two identical hosts: every import gets the same input in the same order,
// and every answer is the same (per-request ids and lock owners aside, which are random).
func TestStepDriversSendTheSameBytes(t *testing.T) {
	fleet := strings.Replace(nikoReq, `{`, `{"fleet_lock":true,`, 1)
	forced := strings.Replace(nikoReq, `{`, `{"force":true,`, 1)
	csJWT := `{"provider":"custom","client_id":"app","client_secret":"cs-secret","token_url":"https://auth.example.org/token",` +
		`"profile":{"client_auth":"client_secret_jwt"},"assertion_jti":"jti-1","now_ms":1767225600000,"fleet_lock":true}`
	candescent := `{"provider":"candescent","client_id":"c","client_secret":"candescent-secret","institution_id":"1","fleet_lock":true}`
	type call struct {
		req, op   string
		advanceMS int64
	}
	scenarios := []struct {
		name    string
		respond func() func(abi.HTTPRequest) abi.HTTPResponse
		calls   []call
	}{
		{"fetch, hit, skew, force, invalidate", func() func(abi.HTTPRequest) abi.HTTPResponse { return okToken(1200) }, []call{
			{nikoReq, "", 0}, {nikoReq, "", 1000}, {nikoReq, "", 1150 * 1000}, {forced, "", 0},
			{strings.Replace(nikoReq, `{`, `{"access_token":"tok-0",`, 1), "invalidate", 0},
			{strings.Replace(nikoReq, `{`, `{"access_token":"tok-3",`, 1), "invalidate", 0},
			{nikoReq, "invalidate", 0}, {nikoReq, "", 0},
		}},
		{"fleet lock, candescent", func() func(abi.HTTPRequest) abi.HTTPResponse { return okToken(900) }, []call{
			{candescent, "", 0}, {candescent, "", 0}, {fleet, "", 0}, {fleet, "", 0},
		}},
		{"429 gate, then 503, then transport", func() func(abi.HTTPRequest) abi.HTTPResponse {
			n := 0
			return func(abi.HTTPRequest) abi.HTTPResponse {
				n++
				switch n {
				case 1:
					return abi.HTTPResponse{Status: 429, Headers: map[string]string{"Retry-After": "5"}}
				case 2:
					return abi.HTTPResponse{Status: 503, Body: "down"}
				}
				return abi.HTTPResponse{Error: "connection refused"}
			}
		}, []call{{fleet, "", 0}, {fleet, "", 1000}, {forced, "", 5000}, {nikoReq, "", 0}, {nikoReq, "", 0}}},
		{"client_secret_jwt (its jti fixed for the comparison)", func() func(abi.HTTPRequest) abi.HTTPResponse { return okToken(900) }, []call{
			{csJWT, "", 0}, {csJWT, "", 0}, {strings.Replace(csJWT, `{`, `{"force":true,`, 1), "", 0}, {csJWT, "invalidate", 0},
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			imports, steps := newFakeHost(t, sc.respond()), newFakeHost(t, sc.respond())
			steps.steps = true
			for i, c := range sc.calls {
				var answers [2]string
				for j, h := range []*fakeHost{imports, steps} {
					h.advance(c.advanceMS)
					answers[j] = uuidRE.ReplaceAllString(string(h.run([]byte(c.req), c.op)), "<uuid>")
				}
				if answers[0] != answers[1] {
					t.Fatalf("call %d answers differ:\ntoken      %s\ntoken_step %s", i, answers[0], answers[1])
				}
			}
			a, b := strings.Join(imports.log, "\n"), strings.Join(steps.log, "\n")
			if a, b = uuidRE.ReplaceAllString(a, "<uuid>"), uuidRE.ReplaceAllString(b, "<uuid>"); a != b {
				t.Fatalf("imports differ:\ntoken:\n%s\n\ntoken_step:\n%s", a, b)
			}
			if len(imports.log) < len(sc.calls) {
				t.Fatalf("only %d imports called", len(imports.log))
			}
		})
	}
}

// stepOnce calls token_step natively and decodes its answer.
func stepOnce(t *testing.T, m *Memo, in string) map[string]json.RawMessage {
	t.Helper()
	out := TokenStep(m, []byte(in), func() int64 { return 1767225600000 })
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("token_step answered %q", out)
	}
	return got
}

// TestStepStateIsBoundToItsRequest: a state resumes only with the request it began with; forged,
// truncated or foreign states are invalid_request, and no state holds a secret.
func TestStepStateIsBoundToItsRequest(t *testing.T) {
	fleet := strings.Replace(nikoReq, `{`, `{"fleet_lock":true,`, 1)
	other := strings.Replace(fleet, "niko-secret-1", "niko-secret-2", 1)
	m := new(Memo)
	first := stepOnce(t, m, `{"request":`+fleet+`}`)
	var state string
	if err := json.Unmarshal(first["state"], &state); err != nil || first["next"] == nil {
		t.Fatalf("first step = %v", first)
	}
	if strings.Contains(state, "niko-secret") || strings.Contains(state, "niko-client") {
		t.Fatalf("state %q holds the request's credentials", state)
	}
	// Walk to the lock step, whose state names a lock owner.
	gate := stepOnce(t, m, `{"request":`+fleet+`,"state":"`+state+`","answer":{"hit":false}}`)
	json.Unmarshal(gate["state"], &state)
	lock := stepOnce(t, m, `{"request":`+fleet+`,"state":"`+state+`","answer":{"hit":false}}`)
	json.Unmarshal(lock["state"], &state)
	if !strings.Contains(string(lock["next"]), `"nx":true`) {
		t.Fatalf("third step = %s", lock["next"])
	}
	owner := strings.Split(unseal(state), ".")[5]
	// Phases changed by a holder of the request, who can seal them: refused by the checks behind the
	// seal. Changed by anyone else: refused by the seal.
	resealed := func(from, to string) string { return sealed(t, fleet, strings.Replace(unseal(state), from, to, 1)) }
	kind := func(got map[string]json.RawMessage) string {
		var e struct{ Kind, Message string }
		json.Unmarshal(got["error"], &e)
		return e.Kind + ": " + e.Message
	}
	cases := []struct{ name, in, want string }{
		{"another request", `{"request":` + other + `,"state":"` + state + `","answer":{"stored":true}}`, "invalid_request: token_step: state belongs to another request"},
		{"not ours", `{"request":` + fleet + `,"state":"x","answer":{}}`, "invalid_request: token_step: state is not one this plugin gave for this request"},
		{"phase out of range", `{"request":` + fleet + `,"state":"` + resealed("tw2.t3", "tw2.t;") + `"}`, "invalid_request: token_step: state is not one this plugin gave for this request"},
		{"invalidate phase for token", `{"request":` + fleet + `,"state":"` + resealed("tw2.t3", "tw2.i6") + `"}`, "invalid_request: token_step: state is not one this plugin gave for this request"},
		{"owner before the lock", `{"request":` + fleet + `,"state":"` + resealed("tw2.t3", "tw2.t1") + `"}`, "invalid_request: token_step: state is not one this plugin gave for this request"},
		{"phase changed, not resealed", `{"request":` + fleet + `,"state":"` + strings.Replace(state, "tw2.t3", "tw2.t5", 1) + `","answer":{"status":200,"headers":{},"body":"{\"access_token\":\"x\"}"}}`, "invalid_request: token_step: state is not one this plugin gave for this request"},
		{"state a number", `{"request":` + fleet + `,"state":7}`, "invalid_request: token_step: state must be a string"},
		{"no request", `{"state":"` + state + `"}`, "invalid_request: token_step needs a request object"},
		{"bad op", `{"request":` + fleet + `,"op":"refresh"}`, `invalid_request: token_step: op must be "token", "invalidate" or "revoke"`},
		{"revoke without a revocation URL", `{"request":` + fleet + `,"op":"revoke"}`, `invalid_request: revocation_url is required to revoke with nikohealth`},
		{"not JSON", `{"request":`, "invalid_request: input is not valid JSON"},
	}
	for _, c := range cases {
		if got := kind(stepOnce(t, m, c.in)); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	// The right request resumes: the lock is held, so the flow rechecks the cache and then releases
	// the lock it names, whatever instance (memo) runs the step.
	recheck := stepOnce(t, new(Memo), `{"request":`+fleet+`,"state":"`+state+`","answer":{"stored":true}}`)
	json.Unmarshal(recheck["state"], &state)
	send := stepOnce(t, new(Memo), `{"request":`+fleet+`,"state":"`+state+`","answer":{"hit":false}}`)
	json.Unmarshal(send["state"], &state)
	final := stepOnce(t, nil, `{"request":`+fleet+`,"state":"`+state+`","answer":{"status":503,"headers":{},"body":"down"}}`)
	if kind(final) != "server_error: provider failed with HTTP 503" || !strings.Contains(string(final["then"]), `"if_value":"`+owner+`"`) {
		t.Fatalf("final = %s then %s", final["error"], final["then"])
	}
}

// TestStepHostGarbage: whatever a host sends back as an answer, the flow goes on or ends with a
// typed error; a missing answer is what a missing import result means (a miss, a transport error).
func TestStepHostGarbage(t *testing.T) {
	m := new(Memo)
	first := stepOnce(t, m, `{"request":`+nikoReq+`}`)
	var state string
	json.Unmarshal(first["state"], &state)
	for _, answer := range []string{``, `,"answer":null`, `,"answer":"x"`, `,"answer":[1]`, `,"answer":{"hit":true,"value":7}`,
		`,"answer":{"hit":true,"value":"{\"access_token\":\"a\\r\\nb\",\"expires_at_ms\":9e15}"}`} {
		got := stepOnce(t, m, `{"request":`+nikoReq+`,"state":"`+state+`"`+answer+`}`)
		if !strings.Contains(string(got["next"]), `"import":"cache_get"`) || !strings.Contains(string(got["next"]), `/gate"`) {
			t.Errorf("cache answer %s: %v, want the gate's cache_get", answer, got)
		}
	}
	gate := stepOnce(t, m, `{"request":`+nikoReq+`,"state":"`+state+`"}`)
	json.Unmarshal(gate["state"], &state)
	send := stepOnce(t, m, `{"request":`+nikoReq+`,"state":"`+state+`"}`)
	json.Unmarshal(send["state"], &state)
	for _, answer := range []string{``, `,"answer":"x"`, `,"answer":{"status":"x"}`, `,"answer":[1]`, `,"answer":{}`} {
		got := stepOnce(t, m, `{"request":`+nikoReq+`,"state":"`+state+`"`+answer+`}`)
		// A transient failure: only the gate that remembers it is written, never a token.
		if !strings.Contains(string(got["error"]), `"kind":"transport"`) || strings.Count(string(got["then"]), `"import"`) != 1 ||
			!strings.Contains(string(got["then"]), `/gate"`) {
			t.Errorf("http_send answer %s: %s", answer, got)
		}
	}
}

// TestFlowVectorsSendWhatTokenSends runs each token_step vector of testdata/flow through the token
// and invalidate exports with imports scripted from the vector: they ask for the same imports with
// the same inputs, in the same order, and answer what token_step answers last (less "then").
func TestFlowVectorsSendWhatTokenSends(t *testing.T) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vs {
		if v.Export != abi.ExportTokenStep || len(v.Steps) == 0 || v.Steps[len(v.Steps)-1].Request != nil || v.Steps[len(v.Steps)-1].State != nil {
			continue
		}
		var op struct{ Op string }
		if json.Unmarshal(v.Input, &op); op.Op == "revoke" { // revoke is token_step's only
			continue
		}
		n++
		t.Run(v.Name, func(t *testing.T) {
			var in struct {
				Request json.RawMessage `json:"request"`
				Op      string          `json:"op"`
			}
			json.Unmarshal(v.Input, &in)
			var want struct {
				Then []json.RawMessage `json:"then"`
			}
			json.Unmarshal(v.Want, &want)
			var script []json.RawMessage // the actions expected, in order
			var answers []json.RawMessage
			for _, s := range v.Steps {
				var w struct{ Next json.RawMessage }
				json.Unmarshal(s.Want, &w)
				script, answers = append(script, w.Next), append(answers, s.Answer)
			}
			script = append(script, want.Then...)
			for i, a := range script { // the compatibility rule: token cannot sign, and says so there
				var act conformance.Action
				if json.Unmarshal(a, &act); act.Import == ImportSign {
					script, v.Want = script[:i], errorJSON(SigningRequired())
					break
				}
			}
			host := &scriptHost{t: t, script: script, answers: answers}
			var out []byte
			if in.Op == "invalidate" {
				out = Invalidate(new(Memo), in.Request, host)
			} else {
				out = Token(new(Memo), in.Request, host, func() int64 { t.Fatal("vectors must give now_ms"); return 0 })
			}
			if host.i != len(script) {
				t.Fatalf("token called %d imports, token_step asked for %d", host.i, len(script))
			}
			var final map[string]json.RawMessage
			json.Unmarshal(v.Want, &final)
			delete(final, "then")
			w, _ := json.Marshal(final)
			if err := conformance.Match(w, out); err != nil {
				t.Fatalf("%v\ngot %s", err, out)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d flow vectors", n)
	}
}

// scriptHost checks each import call against the next scripted action and answers from the script.
type scriptHost struct {
	t       *testing.T
	script  []json.RawMessage
	answers []json.RawMessage
	i       int
}

func (h *scriptHost) call(name string, in []byte) []byte {
	h.t.Helper()
	if h.i >= len(h.script) {
		h.t.Fatalf("unscripted %s %s", name, in)
	}
	got, _ := json.Marshal(conformance.Action{Import: name, Input: in})
	// after_ok says when a driver performs a then action, not what the import receives.
	var want map[string]json.RawMessage
	_ = json.Unmarshal(h.script[h.i], &want)
	delete(want, "after_ok")
	scripted, _ := json.Marshal(want)
	if err := conformance.Match(scripted, got); err != nil {
		h.t.Fatalf("import %d: %v", h.i, err)
	}
	var answer []byte
	if h.i < len(h.answers) {
		answer = h.answers[h.i]
	}
	h.i++
	return answer
}

func (h *scriptHost) HTTPSend(in []byte) []byte    { return h.call(abi.ImportHTTPSend, in) }
func (h *scriptHost) CacheGet(in []byte) []byte    { return h.call(abi.ImportCacheGet, in) }
func (h *scriptHost) CacheSet(in []byte) []byte    { return h.call(abi.ImportCacheSet, in) }
func (h *scriptHost) CacheDelete(in []byte) []byte { return h.call(abi.ImportCacheDelete, in) }

// TestFlowCachedUntil: a flow that answers with a cached token says until when it would serve that
// entry (expiry less the skew, or less min_ttl_ms when longer), and it serves it up to the
// millisecond before and not at that time. Any other answer says nothing.
func TestFlowCachedUntil(t *testing.T) {
	for _, tt := range []struct {
		name      string
		expiresIn int    // the token's life, seconds
		extra     string // spliced into the request
		margin    int64  // expected: expiry - until
	}{
		{"long token: the 60 s skew", 1200, "", 60000},
		{"short token: a quarter of its life", 1, "", 250},
		{"min_ttl_ms longer than the skew", 1200, `"min_ttl_ms":300000,`, 300000},
		{"min_ttl_ms shorter than the skew", 1200, `"min_ttl_ms":1000,`, 60000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t, okToken(tt.expiresIn))
			fetched := h.token(t, nikoReq)
			_, _, key, err := Prepare([]byte(nikoReq))
			if err != nil {
				t.Fatal(err)
			}
			hit, _ := json.Marshal(abi.CacheGetOutput{Hit: true, Value: h.cache[key].Value})
			want := fetched.Token.ExpiresAtMS - tt.margin
			req := []byte(strings.Replace(nikoReq, `{`, `{`+tt.extra, 1))
			for _, at := range []struct {
				nowMS  int64
				served bool
			}{{want - 1, true}, {want, false}, {want + 1, false}, {h.nowMS, true}} {
				var m Memo
				f, bad := NewFlow(&m, req, OpToken, func() int64 { return at.nowMS })
				if bad != nil {
					t.Fatal(string(bad))
				}
				if next, _ := f.Step(nil); next.Import != abi.ImportCacheGet {
					t.Fatalf("first action %q", next.Import)
				}
				if _, ok := f.CachedUntil(); ok {
					t.Fatal("CachedUntil before the flow answered")
				}
				next, final := f.Step(hit)
				until, ok := f.CachedUntil()
				served := next.Import == "" && strings.Contains(string(final), `"cached":true`)
				if served != at.served || ok != at.served || ok && until != want {
					t.Fatalf("at until%+d: served %v (want %v), CachedUntil %d %v, want %d", at.nowMS-want, served, at.served, until, ok, want)
				}
			}
		})
	}
	// A fetched token and an invalidate are not answers from the cache.
	h := newFakeHost(t, okToken(1200))
	for _, tt := range []struct {
		op  byte
		req string
	}{{OpToken, nikoReq}, {OpInvalidate, strings.Replace(nikoReq, `{`, `{"access_token":"tok-1",`, 1)}} {
		var m Memo
		f, _ := NewFlow(&m, []byte(tt.req), tt.op, h.clock)
		f.Run(h)
		if _, ok := f.CachedUntil(); ok {
			t.Fatalf("op %c: CachedUntil after an answer not from the cache", tt.op)
		}
	}
	if _, ok := h.cache[mustKey(t, nikoReq)]; h.sends != 1 || ok {
		t.Fatalf("%d sends, cache %v: want the token fetched, then invalidated", h.sends, h.cache)
	}
}

// TestSlowAnswerIsNotLost: a state waiting for the provider's answer outlives the lock's TTL by
// stateSlackMS, so a host slowed down after its http_send (a busy machine) does not lose an answer
// that came within its own timeout; a state that judges the cache does not, and its expiry is
// retryable: a fresh flow may succeed.
func TestSlowAnswerIsNotLost(t *testing.T) {
	const start = int64(1767225600000)
	clock := start
	now := func() int64 { return clock }
	m := new(Memo)
	step := func(in string) map[string]json.RawMessage {
		var got map[string]json.RawMessage
		if err := json.Unmarshal(TokenStep(m, []byte(in), now), &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	var cachedState, gateState, sendState string
	json.Unmarshal(step(`{"request":` + nikoReq + `}`)["state"], &cachedState)
	json.Unmarshal(step(`{"request":` + nikoReq + `,"state":"` + cachedState + `","answer":{"hit":false}}`)["state"], &gateState)
	json.Unmarshal(step(`{"request":` + nikoReq + `,"state":"` + gateState + `","answer":{"hit":false}}`)["state"], &sendState)
	lockTTL := int64(DefaultTimeoutMS + lockMarginMS)
	answer := `{"status":200,"headers":{},"body":"{\"access_token\":\"slow-tok\",\"expires_in\":3600}"}`
	for _, tt := range []struct {
		name, state, answer string
		late                int64
		want                string // a token, or the error's message
	}{
		{"send, at the lock's TTL + 30 s", sendState, answer, lockTTL + 30000, "slow-tok"},
		{"send, at the lock's TTL + slack", sendState, answer, lockTTL + stateSlackMS, "slow-tok"},
		{"send, past the slack", sendState, answer, lockTTL + stateSlackMS + 1, "token_step: state has expired; start the flow again"},
		{"cache, past the lock's TTL", cachedState, `{"hit":false}`, lockTTL + 1, "token_step: state has expired; start the flow again"},
	} {
		clock = start + tt.late
		got := step(`{"request":` + nikoReq + `,"state":"` + tt.state + `","answer":` + tt.answer + `}`)
		var res struct {
			Token *struct {
				AccessToken string `json:"access_token"`
			}
			Error *struct {
				Message   string
				Retryable bool
			}
		}
		b, _ := json.Marshal(got)
		json.Unmarshal(b, &res)
		switch {
		case res.Token != nil && res.Token.AccessToken == tt.want:
		case res.Error != nil && res.Error.Message == tt.want && res.Error.Retryable:
		default:
			t.Errorf("%s: %s, want %q", tt.name, b, tt.want)
		}
	}
}
