package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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

// demoCases lists every provider and grant, with the fakes' default credentials.
func demoCases(set *providertest.Set) []demoCase {
	cfg := func(f *providertest.Fake) providertest.Config { return f.Config() }
	cand, pat, desc, niko := cfg(set.Candid), cfg(set.Pattern), cfg(set.Candescent), cfg(set.NikoHealth)
	descReq := func(grant string) abi.TokenRequest {
		return abi.TokenRequest{Provider: "candescent", GrantType: grant, ClientID: desc.ClientID,
			ClientSecret: desc.ClientSecret, InstitutionID: desc.InstitutionID, TokenURL: set.Candescent.TokenURL()}
	}
	pw := descReq(abi.GrantPassword)
	pw.Username, pw.Password = desc.Username, desc.Password
	code := descReq(abi.GrantAuthorizationCode)
	code.Code, code.RedirectURI, code.CodeVerifier, code.Scope = desc.Code, desc.RedirectURI, desc.CodeVerifier, "openid offline_access"
	return []demoCase{
		{set.Candid, abi.TokenRequest{Provider: "candid", ClientID: cand.ClientID, ClientSecret: cand.ClientSecret, TokenURL: set.Candid.TokenURL()}},
		{set.Candid, abi.TokenRequest{Provider: "candid", ClientID: cand.ClientID, ClientSecret: cand.ClientSecret, TokenURL: set.Candid.TokenURL(), Body: "form"}},
		{set.Pattern, abi.TokenRequest{Provider: "pattern", ClientID: pat.ClientID, ClientSecret: pat.ClientSecret, TokenURL: set.Pattern.TokenURL()}},
		{set.Candescent, descReq(abi.GrantClientCredentials)},
		{set.Candescent, pw},
		{set.Candescent, code},
		{set.NikoHealth, abi.TokenRequest{Provider: "nikohealth", ClientID: niko.ClientID, ClientSecret: niko.ClientSecret, TokenURL: set.NikoHealth.TokenURL(), Scope: "external"}},
	}
}

func runDemo(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	redisURL := fs.String("redis", "", "also show two processes sharing one token through Redis at this URL")
	if err := parse(fs, args); err != nil {
		return err
	}
	set := providertest.StartAll()
	defer set.Close()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		return err
	}
	defer c.Close(ctx)

	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tGRANT\tBODY\tTOKEN\tEXPIRES IN\tREFRESH TOKEN\tCACHED\tPROVIDER REQUESTS\tLATENCY")
	cases := demoCases(set)
	var refresh abi.TokenRequest
	for round := 0; round < 2; round++ {
		for _, dc := range cases {
			if err := demoRow(ctx, tw, c, dc, round == 1, &refresh); err != nil {
				return err
			}
		}
	}
	// The refresh_token grant with the refresh token the password grant returned.
	if refresh.RefreshToken != "" {
		if err := demoRow(ctx, tw, c, demoCase{set.Candescent, refresh}, false, nil); err != nil {
			return err
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nplugin: %d KB TinyGo wasm; every token above came through it (encode, http_send, decode, cache).\n", len(host.Plugin)/1024)
	if *redisURL != "" {
		fmt.Fprintln(w)
		return runFleetDemo(ctx, w, *redisURL)
	}
	return nil
}

func demoRow(ctx context.Context, tw io.Writer, c *host.Client, dc demoCase, second bool, refresh *abi.TokenRequest) error {
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
	body := dc.req.Body
	if body == "" {
		body = "default"
	}
	cached := "no"
	if dc.fake.Requests() == before {
		cached = "yes"
	}
	hasRefresh := "-"
	if tok.RefreshToken != "" {
		hasRefresh = "yes"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", dc.req.Provider, grantOf(dc.req), body, prefix(tok.AccessToken),
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
