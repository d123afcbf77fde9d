package core

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/internal/conformance"
)

// fakeHost implements Imports with the same JSON a real host speaks, a cache with TTLs on a fake
// clock, and a scripted provider.
type fakeHost struct {
	t       *testing.T
	nowMS   int64
	cache   map[string]abi.CacheSetInput
	respond func(req abi.HTTPRequest) abi.HTTPResponse
	sends   int
	calls   []string
	memo    Memo     // one per host, as the plugin keeps one per instance
	steps   bool     // drive the flow through token_step
	log     []string // every import called, with its input
	// sign answers token_step's sign action (nil: the host cannot sign, and answers nothing).
	sign func(in []byte) []byte
	// failSet makes cache_set of the keys it names fail, as a shared cache that cannot be reached.
	failSet func(key string) bool
}

func newFakeHost(t *testing.T, respond func(abi.HTTPRequest) abi.HTTPResponse) *fakeHost {
	return &fakeHost{t: t, nowMS: 1767225600000, cache: map[string]abi.CacheSetInput{}, respond: respond, steps: stepDriver}
}

// stepDriver makes every fakeHost run the flow through the token_step export instead of the token
// and invalidate exports (TestFlowThroughSteps): the flow tests hold for both drivers.
var stepDriver bool

// run runs the token flow (op "") or the invalidate flow (op "invalidate") for req with the driver
// the host was made with, and returns the export's answer.
func (h *fakeHost) run(req []byte, op string) []byte {
	h.t.Helper()
	if h.steps {
		call := func(_ string, in []byte) ([]byte, error) { return TokenStep(&h.memo, in, h.clock), nil }
		do := func(a conformance.Action) []byte {
			if a.Import == ImportSign {
				h.calls = append(h.calls, ImportSign)
				h.log = append(h.log, "sign "+string(a.Input))
				if h.sign == nil {
					return nil
				}
				return h.sign(a.Input)
			}
			return perform(h, Action{Import: a.Import, Input: a.Input})
		}
		out, err := conformance.Drive(call, do, req, op)
		if err != nil {
			h.t.Fatalf("token_step: %v", err)
		}
		return out
	}
	if op == "invalidate" {
		return Invalidate(&h.memo, req, h)
	}
	return Token(&h.memo, req, h, h.clock)
}

func (h *fakeHost) clock() int64 { return h.nowMS }

func (h *fakeHost) decode(b []byte, v any) {
	h.t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		h.t.Fatalf("plugin sent invalid JSON %q: %v", b, err)
	}
}

func (h *fakeHost) encode(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func (h *fakeHost) HTTPSend(in []byte) []byte {
	h.calls = append(h.calls, "http_send")
	h.log = append(h.log, "http_send "+string(in))
	h.sends++
	var req abi.HTTPRequest
	h.decode(in, &req)
	return h.encode(h.respond(req))
}

func (h *fakeHost) CacheGet(in []byte) []byte {
	h.calls = append(h.calls, "cache_get")
	h.log = append(h.log, "cache_get "+string(in))
	var k abi.CacheGetInput
	h.decode(in, &k)
	e, ok := h.cache[k.Key]
	if !ok || e.TTLMS <= 0 {
		return []byte(`{"hit":false}`)
	}
	return h.encode(abi.CacheGetOutput{Hit: true, Value: e.Value})
}

func (h *fakeHost) CacheSet(in []byte) []byte {
	h.calls = append(h.calls, "cache_set")
	h.log = append(h.log, "cache_set "+string(in))
	var e abi.CacheSetInput
	h.decode(in, &e)
	if h.failSet != nil && h.failSet(e.Key) {
		return []byte(`{"error":"cache unreachable"}`)
	}
	if old, ok := h.cache[e.Key]; ok && e.NX && old.TTLMS > h.nowMS {
		return []byte(`{"stored":false}`)
	}
	e.TTLMS += h.nowMS // stored as an absolute deadline
	h.cache[e.Key] = e
	return []byte(`{"stored":true}`)
}

func (h *fakeHost) CacheDelete(in []byte) []byte {
	h.calls = append(h.calls, "cache_delete")
	h.log = append(h.log, "cache_delete "+string(in))
	var k abi.CacheDeleteInput
	h.decode(in, &k)
	if e, ok := h.cache[k.Key]; ok && (k.IfValue == "" || e.Value == k.IfValue) {
		delete(h.cache, k.Key)
	}
	return []byte("{}")
}

// advance moves the clock and expires cache entries.
func (h *fakeHost) advance(ms int64) {
	h.nowMS += ms
	for k, e := range h.cache {
		if e.TTLMS <= h.nowMS {
			delete(h.cache, k)
		}
	}
}

func (h *fakeHost) token(t *testing.T, req string) abi.Result {
	t.Helper()
	h.calls = nil
	var res abi.Result
	out := h.run([]byte(req), "")
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("token answered invalid JSON %q", out)
	}
	return res
}

