package host

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/internal/race"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// padRequest pads the JSON object req, which has no params, to size bytes with a parameter.
func padRequest(req string, size int) string {
	return req[:len(req)-1] + `,"params":{"pad":"` + strings.Repeat("p", size-len(req)-len(`,"params":{"pad":""}`)) + `"}}`
}

// stepThroughWasm calls token_step once through the compiled plugin and decodes its answer; an
// answer that is not JSON fails the test.
func stepThroughWasm(t *testing.T, c *Runtime, in string) map[string]json.RawMessage {
	t.Helper()
	out, err := c.callRaw(context.Background(), "token_step", []byte(in))
	if err != nil {
		t.Fatalf("token_step: %v", err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("token_step answered %q", out)
	}
	return got
}

// TestStepAttacksThroughWasm runs forged, expired and boundary inputs through the compiled plugin on
// one long-lived instance, with two identities alternating: each is refused with a typed error or
// goes on, and no answer carries the other identity's key or any secret. Six rounds; three under
// -race (A, B, A: each 8 MiB input there costs seconds), the six again without it in `make unit`.
func TestStepAttacksThroughWasm(t *testing.T) {
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		now := time.Now().UnixMilli()
		reqs := [2]string{
			`{"provider":"nikohealth","client_id":"niko-client","client_secret":"secret-A-1234","domain":"acme","fleet_lock":true}`,
			`{"provider":"nikohealth","client_id":"niko-client","client_secret":"secret-B-5678","domain":"acme","fleet_lock":true}`,
		}
		errMsg := func(got map[string]json.RawMessage) string {
			var e struct{ Message string }
			json.Unmarshal(got["error"], &e)
			return e.Message
		}
		for round := range race.Iterations(6, 3) {
			req, other := reqs[round%2], reqs[1-round%2]
			// Walk to the lock step.
			var state string
			for _, answer := range []string{``, `,"answer":{"hit":false}`, `,"answer":{"hit":false}`} {
				in := `{"request":` + req
				if state != "" {
					in += `,"state":"` + state + `"` + answer
				}
				got := stepThroughWasm(t, c, in+`}`)
				if err := json.Unmarshal(got["state"], &state); err != nil {
					t.Fatalf("round %d: %v", round, got)
				}
			}
			parts := strings.Split(state, ".") // tw2, t3, now_ms, life_ms, binding, owner, seal
			if len(parts) != 7 || parts[1] != "t30" {
				t.Fatalf("round %d: lock state %q", round, state)
			}
			forgedOwner, _ := json.Marshal(strings.Join(append(parts[:5:5], `"},"next":{"import":"http_send","xy"`, parts[6]), "."))
			// The state is sealed: an hour later is told by the clock, here the request's now_ms.
			later := strings.Replace(req, `{`, `{"now_ms":`+strconv.FormatInt(now+3600_000, 10)+`,`, 1)
			deep := strings.Repeat(`{"a":`, 31) + `{"stored":true}` + strings.Repeat(`}`, 31)
			cases := []struct{ name, in, want string }{
				{"forged owner", `{"request":` + req + `,"state":` + string(forgedOwner) + `,"answer":{"stored":true}}`, "token_step: state is not one this plugin gave for this request"},
				{"resumed an hour later", `{"request":` + later + `,"state":"` + state + `","answer":{"stored":true}}`, "token_step: state has expired; start the flow again"},
				{"the phase changed", `{"request":` + req + `,"state":"` + strings.Replace(state, ".t30.", ".t50.", 1) + `","answer":{"stored":true}}`, "token_step: state is not one this plugin gave for this request"},
				{"the other identity's request", `{"request":` + other + `,"state":"` + state + `","answer":{"stored":true}}`, "token_step: state belongs to another request"},
				{"answer 33 deep", `{"request":` + req + `,"state":"` + state + `","answer":{"a":` + deep + `}}`, "input is nested too deeply"},
				{"8 MiB + 1", `{"request":` + req + `,"pad":"` + strings.Repeat("x", 8<<20+1-len(`{"request":`+req+`,"pad":""}`)) + `"}`, "input exceeds 8 MiB"},
				{"answer 32 deep", `{"request":` + req + `,"state":"` + state + `","answer":` + deep + `}`, ""},
				{"exactly 8 MiB", `{"request":` + req + `,"pad":"` + strings.Repeat("x", 8<<20-len(`{"request":`+req+`,"pad":""}`)) + `"}`, ""},
				{"request of 256 KiB + 1", `{"request":` + padRequest(req, core.MaxRequestBytes+1) + `}`, "request exceeds 256 KiB"},
				{"request of exactly 256 KiB", `{"request":` + padRequest(req, core.MaxRequestBytes) + `}`, ""},
			}
			for _, tc := range cases {
				got := stepThroughWasm(t, c, tc.in)
				if msg := errMsg(got); msg != tc.want {
					t.Errorf("round %d, %s: error %q, want %q", round, tc.name, msg, tc.want)
				}
				all := ""
				for k, v := range got {
					all += k + string(v)
				}
				otherSecret := other[strings.Index(other, "secret-"):][:13]
				if strings.Contains(all, otherSecret) || (tc.want == "" && strings.Contains(all, "secret-")) {
					t.Errorf("round %d, %s: a secret in %s", round, tc.name, all)
				}
			}
		}
	}, WithMaxInstances(1))
}
