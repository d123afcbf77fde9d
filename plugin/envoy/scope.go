package main

import (
	"errors"
	"strings"
)

// scope decides which requests get the token: a path under one of paths, compared segment by
// segment, and an :authority equal to one of hosts, without port or trailing dot,
// case-insensitively. A list not configured matches everything.
//
// The filter does not normalize the path: readers disagree on how. RFC 3986 resolves /api//../admin
// to /api/admin, nginx (merge_slashes on) to /admin; Envoy's router without normalize_path matches
// /x/../api/y on its raw text (as /x); Tomcat drops ";" parameters before resolving; an upstream
// that decodes twice reads %252e as "."; a Windows best-fit conversion turns a full-width solidus
// into "/". So a path is in scope only if it is already in the one form every reader agrees on (see
// pathSegments); anything else never gets the token, however harmless it looks. Envoy's
// normalize_path and merge_slashes (envoy.yaml) rewrite dot segments, backslashes and repeated
// slashes before any filter runs, for the router, this filter and the upstream alike; this check is
// the second line.
type scope struct {
	paths [][]string
	hosts []string
}

func newScope(paths, hosts []string) (scope, error) {
	var s scope
	for _, p := range paths {
		segs, ok := pathSegments(p)
		if !ok || strings.ContainsAny(p, "?#") || "/"+strings.Join(segs, "/") != strings.TrimSuffix(p, "/") && p != "/" {
			return s, errors.New("paths: each must be a normalized absolute path such as /api (no empty or dot segments, escaped separators or unreserved characters, query or empty entry)")
		}
		s.paths = append(s.paths, segs)
	}
	for _, h := range hosts {
		n := normalizeHost(h)
		if n == "" || n != strings.ToLower(strings.TrimSuffix(h, ".")) || !visibleASCII(n) ||
			strings.HasPrefix(n, "[") != strings.HasSuffix(n, "]") || strings.ContainsAny(n, "/?#@") {
			return s, errors.New("hosts: each must be a host name without port, such as api.example.com")
		}
		s.hosts = append(s.hosts, n)
	}
	return s, nil
}

// applies reports whether a request with this :path and :authority is in scope.
func (s *scope) applies(path, authority string) bool {
	if len(s.paths) > 0 {
		var buf [32]string // the segments stay on the stack: no allocation per request
		segs, ok := appendPathSegments(buf[:0], path)
		if !ok {
			return false
		}
		in := false
		for _, prefix := range s.paths {
			if hasPrefix(segs, prefix) {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	if len(s.hosts) > 0 {
		h := normalizeHost(authority)
		for _, want := range s.hosts {
			if h == want {
				return true
			}
		}
		return false
	}
	return true
}

func hasPrefix(segs, prefix []string) bool {
	if len(prefix) > len(segs) {
		return false
	}
	for i, p := range prefix {
		if segs[i] != p {
			return false
		}
	}
	return true
}

// pathSegments returns the raw segments of an absolute path (the query dropped; a trailing slash
// dropped, so /api/ is [api]) when every reader reads the path the same way, and ok false when one
// might not: the filter then gives no token. Refused:
//   - an empty segment other than the last (//api, /api//x, /api//../admin): merging slashes before or
//     after resolving dot segments, or not at all, gives different paths;
//   - a dot segment, or any segment made only of dots and spaces, before or without ";" parameters
//     (/api/./x, /x/../api, /api/..;/admin, /api/;/../admin, /api/.../admin, /api/..%20/admin): a
//     router on the raw path, an RFC 3986 resolver, a Tomcat that drops parameters and a Windows that
//     trims trailing dots and spaces each read them differently;
//   - a backslash, a "#", a control character, a space or a byte outside ASCII, raw;
//   - an escape of an unreserved character (%2e, %61), of "/", "\", ";", "?", "#", of a control
//     character or of a byte outside ASCII (overlong UTF-8, full-width and best-fit forms of "." and
//     "/"), a double escape (%25 then two hex digits) and a malformed escape. Other escapes (%20, %3A,
//     %25 not before two hex digits) stay, compared as written.
func pathSegments(p string) (segs []string, ok bool) { return appendPathSegments(nil, p) }

// appendPathSegments is pathSegments appending to segs.
func appendPathSegments(segs []string, p string) ([]string, bool) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if p == "" || p[0] != '/' {
		return nil, false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c >= 0x7f || c == '\\' || c == '#' {
			return nil, false
		}
		if c != '%' {
			continue
		}
		if i+2 >= len(p) || unhex(p[i+1]) < 0 || unhex(p[i+2]) < 0 {
			return nil, false
		}
		d := byte(unhex(p[i+1])<<4 | unhex(p[i+2]))
		switch {
		case d < ' ' || d >= 0x7f, unreserved(d), strings.IndexByte("/\\;?#", d) >= 0:
			return nil, false
		case d == '%' && i+4 < len(p) && unhex(p[i+3]) >= 0 && unhex(p[i+4]) >= 0:
			return nil, false
		}
		i += 2
	}
	for rest := p[1:]; ; {
		seg, after, more := strings.Cut(rest, "/")
		if !more && seg == "" { // the last segment, empty: a trailing slash
			break
		}
		if onlyDots(seg) {
			return nil, false
		}
		segs = append(segs, seg)
		if !more {
			break
		}
		rest = after
	}
	return segs, true
}

// onlyDots reports whether a segment, before any ";" parameters and with "%20" read as a space, is
// made only of dots and spaces (or is empty).
func onlyDots(seg string) bool {
	if i := strings.IndexByte(seg, ';'); i >= 0 {
		seg = seg[:i]
	}
	for i := 0; i < len(seg); {
		switch {
		case seg[i] == '.' || seg[i] == ' ':
			i++
		case strings.HasPrefix(seg[i:], "%20"):
			i += 3
		default:
			return false
		}
	}
	return true
}

// usesAuthority reports whether applies reads the :authority (hosts are configured): a request
// header read is a host call, made only when needed.
func (s *scope) usesAuthority() bool { return len(s.hosts) > 0 }

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

const upperHex = "0123456789ABCDEF"

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// normalizeHost lower-cases an :authority (ASCII only, as Envoy's virtual hosts and DNS do: Unicode
// folding would read "AP\u0130.example" as api.example) and drops its port and trailing dot
// ([v6]:443 -> [v6]). An :authority with a byte outside visible ASCII matches no configured host.
func normalizeHost(h string) string {
	if !visibleASCII(h) {
		return ""
	}
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && allDigits(h[i+1:]) {
		h = h[:i]
	}
	return asciiLower(strings.TrimSuffix(h, "."))
}

// asciiLower is s with A-Z made a-z, and nothing else changed.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
