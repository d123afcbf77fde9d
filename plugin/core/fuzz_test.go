package core

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// seed adds every vector's input of the given export to the fuzz corpus.
func seed(f *testing.F, export string) {
	vs, err := conformance.Load("../../testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range vs {
		if v.Export == export {
			f.Add([]byte(v.Input))
		}
	}
}

// checkAnswer asserts the ABI's promise: any input yields one JSON object with exactly one of
// request, token or error, and no error carries the canary secret.
func checkAnswer(t *testing.T, in, out []byte) {
	var res map[string]json.RawMessage
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("answer is not a JSON object: %q (input %q)", out, in)
	}
	n := 0
	for _, k := range []string{"request", "token", "error"} {
		if _, ok := res[k]; ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("answer %s has %d of request/token/error", out, n)
	}
	if e, ok := res["error"]; ok {
		var ae abi.Error
		if err := json.Unmarshal(e, &ae); err != nil || ae.Kind == "" {
			t.Fatalf("error %s has no kind", e)
		}
		if strings.Contains(string(e), canary) {
			t.Fatalf("error leaks the secret: %s", e)
		}
	}
}

const canary = "CANARY-secret-7f3a"

func FuzzDecode(f *testing.F) {
	seed(f, "decode")
	f.Fuzz(func(t *testing.T, in []byte) {
		checkAnswer(t, in, Decode(nil, in, func() int64 { return 1767225600000 }))
		// The same bytes as a provider's body, with a canary secret in the request.
		var body []byte
		body, _ = json.Marshal(string(in))
		wrapped := `{"request":{"provider":"candescent","client_id":"c","client_secret":"` + canary +
			`","institution_id":"1"},"response":{"status":400,"body":` + string(body) + `},"now_ms":1}`
		checkAnswer(t, in, Decode(nil, []byte(wrapped), nil))
	})
}

func FuzzEncode(f *testing.F) {
	seed(f, "encode")
	f.Fuzz(func(t *testing.T, in []byte) {
		checkAnswer(t, in, Encode(nil, in, nil))
	})
}