const nikoReq = `{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"}`

func okToken(expiresIn int) func(abi.HTTPRequest) abi.HTTPResponse {
	n := 0
	return func(abi.HTTPRequest) abi.HTTPResponse {
		n++
		return abi.HTTPResponse{Status: 200, Body: `{"access_token":"tok-` + string(rune('0'+n)) + `","expires_in":` + itoa(expiresIn) + `,"refresh_token":"rt-secret"}`}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestTokenCachesUntilSkew(t *testing.T) {
	h := newFakeHost(t, okToken(1200))
	first := h.token(t, nikoReq)
	if first.Error != nil || first.Cached || first.Token.AccessToken != "tok-1" || first.Token.RefreshToken != "rt-secret" {
		t.Fatalf("first = %+v %+v", first, first.Error)
	}
	second := h.token(t, nikoReq)
	if !second.Cached || second.Token.AccessToken != "tok-1" || h.sends != 1 {
		t.Fatalf("second = %+v, sends %d", second, h.sends)
	}
	if second.Token.RefreshToken != "" {
		t.Fatal("a cached token must not carry the refresh token")
	}
	for k, e := range h.cache {
		if strings.Contains(k, "niko-secret-1") || strings.Contains(e.Value, "rt-secret") || strings.Contains(e.Value, "niko-secret-1") {
			t.Fatalf("cache holds a secret: %s = %s", k, e.Value)
		}
	}
	h.advance((1200 - 59) * 1000) // inside the 60 s skew: the cache entry has expired
	third := h.token(t, nikoReq)
	if third.Cached || third.Token.AccessToken != "tok-2" || h.sends != 2 {
		t.Fatalf("third = %+v, sends %d", third, h.sends)
	}
}

func TestTokenForceAndInvalidate(t *testing.T) {
	h := newFakeHost(t, okToken(1200))
	h.token(t, nikoReq)
	forced := h.token(t, strings.Replace(nikoReq, `{`, `{"force":true,`, 1))
	if forced.Cached || h.sends != 2 {
		t.Fatalf("force did not fetch: %+v sends %d", forced, h.sends)
	}
	if out := string(h.run([]byte(nikoReq), "invalidate")); out != "{}" {
		t.Fatalf("invalidate = %s", out)
	}
	if again := h.token(t, nikoReq); again.Cached || h.sends != 3 {
		t.Fatalf("after invalidate: %+v sends %d", again, h.sends)
	}
}

func TestTokenKeySeparatesIdentities(t *testing.T) {
	h := newFakeHost(t, okToken(1200))
	h.token(t, nikoReq)
	rotated := strings.Replace(nikoReq, "niko-secret-1", "niko-secret-2", 1)
	if r := h.token(t, rotated); r.Cached {
		t.Fatal("a rotated secret must not reuse the old token")
	}
	scoped := strings.Replace(nikoReq, `{`, `{"scope":"external",`, 1)
	if r := h.token(t, scoped); r.Cached {
		t.Fatal("a different scope must not reuse the token")
	}
	if h.sends != 3 {
		t.Fatalf("sends = %d, want 3", h.sends)
	}
}

func TestCandescentRequestIDIsNotIdentity(t *testing.T) {
	var ids []string
	h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
		ids = append(ids, r.Headers["transactionId"])
		return abi.HTTPResponse{Status: 200, Body: `{"access_token":"a","expires_in":"900"}`}
	})
	req := `{"provider":"candescent","client_id":"c","client_secret":"candescent-secret","institution_id":"1"}`
	h.token(t, req)
	h.token(t, strings.Replace(req, `{`, `{"force":true,`, 1))
	if len(ids) != 2 || ids[0] == ids[1] || ids[0] == "" {
		t.Fatalf("transactionIds %q: want two fresh ids", ids)
	}
	if r := h.token(t, req); !r.Cached {
		t.Fatal("the transactionId must not split the cache")
	}
}

