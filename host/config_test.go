package host

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"golang.org/x/oauth2"
)

// TestConfigTokenRequest: every Config field lands in the ABI's request, and an inconsistent Config
// is an invalid_request naming the field, before anything is sent.
func TestConfigTokenRequest(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     Config
		want    func(abi.TokenRequest) bool
		wantErr string
	}{
		{"scopes joined", Config{Provider: NikoHealth, Scopes: []string{"external", "read"}},
			func(r abi.TokenRequest) bool { return r.Scope == "external read" && r.Profile == nil }, ""},
		{"endpoint params", Config{Provider: Candid, EndpointParams: url.Values{"audience": {"x"}}},
			func(r abi.TokenRequest) bool { return r.Params["audience"] == "x" }, ""},
		{"two values for one param", Config{Provider: Candid, EndpointParams: url.Values{"a": {"1", "2"}}}, nil, "EndpointParams[a]"},
		{"timeout rounds up to 1 ms", Config{Provider: Candid, Timeout: 1}, func(r abi.TokenRequest) bool { return r.TimeoutMS == 1 }, ""},
		{"grant inputs", Config{Provider: Candescent, GrantType: abi.GrantPassword, Username: "u", Password: "p", InstitutionID: "01234"},
			func(r abi.TokenRequest) bool {
				return r.GrantType == abi.GrantPassword && r.Username == "u" && r.Password == "p" && r.InstitutionID == "01234"
			}, ""},
		{"client assertion inputs", Config{Provider: SMART, KeyID: "k1", AssertionAlg: "ES384", FHIRBase: "https://fhir.example/r4",
			RevocationURL: "https://fhir.example/revoke"},
			func(r abi.TokenRequest) bool {
				return r.Provider == "smart" && r.KeyID == "k1" && r.AssertionAlg == "ES384" && r.FHIRBase == "https://fhir.example/r4" &&
					r.RevocationURL == "https://fhir.example/revoke"
			}, ""},
		{"custom in params", Config{Provider: Custom, TokenURL: "https://t.example/token", AuthStyle: AuthStyleInParams},
			func(r abi.TokenRequest) bool { return r.Profile != nil && r.Profile.ClientAuth == "body" }, ""},
		{"custom in header", Config{Provider: Custom, AuthStyle: AuthStyleInHeader, Profile: &abi.Profile{Body: "json"}},
			func(r abi.TokenRequest) bool {
				return r.Profile.ClientAuth == "basic_rfc6749" && r.Profile.Body == "json"
			}, ""},
		{"custom raw header", Config{Provider: Custom, AuthStyle: AuthStyleInHeaderRaw},
			func(r abi.TokenRequest) bool { return r.Profile.ClientAuth == "basic" }, ""},
		{"custom autodetect keeps the profile's", Config{Provider: Custom, Profile: &abi.Profile{ClientAuth: "body"}},
			func(r abi.TokenRequest) bool { return r.Profile.ClientAuth == "body" }, ""},
		{"custom without profile", Config{Provider: Custom}, func(r abi.TokenRequest) bool { return r.Profile != nil }, ""},
		{"auth style on a built-in provider", Config{Provider: Pattern, AuthStyle: AuthStyleInParams}, nil, "AuthStyle applies to Custom only"},
		{"profile on a built-in provider", Config{Provider: Pattern, Profile: &abi.Profile{}}, nil, "Profile applies to Custom only"},
		{"unknown auth style", Config{Provider: Custom, AuthStyle: 9}, nil, "unknown AuthStyle"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := tt.cfg.TokenRequest()
			if tt.wantErr != "" {
				if !errors.Is(err, abi.ErrInvalidRequest) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want invalid_request with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !tt.want(req) {
				t.Fatalf("req = %+v, err = %v", req, err)
			}
		})
	}
}

// TestConfigCopiesItsMaps: a Config changed after conversion does not change the request.
func TestConfigCopiesItsMaps(t *testing.T) {
	cfg := Config{Provider: Custom, Headers: map[string]string{"a": "1"}, Profile: &abi.Profile{Headers: map[string]string{"b": "2"}}}
	req, err := cfg.TokenRequest()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Headers["a"], cfg.Profile.Headers["b"] = "x", "y"
	if req.Headers["a"] != "1" || req.Profile.Headers["b"] != "2" {
		t.Fatalf("the request follows the Config's maps: %v %v", req.Headers, req.Profile.Headers)
	}
}

