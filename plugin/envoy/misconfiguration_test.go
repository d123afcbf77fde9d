//go:build !wasip1

package main

// What operators get wrong, and what the filter does then: a refused grant given a new refresh
// token, a client secret changed under a one-time grant, a secret pasted where a variable name
// belongs, configurations the filter must refuse at start.

import (
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// twoConfigurations starts two filter configurations in one VM (one shared data, as one vm_id
// whose plugin configuration an operator changed): h.on(mux, i) makes a request on configuration i.
func twoConfigurations(t *testing.T, upstream string, a, b map[string]any) (*harness, *twoFilters) {
	t.Helper()
	clk := newClock()
	mux := &twoFilters{confs: [2][]byte{mustJSON(t, a), mustJSON(t, b)}}
	for i := range mux.p {
		mux.p[i] = (&vmContext{now: clk.now}).NewPluginContext(uint32(i + 1)).(*pluginContext)
	}
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(mux))
	t.Cleanup(reset)
	cluster, _ := a["cluster"].(string)
	h := &harness{t: t, host: host, clock: clk, upstream: upstream, cluster: cluster, answered: map[uint32]int{}}
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("start: %v (critical logs %q)", st, host.GetCriticalLogs())
	}
	return h, mux
}

// onAnswered makes a request on configuration w, answering the token call it pauses for, and
// returns the local reply's status and kind (0 when it went upstream) and its header.
func (h *harness) onAnswered(mux *twoFilters, w int) (status int, kind, header string) {
	h.t.Helper()
	id, action := h.on(mux, w)
	if action == types.ActionPause {
		h.answerAll()
	}
	status, kind, _ = h.local(id)
	return status, kind, h.header(id)
}

// TestNewRefreshTokenAfterRefused: the way out of a refused lineage is a new refresh token in the
// configuration, and it works in the same shared data (an Envoy whose plugin configuration was
// changed, same vm_id): the refused mark belongs to the old credential only, and stays on it.
func TestNewRefreshTokenAfterRefused(t *testing.T) {
	p := newRotatingProvider(t, "", "rt-fresh", 3600)
	old := lineageConfig(p, map[string]any{"grant_type": "refresh_token", "refresh_token": "rt-spent"})
	fresh := lineageConfig(p, map[string]any{"grant_type": "refresh_token", "refresh_token": "rt-fresh"})
	h, mux := twoConfigurations(t, p.URL, old, fresh)
	if status, kind, _ := h.onAnswered(mux, 0); status == 0 || kind != "invalid_grant" {
		t.Fatalf("the spent refresh token: %d %q, want invalid_grant", status, kind)
	}
	if status, kind, hdr := h.onAnswered(mux, 1); status != 0 || hdr != "Bearer at-1" {
		t.Fatalf("the new refresh token: local reply %d %q, header %q; want the token", status, kind, hdr)
	}
	h.clock.advance(5000) // past failure_memory_ms
	if status, kind, _ := h.onAnswered(mux, 0); status == 0 || kind != "invalid_grant" {
		t.Fatalf("the spent refresh token again: %d %q, want invalid_grant", status, kind)
	}
	calls, _ := p.record()
	if len(calls) != 2 || calls[0] != (grantCall{"refresh_token", "rt-spent"}) || calls[1] != (grantCall{"refresh_token", "rt-fresh"}) {
		t.Fatalf("calls %v: want the spent refresh token once, then the new one", calls)
	}
}

