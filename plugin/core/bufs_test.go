package core

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestQueryEscapeAsURL: the body's and the Basic value's form encoding is url.QueryEscape's, byte
// for byte (it used to be url.QueryEscape).
func TestQueryEscapeAsURL(t *testing.T) {
	var all strings.Builder
	for c := range 256 {
		all.WriteByte(byte(c))
	}
	for _, s := range []string{"", "a", " ", "a b+c&d=e", "~-_.", "é€😀", "\x00\x7f\xff", all.String(), strings.Repeat("<&", 1000)} {
		if got, want := string(appendQueryEscape([]byte("x"), s)), "x"+url.QueryEscape(s); got != want {
			t.Errorf("appendQueryEscape(%q) = %q, want %q", s, got, want)
		}
		if got, want := queryEscapedLen(s), len(url.QueryEscape(s)); got != want {
			t.Errorf("queryEscapedLen(%q) = %d, want %d", s, got, want)
		}
	}
}

// TestBasicIsBase64OfIDAndSecret: appendBasic writes what "Basic " + base64(id:secret) is, form-encoded first for
// basic_rfc6749, for every length modulo 3 and across its 48-byte groups.
func TestBasicIsBase64OfIDAndSecret(t *testing.T) {
	for n := range 120 {
		id, secret := strings.Repeat("i", n/3), strings.Repeat("s:é+", n)[:n]
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
		if got := string(appendBasic(nil, id, secret, false)); got != want {
			t.Fatalf("basic %d: %q, want %q", n, got, want)
		}
		want = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
		if got := string(appendBasic([]byte("junk")[:0], id, secret, true)); got != want {
			t.Fatalf("rfc6749 %d: %q, want %q", n, got, want)
		}
	}
}

// bigRequests returns requests of exactly size bytes whose large parts are of every kind the
// request has: params and headers (JSON and form bodies), escaped strings, a long scope, a Basic
// secret (both encodings), a custom profile with its own headers.
func bigRequests(t *testing.T, size int) [][]byte {
	t.Helper()
	// pad sets field to fill(n) for the largest n that keeps the request within size, then pads it
	// to size with JSON whitespace before its closing brace.
	pad := func(req map[string]any, field string, fill func(n int) any) []byte {
		req[field] = fill(0)
		b, _ := json.Marshal(req)
		base := len(b)
		for n, i := size-base, 0; n > 0 && i < 20; i++ {
			req[field] = fill(n)
			if b, _ = json.Marshal(req); len(b) <= size {
				return append(append(b[:len(b)-1], strings.Repeat(" ", size-len(b))...), '}')
			}
			n = n*(size-base)/(len(b)-base) - 8 // what fill(n) costs per n is its JSON's
		}
		t.Fatalf("%s: cannot fit in %d bytes", field, size)
		return nil
	}
	many := func(n int) any { // params of 100 bytes each, the rest in one
		m := map[string]string{}
		for i := 0; n > 200; i++ {
			k := "p" + strings.Repeat("0", 6-len(itoa(i))) + itoa(i)
			m[k] = strings.Repeat("v", 100-len(k)-6)
			n -= 100
		}
		m["zz"] = strings.Repeat("w", max(n-8, 0))
		return m
	}
	custom := func(auth, body string) map[string]any {
		return map[string]any{"provider": "custom", "client_id": "cid", "client_secret": "sec",
			"profile": map[string]any{"token_url": "https://auth.example.com/token", "client_auth": auth, "body": body}}
	}
	niko := func() map[string]any {
		return map[string]any{"provider": "nikohealth", "domain": "acme", "client_id": "niko-client", "client_secret": "niko-secret-1"}
	}
	return [][]byte{
		pad(niko(), "params", many),
		pad(niko(), "params", func(n int) any { return map[string]string{"pad": strings.Repeat("<", n)} }),
		pad(niko(), "params", func(n int) any { return map[string]string{"pad": strings.Repeat("\x01\"", n/8)} }),
		pad(custom("body", "json"), "params", func(n int) any { return map[string]string{"pad": strings.Repeat("é\n", n/3)} }),
		pad(niko(), "headers", many),
		pad(niko(), "scope", func(n int) any { return strings.Repeat("a ", n/2) }),
		pad(custom("basic", "form"), "client_secret", func(n int) any { return strings.Repeat("s", n) }),
		pad(custom("basic_rfc6749", "form"), "client_secret", func(n int) any { return strings.Repeat("s&", n/2) }),
		pad(custom("basic", "json"), "code", func(n int) any { return strings.Repeat("\\", n/2) }),
		pad(custom("client_secret_jwt", "form"), "client_id", func(n int) any { return strings.Repeat("c", n/2) }),
		pad(map[string]any{"provider": "candescent", "client_id": "cid", "client_secret": "s", "institution_id": "01234"}, "params", many),
	}
}