func TestTokenGate(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter string
		wantMS     int64
	}{
		{"seconds", "7", 7000},
		{"http date", "Thu, 01 Jan 2026 00:00:20 GMT", 20000},
		{"absent", "", DefaultRetryAfterMS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t, func(abi.HTTPRequest) abi.HTTPResponse {
				r := abi.HTTPResponse{Status: 429, Body: "slow down"}
				if tt.retryAfter != "" {
					r.Headers = map[string]string{"Retry-After": tt.retryAfter}
				}
				return r
			})
			first := h.token(t, nikoReq)
			if first.Error == nil || first.Error.Kind != abi.KindRateLimited || first.Error.RetryAfterMS != tt.wantMS {
				t.Fatalf("first = %+v", first.Error)
			}
			h.advance(500)
			for _, req := range []string{nikoReq, strings.Replace(nikoReq, `{`, `{"force":true,`, 1)} {
				gated := h.token(t, req)
				if gated.Error == nil || gated.Error.Kind != abi.KindRateLimited || gated.Error.RetryAfterMS != tt.wantMS-500 {
					t.Fatalf("gated = %+v", gated.Error)
				}
				for _, c := range h.calls {
					if c != "cache_get" {
						t.Fatalf("a closed gate called %v", h.calls)
					}
				}
			}
			if h.sends != 1 {
				t.Fatalf("sends = %d during the gate", h.sends)
			}
			h.advance(tt.wantMS)
			h.token(t, nikoReq)
			if h.sends != 2 {
				t.Fatalf("gate did not reopen: sends %d", h.sends)
			}
		})
	}
}

// TestTransientFailuresAreRemembered: a transient failure is not cached as a token, but remembered
// in the identity's gate for a backoff that doubles with each failure in a row (50 ms, 100 ms, ...): until
// it ends every caller sharing the cache gets that failure without a request; the first success
// clears the count.
func TestTransientFailuresAreRemembered(t *testing.T) {
	failing := true
	h := newFakeHost(t, func(abi.HTTPRequest) abi.HTTPResponse {
		if failing {
			return abi.HTTPResponse{Error: "connection reset by peer"}
		}
		return okToken(3600)(abi.HTTPRequest{})
	})
	for i, wantMS := range []int64{50, 100, 200} {
		r := h.token(t, nikoReq)
		if r.Error == nil || r.Error.Kind != abi.KindTransport || !r.Error.Retryable || r.Error.RetryAfterMS != wantMS || h.sends != i+1 {
			t.Fatalf("failure %d: %+v sends %d, want retry_after_ms %d", i+1, r.Error, h.sends, wantMS)
		}
		again := h.token(t, nikoReq)
		if again.Error == nil || again.Error.Kind != abi.KindTransport || again.Error.RetryAfterMS != wantMS || h.sends != i+1 {
			t.Fatalf("within the backoff: %+v sends %d, want the remembered failure and no request", again.Error, h.sends)
		}
		h.advance(wantMS)
	}
	for k := range h.cache {
		if !strings.HasSuffix(k, "/gate") {
			t.Fatalf("a failure cached %s", k)
		}
	}
	failing = false
	if r := h.token(t, nikoReq); r.Token == nil || h.sends != 4 {
		t.Fatalf("after the backoff: %+v sends %d", r.Error, h.sends)
	}
	if _, ok := h.cache[GateKey(mustKey(t, nikoReq))]; ok {
		t.Fatal("a success left the failures' count")
	}
}

