package core

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestMemo: answers from the memo are the answers without it, a hit still gets a fresh per-request
// id, and any change to the input (a rotated secret) misses.
func TestMemo(t *testing.T) {
	const candescent = `{"provider":"candescent","client_id":"cid","client_secret":"s1","institution_id":"01234",` +
		`"token_url":"https://api.candescent.com/oauth/token"}`
	m := new(Memo)
	first, second := Encode(m, []byte(candescent), nil), Encode(m, []byte(candescent), nil)
	id := func(out []byte) string { return gjson.GetBytes(out, "request.headers.transactionId").String() }
	if id(first) == "" || id(first) == id(second) {
		t.Fatalf("two requests from the memo share the transactionId %q", id(first))
	}
	strip := func(out []byte) string { return strings.Replace(string(out), id(out), "", 1) }
	if strip(first) != strip(second) || strip(first) != strip(Encode(nil, []byte(candescent), nil)) {
		t.Fatalf("the memo changed the request:\n%s\n%s", first, second)
	}

	_, _, key1, err := m.Prepare([]byte(nikoReq))
	if err != nil {
		t.Fatal(err)
	}
	rotated := strings.Replace(nikoReq, "niko-secret-1", "niko-secret-2", 1)
	_, _, key2, _ := m.Prepare([]byte(rotated))
	_, _, again, _ := m.Prepare([]byte(nikoReq))
	if key1 == key2 || again != key1 {
		t.Fatalf("cache keys: %s, rotated %s, again %s", key1, key2, again)
	}

	dec := `{"request":` + nikoReq + `,"response":{"status":200,"headers":{"Content-Type":"application/json"},` +
		`"body":"{\"access_token\":\"abc\",\"expires_in\":1200}"},"now_ms":1767225600000}`
	want := string(Decode(nil, []byte(dec), nil))
	if m.request(nikoReq) == nil {
		t.Fatal("decode's request is not the one remembered: the test would not reach the memo")
	}
	if got := string(Decode(m, []byte(dec), nil)); got != want || !strings.Contains(got, `"expires_at_ms":1767226800000`) {
		t.Fatalf("decode from the memo: %s, want %s", got, want)
	}
}

// TestMemoKeyIsAlwaysTheRequestsOwn: whatever the memo held before, the cache key Prepare names is
// the one of the request it was given, at every size up to and around the request limit and with
// credential sets alternating on one memo, one that reuses its storage and one that does not (a
// request too large to remember once got the previous request's key).
func TestMemoKeyIsAlwaysTheRequestsOwn(t *testing.T) {
	padded := func(secret string, size int) []byte {
		base := strings.Replace(nikoReq, "niko-secret-1", secret, 1)
		if size < len(base) {
			t.Fatalf("size %d is below the request's own %d bytes", size, len(base))
		}
		// JSON whitespace before the closing brace: the request's meaning does not change.
		return []byte(base[:len(base)-1] + strings.Repeat(" ", size-len(base)) + "}")
	}
	sizes := []int{len(nikoReq) + 10, 64<<10 - 1, 64 << 10, 64<<10 + 1, MaxRequestBytes - 1, MaxRequestBytes, len(nikoReq) + 20}
	for _, m := range []*Memo{new(Memo), {Reuse: true}} {
		for _, size := range sizes {
			for i, secret := range []string{"tenant-a", "tenant-b", "tenant-a", "tenant-c", "tenant-c"} {
				in := padded(secret, size)
				_, _, want, err := Prepare(in)
				if err != nil {
					t.Fatalf("size %d: %v", size, err)
				}
				_, _, got, err := m.Prepare(in)
				if err != nil {
					t.Fatalf("size %d: %v", size, err)
				}
				if got != want {
					t.Fatalf("reuse %v, size %d, call %d (%s): memo named key %s, the request's own is %s", m.Reuse, size, i, secret, got, want)
				}
			}
		}
		// Over the limit: refused, and the memo's next answer is still the request's own.
		if _, _, _, err := m.Prepare(padded("tenant-a", MaxRequestBytes+1)); err == nil || err.Message != "request exceeds 256 KiB" {
			t.Fatalf("a request of MaxRequestBytes + 1: %v", err)
		}
		_, _, want, _ := Prepare(padded("tenant-b", MaxRequestBytes))
		if _, _, got, _ := m.Prepare(padded("tenant-b", MaxRequestBytes)); got != want {
			t.Fatalf("after a refused request: key %s, want %s", got, want)
		}
	}
	// Keys of different secrets differ, whatever the padding.
	_, _, a, _ := Prepare(padded("tenant-a", MaxRequestBytes))
	_, _, b, _ := Prepare(padded("tenant-b", MaxRequestBytes))
	if a == b {
		t.Fatal("two secrets share a cache key")
	}
}
