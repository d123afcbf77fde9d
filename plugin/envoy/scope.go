package main

import (
	"errors"
	"strings"
)

// scope decides which requests get the token: a path under one of paths, compared segment by
// segment on the normalized path, and an :authority equal to one of hosts, without port or trailing
// dot, case-insensitively. A list not configured matches everything.
//
// The path is normalized as an upstream would before routing on it: percent-escapes of unreserved
// characters are decoded (%61pi is api, %2e%2e is ..), dot segments are resolved (/api/../admin is
// /admin), and a path the filter cannot read the way every upstream would (an encoded slash or
// backslash, a raw backslash, a dot segment with ";" parameters, a double-encoded dot, slash or
// backslash) is out of scope: it never gets the token.
type scope struct {
	paths [][]string
	hosts []string
}

func newScope(paths, hosts []string) (scope, error) {
	var s scope
	for _, p := range paths {
		segs, ok := normalizePath(p)
		if !ok || p == "" || p[0] != '/' || strings.ContainsAny(p, "?#") || "/"+strings.Join(segs, "/") != strings.TrimSuffix(p, "/") && p != "/" {
			return s, errors.New("paths: each must be a normalized absolute path such as /api (no dot segments, escapes, query or empty entry)")
		}
		s.paths = append(s.paths, segs)
	}
	for _, h := range hosts {
		n := normalizeHost(h)
		if n == "" || n != strings.ToLower(strings.TrimSuffix(h, ".")) || !visibleASCII(n) {
			return s, errors.New("hosts: each must be a host name without port, such as api.example.com")
		}
		s.hosts = append(s.hosts, n)
	}
	return s, nil
}

// applies reports whether a request with this :path and :authority is in scope.
func (s *scope) applies(path, authority string) bool {
	if len(s.paths) > 0 {
		segs, ok := normalizePath(path)
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

// normalizePath returns the segments of an absolute path (query and fragment dropped) with unreserved
// escapes decoded and dot segments resolved; ok is false for a path that is not absolute or holds an
// encoded slash or backslash, or a raw backslash. A trailing empty segment ("/api/") is dropped.
func normalizePath(p string) (segs []string, ok bool) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if p == "" || p[0] != '/' || strings.IndexByte(p, '\\') >= 0 {
		return nil, false
	}
	for _, raw := range strings.Split(p[1:], "/") {
		seg, ok := decodeUnreserved(raw)
		if !ok || ambiguous(seg) {
			return nil, false
		}
		switch seg {
		case ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, seg)
		}
	}
	if n := len(segs); n > 0 && segs[n-1] == "" {
		segs = segs[:n-1]
	}
	return segs, true
}

// ambiguous reports whether some upstreams read a decoded segment as a dot segment or a slash where
// others do not: a dot segment with ";" parameters (Tomcat and Spring drop them first: /api/..;/admin
// is /admin there), or a double-encoded dot, slash or backslash (%252e is "." to an upstream that
// decodes twice).
func ambiguous(seg string) bool {
	base := seg
	if i := strings.IndexByte(seg, ';'); i >= 0 {
		base = seg[:i]
	} else if i := strings.Index(seg, "%3B"); i >= 0 {
		base = seg[:i]
	}
	if base != seg && (base == "." || base == "..") {
		return true
	}
	if i := strings.Index(seg, "%25"); i >= 0 {
		l := strings.ToLower(seg[i:])
		return strings.Contains(l, "%252e") || strings.Contains(l, "%252f") || strings.Contains(l, "%255c")
	}
	return false
}

// decodeUnreserved decodes the percent-escapes of unreserved characters (RFC 3986 2.3) in one
// segment and upper-cases the hex of the others; an escaped slash or backslash refuses the segment.
func decodeUnreserved(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
			return "", false
		}
		c := byte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		switch {
		case c == '/' || c == '\\':
			return "", false
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b = append(b, c)
		default:
			b = append(b, '%', upperHex[c>>4], upperHex[c&15])
		}
		i += 2
	}
	return string(b), true
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

// normalizeHost lower-cases an :authority and drops its port and trailing dot ([v6]:443 -> [v6]).
func normalizeHost(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && allDigits(h[i+1:]) {
		h = h[:i]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
