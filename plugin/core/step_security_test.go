package core

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// stepState walks a fleet-locked flow to the step that has just taken the lock and returns that
// step's state without its seal, split at its dots: tw2, <op><phase>, now_ms, life_ms, binding,
// lock owner.
func stepState(t *testing.T, req string, nowMS int64) []string {
	t.Helper()
	state := walkToLock(t, new(Memo), req, nowMS)
	parts := strings.Split(unseal(state), ".")
	if len(parts) != 6 || parts[1] != "t30" || len(parts[5]) != 36 {
		t.Fatalf("lock step state = %q", state)
	}
	return parts
}

// walkToLock runs a fleet-locked flow on m to its lock step and returns the state m wrote there.
func walkToLock(t *testing.T, m *Memo, req string, nowMS int64) string {
	t.Helper()
	clock := func() int64 { return nowMS }
	state := ""
	for _, answer := range []string{``, `,"answer":{"hit":false}`, `,"answer":{"hit":false}`} {
		in := `{"request":` + req
		if state != "" {
			in += `,"state":"` + state + `"` + answer
		}
		var got struct{ State string }
		if err := json.Unmarshal(TokenStep(m, []byte(in+`}`), clock), &got); err != nil || got.State == "" {
			t.Fatalf("walking to the lock: %v, state %q", err, got.State)
		}
		state = got.State
	}
	return state
}

// TestStepForgedOwnerIsRefused: the lock owner in a state is written back into the next state as
// it came. A forged owner of the right length but holding a quote must be refused, never turned
// into an answer that is not JSON (or that carries members the plugin did not write).
func TestStepForgedOwnerIsRefused(t *testing.T) {
	fleet := strings.Replace(nikoReq, `{`, `{"fleet_lock":true,`, 1)
	const now = 1767225600000
	parts := stepState(t, fleet, now)
	for _, owner := range []string{
		`"},"next":{"import":"http_send","xy"`, // 36 bytes: JSON injection into the next state
		"\x00" + strings.Repeat("a", 35),       // a control character
		strings.Repeat("é", 18),                // 36 bytes, not ASCII
		strings.ToUpper(parts[5]),              // not what the plugin writes
	} {
		// Sealed again, as a holder of the request could: the owner check stands behind the seal.
		state, _ := json.Marshal(sealed(t, fleet, strings.Join(append(parts[:5:5], owner), ".")))
		out := TokenStep(new(Memo), []byte(`{"request":`+fleet+`,"state":`+string(state)+`,"answer":{"stored":true}}`),
			func() int64 { return now })
		var got struct {
			Error struct{ Kind, Message string }
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Errorf("owner %q: the answer is not JSON: %s", owner, out)
			continue
		}
		if got.Error.Message != "token_step: state is not one this plugin gave for this request" {
			t.Errorf("owner %q: %s, want the forged state refused", owner, out)
		}
	}
}

// TestStepStateTimeIsBounded: a state's now_ms is the flow's clock for every later step. A state
// resumed long after it was given (a host that kept it, a replay after the flow ended) must not make
// a token that expired since look fresh, nor claim a fleet lock whose TTL has run out; a state from
// far in the future must not overflow the token's times. Within the lock's TTL (timeout_ms + 2 s)
// a state resumes; past it, or when the request fixes now_ms and the state disagrees, it is refused.
func TestStepStateTimeIsBounded(t *testing.T) {
	const start = 1767225600000
	expired, _ := json.Marshal(`{"access_token":"expired-tok","token_type":"Bearer","expires_in":3600,"expires_at_ms":` +
		strconv.Itoa(start+3600_000) + `,"issued_at_ms":` + strconv.Itoa(start) + `,"id":"de31598ff01ef13602ab0336049a7787"}`)
	first := TokenStep(new(Memo), []byte(`{"request":`+nikoReq+`}`), func() int64 { return start })
	var got struct{ State string }
	if err := json.Unmarshal(first, &got); err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(nikoReq, `{`, `{"now_ms":`+strconv.Itoa(start+3*3600_000)+`,`, 1)
	huge := sealed(t, nikoReq, strings.Replace(unseal(got.State), ".1767225600000.", ".9223372036854775807.", 1))
	// A longer timeout_ms in the resuming request does not lengthen the state's life: it is the
	// state's own (sealed), not the request's.
	longer := strings.Replace(nikoReq, `{`, `{"timeout_ms":60000,`, 1)
	cases := []struct {
		name, req, state string
		clockMS          int64
		want             string // the error message, or "" for a step that goes on
	}{
		{"resumed at once", nikoReq, got.State, start, ""},
		{"resumed within the lock's TTL", nikoReq, got.State, start + DefaultTimeoutMS + lockMarginMS, ""},
		{"resumed two hours later", nikoReq, got.State, start + 2*3600_000, "token_step: state has expired; start the flow again"},
		{"from the future", nikoReq, huge, start, "token_step: state has expired; start the flow again"},
		{"after the lock's TTL, a longer timeout_ms resuming", longer, got.State, start + DefaultTimeoutMS + lockMarginMS + 300, "token_step: state has expired; start the flow again"},
		{"request fixes another now_ms", fixed, got.State, start, "token_step: state has expired; start the flow again"},
	}
	for _, c := range cases {
		out := TokenStep(new(Memo), []byte(`{"request":`+c.req+`,"state":"`+c.state+`","answer":{"hit":true,"value":`+string(expired)+`}}`),
			func() int64 { return c.clockMS })
		var res struct {
			Token *struct{ AccessToken string }
			Error *struct{ Message string }
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("%s: %s", c.name, out)
		}
		switch {
		case c.want == "" && c.clockMS == start && res.Token == nil:
			t.Errorf("%s: %s, want the cached token", c.name, out)
		case c.want == "" && c.clockMS != start && res.Error != nil:
			t.Errorf("%s: %s, want the flow to go on", c.name, out)
		case c.want != "" && (res.Error == nil || res.Error.Message != c.want):
			t.Errorf("%s: %s, want %q", c.name, out, c.want)
		}
	}
}

