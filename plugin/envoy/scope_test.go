package main

import (
	"net/url"
	"strings"
	"testing"
)

// TestScopeAgreesWithEveryReader: every path of up to five pieces built from slashes, dots, names,
// ";", escapes and backslashes that scope puts under /api is under /api for each modelled reader
// too: Envoy's router on the raw path, RFC 3986 resolution (with %2E read as "."), nginx (decode,
// backslash as slash on Windows, merge slashes, resolve), Tomcat (drop ";" parameters, decode, merge,
// resolve), an upstream that decodes twice, an IIS-like reader (case folded, trailing dots and
// spaces trimmed) and one that decodes before dropping parameters. Run natively: the compiled filter
// shares scope.go and runs TestScope's matrix.
func TestScopeAgreesWithEveryReader(t *testing.T) {
	s, err := newScope([]string{"/api"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pieces := []string{"/", "api", "x", ".", "%2e", "%2F", "%5c", "\\", ";", "%20", "%25", "2e", "API", "%00", "%c0%ae"}
	readers := map[string]func(string) []string{
		"raw":           func(p string) []string { return strings.Split(p[1:], "/") },
		"rfc3986":       func(p string) []string { return resolve(strings.Split(decodeDots(p)[1:], "/"), false) },
		"nginx":         func(p string) []string { return resolve(strings.Split(slashes(decode(p))[1:], "/"), true) },
		"tomcat":        func(p string) []string { return resolve(strings.Split(decode(dropParams(p))[1:], "/"), true) },
		"double-decode": func(p string) []string { return resolve(strings.Split(slashes(decode(decode(p)))[1:], "/"), true) },
		// IIS-like: decode, backslash as slash, merge, trim trailing dots and spaces, resolve, fold case.
		"iis": func(p string) []string {
			return resolve(trimDots(strings.Split(strings.ToLower(slashes(decode(p)))[1:], "/")), true)
		},
		// Decode first, then drop ";" parameters (a %3B becomes one).
		"decode-params": func(p string) []string { return resolve(strings.Split(dropParams(decode(p))[1:], "/"), true) },
	}
	var n, in int
	var walk func(p string, depth int)
	walk = func(p string, depth int) {
		n++
		if s.applies(p, "") {
			in++
			for name, read := range readers {
				if segs := read(p); len(segs) == 0 || segs[0] != "api" {
					t.Errorf("%q is in scope; %s reads %q", p, name, "/"+strings.Join(segs, "/"))
				}
			}
		}
		if depth == 5 {
			return
		}
		for _, piece := range pieces {
			walk(p+piece, depth+1)
		}
	}
	walk("/", 0)
	if in == 0 {
		t.Fatal("no path in scope: the walk proves nothing")
	}
	t.Logf("%d paths, %d in scope", n, in)
}

// resolve removes dot segments (RFC 3986 5.2.4 on segments); merge drops empty segments first.
func resolve(segs []string, merge bool) []string {
	var out []string
	for i, seg := range segs {
		switch {
		case seg == "" && merge && i < len(segs)-1:
		case seg == ".":
		case seg == "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	return out
}

func decode(p string) string {
	if d, err := url.PathUnescape(p); err == nil {
		return d
	}
	return p
}

func decodeDots(p string) string {
	return strings.NewReplacer("%2e", ".", "%2E", ".").Replace(p)
}

// trimDots trims trailing dots and spaces from each segment but "." and "..", as Windows does.
func trimDots(segs []string) []string {
	out := make([]string, len(segs))
	for i, seg := range segs {
		if out[i] = strings.TrimRight(seg, ". "); seg == "." || seg == ".." {
			out[i] = seg
		}
	}
	return out
}

func slashes(p string) string { return strings.ReplaceAll(p, "\\", "/") }

func dropParams(p string) string {
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		if j := strings.IndexByte(seg, ';'); j >= 0 {
			segs[i] = seg[:j]
		}
	}
	return strings.Join(segs, "/")
}
