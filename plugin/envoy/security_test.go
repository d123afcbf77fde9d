//go:build !wasip1

package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// The filter against hostile parties: a provider that refreshes without progress or injects into
// its answers, an upstream's 401 storm, scopes and double encoding in paths, a configuration with
// nulls and duplicates, planted shared data, and secrets kept out of replies, logs and metrics.

// TestRefreshWithoutProgressStops: a provider that answers a refresh with a token expiring no later
// than the one held (its own cached token, or a JWT clamped to a session's end) gains nothing from
// refreshing again; the filter must not call again on every tick until the token expires.
func TestRefreshWithoutProgressStops(t *testing.T) {
	for _, sameToken := range []bool{true, false} {
		t.Run(fmt.Sprintf("same token %v", sameToken), func(t *testing.T) {
			fake := niko(t, 0)
			h := newHarness(t, "native", fake, map[string]any{"refresh_ahead_ms": 30000})
			deadline := h.clock.now() + 120_000 // the provider's token (or session) ends here
			n := 0
			fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
				n++
				tok := "clamped-token-1"
				if !sameToken {
					tok = "clamped-token-" + strconv.Itoa(n)
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, (deadline-h.clock.now())/1000)
				return true
			})
			h.request("/api/x")
			h.answerAll()
			calls := 0
			for i := range 2000 { // 100 s: past the refresh point (90 s), before the token's end less skew
				h.ticks(1)
				if i%20 == 0 {
					if id, _ := h.request("/api/x"); h.header(id) == "" {
						h.answerAll()
					}
				}
				calls += h.answerAll()
			}
			if calls > 1 {
				t.Fatalf("%d refresh calls for a token the provider will not extend, want at most 1", calls)
			}
		})
	}
}

// TestUpstream401StormBounded: an API that refuses every token (audience mismatch, a revoked grant)
// answers 401 to each request. Dropping the token once per token still makes every 401 a token call;
// the flow's 401 window drops a token for a 401 at most once every 30 s per identity, for every
// worker sharing the shared data (TestUnauthorizedWindowAcrossWorkers has two).
func TestUpstream401StormBounded(t *testing.T) {
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		h := newHarness(t, runner, fake, nil)
		for range 10 {
			id, _ := h.request("/api/x")
			h.answerAll()
			h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
		}
		if n := fake.Requests(); n != 2 {
			t.Fatalf("%d token calls for 10 upstream 401s, want 2", n)
		}
		if h.clock != nil { // 30 s later a 401 drops the token again
			h.clock.advance(30 * time.Second)
			id, _ := h.request("/api/x")
			h.answerAll()
			h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
			h.request("/api/x")
			if h.answerAll() != 1 || fake.Requests() != 3 {
				t.Fatalf("after 30 s: %d token calls, want 3", fake.Requests())
			}
		}
	})
}

