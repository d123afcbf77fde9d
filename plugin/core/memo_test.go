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
		`"token_url":"https://api.example.com/oauth/token"}`
	m := new(Memo)
	first, second := Encode(m, []byte(candescent)), Encode(m, []byte(candescent))
	id := func(out []byte) string { return gjson.GetBytes(out, "request.headers.transactionId").String() }
	if id(first) == "" || id(first) == id(second) {
		t.Fatalf("two requests from the memo share the transactionId %q", id(first))
	}
	strip := func(out []byte) string { return strings.Replace(string(out), id(out), "", 1) }
	if strip(first) != strip(second) || strip(first) != strip(Encode(nil, []byte(candescent))) {
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