// TestConfigAgainstFakes: a Config's TokenSource, Token and Client work as x/oauth2's do, against
// each built-in fake and a custom endpoint; Extra("scope") answers the provider's scope.
func TestConfigAgainstFakes(t *testing.T) {
	set := providertest.StartAll()
	defer set.Close()
	ctx := context.Background()
	c, err := New(ctx, WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	cand := set.Candescent.Config()
	for _, tt := range []struct {
		name  string
		fake  *providertest.Fake
		cfg   Config
		scope any
	}{
		{"candid", set.Candid, Config{Provider: Candid}, nil},
		{"pattern", set.Pattern, Config{Provider: Pattern}, nil},
		{"candescent", set.Candescent, Config{Provider: Candescent, InstitutionID: cand.InstitutionID}, nil},
		{"nikohealth", set.NikoHealth, Config{Provider: NikoHealth, Scopes: []string{"external"}}, "external"},
		{"custom", set.NikoHealth, Config{Provider: Custom, AuthStyle: AuthStyleInHeader}, "external"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.ClientID, cfg.ClientSecret, cfg.TokenURL, cfg.Host = tt.fake.Config().ClientID, tt.fake.Config().ClientSecret, tt.fake.TokenURL(), c
			var ts oauth2.TokenSource = cfg.TokenSource(ctx)
			tok, err := ts.Token()
			if err != nil {
				t.Fatal(err)
			}
			if !tok.Valid() || tok.Type() != "Bearer" || tok.Extra("scope") != tt.scope || tok.Extra("expires_in") != float64(tok.ExpiresIn) {
				t.Fatalf("token %+v, scope %v", tok, tok.Extra("scope"))
			}
			before := tt.fake.Requests()
			if again, err := cfg.Token(ctx); err != nil || again.AccessToken != tok.AccessToken || tt.fake.Requests() != before {
				t.Fatalf("Config.Token did not share the source's token: %v", err)
			}
			resp, err := cfg.Client(ctx).Get(tt.fake.APIURL())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("API answered %d", resp.StatusCode)
			}
		})
	}
}