// TestScopeParamsAndDoubleEncoding: upstreams that strip ";" path parameters before resolving dot
// segments (Tomcat, Spring) read /api/..;/admin as /admin; upstreams that decode twice read
// %252e%252e as "..". Neither may get the token; ordinary parameters and escapes keep it.
func TestScopeParamsAndDoubleEncoding(t *testing.T) {
	s, err := newScope([]string{"/api"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want bool
	}{
		{"/api/..;/admin", false},
		{"/api/..;jsessionid=1/admin", false},
		{"/api/.;/../admin", false},
		{"/api/%2e%2e;/admin", false},
		{"/api/..%3b/admin", false},
		{"/api/%252e%252e/admin", false},
		{"/api/x%252f..%252f..%252fadmin", false},
		{"/api/x%255c..%255cadmin", false},
		{"/api/x;v=1", true},
		{"/api/files/100%25", true},
		{"/api/a%20b", true},
		{"/api/..x/y", true},
	} {
		if got := s.applies(tt.path, ""); got != tt.want {
			t.Errorf("applies(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		h := newHarness(t, runner, fake, map[string]any{"paths": []string{"/api"}})
		id, _ := h.request("/api/x")
		h.answerAll()
		if h.header(id) == "" {
			t.Fatal("no token in scope")
		}
		for _, p := range []string{"/api/..;/admin", "/api/%252e%252e/admin"} {
			if id, _ := h.request(p); h.header(id) != "" {
				t.Errorf("%s got the token", p)
			}
		}
	})
}

// TestStrictConfigurationNullsAndDuplicates: a null or empty paths/hosts list, a repeated key (the
// last would win: {"paths":["/api"],"paths":null} puts the token on every request), data after the
// object, and header names that are not the request's to carry a token stop the filter at start.
func TestStrictConfigurationNullsAndDuplicates(t *testing.T) {
	fake := niko(t, 0)
	base := string(mustJSON(t, nikoConfig(fake, nil)))
	for _, tt := range []struct{ name, conf, want string }{
		{"paths null", strings.Replace(base, `"paths":["/api/"]`, `"paths":null`, 1), "paths"},
		{"paths empty", strings.Replace(base, `"paths":["/api/"]`, `"paths":[]`, 1), "paths"},
		{"hosts null", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"hosts":null`, 1), "hosts"},
		{"hosts empty", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"hosts":[]`, 1), "hosts"},
		{"wait_ms null", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"wait_ms":null`, 1), "wait_ms"},
		{"duplicate paths", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"paths":null`, 1), `"paths"`},
		{"duplicate request field", strings.Replace(base, `"provider":"nikohealth"`, `"provider":"nikohealth","client_id":"other"`, 1), `"client_id"`},
		{"paths repeated in another case", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"Paths":["/"]`, 1), `"Paths"`},
		{"paths repeated with a long s", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"pathſ":["/"]`, 1), `"pathſ"`},
		{"request field repeated in another case", strings.Replace(base, `"provider":"nikohealth"`, `"provider":"nikohealth","Client_ID":"other"`, 1), `"Client_ID"`},
		{"data after the object", base + "}", "after"},
		{"header host", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"header":"Host"`, 1), "header"},
		{"header content-length", strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"header":"content-length"`, 1), "header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.conf == base {
				t.Fatalf("the test did not change the configuration: %s", tt.conf)
			}
			_, err := parseConfig([]byte(tt.conf))
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), fake.Config().ClientSecret) {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
	runners(t, func(t *testing.T, runner string) { // through the filter: it does not start
		h := emulateRaw(t, runner, []byte(strings.Replace(base, `"paths":["/api/"]`, `"paths":["/api/"],"paths":null`, 1)))
		if st := h.host.StartPlugin(); st != types.OnPluginStartStatusFailed {
			t.Fatalf("start %v with a repeated paths", st)
		}
	})
}

// TestPlantedSharedData: shared data holds what another filter with the same vm_id, or a clock
// stepped back, left: a "failure" that is a token, garbage, a failure remembered for a year, a lock
// held for a year. None may give a request a token the flow did not serve, or stop token calls
// beyond the configured memory and the lock's own TTL.
func TestPlantedSharedData(t *testing.T) {
	for _, tt := range []struct {
		name, suffix, value string
	}{
		{"token as failure", "/failure", `{"token":{"access_token":"planted-token","token_type":"Bearer","expires_at_ms":99999999999999}}`},
		{"garbage failure", "/failure", `<html>not json`},
		{"failure for a year", "/failure", `{"error":{"kind":"invalid_client","message":"planted","retryable":false}}`},
		{"lock for a year", "/lock", `planted-lock`},
	} {
		runners(t, func(t *testing.T, runner string) {
			t.Run(tt.name, func(t *testing.T) {
				fake := niko(t, time.Hour)
				conf := nikoConfig(fake, map[string]any{"wait_ms": 2000})
				h := startHarness(t, runner, fake.URL(), conf)
				key := strings.TrimSuffix(lockKey(t, conf), "/lock")
				year := time.Now().Add(365*24*time.Hour).UnixMilli() + 10*365*24*3600*1000 // past wazero's fake clock too
				plant(t, key+tt.suffix, strconv.FormatInt(year, 10)+" "+tt.value)
				id, _ := h.request("/api/x")
				for i := 0; i < 60 && h.answerAll() == 0; i++ {
					h.ticks(1)
				}
				got := h.header(id)
				if !strings.HasPrefix(got, "Bearer ") || strings.Contains(got, "planted") || fake.Requests() != 1 {
					st, kind, _ := h.local(id)
					t.Fatalf("header %q, local reply %d %q, %d token calls: want the provider's token", got, st, kind, fake.Requests())
				}
			})
		})
	}
}