func mustKey(t *testing.T, req string) string {
	t.Helper()
	_, _, key, err := Prepare([]byte(req))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestTokenHostGarbage(t *testing.T) {
	h := newFakeHost(t, nil)
	for _, out := range []string{"", "not json", `{"status":"x"}`, `[1]`, strings.Repeat("[", 100000)} {
		raw := &rawHost{fakeHost: h, out: out}
		var res abi.Result
		if err := json.Unmarshal(Token(nil, []byte(nikoReq), raw, h.clock), &res); err != nil || res.Error == nil || res.Error.Kind != abi.KindTransport {
			t.Fatalf("http_send %q: %+v %v", out, res.Error, err)
		}
	}
}

type rawHost struct {
	*fakeHost
	out string
}

func (r *rawHost) HTTPSend([]byte) []byte    { return []byte(r.out) }
func (r *rawHost) CacheGet(in []byte) []byte { return []byte(r.out) }

func TestTokenMinTTL(t *testing.T) {
	h := newFakeHost(t, okToken(1200))
	h.token(t, nikoReq)
	h.advance(1000 * 1000) // 200 s left: outside the 60 s skew
	if r := h.token(t, nikoReq); !r.Cached {
		t.Fatal("a token with 200 s left must be served")
	}
	ahead := strings.Replace(nikoReq, `{`, `{"min_ttl_ms":300000,`, 1)
	if r := h.token(t, ahead); r.Cached || h.sends != 2 {
		t.Fatalf("min_ttl_ms 300 s must fetch: %+v sends %d", r, h.sends)
	}
	if r := h.token(t, ahead); !r.Cached || r.Token.AccessToken != "tok-2" {
		t.Fatalf("the fresh token must now be served: %+v", r)
	}
}

func TestInvalidateOnlyTheBadToken(t *testing.T) {
	h := newFakeHost(t, okToken(1200))
	h.token(t, nikoReq) // tok-1 cached
	stale := strings.Replace(nikoReq, `{`, `{"access_token":"tok-0",`, 1)
	h.run([]byte(stale), "invalidate")
	if r := h.token(t, nikoReq); !r.Cached {
		t.Fatal("invalidate with another access_token must keep the cached token")
	}
	bad := strings.Replace(nikoReq, `{`, `{"access_token":"tok-1",`, 1)
	h.run([]byte(bad), "invalidate")
	if r := h.token(t, nikoReq); r.Cached || r.Token.AccessToken != "tok-2" {
		t.Fatalf("invalidate of the cached token must drop it: %+v", r)
	}
}

// TestFleetSingleFlight: while another host holds the identity's fetch lock, token answers pending
// and sends nothing; once the lock is released (or expires) the next call fetches. The owner
// releases only its own lock.
func TestFleetSingleFlight(t *testing.T) {
	h := newFakeHost(t, okToken(1200))
	nikoReq := strings.Replace(nikoReq, `{`, `{"fleet_lock":true,`, 1)
	_, _, key, err := Prepare([]byte(nikoReq))
	if err != nil {
		t.Fatal(err)
	}
	lock := LockKey(key)
	h.cache[lock] = abi.CacheSetInput{Key: lock, Value: "other-host", TTLMS: h.nowMS + 12000}
	out := h.run([]byte(nikoReq), "")
	if string(out) != `{"pending":{"retry_after_ms":50}}` || h.sends != 0 {
		t.Fatalf("while locked: %s, sends %d", out, h.sends)
	}
	h.advance(12000) // the other host crashed: its lock expires
	if r := h.token(t, nikoReq); r.Token == nil || h.sends != 1 {
		t.Fatalf("after the lock expired: %+v", r)
	}
	if _, held := h.cache[lock]; held {
		t.Fatal("the owner did not release its lock")
	}
	// Without fleet_lock, no lock is taken at all.
	h.calls = nil
	h.run([]byte(strings.Replace(nikoReq, `"fleet_lock":true,`, `"force":true,`, 1)), "")
	for _, c := range h.calls {
		if c == "cache_delete" {
			t.Fatalf("a lock was taken without fleet_lock: %v", h.calls)
		}
	}
	// A lock taken over by another host is not released by the old owner.
	h.cache[lock] = abi.CacheSetInput{Key: lock, Value: "new-owner", TTLMS: h.nowMS + 12000}
	perform(h, new(Flow).deleteAction(lock, "", "old-owner"))
	if _, held := h.cache[lock]; !held {
		t.Fatal("a non-owner released the lock")
	}
}

// TestTokenCharactersRefused: a token endpoint answering a token with CR/LF (header injection), other
// characters outside visible ASCII, or over MaxTokenBytes gets malformed_response and nothing is
// cached; a poisoned cache entry with such a token is a miss, never served.
func TestTokenCharactersRefused(t *testing.T) {
	long := strings.Repeat("a", MaxTokenBytes+1)
	for _, tt := range []struct {
		name, field, value string
		ok                 bool
	}{
		{"CRLF header injection", "access_token", "abc\r\nX-Injected: yes\r\n\r\nGET /admin HTTP/1.1", false},
		{"LF", "access_token", "abc\ndef", false},
		{"space", "access_token", "abc def", false},
		{"NUL", "access_token", "abc\u0000", false},
		{"DEL", "access_token", "abc\u007f", false},
		{"non-ASCII", "access_token", "abc\u00e9", false},
		{"over 32 KiB", "access_token", long, false},
		{"at 32 KiB", "access_token", long[1:], true},
		{"visible ASCII", "access_token", "a-Z_0.9~+/=!#$%&'*", true},
		{"token_type CRLF", "token_type", "Bearer\r\nX: y", false},
		{"refresh_token CRLF", "refresh_token", "r\r\nX: y", false},
		{"refresh_token visible", "refresh_token", "r.1", true},
		{"refresh_token with a space (RFC 6749 VSCHAR)", "refresh_token", "r 1", true},
		{"refresh_token TAB", "refresh_token", "r\t1", false},
		{"scope over 32 KiB", "scope", long, false},
		{"scope at 32 KiB", "scope", long[1:], true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{"access_token": "good", "expires_in": 600}
			body[tt.field] = tt.value
			b, _ := json.Marshal(body)
			h := newFakeHost(t, func(abi.HTTPRequest) abi.HTTPResponse {
				return abi.HTTPResponse{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: string(b)}
			})
			r := h.token(t, nikoReq)
			if tt.ok {
				if r.Token == nil {
					t.Fatalf("a legal %s was refused: %+v", tt.field, r.Error)
				}
				return
			}
			if r.Error == nil || r.Error.Kind != abi.KindMalformedResponse || strings.Contains(r.Error.Message, tt.value) {
				t.Fatalf("got %+v, want malformed_response without the value", r)
			}
			if len(h.cache) != 0 {
				t.Fatalf("cached %v", h.cache)
			}
		})
	}
	t.Run("poisoned cache", func(t *testing.T) {
		h := newFakeHost(t, okToken(600))
		_, _, key, _ := Prepare([]byte(nikoReq))
		h.cache[key] = abi.CacheSetInput{Key: key, TTLMS: 600000,
			Value: `{"access_token":"x\r\nX-Injected: yes","token_type":"Bearer","expires_in":600,"expires_at_ms":1767226200000,"issued_at_ms":1767225600000,"id":"` + key[len(key)-32:] + `"}`}
		r := h.token(t, nikoReq)
		if r.Token == nil || r.Cached || strings.ContainsAny(r.Token.AccessToken, "\r\n") || h.sends != 1 {
			t.Fatalf("poisoned cache entry served: %+v, sends %d", r, h.sends)
		}
	})
}