// TestNewClientSecretKeepsTheLineage (finding, not fixed): the lineage is keyed by the request as
// first given, client secret included (abi/ABI.md "One-time grants"), so a configuration whose
// client secret changed (rotated at the provider) and whose refresh token did not is a new identity
// with no lineage: it sends the configured refresh token, which the first configuration used long
// ago, and a rotating provider takes that for a replay (RFC 9700 4.14) and may revoke the grant.
// Until the lineage is keyed without the client's authentication, the README says to configure the
// grant's newest refresh token with a new secret, and this test is skipped.
func TestNewClientSecretKeepsTheLineage(t *testing.T) {
	t.Skip("known limitation: a new client secret starts a new lineage and replays the configured refresh token (README: give a fresh refresh token with a new secret)")
	p := newRotatingProvider(t, "", "rt-0", 3600)
	before := lineageConfig(p, map[string]any{"grant_type": "refresh_token", "refresh_token": "rt-0"})
	after := lineageConfig(p, map[string]any{"grant_type": "refresh_token", "refresh_token": "rt-0"})
	after["request"].(map[string]any)["client_secret"] = "cd-secret-2"
	h, mux := twoConfigurations(t, p.URL, before, after)
	if status, _, hdr := h.onAnswered(mux, 0); status != 0 || hdr != "Bearer at-1" {
		t.Fatalf("the first secret: %d %q", status, hdr)
	}
	h.clock.advance(5000)
	h.onAnswered(mux, 1)
	if calls, replays := p.record(); replays != 0 {
		t.Fatalf("calls %v: the new secret's configuration replayed a used refresh token", calls)
	}
}

// TestSecretPastedAsVariableNameNotLogged: an operator who puts the secret itself in secret_env
// (where the variable's name belongs) gets a start failure that does not quote it: a random
// alphanumeric secret is a valid environment variable name, and the message used to name the
// variable ("environment variable <the secret> is not set") in a critical log.
func TestSecretPastedAsVariableNameNotLogged(t *testing.T) {
	const pasted = "Zk3pQ9xT2vLm8Rb4Yw7NcE5u" // looks like a client secret, and is a valid variable name
	fake := niko(t, 0)
	secret := nikoConfig(fake, map[string]any{"secret_env": map[string]string{"client_secret": pasted}})
	delete(secret["request"].(map[string]any), "client_secret")
	key := smartConfig("https://ehr.example/oauth2/token", &testKey{env: pasted, alg: "ES384", kid: "k"}, nil)
	runners(t, func(t *testing.T, runner string) {
		for name, conf := range map[string]map[string]any{"client_secret": secret, "private_key": key} {
			t.Run(name, func(t *testing.T) { // one emulator at a time: each ends with its subtest
				h := emulate(t, runner, conf)
				st := h.host.StartPlugin()
				logs := strings.Join(h.host.GetCriticalLogs(), "\n")
				if st != types.OnPluginStartStatusFailed || !strings.Contains(logs, "secret_env."+name) {
					t.Fatalf("%s: start %v, logs %q; want a failure naming secret_env.%s", name, st, logs, name)
				}
				if strings.Contains(logs, pasted) {
					t.Errorf("%s: the critical log quotes the value of secret_env.%s: %q", name, name, logs)
				}
			})
		}
	})
}

// TestOddConfigurationsRefusedAtStart: configurations a hurried operator (or a broken xDS server)
// might send stop the filter at start with a critical log, never a trap or a start that succeeds.
func TestOddConfigurationsRefusedAtStart(t *testing.T) {
	fake := niko(t, 0)
	base := string(mustJSON(t, nikoConfig(fake, nil)))
	for _, raw := range []string{
		``, ` `, `null`, `[]`, `"x"`, `{}`, `{"request":null}`, `{"request":[]}`, `{"request":"x"}`,
		strings.Replace(base, `"paths":["/api/"]`, `"paths":[""]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"paths":["api"]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api?x"]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/../x"]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"hosts":["[::1"]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"hosts":["user@api.example"]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"hosts":["api.example:443"]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"hosts":["AP\u0130.example"]`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"header":"Authorization\r\nX: y"`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"wait_ms":1e999`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"wait_ms":-1`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"secret_env":{"client_secret":""}`, 1),
		strings.Replace(base, `"paths":["/api/"]`, `"secret_env":[]`, 1),
		strings.Replace(base, `"cluster":"nikohealth_token"`, `"cluster":""`, 1),
		base + `x`, base[:len(base)/2],
	} {
		runners(t, func(t *testing.T, runner string) {
			h := emulateRaw(t, runner, []byte(raw))
			if st := h.host.StartPlugin(); st != types.OnPluginStartStatusFailed || len(h.host.GetCriticalLogs()) == 0 {
				t.Errorf("configuration %q: start %v, critical logs %q; want a failure with a log", raw, st, h.host.GetCriticalLogs())
			}
		})
	}
}