// TestStepAnswerAtTheDepthLimit: token takes an import's answer nested up to maxDepth levels (a
// cache answer that deep is a miss, and the flow goes on). token_step carries the answer one level
// down in its input, so the same answer must not make the whole step invalid: that would end a flow
// that holds the fleet lock with no "then" to release it.
func TestStepAnswerAtTheDepthLimit(t *testing.T) {
	fleet := strings.Replace(nikoReq, `{`, `{"fleet_lock":true,`, 1)
	const now = 1767225600000
	parts := stepState(t, fleet, now)
	deep := strings.Repeat(`{"a":`, maxDepth-1) + `{"hit":false}` + strings.Repeat(`}`, maxDepth-1)
	if depth([]byte(deep)) != maxDepth {
		t.Fatalf("depth %d", depth([]byte(deep)))
	}
	// token_step: the lock is held (state t3 answered stored), the recheck answers the deep miss.
	recheck := TokenStep(new(Memo), []byte(`{"request":`+fleet+`,"state":"`+sealed(t, fleet, strings.Join(parts, "."))+`","answer":{"stored":true}}`),
		func() int64 { return now })
	var got struct{ State string }
	if err := json.Unmarshal(recheck, &got); err != nil || got.State == "" {
		t.Fatalf("recheck step: %s", recheck)
	}
	out := TokenStep(new(Memo), []byte(`{"request":`+fleet+`,"state":"`+got.State+`","answer":`+deep+`}`), func() int64 { return now })
	if !strings.Contains(string(out), `"next":{"import":"http_send"`) {
		t.Fatalf("a cache answer %d deep at the recheck: %s, want the fetch (as token does)", maxDepth, out)
	}
	// One level deeper is over the limit for both: token_step says so, never traps.
	over := `{"a":` + deep + `}`
	out = TokenStep(new(Memo), []byte(`{"request":`+fleet+`,"state":"`+got.State+`","answer":`+over+`}`), func() int64 { return now })
	if !strings.Contains(string(out), `"message":"input is nested too deeply"`) {
		t.Fatalf("an answer %d deep: %s", maxDepth+1, out)
	}
}

// TestStepAnswerOfAnotherFlowIsRefused: a non-blocking host routes each import's answer back to
// the flow that asked (an Envoy callout id, a JavaScript promise). If it mixes two flows up, the
// cache_get answer it gives one tenant's state is the other tenant's cached token, and nothing in
// the answer named the key it was read from, so the plugin served it. Every cached value now names
// its identity ("id", the key's binding; Flow.ours), and a value of another identity is a miss.
func TestStepAnswerOfAnotherFlowIsRefused(t *testing.T) {
	const now = 1767225600000
	first := TokenStep(new(Memo), []byte(`{"request":`+nikoReq+`}`), func() int64 { return now })
	var got struct{ State string }
	if err := json.Unmarshal(first, &got); err != nil {
		t.Fatal(err)
	}
	// What cache_get(K_B) answered for tenant B, given to tenant A's flow.
	_, _, keyB, _ := Prepare([]byte(strings.Replace(nikoReq, "niko-secret-1", "niko-secret-2", 1)))
	tenantB, _ := json.Marshal(`{"access_token":"tenant-B-token","token_type":"Bearer","expires_in":3600,"expires_at_ms":` +
		strconv.Itoa(now+3600_000) + `,"issued_at_ms":` + strconv.Itoa(now) + `,"id":"` + keyB[len(keyB)-32:] + `"}`)
	out := TokenStep(new(Memo), []byte(`{"request":`+nikoReq+`,"state":"`+got.State+`","answer":{"hit":true,"value":`+string(tenantB)+`}}`),
		func() int64 { return now })
	if strings.Contains(string(out), "tenant-B-token") {
		t.Fatalf("tenant A's flow served tenant B's cached token: %s", out)
	}
}
