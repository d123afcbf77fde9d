package core

import (
	"testing"

	"github.com/tidwall/gjson"
)

// staticHost answers every import at once: the cost measured is the token flow's own.
type staticHost struct{}

func (staticHost) HTTPSend([]byte) []byte {
	return []byte(`{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"BE55CF536EC46D12F9FDBF1EFD831E086B121939B9806DF43F3A6043C67DB0AC\",\"expires_in\":1200,\"token_type\":\"Bearer\",\"scope\":\"external\"}"}`)
}
func (staticHost) CacheGet([]byte) []byte    { return []byte(`{"hit":false}`) }
func (staticHost) CacheSet([]byte) []byte    { return []byte(`{"stored":true}`) }
func (staticHost) CacheDelete([]byte) []byte { return []byte(`{}`) }

// BenchmarkTokenFlow is the token export natively, every iteration a fetch of the same request (so
// from the memo, as in the plugin): the part of a wasm fetch that is the plugin's own work.
func BenchmarkTokenFlow(b *testing.B) {
	in := []byte(`{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","token_url":"http://127.0.0.1:1/api/identity/connect/token","force":true}`)
	clock := func() int64 { return 1767225600000 }
	m := new(Memo)
	b.ReportAllocs()
	for b.Loop() {
		Token(m, in, staticHost{}, clock)
	}
}

// BenchmarkStepFlow is BenchmarkTokenFlow through TokenStep, one call per step as a host drives it:
// what the step form adds to the flow's own work.
func BenchmarkStepFlow(b *testing.B) {
	req := `{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","token_url":"http://127.0.0.1:1/api/identity/connect/token","force":true}`
	clock := func() int64 { return 1767225600000 }
	m := &Memo{Reuse: true}
	in := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var state, answer string
		for {
			in = append(append(in[:0], `{"request":`...), req...)
			if state != "" {
				in = append(append(append(append(in, `,"state":`...), state...), `,"answer":`...), answer...)
			}
			out := gjson.ParseBytes(append(in, '}')).Raw
			out = string(TokenStep(m, []byte(out), clock))
			next := gjson.Get(out, "next")
			if !next.Exists() {
				break
			}
			state = gjson.Get(out, "state").Raw
			answer = string(perform(staticHost{}, Action{Import: next.Get("import").Str, Input: []byte(next.Get("input").Raw)}))
		}
	}
}