// TestReusedMemoAllocatesNothingInProportion: a memo that reuses its storage parses and encodes
// requests of MaxRequestBytes, each different from the last, and encodes each again (as the flow
// does to send a grant's newest refresh token), allocating a few KiB per request once its buffers
// have grown, and answers as a memo that does not. Natively, as a stand-in for TinyGo:
// the code allocates the same in both, and what it allocates per call is what TinyGo's collector
// may never give back (rawjson.go).
func TestReusedMemoAllocatesNothingInProportion(t *testing.T) {
	reqs := bigRequests(t, MaxRequestBytes)
	m := &Memo{Reuse: true}
	for _, in := range reqs { // grow the buffers
		if out := Encode(m, in, nil); strings.Contains(string(out), `"error"`) {
			t.Fatalf("%.80s...: %s", in, out[:min(len(out), 300)])
		}
		again, err := m.r.Encode() // as the flow encodes a grant's newest refresh token
		if err != nil {
			t.Fatal(err)
		}
		m.requestJSON(again)
	}
	// stable renders enc without what changes per request: the request id, the assertion.
	stable := func(enc *HTTPRequest) string {
		c := *enc
		c.Headers = slices.Clone(enc.Headers)
		if c.requestID >= 0 {
			c.Headers[c.requestID].value = ""
		}
		c.signed = ""
		return string(c.JSON(nil))
	}
	for i, in := range reqs {
		_, enc, key, err := (*Memo)(nil).Prepare(in)
		if err != nil {
			t.Fatal(err)
		}
		want := stable(enc)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r, enc, got, err := m.Prepare(in)
		if err == nil {
			var again *HTTPRequest
			if again, err = r.Encode(); err == nil {
				m.requestJSON(again)
			}
		}
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		n := after.TotalAlloc - before.TotalAlloc
		t.Logf("request %d: %d bytes allocated by a miss and an encoding again", i, n)
		if n > 16<<10 {
			t.Errorf("request %d: a miss allocated %d bytes, want a few KiB", i, n)
		}
		if got != key || stable(enc) != want {
			t.Errorf("request %d: the reused memo encoded it differently", i)
		}
		if n, size := len(enc.JSON(nil)), enc.jsonSize(); n > size || size > n+256 {
			t.Errorf("request %d: JSON of %d bytes, jsonSize %d", i, n, size)
		}
	}
}

// TestForcedFetchesAllocateNothingInProportion: token_step flows of forced fetches (cache_get of the
// gate, http_send, then the token), alternating requests of MaxRequestBytes on one memo that reuses
// its storage, allocate a few KiB per flow once the buffers have grown: what the plugin's instance
// runs for every forced fetch of a large request.
func TestForcedFetchesAllocateNothingInProportion(t *testing.T) {
	reqs := bigRequests(t, MaxRequestBytes-len(`,"force":true`))
	m := &Memo{Reuse: true}
	clock := func() int64 { return 1767225600000 }
	const resp = `{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"big-token\",\"token_type\":\"Bearer\",\"expires_in\":3600}"}`
	var in []byte
	// fetch runs one flow of req and returns the bytes allocated by its steps.
	fetch := func(req []byte) uint64 {
		var total uint64
		var state, answer string
		for range 8 {
			in = append(append(in[:0], `{"request":`...), req...)
			if state != "" {
				in = append(append(append(append(in, `,"state":`...), state...), `,"answer":`...), answer...)
			}
			in = append(in, '}')
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			out := TokenStep(m, in, clock)
			runtime.ReadMemStats(&after)
			total += after.TotalAlloc - before.TotalAlloc
			var step struct {
				Next *struct {
					Import string `json:"import"`
				} `json:"next"`
				State json.RawMessage `json:"state"`
				Token *struct {
					AccessToken string `json:"access_token"`
				} `json:"token"`
			}
			if err := json.Unmarshal(out, &step); err != nil {
				t.Fatal(err)
			}
			if step.Next == nil {
				if step.Token == nil || step.Token.AccessToken != "big-token" {
					t.Fatalf("%.80s...: %.300s", req, out)
				}
				return total
			}
			state, answer = string(step.State), `{"hit":false}`
			if step.Next.Import == "http_send" {
				answer = resp
			}
		}
		t.Fatal("the flow did not end")
		return 0
	}
	for _, req := range reqs { // grow the buffers
		req = append(append([]byte(nil), req[:len(req)-1]...), `,"force":true}`...)
		fetch(req)
	}
	for i, req := range reqs {
		req = append(append([]byte(nil), req[:len(req)-1]...), `,"force":true}`...)
		runtime.GC()
		n := fetch(req)
		t.Logf("request %d: %d bytes allocated by a forced fetch", i, n)
		if n > 32<<10 {
			t.Errorf("request %d: a forced fetch allocated %d bytes, want a few KiB", i, n)
		}
	}
}

// TestStringLen: stringLen is the length appendString writes, for every kind of character it
// escapes or not.
func TestStringLen(t *testing.T) {
	var all strings.Builder
	for c := range 256 {
		all.WriteByte(byte(c))
	}
	for _, s := range []string{"", "a", `"\`, "\n\r\t\x00\x1f\x7f", "é€😀", "\u2028\u2029", "\xff\xfe", all.String(), "a\xe2\x80"} {
		if got, want := stringLen(s), len(appendString(nil, s)); got != want {
			t.Errorf("stringLen(%q) = %d, want %d", s, got, want)
		}
	}
}
