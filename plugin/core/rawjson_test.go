package core

import (
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestRawJSONMatchesGJSON: the allocation-free readers give what gjson gives: the same member values
// (of a repeated key the first, as Get reads it), and the same unescaped strings (surrogate pairs,
// lone surrogates, bad escapes).
func TestRawJSONMatchesGJSON(t *testing.T) {
	for _, in := range []string{
		`{}`, ` { "a" : 1 , "b":[1,{"c":"]}"}], "\u0061k":"v", "a":null, "s":"x\"y\\", "t":true }`,
		`{"u":"\u00e9\ud83d\ude00\ud83d x\u12G4 \/\b\f\n\r\t","o":{"x":"}"},"n":-1.5e3,"o":1}`,
	} {
		var keys, raws []string
		gjson.Parse(in).ForEach(func(k, v gjson.Result) bool {
			if !slices.Contains(keys, k.Str) {
				keys, raws = append(keys, k.Str), append(raws, v.Raw)
			}
			return true
		})
		got := make([]string, len(keys)+1)
		Members(in, append(keys, "absent"), got)
		if strings.Join(got, "|") != strings.Join(append(raws, ""), "|") {
			t.Fatalf("%s: members %q, gjson %q", in, got, raws)
		}
		for i, k := range keys {
			if !strings.ContainsAny(k, `\"`) && gjson.Get(in, k).Raw != got[i] {
				t.Fatalf("%s: members[%q] = %s, Get %s", in, k, got[i], gjson.Get(in, k).Raw)
			}
		}
		for _, raw := range raws {
			if raw[0] != '"' {
				continue
			}
			var scratch []byte
			if got, want := unescapeString(raw, &scratch, 1<<20), gjson.Parse(raw).Str; got != want {
				t.Fatalf("unescape %s = %q, gjson %q", raw, got, want)
			}
		}
	}
	long := `"` + strings.Repeat(`\u003c`, 100) + `"`
	if got := unescapeString(long, nil, 10); got != strings.Repeat("<", 11) {
		t.Fatalf("limit: %q", got)
	}
}

// TestMembersEscapedKeyAllocatesLittle: a key spelled with an escape is compared unescaped, and
// without allocating in proportion to it: one buffer of a name's size at most, however long the key,
// and nothing for an object without such keys. A provider's key of a megabyte with one escape in it
// cost a megabyte per call (gjson unescaped the whole key), which grew a long-lived instance from 48
// to 384 pages (host TestResponseLimits, "escaped key 1000 KiB").
func TestMembersEscapedKeyAllocatesLittle(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"huge escaped key first", `{"\u0070` + strings.Repeat("k", 100<<10) + `":1,"access_token":"t"}`, `"t"`},
		{"escaped name", `{"acc\u0065ss_token":"t","access_token":"u"}`, `"t"`},
		{"escaped name, surrogate pair elsewhere", `{"\ud83d\ude00":1,"\u0061ccess_token":"t"}`, `"t"`},
		{"escaped name longer by one", `{"acc\u0065ss_tokenx":"t","access_token":"u"}`, `"u"`},
		{"escaped name cut short", `{"acc\u0065ss_toke":"t","access_token":"u"}`, `"u"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names, out := []string{"access_token"}, make([]string, 1)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			allocs := testing.AllocsPerRun(10, func() {
				out[0] = ""
				Members(tc.doc, names, out)
			})
			runtime.ReadMemStats(&after)
			if out[0] != tc.want || out[0] != gjson.Get(tc.doc, "access_token").Raw {
				t.Fatalf("access_token = %s, want %s (gjson %s)", out[0], tc.want, gjson.Get(tc.doc, "access_token").Raw)
			}
			if perRun := (after.TotalAlloc - before.TotalAlloc) / 11; allocs > 1 || perRun > 2*maxNameBytes {
				t.Fatalf("%v allocations, %d bytes per call", allocs, perRun)
			}
		})
	}
	doc, names, out := `{"token_type":"Bearer","access_token":"t","expires_in":1}`, []string{"access_token", "expires_in"}, make([]string, 2)
	if allocs := testing.AllocsPerRun(10, func() { Members(doc, names, out) }); allocs != 0 {
		t.Fatalf("an object without escaped keys: %v allocations", allocs)
	}
}

// TestMembersInvalidNeverPanics: Members is given valid JSON, but an object cut anywhere (a prefix
// of one) must not make it read out of range: a panic is a trap in the plugin and in the Envoy filter.
func TestMembersInvalidNeverPanics(t *testing.T) {
	doc := `{"a\u0062":"x\"y","access_token":{"n":[1,"]"]},"e":-1.5e3 , "s":"\\"}`
	for i := range len(doc) + 1 {
		out := make([]string, 3)
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Members(%q) panicked: %v", doc[:i], r)
				}
			}()
			Members(doc[:i], []string{"ab", "access_token", "s"}, out)
		}()
	}
}

// TestParseValueIsGjsonParse: parseValue answers as gjson.Parse does, for the integers it reads itself
// and everything it leaves to gjson.
func TestParseValueIsGjsonParse(t *testing.T) {
	for _, raw := range []string{"0", "7", "200", "1200", "1767225600000", "999999999999999", "1000000000000000",
		"9007199254740993", "-1", "1.5", "1e3", "12a", "", `"200"`, "true", "null", "{}", "[1]", " 5", "5 ", "0123"} {
		got, want := parseValue(raw), gjson.Parse(raw)
		if got.Type != want.Type || got.Num != want.Num || got.Raw != want.Raw || got.Str != want.Str {
			t.Errorf("parseValue(%q) = %+v, gjson.Parse %+v", raw, got, want)
		}
	}
}
