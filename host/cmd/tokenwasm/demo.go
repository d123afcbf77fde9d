package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// demoCase is one row of the demo: a provider and grant against its fake.
type demoCase struct {
	fake *providertest.Fake
	req  abi.TokenRequest
}

// demoCertID is the id the demo's client registers the mTLS client certificate under.
const demoCertID = "demo-client-certificate"

// demoCases lists every provider and every grant of the built-in ones, with the fakes' credentials:
// smart with the key the SMART fake has in its JWKS, custom twice (Pattern's endpoint described as
// data, and tls_client_auth against the mTLS fake).
func demoCases(set *fakeSet) []demoCase {
	cfg := func(f *providertest.Fake) providertest.Config { return f.Config() }
	cand, pat, desc, niko := cfg(set.candid), cfg(set.pattern), cfg(set.candescent), cfg(set.nikohealth)
	descReq := func(grant string) abi.TokenRequest {
		return abi.TokenRequest{Provider: "candescent", GrantType: grant, ClientID: desc.ClientID,
			ClientSecret: desc.ClientSecret, InstitutionID: desc.InstitutionID, TokenURL: set.candescent.TokenURL()}
	}
	pw := descReq(abi.GrantPassword)
	pw.Username, pw.Password = desc.Username, desc.Password
	code := descReq(abi.GrantAuthorizationCode)
	code.Code, code.RedirectURI, code.CodeVerifier, code.Scope = desc.Code, desc.RedirectURI, desc.CodeVerifier, "openid offline_access"
	return []demoCase{
		{set.candid, abi.TokenRequest{Provider: "candid", ClientID: cand.ClientID, ClientSecret: cand.ClientSecret, TokenURL: set.candid.TokenURL()}},
		{set.candid, abi.TokenRequest{Provider: "candid", ClientID: cand.ClientID, ClientSecret: cand.ClientSecret, TokenURL: set.candid.TokenURL(), Body: "form"}},
		{set.pattern, abi.TokenRequest{Provider: "pattern", ClientID: pat.ClientID, ClientSecret: pat.ClientSecret, TokenURL: set.pattern.TokenURL()}},
		{set.candescent, descReq(abi.GrantClientCredentials)},
		{set.candescent, pw},
		{set.candescent, code},
		{set.nikohealth, abi.TokenRequest{Provider: "nikohealth", ClientID: niko.ClientID, ClientSecret: niko.ClientSecret, TokenURL: set.nikohealth.TokenURL(), Scope: "external"}},
		// The token URL is discovered from the FHIR base; the host signs the assertion.
		{set.smart.Fake, abi.TokenRequest{Provider: "smart", ClientID: smartClientID, KeyID: smartKeyID, AssertionAlg: smartAlg,
			FHIRBase: set.smart.FHIRBase(), Scope: smartScope}},
		// Pattern's endpoint as data: what a provider the plugin does not know needs.
		{set.pattern, abi.TokenRequest{Provider: "custom", ClientID: pat.ClientID, ClientSecret: pat.ClientSecret, TokenURL: set.pattern.TokenURL(),
			Profile: &abi.Profile{Body: "form", ClientAuth: "basic", ExpiresInUnit: "ms", Headers: map[string]string{"Accept": "application/json"}}}},
		{set.mtls.Fake, abi.TokenRequest{Provider: "custom", ClientID: mtlsClientID, KeyID: demoCertID, TokenURL: set.mtls.TokenURL(),
			Profile: &abi.Profile{Body: "form", ClientAuth: "tls_client_auth"}}},
	}
}

