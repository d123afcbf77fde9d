package core

import (
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Redaction of secrets from text taken from a response or from the host (error_description, the
// error code, transport messages).
//
// A provider that echoes what it was sent gives a secret back in whatever encoding it travelled in,
// or in its own: form-encoded (with "+" or "%20" for a space, with upper- or lower-case hex),
// JSON-escaped (by us, by a Go, JavaScript or .NET encoder: "\u003c", "\u002B", "\/"), HTML-escaped,
// or one of these inside another (a form body echoed in a JSON string). Listing every spelling of
// every secret would miss the next encoder, so the matcher reads the text as it goes: at each
// position it accepts, for the next character of a secret, that character or any escape that decodes
// to it, up to two layers deep. Base64 has no such per-character form, so the Basic credentials
// (id:secret as given and form-encoded first, standard and URL-safe alphabets; a padded form starts
// with the unpadded one), and the base64 and hex of each client secret are matched as secrets of
// their own.

const (
	redacted = "[redacted]"
	// encodingLayers is how many encodings deep a secret is recognized (form inside JSON, or JSON
	// inside form).
	encodingLayers = 2
	// redactBudget bounds the matcher's work on one text; a text that exhausts it (a hostile echo
	// built to be slow) is withheld whole.
	redactBudget = 1 << 20
	// shortSecret: a secret shorter than this cannot be replaced without mangling ordinary text, so a
	// text holding one is withheld whole.
	shortSecret = 4
	// extraSecretMin: the shortest params or headers value treated as a secret.
	extraSecretMin = 8
)

// secretTexts lists the request's secrets and the base64 forms of its client credentials, computed
// once per request.
func (r *Request) secretTexts() []string {
	if r.secretsDone {
		return r.secretList
	}
	r.secretsDone = true
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		for _, have := range out {
			if have == s {
				return
			}
		}
		out = append(out, s)
	}
	for _, f := range requestFields {
		if f.Secret {
			add(r.field(f.Name))
		}
	}
	// A caller's extra params and headers may carry credentials (client_assertion, an API key). Their
	// values are secrets too, unless too short to be one: a short value would withhold whole texts.
	for _, hs := range [...][]header{r.Params, r.Headers} {
		for _, h := range hs {
			if len(h.value) >= extraSecretMin {
				add(h.value)
			}
		}
	}
	if r.ClientSecret != "" {
		creds := [...]string{r.ClientID + ":" + r.ClientSecret, url.QueryEscape(r.ClientID) + ":" + url.QueryEscape(r.ClientSecret), r.ClientSecret}
		for _, c := range creds {
			add(base64.RawStdEncoding.EncodeToString([]byte(c)))
			add(base64.RawURLEncoding.EncodeToString([]byte(c)))
		}
		// Hex has no per-character escape either: a provider that dumps what it got as hex.
		h := hex.EncodeToString([]byte(r.ClientSecret))
		add(h)
		add(strings.ToUpper(h))
	}
	r.secretList = out
	return out
}

// redact returns s with every secret of the request, in any encoding, replaced by [redacted], cut
// to n bytes (then ending in "..."). It reads only as much of s as the answer shows, so a 1 MiB
// description costs no more than a short one; a secret that starts inside the shown part is
// recognized whole, so a cut never leaves the beginning of one.
func (r *Request) redact(s string, n int) string {
	if p := r.profile; p != nil && (p.ClientAuth == AuthPrivateKeyJWT || p.ClientAuth == AuthClientSecretJWT) {
		s = withoutJWS(s)
	}
	secrets := r.secretTexts()
	if len(secrets) == 0 {
		return truncate(s, n)
	}
	var first [256]bool // the bytes a secret's first character may start with
	for _, c := range "%+\\&" {
		first[c] = true
	}
	for _, sec := range secrets {
		first[sec[0]] = true
	}
	m := matcher{text: s, budget: redactBudget}
	b := make([]byte, 0, min(len(s), n)+16)
	for i := 0; i < len(s); {
		if len(b) >= n {
			return string(b[:n]) + "..."
		}
		if first[s[i]] {
			end, short := m.longest(i, secrets)
			if m.budget < 0 || short {
				return redacted
			}
			if end > i {
				b = append(b, redacted...)
				i = end
				continue
			}
		}
		b = append(b, s[i])
		i++
	}
	return truncate(string(b), n)
}

// withoutJWS replaces every compact JWS in s (base64url "eyJ..." "." base64url "." base64url) with
// [redacted]. A provider that refuses a client assertion may quote it, and the assertion, whose jti
// a refusal usually leaves unspent, would let whoever reads the error get a token until it expires.
// The plugin does not know it by then (token_step sends it in another call than the one that reads
// the answer), but its form: base64url and '.' need no escape in JSON, a form or HTML.
func withoutJWS(s string) string {
	var b []byte
	done := 0 // s[:done] is in b, or b is nil and nothing was replaced
	for i := strings.Index(s, "eyJ"); i >= 0; {
		end, parts := i, 0
		for parts < 3 {
			j := end
			for j < len(s) && isBase64URL(s[j]) {
				j++
			}
			if j == end {
				break
			}
			parts++
			if end = j; parts < 3 && (end >= len(s) || s[end] != '.') {
				break
			}
			if parts < 3 {
				end++
			}
		}
		if parts < 3 {
			end = i + 3
		} else {
			b = append(append(b, s[done:i]...), redacted...)
			done = end
		}
		next := strings.Index(s[end:], "eyJ")
		if next < 0 {
			break
		}
		i = end + next
	}
	if b == nil {
		return s
	}
	return string(append(b, s[done:]...))
}

func isBase64URL(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// matcher finds secrets in text, spelled in any mix of the encodings it knows.
type matcher struct {
	text   string
	budget int
}

// longest returns the end of the longest spelling of a secret that starts at i (i when there is
// none), and whether a short secret matched.
func (m *matcher) longest(i int, secrets []string) (int, bool) {
	best, short := i, false
	for _, sec := range secrets {
		if end := m.spell(i, sec); end > i {
			short = short || len(sec) < shortSecret
			best = max(best, end)
		}
	}
	return best, short
}

// state is a point of a spelling: text read up to j, secret matched up to k.
type state struct{ j, k int }

// maxStates bounds how many readings are followed at once; real texts need one or two.
const maxStates = 16

// spell returns where the longest spelling of secret that starts at i ends, else -1. It follows
// every reading of the text at once (breadth first), since one encoding's escape can be another's
// literal: `\\` is two backslashes escaped once, or one escaped twice.
func (m *matcher) spell(i int, secret string) int {
	var bufA, bufB [maxStates]state
	cur, next := bufA[:0], bufB[:0]
	cur = append(cur, state{i, 0})
	end := -1
	for len(cur) > 0 {
		next = next[:0]
		for _, st := range cur {
			if st.k == len(secret) {
				end = max(end, st.j)
				continue
			}
			if m.budget--; m.budget < 0 {
				return -1
			}
			us := m.units(st.j, encodingLayers)
			for _, u := range us.u[:us.n] {
				if kk := u.matches(secret, st.k); kk >= 0 && len(next) < maxStates && !hasState(next, state{u.end, kk}) {
					next = append(next, state{u.end, kk})
				}
			}
		}
		cur, next = next, cur
	}
	return end
}

func hasState(ss []state, s state) bool {
	for _, have := range ss {
		if have == s {
			return true
		}
	}
	return false
}

// unit is one way of reading a character at a position of the text: its value and where it ends.
type unit struct {
	val  int32
	end  int
	rune bool // val is a code point (from \uXXXX or &#N;), not a byte
}

// matches returns where secret continues after u stands for its character at k, or -1.
func (u unit) matches(secret string, k int) int {
	if u.rune && u.val >= utf8.RuneSelf {
		r, size := utf8.DecodeRuneInString(secret[k:])
		if r == u.val && r != utf8.RuneError {
			return k + size
		}
		return -1
	}
	if u.val == int32(secret[k]) {
		return k + 1
	}
	return -1
}

// units is a small set of readings; a set that would overflow keeps its first readings.
type units struct {
	u [32]unit
	n int
}

func (us *units) add(u unit) {
	for _, have := range us.u[:us.n] {
		if have == u {
			return
		}
	}
	if us.n < len(us.u) {
		us.u[us.n] = u
		us.n++
	}
}

// units returns every reading of the character at j with up to layers encodings: the byte itself,
// or an escape (percent, "+" for a space, JSON, HTML) whose own characters are read one layer less
// deep.
func (m *matcher) units(j, layers int) units {
	var out units
	if j >= len(m.text) {
		return out
	}
	out.add(unit{val: int32(m.text[j]), end: j + 1})
	if layers == 0 {
		return out
	}
	inner := m.units(j, layers-1)
	for _, c := range inner.u[:inner.n] {
		switch c.val {
		case '+':
			out.add(unit{val: ' ', end: c.end})
		case '%':
			m.hex(&out, c.end, 2, layers-1, 0, false)
		case '\\':
			next := m.units(c.end, layers-1)
			for _, e := range next.u[:next.n] {
				if v, ok := jsonEscape(e.val); ok {
					out.add(unit{val: v, end: e.end})
				} else if e.val == 'u' {
					m.hex(&out, e.end, 4, layers-1, 0, true)
				}
			}
		case '&':
			m.entity(&out, c.end)
		}
	}
	return out
}

// hex reads digits more hex digits at j (each read layers deep) onto acc and adds the value.
func (m *matcher) hex(out *units, j, digits, layers int, acc int32, isRune bool) {
	if digits == 0 {
		if isRune && 0xd800 <= acc && acc < 0xdc00 {
			m.lowSurrogate(out, j, layers, acc) // JSON spells a code point past U+FFFF as a pair
			return
		}
		out.add(unit{val: acc, end: j, rune: isRune})
		return
	}
	if m.budget--; m.budget < 0 {
		return
	}
	ds := m.units(j, layers)
	for _, d := range ds.u[:ds.n] {
		if v, ok := hexDigit(d.val); ok {
			m.hex(out, d.end, digits-1, layers, acc<<4|v, isRune)
		}
	}
}

// lowSurrogate reads the "\uDC00"-"\uDFFF" that completes the high surrogate hi at j and adds the
// code point they spell.
func (m *matcher) lowSurrogate(out *units, j, layers int, hi int32) {
	bs := m.units(j, layers)
	for _, b := range bs.u[:bs.n] {
		if b.val != '\\' {
			continue
		}
		next := m.units(b.end, layers)
		for _, u := range next.u[:next.n] {
			if u.val != 'u' {
				continue
			}
			var lows units
			m.hex(&lows, u.end, 4, layers, 0, false)
			for _, lo := range lows.u[:lows.n] {
				if 0xdc00 <= lo.val && lo.val < 0xe000 {
					out.add(unit{val: 0x10000 + (hi-0xd800)<<10 + (lo.val - 0xdc00), end: lo.end, rune: true})
				}
			}
		}
	}
}

// entity reads an HTML character reference after its "&" at j: a named one of the five HTML
// escapes, or a numeric one.
func (m *matcher) entity(out *units, j int) {
	t := m.text[j:]
	for _, e := range [...]struct {
		name string
		val  int32
	}{{"lt;", '<'}, {"gt;", '>'}, {"amp;", '&'}, {"quot;", '"'}, {"apos;", '\''}} {
		if len(t) >= len(e.name) && t[:len(e.name)] == e.name {
			out.add(unit{val: e.val, end: j + len(e.name), rune: true})
			return
		}
	}
	if len(t) < 3 || t[0] != '#' {
		return
	}
	base, i := int32(10), 1
	if t[1] == 'x' || t[1] == 'X' {
		base, i = 16, 2
	}
	var v int32
	start := i
	for ; i < len(t) && i < start+7; i++ {
		d, ok := hexDigit(int32(t[i]))
		if !ok || base == 10 && d > 9 {
			break
		}
		v = v*base + d
	}
	if i > start && i < len(t) && t[i] == ';' {
		out.add(unit{val: v, end: j + i + 1, rune: true})
	}
}

func jsonEscape(c int32) (int32, bool) {
	switch c {
	case '"', '\\', '/':
		return c, true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	}
	return 0, false
}

func hexDigit(c int32) (int32, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
