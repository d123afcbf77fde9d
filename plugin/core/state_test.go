package core

import (
	"encoding/json"
	"strings"
	"testing"
)

// sealed returns body (a state without its seal) sealed for req, as only a holder of req can: the
// tests that change a state's fields reseal it, so what they show is the check behind the seal.
func sealed(t *testing.T, req, body string) string {
	t.Helper()
	_, enc, _, err := (*Memo)(nil).Prepare([]byte(req))
	if err != nil {
		t.Fatal(err)
	}
	f := &Flow{enc: enc, tokenEnc: enc}
	return body + "." + string(f.appendSeal(nil, []byte(body)))
}

// unseal returns a state without its seal.
func unseal(state string) string { return state[:max(0, len(state)-sealChars-1)] }

// TestStateSealRefusesEveryChange: a state changed in any byte, truncated, extended or made for
// another request is refused; the same state resumes on another instance (memo).
func TestStateSealRefusesEveryChange(t *testing.T) {
	fleet := strings.Replace(nikoReq, `{`, `{"fleet_lock":true,`, 1)
	const now = 1767225600000
	parts := stepState(t, fleet, now)
	good := sealed(t, fleet, strings.Join(parts, "."))
	step := func(state string) map[string]any {
		var got map[string]any
		out := TokenStep(new(Memo), []byte(`{"request":`+fleet+`,"state":"`+state+`","answer":{"stored":true}}`), func() int64 { return now })
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q: %s", state, out)
		}
		return got
	}
	if got := step(good); got["next"] == nil {
		t.Fatalf("the state as given, on another instance: %v", got)
	}
	refused := func(name, state string) {
		t.Helper()
		got := step(state)
		e, _ := got["error"].(map[string]any)
		if e == nil || e["kind"] != "invalid_request" {
			t.Errorf("%s: %q answered %v, want invalid_request", name, state, got)
		}
	}
	for i := range len(good) {
		for _, c := range []byte{'0', 'f', '.', 'x', '9'} {
			if good[i] != c {
				refused("byte "+string(rune('0'+i%10)), good[:i]+string(c)+good[i+1:])
			}
		}
	}
	for n := 1; n < len(good); n++ {
		refused("truncated", good[:n])
	}
	refused("extended", good+"0")
	refused("extended inside", unseal(good)+".0."+good[len(good)-sealChars:])
	// Every phase digit, resealed by a holder of another request: still refused.
	other := strings.Replace(fleet, "niko-secret-1", "niko-secret-2", 1)
	for p := byte('0'); p <= '9'; p++ {
		body := strings.Replace(unseal(good), ".t30.", ".t"+string(p)+"0.", 1)
		refused("phase "+string(p)+" sealed for another request", sealed(t, other, body))
		if p != '3' {
			refused("phase "+string(p)+" unsealed", body+"."+good[len(good)-sealChars:])
		}
	}
}

// TestStateSealOnTheInstanceThatSealedIt: the instance that wrote a state reads its seal back from
// the memo instead of computing it (Flow.appendSeal); a state it wrote, with its seal changed in any
// digit, or its body changed, is refused all the same, and the state as written still resumes.
func TestStateSealOnTheInstanceThatSealedIt(t *testing.T) {
	fleet := strings.Replace(nikoReq, `{`, `{"fleet_lock":true,`, 1)
	const now = 1767225600000
	m := new(Memo)
	good := walkToLock(t, m, fleet, now)
	step := func(state string) map[string]any {
		var got map[string]any
		out := TokenStep(m, []byte(`{"request":`+fleet+`,"state":"`+state+`","answer":{"stored":true}}`), func() int64 { return now })
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q: %s", state, out)
		}
		return got
	}
	refused := func(state string) {
		t.Helper()
		e, _ := step(state)["error"].(map[string]any)
		if e == nil || e["kind"] != "invalid_request" {
			t.Errorf("%q on the instance that sealed %q: %v, want invalid_request", state, good, e)
		}
	}
	for i := len(good) - sealChars; i < len(good); i++ {
		for _, c := range []byte(hexDigits) {
			if good[i] != c {
				refused(good[:i] + string(c) + good[i+1:])
			}
		}
	}
	refused(strings.Replace(good, ".t30.", ".t50.", 1))
	if got := step(good); got["next"] == nil {
		t.Fatalf("the state as written, on the instance that wrote it: %v", got)
	}
}

// flipLast returns s with its last byte changed to another hex digit.
func flipLast(s string) string {
	if s[len(s)-1] == '0' {
		return s[:len(s)-1] + "1"
	}
	return s[:len(s)-1] + "0"
}
