package host

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// builds are the plugin builds every wasm test runs against: the embedded TinyGo build always, and the
// files named by TOKENWASM_WASM_TINYGO and TOKENWASM_WASM_GO when set (make test sets both, so both
// toolchains' builds pass the same tests).
func builds(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{"embedded": Plugin}
	seen := map[string]bool{string(Plugin): true}
	for name, env := range map[string]string{"tinygo": "TOKENWASM_WASM_TINYGO", "go": "TOKENWASM_WASM_GO"} {
		path := os.Getenv(env)
		if path == "" {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s=%s: %v", env, path, err)
		}
		if !seen[string(b)] { // a fresh TinyGo build is the embedded one: run it once
			out[name] = b
			seen[string(b)] = true
		}
	}
	return out
}

// forEachBuild runs f once per plugin build with a fresh Client.
func forEachBuild(t *testing.T, f func(t *testing.T, c *Client), opts ...Option) {
	for name, wasm := range builds(t) {
		t.Run(name, func(t *testing.T) {
			c, err := New(context.Background(), append([]Option{WithPlugin(wasm)}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			f(t, c)
		})
	}
}

// TestVectorsThroughWasm runs every conformance vector through the built plugin in this host.
func TestVectorsThroughWasm(t *testing.T) {
	vs, err := conformance.Load("../testdata")
	if err != nil {
		t.Fatal(err)
	}
	forEachBuild(t, func(t *testing.T, c *Client) {
		for _, v := range vs {
			var got json.RawMessage
			if err := c.call(context.Background(), v.Export, v.Input, &got); err != nil {
				t.Fatalf("%s: %v", v.Name, err)
			}
			if err := conformance.Match(v.Want, got); err != nil {
				t.Errorf("%s: %v\ngot %s", v.Name, err, got)
			}
		}
	})
}

// TestDescribe checks the plugin's self-description through the host.
func TestDescribe(t *testing.T) {
	forEachBuild(t, func(t *testing.T, c *Client) {
		raw, err := c.Describe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			ABI       string `json:"abi"`
			Providers []struct {
				Name string `json:"name"`
			} `json:"providers"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		if d.ABI != "tokenwasm/1" || len(d.Providers) != 4 {
			t.Fatalf("describe = %s", raw)
		}
	})
}
