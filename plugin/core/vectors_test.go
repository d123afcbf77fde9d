package core

import (
	"flag"
	"testing"

	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

var update = flag.Bool("update", false, "rewrite the want of every vector under testdata/ from the current answers")

// TestVectors runs every conformance vector through the core natively. host/ runs the same vectors
// through the built .wasm.
func TestVectors(t *testing.T) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	clock := func() int64 { t.Fatal("vectors must give now_ms"); return 0 }
	memo := &Memo{Reuse: true} // shared by every vector, as one plugin instance's is
	plain := new(Memo)         // one that gives each request storage of its own (the Envoy filter's)
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			if v.Export == "token_step" { // written by TestWriteFlowVectors
				for i, m := range []*Memo{nil, memo, memo, plain, plain} {
					call := func(_ string, in []byte) ([]byte, error) { return TokenStep(m, in, clock), nil }
					if err := v.Check(call); err != nil {
						t.Errorf("%s\nrun %d: %v", v.Doc, i, err)
					}
				}
				return
			}
			answer := func(m *Memo) []byte {
				switch v.Export {
				case "encode":
					return Encode(m, v.Input, nil)
				case "decode":
					return Decode(m, v.Input, clock)
				case "describe":
					return Describe()
				}
				t.Fatalf("unknown export %q", v.Export)
				return nil
			}
			if *update {
				if err := conformance.Update(v, answer(nil)); err != nil {
					t.Fatal(err)
				}
				return
			}
			// Without a memo, then twice with each kind: the second answer comes from the memo.
			for i, m := range []*Memo{nil, memo, memo, plain, plain} {
				if got := answer(m); conformance.Match(v.Want, got) != nil {
					t.Errorf("%s\nanswer %d: %v\ngot %s", v.Doc, i, conformance.Match(v.Want, got), got)
				}
			}
		})
	}
}

// TestVectorsThroughSteps runs every encode and decode vector through the token_step flow: what
// encode answers is what the flow sends, and what decode answers is what the flow ends with.
func TestVectorsThroughSteps(t *testing.T) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	clock := func() int64 { return 1767225600000 } // encode vectors give no now_ms
	memo := &Memo{Reuse: true}
	call := func(_ string, in []byte) ([]byte, error) { return TokenStep(memo, in, clock), nil }
	n := 0
	for _, v := range vs {
		ran, err := v.ThroughSteps(call)
		if err != nil {
			t.Errorf("%s: %v", v.Name, err)
		}
		if ran {
			n++
		}
	}
	if n < 50 {
		t.Fatalf("only %d vectors ran through token_step", n)
	}
}
