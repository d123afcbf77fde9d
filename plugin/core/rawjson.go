package core

import (
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// Reading large JSON without large allocations.
//
// TinyGo's collector scans the plugin's globals conservatively, read-only data included: every
// constant word whose value falls inside the heap's address range (Unicode tables, strconv's
// powers of ten, ...) marks whatever object covers that address. A small object is rarely hit; an
// object of a megabyte almost always is, and then it is never freed. A call that allocates a few
// megabytes for a large token response therefore leaks most of them, and after a few such calls the
// heap wants to double past the instance's memory cap: "out of memory", a trap. Measured before this
// code: 4 MiB kept per call of a 1,000 KiB response, a trap on the 7th call under 32 MiB.
//
// So the paths that read a response (the http_send answer, the decode input) allocate nothing in
// proportion to it: they view the bytes they were given as a string instead of copying them
// (gjson.ParseBytes copies), walk objects member by member instead of with gjson's ForEach (which
// unescapes every string value, wanted or not), and unescape the body into a buffer the instance
// reuses (Memo.scratch). The buffers that remain large are few and reused, so the conservative scan
// can pin them without cost.

// view returns b as a string without copying. The string is valid while b is unchanged: only for
// values that do not outlive the call that owns b.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// parseValue is gjson.Parse for raw, one JSON value, but a small non-negative integer (at most 15
// digits: exact as a float64) is read without strconv.ParseFloat, which costs about a microsecond under
// TinyGo; a token response and a step's answer hold a few such numbers.
func parseValue(raw string) gjson.Result {
	if n := len(raw); n == 0 || n > 15 || raw[0] < '0' || raw[0] > '9' {
		return gjson.Parse(raw)
	}
	var v uint64 // not int: 32 bits in wasm
	for i := range len(raw) {
		c := raw[i]
		if c < '0' || c > '9' {
			return gjson.Parse(raw)
		}
		v = v*10 + uint64(c-'0')
	}
	return gjson.Result{Type: gjson.Number, Raw: raw, Num: float64(v)}
}

// bytesOf returns s as bytes without copying, for reading only: the bytes must never be written.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// parseJSONView is parseJSON without the copy: the Result aliases b (see view).
func parseJSONView(b []byte, what string) (gjson.Result, *abi.Error) {
	if err := checkJSON(b, what); err != nil {
		return gjson.Result{}, err
	}
	return asObject(gjson.Parse(view(b)), what)
}

// Members reads the members of obj, a valid JSON object, that names lists: out[i] is the raw text of
// the value of names[i], "" when it is absent. It is the plugin's one member reader, and it has the
// one rule for a repeated member that every reader here and in the hosts has (abi/ABI.md, "Shapes"):
// the first is read and the later ones are skipped, unparsed and unchecked, as gjson's Get reads
// them. An attacker who repeats access_token in a token response gets the same token read by every
// path. One pass, in order, unescaping no value (a caller parses the values it wants with
// gjson.Parse), and it stops once every name is found: the members after cost nothing. A key spelled
// with escapes is compared unescaped, into one buffer of maxNameBytes (no name is longer), however
// long the key; an object without such keys allocates nothing.
func Members(obj string, names, out []string) {
	found := 0
	var buf *[maxNameBytes + utf8.UTFMax]byte // an escaped key, unescaped: no longer than a name can be
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	i++
	for found < len(names) {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return
		}
		end := stringEnd(obj, i)
		if end-1 <= i { // an unterminated key: not valid JSON
			return
		}
		key := obj[i+1 : end-1]
		if strings.IndexByte(key, '\\') >= 0 {
			if buf == nil { // only now: TinyGo would allocate it on every call (it escapes)
				buf = new([maxNameBytes + utf8.UTFMax]byte)
			}
			key = unescapeKey(key, buf)
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = skipSpace(obj, i+1)
		end = valueEnd(obj, i)
		for n, name := range names {
			if key == name {
				if out[n] == "" {
					out[n] = obj[i:end]
					found++
				}
				break
			}
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ',' {
			return
		}
		i++
	}
}

// maxNameBytes bounds the names Members looks for: an escaped key is unescaped only this far.
const maxNameBytes = 64

// unescapeKey unescapes key (as gjson does) into buf, allocating nothing: a key of a megabyte with an
// escape in it costs no megabyte. A key whose unescaped form is longer than maxNameBytes is cut at
// maxNameBytes + 1 bytes, which no name equals. The result aliases buf.
func unescapeKey(key string, buf *[maxNameBytes + utf8.UTFMax]byte) string {
	return view(appendUnescaped(buf[:0], key, maxNameBytes+1))
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at s[i] (a quote).
func stringEnd(s string, i int) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(s)
}

// valueEnd returns the index just past the JSON value starting at s[i].
func valueEnd(s string, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '"':
		return stringEnd(s, i)
	case '{', '[':
		d := 0
		for j := i; j < len(s); j++ {
			switch s[j] {
			case '"':
				j = stringEnd(s, j) - 1
			case '{', '[':
				d++
			case '}', ']':
				if d--; d == 0 {
					return j + 1
				}
			}
		}
		return len(s)
	}
	j := i
	for j < len(s) && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && s[j] != '\r' {
		j++
	}
	return j
}

// unescapeString returns the content of raw, a JSON string with its quotes. Without escapes it is a
// substring of raw; with escapes it is unescaped into *scratch (grown as needed, reused by the next
// caller: the result is valid until then) or into a new buffer when scratch is nil. At most limit
// bytes are produced: a longer string is cut at limit+1 bytes, enough for the caller to see that it
// is over. The unescaping is gjson's, so the result equals gjson's Str for strings within limit.
func unescapeString(raw string, scratch *[]byte, limit int) string {
	if len(raw) < 2 {
		return ""
	}
	s := raw[1 : len(raw)-1]
	if strings.IndexByte(s, '\\') < 0 {
		if len(s) > limit+1 {
			return s[:limit+1]
		}
		return s
	}
	var dst []byte
	if scratch != nil {
		dst = (*scratch)[:0]
	}
	if n := min(len(s), limit+1); cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	dst = appendUnescaped(dst, s, limit+1)
	if scratch != nil {
		*scratch = dst
		return view(dst)
	}
	return string(dst)
}

// appendUnescaped appends s unescaped (as gjson unescapes it) to dst, stopping after limit bytes.
func appendUnescaped(dst []byte, s string, limit int) []byte {
	start := len(dst)
	for i := 0; i < len(s) && len(dst)-start < limit; i++ {
		c := s[i]
		switch {
		default:
			dst = append(dst, c)
			continue
		case c < ' ':
			return dst
		case c == '\\':
		}
		i++
		if i >= len(s) {
			return dst
		}
		switch s[i] {
		default:
			return dst
		case '\\', '/', '"':
			dst = append(dst, s[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+5 > len(s) {
				return dst
			}
			r := hexRune(s[i+1:])
			i += 5
			if utf16.IsSurrogate(r) && len(s[i:]) >= 6 && s[i] == '\\' && s[i+1] == 'u' {
				r = utf16.DecodeRune(r, hexRune(s[i+2:]))
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			i--
		}
	}
	if len(dst)-start > limit {
		dst = dst[:start+limit]
	}
	return dst
}

// hexRune reads the 4 hex digits at the start of s as gjson does: an invalid one reads as 0.
func hexRune(s string) rune {
	var n rune
	for i := 0; i < 4; i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			n = n<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n<<4 | rune(c-'A'+10)
		default:
			return 0
		}
	}
	return n
}

// eachMember calls fn with the raw key (quotes included) and raw value of each member of obj, a
// valid JSON object, in order, until fn returns false. Nothing is unescaped or allocated: gjson's
// ForEach unescapes every key and string value.
func eachMember(obj string, fn func(key, value string) bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	for i++; ; i++ {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return
		}
		end := stringEnd(obj, i)
		key := obj[i:end]
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = skipSpace(obj, i+1)
		end = valueEnd(obj, i)
		if !fn(key, obj[i:end]) {
			return
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ',' {
			return
		}
	}
}

// eachElement calls fn with the raw text of each element of arr, a valid JSON array, in order,
// until fn returns false. Nothing is unescaped or allocated.
func eachElement(arr string, fn func(value string) bool) {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return
	}
	for i++; ; i++ {
		i = skipSpace(arr, i)
		if i >= len(arr) || arr[i] == ']' {
			return
		}
		end := valueEnd(arr, i)
		if end <= i || !fn(arr[i:end]) {
			return
		}
		i = skipSpace(arr, end)
		if i >= len(arr) || arr[i] != ',' {
			return
		}
	}
}
