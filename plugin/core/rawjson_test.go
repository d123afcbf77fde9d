package core

import (
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
