package core

import (
	"os"
	"strings"
	"testing"
)

// phaseNames are the phases as abi/ABI.md names them: the answer a flow in each waits for.
var phaseNames = [...]string{
	phaseStart:       "(the first step)",
	phaseCached:      "`cache_get(K)`",
	phaseGate:        "`cache_get(K/gate)`",
	phaseLock:        "`cache_set(K/lock, nx)`",
	phaseRecheck:     "`cache_get(K)` again, holding the lock",
	phaseSend:        "`http_send`",
	phaseInvalidate:  "`cache_get(K)`, to compare `access_token`",
	phaseSign:        "`sign`",
	phaseGrant:       "`cache_get(K/grant)`",
	phaseSpend:       "`cache_set(K/grant, nx)`",
	phaseSendLineage: "`http_send` of the lineage's refresh token",
	phaseDrop:        "`cache_set(K/drop, nx)`",
	phaseMark:        "`cache_set(K/sent, nx)`",
	phaseEnd:         "the answer",
}

var opNames = map[byte]string{OpToken: "token", OpInvalidate: "invalidate", OpRevoke: "revoke"}

// transitionsMarkdown renders the transition table as abi/ABI.md holds it.
func transitionsMarkdown() string {
	var b strings.Builder
	b.WriteString("| op | waiting for | the next step goes to |\n| --- | --- | --- |\n")
	for _, t := range transitions {
		var to []string
		for p := phaseStart; p <= phaseEnd; p++ {
			if t.to.has(p) {
				to = append(to, phaseNames[p])
			}
		}
		b.WriteString("| `" + opNames[t.op] + "` | " + phaseNames[t.from] + " | " + strings.Join(to, "; ") + " |\n")
	}
	return b.String()
}

const (
	abiTableStart = "<!-- transitions: plugin/core/transitions.go (go test ./plugin/core -run TestTransitionsInABI -update) -->\n"
	abiTableEnd   = "<!-- end of transitions -->"
)

// TestTransitionsInABI: abi/ABI.md's table of the flow's transitions is the one Step and resume read.
func TestTransitionsInABI(t *testing.T) {
	const path = "../../abi/ABI.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, abiTableStart), strings.Index(doc, abiTableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no transition table between %q and %q", path, abiTableStart, abiTableEnd)
	}
	i += len(abiTableStart)
	want := transitionsMarkdown()
	if doc[i:j] == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc[:i]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's transition table differs from plugin/core's (run with -update):\n%s", path, want)
}

// TestTransitionsGuarded: a state never holds the start, the end, an unknown op or phase; and a flow
// goes nowhere the table does not hold: the answer says so, and the flow has ended.
func TestTransitionsGuarded(t *testing.T) {
	for op := range opNames {
		if resumable(op, phaseStart) || resumable(op, phaseEnd) {
			t.Errorf("%c: the start or the end is resumable", op)
		}
	}
	if resumable('x', phaseSend) || resumable(OpToken, phase(200)) {
		t.Error("an unknown op or phase is resumable")
	}
	f := &Flow{op: OpInvalidate, phase: phaseStart}
	if _, out := f.ask(phaseSend, Action{}); !strings.Contains(string(out), "cannot take this step") || f.phase != phaseEnd {
		t.Errorf("a stray step: %s, phase %d", out, f.phase)
	}
}
