package core

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// validJSON must answer exactly what the two passes it replaces answer.
func reference(b []byte, limit int) bool { return depth(b) <= limit && gjson.ValidBytes(b) }

var validJSONCases = []string{
	``, ` `, `{}`, `[]`, ` {} `, `{`, `}`, `[`, `]`, `{]`, `[}`, `{}}`, `[]]`, `{}{}`, `{} x`,
	`"a"`, `"\u00e9"`, `"\u00g9"`, `"\u00e"`, `"\x"`, `"\/\b\f\n\r\t\\\""`, "\"\x01\"", "\"\x7f\xff\"", `"abc`, `"\`,
	`0`, `-0`, `-`, `01`, `1.`, `1.5`, `.5`, `1e`, `1e+`, `1e+5`, `1E-5`, `-1.5e10`, `1.5.5`, `+1`, `--1`, `1e5.5`,
	`true`, `false`, `null`, `tru`, `nul`, `nulll`, `truex`, `[true,false,null]`, `[true false]`,
	`{"a":1}`, `{"a" : 1 , "b" : [1, 2, {"c": null}]}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,"a":1}`, `{"a"}`, `{"a":}`,
	`{1:2}`, `{"a":1 "b":2}`, `{"a":1}x`, "\t\n\r{\"a\"\t:\n1}\r\n", `[[[[[]]]]]`, `[{"a":[{"b":{}}]}]`,
	`{"a":"}"}`, `{"a":"\"}"}`, `[[[]]`, `[]]]`, `{"a":[}]`, `{"a":{]}`,
}

func TestValidJSON(t *testing.T) {
	cases := append([]string{}, validJSONCases...)
	for _, n := range []int{31, 32, 33, 34, 64, 65} {
		cases = append(cases, strings.Repeat("[", n)+strings.Repeat("]", n), strings.Repeat(`{"a":`, n)+"1"+strings.Repeat("}", n),
			strings.Repeat("[", n)+strings.Repeat("]", n-1)) // the last one invalid and deep
	}
	for _, c := range cases {
		for _, limit := range []int{0, 1, 2, 5, maxDepth, maxDepth + 1, 64} {
			if got, want := validJSON([]byte(c), limit), reference([]byte(c), limit); got != want {
				t.Errorf("validJSON(%q, %d) = %v, want %v", c, limit, got, want)
			}
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, c := range validJSONCases {
		f.Add([]byte(c), uint8(maxDepth))
	}
	f.Fuzz(func(t *testing.T, b []byte, limit uint8) {
		l := int(limit % 65)
		if got, want := validJSON(b, l), reference(b, l); got != want {
			t.Errorf("validJSON(%q, %d) = %v, want %v", b, l, got, want)
		}
	})
}