// TestLineageWriteLostFailsClosed: when the cache cannot store an exchange's new refresh token (a
// shared cache down at that moment), the exchange's mark stays (its delete waits for the store:
// after_ok), and the next flow sends nothing: never the used refresh token again, which the
// provider would take for a replay and answer by revoking the grant.
func TestLineageWriteLostFailsClosed(t *testing.T) {
	const req = `{"provider":"candescent","grant_type":"refresh_token","client_id":"cd","client_secret":"cd-secret-1","refresh_token":"rt-0","token_url":"https://api.candescent.com/digitalbanking/oauth2/v1/token"}`
	rotated := 0
	h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
		rotated++
		return abi.HTTPResponse{Status: 200, Body: `{"access_token":"tok-` + strconv.Itoa(rotated) + `","expires_in":1,"refresh_token":"rt-` + strconv.Itoa(rotated) + `"}`}
	})
	h.failSet = func(key string) bool { return strings.HasSuffix(key, "/grant") }
	first := h.token(t, req)
	if first.Token == nil || first.Token.RefreshToken != "rt-1" {
		t.Fatalf("first exchange: %+v", first.Error)
	}
	h.advance(2000) // the access token has expired
	second := h.token(t, req)
	if second.Error == nil || second.Error.Kind != abi.KindInvalidGrant || h.sends != 1 {
		t.Fatalf("after a lost lineage write: %+v, %d sends; want invalid_grant and nothing sent", second.Error, h.sends)
	}
	// With the cache back, the operator restarts from the hooked refresh token: another lineage.
	h.failSet = nil
	next := strings.Replace(req, `"rt-0"`, `"rt-1"`, 1)
	if third := h.token(t, next); third.Token == nil || h.sends != 2 {
		t.Fatalf("from the hooked refresh token: %+v, %d sends", third.Error, h.sends)
	}
}
