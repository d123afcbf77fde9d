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
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			var got []byte
			switch v.Export {
			case "encode":
				got = Encode(v.Input)
			case "decode":
				got = Decode(v.Input, clock)
			case "describe":
				got = Describe()
			default:
				t.Fatalf("unknown export %q", v.Export)
			}
			if *update {
				if err := conformance.Update(v, got); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err := conformance.Match(v.Want, got); err != nil {
				t.Errorf("%s\n%v\ngot %s", v.Doc, err, got)
			}
		})
	}
}
