package core

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

type collect struct{ keys, raws []string }

func (c *collect) member(k, raw string) bool {
	c.keys, c.raws = append(c.keys, k), append(c.raws, raw)
	return true
}

// TestRawJSONMatchesGJSON: the allocation-free readers give what gjson gives: the same members in
// the same order, and the same unescaped strings (surrogate pairs, lone surrogates, bad escapes).
func TestRawJSONMatchesGJSON(t *testing.T) {
	for _, in := range []string{
		`{}`, ` { "a" : 1 , "b":[1,{"c":"]}"}], "\u0061k":"v", "a":null, "s":"x\"y\\", "t":true }`,
		`{"u":"\u00e9\ud83d\ude00\ud83d x\u12G4 \/\b\f\n\r\t","o":{"x":"}"},"n":-1.5e3}`,
	} {
		var c collect
		eachMember(in, &c)
		var keys, raws []string
		gjson.Parse(in).ForEach(func(k, v gjson.Result) bool {
			keys, raws = append(keys, k.Str), append(raws, v.Raw)
			return true
		})
		if strings.Join(c.keys, "|") != strings.Join(keys, "|") || strings.Join(c.raws, "|") != strings.Join(raws, "|") {
			t.Fatalf("%s: members %q %q, gjson %q %q", in, c.keys, c.raws, keys, raws)
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