func runDemo(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	redisURL := fs.String("redis", "", "also show two processes sharing one token through Redis at this URL")
	if err := parse(fs, args); err != nil {
		return err
	}
	set, err := startFakes("127.0.0.1", 0, false)
	if err != nil {
		return err
	}
	defer set.Close()
	// The mTLS fake is https, its certificate from the fakes' CA.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: set.ca.Pool(), MinVersion: tls.VersionTLS12}
	c, err := host.New(ctx, host.WithLoopback(), host.WithHTTPTransport(transport),
		host.WithSigner(smartKeyID, set.smartKey, smartClientID), host.WithClientCertificate(demoCertID, set.mtlsCert))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	profiles, err := builtinProfiles(ctx, c)
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tGRANT\tCLIENT AUTH\tBODY\tTOKEN\tEXPIRES IN\tREFRESH TOKEN\tCACHED\tPROVIDER REQUESTS\tLATENCY")
	cases := demoCases(set)
	var refresh abi.TokenRequest
	for round := 0; round < 2; round++ {
		for _, dc := range cases {
			if err := demoRow(ctx, tw, c, profiles, dc, &refresh); err != nil {
				return err
			}
		}
	}
	// The refresh_token grant with the refresh token the password grant returned.
	if refresh.RefreshToken != "" {
		if err := demoRow(ctx, tw, c, profiles, demoCase{set.candescent, refresh}, nil); err != nil {
			return err
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\ncustom: the first row is Pattern's endpoint described as data (a profile: form, basic, expires_in in ms),")
	fmt.Fprintln(w, "the second the mTLS fake, where the client certificate on the connection is the client authentication.")
	fmt.Fprintln(w, "smart: the token URL came from the FHIR base's .well-known/smart-configuration, the assertion signed by the host.")
	fmt.Fprintf(w, "plugin: %d KB TinyGo wasm; every token above came through it (encode, http_send, decode, cache).\n", len(host.Plugin())/1024)
	if *redisURL != "" {
		fmt.Fprintln(w)
		return runFleetDemo(ctx, w, *redisURL)
	}
	return nil
}

// profile is what the demo shows of a provider's profile.
type profile struct {
	Name       string `json:"name"`
	ClientAuth string `json:"client_auth"`
	Body       string `json:"body"`
}

// builtinProfiles reads the built-in providers' client authentication and body from the plugin's
// describe answer, so the demo shows what the plugin does rather than what this file says.
func builtinProfiles(ctx context.Context, c *host.Runtime) (map[string]profile, error) {
	d, err := c.Describe(ctx)
	if err != nil {
		return nil, err
	}
	var desc struct{ Providers []profile }
	if err := json.Unmarshal(d, &desc); err != nil {
		return nil, err
	}
	m := map[string]profile{}
	for _, p := range desc.Providers {
		m[p.Name] = p
	}
	return m, nil
}

func demoRow(ctx context.Context, tw io.Writer, c *host.Runtime, profiles map[string]profile, dc demoCase, refresh *abi.TokenRequest) error {
	before := dc.fake.Requests()
	start := time.Now()
	tok, err := c.Token(ctx, dc.req)
	elapsed := time.Since(start)
	if err != nil {
		return fmt.Errorf("%s %s: %w", dc.req.Provider, grantOf(dc.req), err)
	}
	if refresh != nil && tok.RefreshToken != "" && dc.req.GrantType == abi.GrantPassword {
		*refresh = dc.req
		refresh.GrantType, refresh.RefreshToken, refresh.Username, refresh.Password = abi.GrantRefreshToken, tok.RefreshToken, "", ""
	}
	p := profiles[dc.req.Provider]
	if dc.req.Profile != nil {
		p = profile{ClientAuth: dc.req.Profile.ClientAuth, Body: dc.req.Profile.Body}
	}
	body := cmp.Or(dc.req.Body, p.Body)
	cached := "no"
	if dc.fake.Requests() == before {
		cached = "yes"
	}
	hasRefresh := "-"
	if tok.RefreshToken != "" {
		hasRefresh = "yes"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", dc.req.Provider, grantOf(dc.req), p.ClientAuth, body, prefix(tok.AccessToken),
		time.Duration(tok.ExpiresIn)*time.Second, hasRefresh, cached, dc.fake.Requests(), elapsed.Round(time.Microsecond))
	return nil
}

func grantOf(r abi.TokenRequest) string {
	if r.GrantType == "" {
		return abi.GrantClientCredentials
	}
	return r.GrantType
}

// prefix shows enough of a (fake) token to tell tokens apart, and no more.
func prefix(tok string) string {
	if len(tok) > 6 {
		return tok[:6] + "..."
	}
	return "..."
}
