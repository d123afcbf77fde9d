package host

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// SMART discovery: a `smart` request names its server by fhir_base; the token URL is the
// token_endpoint of {fhir_base}/.well-known/smart-configuration. The document is fetched with the
// same sender, so the same policy (allow-list, https except the loopback opt-in, no redirect to
// another host, size cap), and kept for discoveryTTL per FHIR base.

const (
	discoveryTTL      = time.Hour
	discoveryTimeout  = 10 * time.Second
	discoveryMaxBytes = 64 << 10
	discoveryEntries  = 1024 // a map over this many FHIR bases starts over
	smartDiscovery    = "/.well-known/smart-configuration"
)

type discovered struct {
	tokenURL, revocationURL string
	until                   time.Time
}

// discoveryCache holds the token URLs found per FHIR base; failures are not kept.
type discoveryCache struct {
	mu sync.Mutex
	m  map[string]discovered
}

// resolve fills req.TokenURL (and RevocationURL, when the server has one) for a smart request that
// has fhir_base and no token_url.
func (c *Runtime) resolve(ctx context.Context, req abi.TokenRequest) (abi.TokenRequest, error) {
	if req.Provider != "smart" || req.TokenURL != "" || req.FHIRBase == "" {
		return req, nil
	}
	base := strings.TrimRight(req.FHIRBase, "/")
	c.discovery.mu.Lock()
	d, ok := c.discovery.m[base]
	c.discovery.mu.Unlock()
	if !ok || !c.clock.now().Before(d.until) {
		c.metrics.discoveries.Add(1)
		var err *abi.Error
		if d, err = c.discover(ctx, base); err != nil {
			c.metrics.countError(err.Kind)
			return req, err
		}
		d.until = c.clock.now().Add(discoveryTTL)
		c.discovery.mu.Lock()
		if c.discovery.m == nil || len(c.discovery.m) >= discoveryEntries {
			c.discovery.m = map[string]discovered{}
		}
		c.discovery.m[base] = d
		c.discovery.mu.Unlock()
	}
	req.TokenURL = d.tokenURL
	if req.RevocationURL == "" {
		req.RevocationURL = d.revocationURL
	}
	return req, nil
}

// discover fetches base's SMART configuration: its token_endpoint, provided the server takes
// private_key_jwt (token_endpoint_auth_methods_supported), and its revocation_endpoint if any.
func (c *Runtime) discover(ctx context.Context, base string) (discovered, *abi.Error) {
	fail := func(kind, msg string) (discovered, *abi.Error) {
		return discovered{}, &abi.Error{Kind: kind, Retryable: kind == abi.KindTransport || kind == abi.KindServerError,
			Message: "SMART discovery: " + msg}
	}
	u, err := url.Parse(base + smartDiscovery)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fail(abi.KindInvalidRequest, "fhir_base is not an absolute URL without query")
	}
	if err := c.sender.check(u); err != nil {
		return fail(abi.KindPolicy, "refused by the host's policy: "+err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fail(abi.KindInvalidRequest, "fhir_base is not a valid URL")
	}
	hr.Header.Set("Accept", "application/json")
	resp, err := c.sender.client.Do(hr)
	if err != nil {
		if isPolicy(err) {
			return fail(abi.KindPolicy, "refused by the host's policy: "+transportMessage(err))
		}
		return fail(abi.KindTransport, transportMessage(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, discoveryMaxBytes+1))
	switch {
	case err != nil:
		return fail(abi.KindTransport, transportMessage(err))
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fail(abi.KindServerError, fmt.Sprintf("HTTP %d", resp.StatusCode))
	case resp.StatusCode != http.StatusOK:
		return fail(abi.KindMalformedResponse, fmt.Sprintf("HTTP %d", resp.StatusCode))
	case len(body) > discoveryMaxBytes:
		return fail(abi.KindMalformedResponse, "configuration exceeds 64 KiB")
	}
	// Read as every reader here reads (abi/ABI.md, "Shapes"): the first of a repeated member, with
	// its type checked; encoding/json would take the last, and match names without case.
	var f [3]gjson.Result
	if gjson.ValidBytes(body) {
		members(gjson.ParseBytes(body), f[:], "token_endpoint", "revocation_endpoint", "token_endpoint_auth_methods_supported")
	}
	conf := struct{ TokenEndpoint, RevocationEndpoint string }{f[0].Str, f[1].Str}
	if f[0].Type != gjson.String || conf.TokenEndpoint == "" || f[1].Exists() && f[1].Type != gjson.String {
		return fail(abi.KindMalformedResponse, "no token_endpoint in the configuration")
	}
	t, err := url.Parse(conf.TokenEndpoint)
	if err != nil || !t.IsAbs() {
		return fail(abi.KindMalformedResponse, "token_endpoint is not an absolute URL")
	}
	if err := c.sender.check(t); err != nil {
		return fail(abi.KindPolicy, "token_endpoint refused by the host's policy: "+err.Error())
	}
	if r := conf.RevocationEndpoint; r != "" {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || c.sender.check(u) != nil {
			return fail(abi.KindPolicy, "revocation_endpoint is not an allowed absolute URL")
		}
	}
	for _, m := range f[2].Array() {
		if m.Type == gjson.String && m.Str == "private_key_jwt" {
			return discovered{tokenURL: conf.TokenEndpoint, revocationURL: conf.RevocationEndpoint}, nil
		}
	}
	return fail(abi.KindPolicy, "the server does not list private_key_jwt in token_endpoint_auth_methods_supported")
}
