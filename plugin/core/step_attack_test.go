package core

import (
	"encoding/json"
	"strings"
	"testing"
)

// stepState walks a fleet-locked flow to the step that has just taken the lock and returns that
// step's state, split at its dots: tw1, <op><phase>, now_ms, binding, lock owner.
func stepState(t *testing.T, req string, nowMS int64) []string {
	t.Helper()
	m := new(Memo)
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
	parts := strings.Split(state, ".")
	if len(parts) != 5 || parts[1] != "t3" || len(parts[4]) != 36 {
		t.Fatalf("lock step state = %q", state)
	}
	return parts
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
		"\x00" + strings.Repeat("a", 35),        // a control character
		strings.Repeat("é", 18),                 // 36 bytes, not ASCII
		strings.ToUpper(parts[4]),               // not what the plugin writes
	} {
		state, _ := json.Marshal(strings.Join(append(parts[:4:4], owner), "."))
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
