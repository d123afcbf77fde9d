package host

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/internal/extism"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// builds are the plugin builds every wasm test runs against (conformance.Builds): the embedded TinyGo
// build always, and those named by TOKENWASM_WASM_TINYGO and TOKENWASM_WASM_GO when set.
func builds(t testing.TB) map[string][]byte {
	t.Helper()
	out, err := conformance.Builds(Plugin())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// forEachBuild runs f once per plugin build with a fresh Runtime.
func forEachBuild(t *testing.T, f func(t *testing.T, c *Runtime), opts ...Option) {
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
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		call := func(export string, in []byte) ([]byte, error) {
			var got json.RawMessage
			err := c.call(context.Background(), export, in, &got)
			return got, err
		}
		ran := 0
		for _, v := range vs {
			if err := v.Check(call); err != nil {
				t.Errorf("%s: %v", v.Name, err)
			}
			// and every encode and decode vector through the token_step flow
			if ok, err := v.ThroughSteps(call); err != nil {
				t.Errorf("%s through token_step: %v", v.Name, err)
			} else if ok {
				ran++
			}
		}
		if ran < 50 {
			t.Fatalf("only %d vectors ran through token_step", ran)
		}
	})
}

// TestDescribe checks the plugin's self-description through the host.
func TestDescribe(t *testing.T) {
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		raw, err := c.Describe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			ABI       string `json:"abi"`
			Providers []struct {
				Name string `json:"name"`
			} `json:"providers"`
			ClientAuth struct {
				HostSigns struct {
					Methods []string `json:"methods"`
				} `json:"host_signs"`
			} `json:"client_auth"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		if d.ABI != "tokenwasm/1" || len(d.Providers) != 5 || d.Providers[4].Name != "smart" ||
			strings.Join(d.ClientAuth.HostSigns.Methods, ",") != "private_key_jwt" {
			t.Fatalf("describe = %s", raw)
		}
	})
}

// TestRealClockAndRandomness: the plugin must see the host's wall clock (wazero defaults to 2022)
// and real randomness (wazero defaults to a fixed seed, the same in every instance).
func TestRealClockAndRandomness(t *testing.T) {
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		ctx := context.Background()
		tok, err := c.Decode(ctx, abi.TokenRequest{Provider: "candid", ClientID: "c", ClientSecret: "s"},
			abi.HTTPResponse{Status: 200, Body: `{"access_token":"t","expires_in":60}`})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(time.UnixMilli(tok.IssuedAtMS)); d < -5*time.Second || d > 5*time.Second {
			t.Fatalf("plugin clock is %v off the host's", d)
		}
		// Two instances at once: each must draw its own random transactionId.
		req := abi.TokenRequest{Provider: "candescent", ClientID: "c", ClientSecret: "s", InstitutionID: "1"}
		a, _ := c.pool.get(ctx)
		b, _ := c.pool.get(ctx)
		defer c.pool.put(ctx, a)
		defer c.pool.put(ctx, b)
		in, _ := json.Marshal(req)
		ids := map[string]bool{}
		for _, inst := range []*extism.Instance{a, b, a, b} {
			out, err := inst.Call(ctx, abi.ExportEncode, in)
			if err != nil {
				t.Fatal(err)
			}
			var res abi.Result
			if err := json.Unmarshal(out, &res); err != nil || res.Request == nil {
				t.Fatalf("encode: %s", out)
			}
			ids[res.Request.Headers["transactionId"]] = true
		}
		if len(ids) != 4 {
			t.Fatalf("transactionIds repeat across instances: %v", ids)
		}
	})
}
