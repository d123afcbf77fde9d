package core

import (
	"strings"

	"github.com/tokenwasm/tokenwasm/abi"
)

// A built-in provider's credentials go to that provider's hosts only. The host's allow-list decides
// which hosts may be called at all; it cannot know that a token_url override sends Pattern's
// credentials to Candid's endpoint, which is on the list. The plugin knows whose credentials a request
// holds, so it refuses that at encode, before anything is sent.

// AnyTokenHost in Profile.TokenHosts means a per-customer host: any host that is not another built-in
// provider's.
const AnyTokenHost = "*"

// checkTokenHost refuses a token URL whose host is not one of the built-in profile's token hosts.
// Loopback hosts stay allowed so that local fakes work; the host's own policy still decides whether
// loopback may be reached. The custom provider's token_url is its own, so it is not bound.
func (r *Request) checkTokenHost(tokenURL string) *abi.Error {
	p := r.profile
	if len(p.TokenHosts) == 0 {
		return nil
	}
	host, msg := urlHost(tokenURL)
	if msg != "" {
		return policyError(p.Name + " token_url " + msg)
	}
	if isLoopbackHost(host) {
		return nil
	}
	for _, pattern := range p.TokenHosts {
		if pattern == AnyTokenHost {
			for _, other := range providers {
				if other != p && matchesAny(host, other.TokenHosts) {
					return policyError("token_url host " + quote(host) + " belongs to " + other.Name + ", not " + p.Name)
				}
			}
			return nil
		}
	}
	if matchesAny(host, p.TokenHosts) {
		return nil
	}
	return policyError("token_url host " + quote(host) + " is not a token host of " + p.Name + " (" + strings.Join(p.TokenHosts, ", ") + ")")
}

func policyError(msg string) *abi.Error { return &abi.Error{Kind: abi.KindPolicy, Message: msg} }

func matchesAny(host string, patterns []string) bool {
	for _, pat := range patterns {
		if pat == host || strings.HasPrefix(pat, "*.") && strings.HasSuffix(host, pat[1:]) && len(host) > len(pat)-1 {
			return true
		}
	}
	return false
}

// urlHost returns the lower-cased host of an http or https URL, without port or trailing dot, or a
// reason to refuse it. It is strict on purpose: hosts parse URLs with their own parsers (Go's
// net/url, WHATWG URL in JavaScript), which disagree on backslashes, userinfo and percent-encoded
// hosts; a URL that any of them could read as another host is refused rather than interpreted.
func urlHost(u string) (string, string) {
	rest, ok := cutPrefixFold(u, "https://")
	if !ok {
		if rest, ok = cutPrefixFold(u, "http://"); !ok {
			return "", "must be an http or https URL"
		}
	}
	end := len(rest)
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c == '/' || c == '?' || c == '#' || c == '\\' {
			end = i
			break
		}
	}
	authority := rest[:end]
	if strings.IndexByte(authority, '@') >= 0 {
		return "", "must not carry user information"
	}
	host, port := authority, ""
	if strings.HasPrefix(authority, "[") {
		i := strings.IndexByte(authority, ']')
		if i < 0 {
			return "", "has an unterminated IPv6 address"
		}
		host, port = authority[1:i], authority[i+1:]
		if !allBytes(host, "0123456789abcdefABCDEF:.") {
			return "", "has an invalid IPv6 address"
		}
	} else if i := strings.IndexByte(authority, ':'); i >= 0 {
		host, port = authority[:i], authority[i:]
	}
	if port != "" && (port[0] != ':' || !allBytes(port[1:], "0123456789")) {
		return "", "has an invalid port"
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || !strings.HasPrefix(authority, "[") && !allBytes(host, "abcdefghijklmnopqrstuvwxyz0123456789.-") {
		return "", "host must be a plain host name (letters, digits, '.', '-')"
	}
	return host, ""
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

func allBytes(s, set string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(set, s[i]) < 0 {
			return false
		}
	}
	return true
}

// isLoopbackHost reports whether host (lower-case, without brackets) is localhost, in 127.0.0.0/8 or
// ::1: the addresses of local fakes.
func isLoopbackHost(host string) bool {
	switch host {
	case "localhost", "::1", "0:0:0:0:0:0:0:1":
		return true
	}
	if !strings.HasPrefix(host, "127.") {
		return false
	}
	parts := strings.Split(host, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || !allBytes(p, "0123456789") || len(p) > 1 && p[0] == '0' || len(p) == 3 && p > "255" {
			return false
		}
	}
	return true
}