// TestHostileTokenEndpointCannotInject: access_token and token_type with CR/LF, spaces, control or
// non-ASCII bytes, or empty, never reach a header, and are not cached.
func TestHostileTokenEndpointCannotInject(t *testing.T) {
	for _, body := range []string{
		`{"access_token":"abc\r\nX-Injected: yes","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"abc","token_type":"Bearer\r\nX-Injected: yes","expires_in":3600}`,
		`{"access_token":"abc def","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"abc\u0000","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"abc\u00e9","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"abc","token_type":"Bea rer","expires_in":3600}`,
	} {
		runners(t, func(t *testing.T, runner string) {
			fake := niko(t, 0)
			fake.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(body))
				return true
			})
			h := newHarness(t, runner, fake, map[string]any{"failure_memory_ms": 0})
			for range 2 {
				id, _ := h.request("/api/x")
				h.answerAll()
				if _, kind, _ := h.local(id); kind != "malformed_response" || h.header(id) != "" {
					t.Fatalf("%s: header %q kind %q", body, h.header(id), kind)
				}
			}
			if fake.Requests() != 2 {
				t.Fatalf("%s: %d calls, want 2 (nothing cached)", body, fake.Requests())
			}
		})
	}
}

// TestSecretNeverInRepliesLogsOrMetrics: a token endpoint that echoes the credentials in every
// encoding it can think of; the local reply, every log and every metric name stay free of them.
func TestSecretNeverInRepliesLogsOrMetrics(t *testing.T) {
	const secret = "Zq8+s3cr/t=Val&ue~x9"
	echoes := []string{
		secret, url.QueryEscape(secret), url.PathEscape(secret), strings.ReplaceAll(url.QueryEscape(secret), "%", "%25"),
		base64.StdEncoding.EncodeToString([]byte(secret)), base64.StdEncoding.EncodeToString([]byte("cid:" + secret)),
		base64.URLEncoding.EncodeToString([]byte("cid:" + url.QueryEscape(secret))), hex.EncodeToString([]byte(secret)),
	}
	runners(t, func(t *testing.T, runner string) {
		fake := niko(t, 0)
		var sent string
		fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
			b := make([]byte, 4096)
			n, _ := r.Body.Read(b)
			sent = string(b[:n]) + " " + r.Header.Get("Authorization")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Echo", secret)
			w.WriteHeader(400)
			desc := strings.Join(echoes, " | ") + " | " + sent
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_request", "error_description": desc})
			return true
		})
		conf := nikoConfig(fake, nil)
		conf["request"].(map[string]any)["client_id"] = "cid"
		conf["request"].(map[string]any)["client_secret"] = secret
		h := startHarness(t, runner, fake.URL(), conf)
		id, _ := h.request("/api/x")
		h.answerAll()
		if !strings.Contains(sent, url.QueryEscape(secret)) && !strings.Contains(sent, base64.StdEncoding.EncodeToString([]byte("cid:"+url.QueryEscape(secret)))) && !strings.Contains(sent, base64.StdEncoding.EncodeToString([]byte("cid:"+secret))) {
			t.Fatalf("the secret was not sent as expected: %q", sent)
		}
		r := h.host.GetSentLocalResponse(id)
		if r == nil {
			t.Fatal("no local reply")
		}
		var texts []string
		texts = append(texts, string(r.Data))
		for _, kv := range r.Headers {
			texts = append(texts, kv[0]+": "+kv[1])
		}
		for _, logs := range [][]string{h.host.GetTraceLogs(), h.host.GetDebugLogs(), h.host.GetInfoLogs(), h.host.GetWarnLogs(), h.host.GetErrorLogs(), h.host.GetCriticalLogs()} {
			texts = append(texts, logs...)
		}
		all := strings.Join(texts, "\n")
		for _, e := range append(echoes, secret[:12], "s3cr/t", "s3cr%2Ft") {
			if strings.Contains(all, e) {
				t.Errorf("%q appears in a reply or log", e)
			}
		}
	})
}

func plant(t *testing.T, key, value string) {
	t.Helper()
	_, cas, _ := proxywasm.GetSharedData(key)
	if err := proxywasm.SetSharedData(key, []byte(value), cas); err != nil {
		t.Fatal(err)
	}
}