// TestConfigErrorsComeFromToken: as with x/oauth2, a bad Config fails at Token and at the client's
// first request (whose body is closed), never with a panic.
func TestConfigErrorsComeFromToken(t *testing.T) {
	ctx := context.Background()
	cfg := Config{Provider: Pattern, AuthStyle: AuthStyleInParams}
	if _, err := cfg.Token(ctx); !errors.Is(err, abi.ErrInvalidRequest) {
		t.Fatalf("Token: %v", err)
	}
	body := &closeCounter{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/", body)
	if _, err := cfg.Client(ctx).Do(req); !errors.Is(err, abi.ErrInvalidRequest) || body.closed.Load() == 0 {
		t.Fatalf("Client: %v, body closed %d times", err, body.closed.Load())
	}
}

// TestConfigClientUsesContextHTTPClient: oauth2.HTTPClient in the context supplies the transport
// under the token, as in x/oauth2.
func TestConfigClientUsesContextHTTPClient(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	c, err := New(context.Background(), WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var seen atomic.Int32
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: base})
	cfg := Config{Provider: NikoHealth, ClientID: fake.Config().ClientID, ClientSecret: fake.Config().ClientSecret,
		TokenURL: fake.TokenURL(), Host: c}
	resp, err := cfg.Client(ctx).Get(fake.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || seen.Load() != 1 {
		t.Fatalf("status %d, context transport used %d times", resp.StatusCode, seen.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

// TestTransportClosesBodyOnError: the RoundTripper contract: the request body is closed on every
// error path (a bad request for the source, a token that cannot be had).
func TestTransportClosesBodyOnError(t *testing.T) {
	c, err := New(context.Background(), WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, tt := range []struct {
		name string
		req  abi.TokenRequest
	}{
		{"no token to be had", abi.TokenRequest{Provider: "nikohealth", ClientID: "id", ClientSecret: "s", TokenURL: "http://127.0.0.1:1/token"}},
		{"refused by the plugin", abi.TokenRequest{Provider: "custom", ClientID: "a"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := &closeCounter{Reader: strings.NewReader("payload")}
			r, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/api", body)
			if _, err := c.Transport(nil, tt.req).RoundTrip(r); err == nil || body.closed.Load() == 0 {
				t.Fatalf("err %v, body closed %d times", err, body.closed.Load())
			}
		})
	}
}

// TestSourceIndexKeepsTenantsApart: Runtime.Token's index never answers one credential set with
// another's source: not for a changed field, not when the caller reuses and changes its maps, not
// after the source map evicted the source.
func TestSourceIndexKeepsTenantsApart(t *testing.T) {
	c, err := New(context.Background(), WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	params := map[string]string{"tenant": "a"}
	a := abi.TokenRequest{Provider: "custom", ClientID: "id", ClientSecret: "s", Params: params, Profile: &abi.Profile{}}
	sa, err := c.sources.lookup(c, &a)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.sources.lookup(c, &a); again != sa {
		t.Fatal("the same request found another source")
	}
	params["tenant"] = "b" // the caller reuses its map for another tenant
	if sb, _ := c.sources.lookup(c, &a); sb == sa || sb.req.Params["tenant"] != "b" || sa.req.Params["tenant"] != "a" {
		t.Fatal("a changed map reached the first tenant's source")
	}
	for _, change := range []func(r *abi.TokenRequest){
		func(r *abi.TokenRequest) { r.ClientSecret = "other" },
		func(r *abi.TokenRequest) { r.Scope = "x" },
		func(r *abi.TokenRequest) { r.Headers = map[string]string{"h": "v"} },
		func(r *abi.TokenRequest) { r.Profile = &abi.Profile{Body: "json"} },
		func(r *abi.TokenRequest) { r.Profile = nil },
		func(r *abi.TokenRequest) { r.TimeoutMS = 5 },
	} {
		b := a
		b.Params = map[string]string{"tenant": "a"}
		change(&b)
		if s, _ := c.sources.lookup(c, &b); s == sa {
			t.Fatalf("request %+v got the first tenant's source", b)
		}
	}
	// A per-call field is not part of the credential set.
	x := a
	x.Params = map[string]string{"tenant": "a"}
	first, _ := c.sources.lookup(c, &x)
	x.Force, x.NowMS = true, 7
	if s, _ := c.sources.lookup(c, &x); s != first {
		t.Fatal("force made another source")
	}
	// A source that left the map is not found through the index any more.
	c.sources.mu.Lock()
	for k, s := range c.sources.m {
		if s == first {
			c.sources.drop(k)
		}
	}
	c.sources.mu.Unlock()
	if s, _ := c.sources.lookup(c, &x); s == first {
		t.Fatal("the index answered an evicted source")
	}
}

// TestEndpointParamsCannotRepeatTheRequestsOwn: as in x/oauth2, an EndpointParams key the request
// itself sends (client_id, grant_type, a grant input) is refused, not sent a second time beside it
// (a provider reading the last copy would see another client, secret or grant).
func TestEndpointParamsCannotRepeatTheRequestsOwn(t *testing.T) {
	for _, key := range []string{"grant_type", "client_id", "client_secret", "scope", "username", "password",
		"code", "redirect_uri", "code_verifier", "refresh_token", "client_assertion", "client_assertion_type"} {
		cfg := Config{Provider: NikoHealth, ClientID: "id", ClientSecret: "s", Domain: "acme",
			EndpointParams: url.Values{key: {"evil"}}}
		if _, err := cfg.TokenRequest(); !errors.Is(err, abi.ErrInvalidRequest) || !strings.Contains(err.Error(), key) {
			t.Errorf("EndpointParams[%s]: err = %v, want invalid_request naming it", key, err)
		}
	}
	cfg := Config{Provider: NikoHealth, EndpointParams: url.Values{"audience": {"api"}}}
	if req, err := cfg.TokenRequest(); err != nil || req.Params["audience"] != "api" {
		t.Fatalf("an ordinary param: %+v, %v", req.Params, err)
	}
}
