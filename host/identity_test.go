package host

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// TestEachIdentityFieldGetsItsOwnToken: through Runtime.Token against the fakes, for every identity
// field of plugin/core's field table (and of a profile), a request B that differs from a request A
// in that field alone never gets A's token: A's token is held in memory and cached first, then B
// asks. Sources are found through the source index and the source map, so a field the table
// wrongly called "per call" would hand B A's token here. Fields that never reach the provider
// (timeout_ms; assertion_jti, fixed only for replays; fhir_base, when the token URL it leads to is
// the same) may share a token, as the provider sees one request; the table makes them identity all
// the same, and B must still be served from a source of its own (its own source's count).
func TestEachIdentityFieldGetsItsOwnToken(t *testing.T) {
	// One fake answers every token request with a fresh token (the fields' validity is the plugin's
	// business, not the fake's): two requests the plugin sends alike get one cached token, any two it
	// sends differently two.
	f := providertest.NewPattern(providertest.Config{ClientID: "tenant", ClientSecret: "secret-a"})
	defer f.Close()
	var issued atomic.Int64
	f.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("tok-%d", issued.Add(1)),
			"token_type": "Bearer", "expires_in": 3600})
		return true
	})
	s1, s2 := newSMART(t), newSMART(t)
	rk, ek, _ := testKeys()

	cc := func() abi.TokenRequest {
		return abi.TokenRequest{Provider: "custom", GrantType: abi.GrantClientCredentials, ClientID: "tenant",
			ClientSecret: "secret-a", TokenURL: f.TokenURL(), Scope: "read", Profile: &abi.Profile{ClientAuth: "body"}}
	}
	grant := func(g string) func() abi.TokenRequest {
		return func() abi.TokenRequest {
			r := cc()
			r.GrantType = g
			switch g {
			case abi.GrantPassword:
				r.Username, r.Password = "alice", "pw-a"
			case abi.GrantAuthorizationCode:
				r.Code, r.RedirectURI, r.CodeVerifier = "code-a", "https://app.example/cb", "verifier-a-0123456789012345678901234567890123"
			case abi.GrantRefreshToken:
				r.RefreshToken = "rt-a"
			}
			return r
		}
	}
	candescent := func() abi.TokenRequest {
		return abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantClientCredentials, ClientID: "tenant",
			ClientSecret: "secret-a", TokenURL: f.TokenURL(), InstitutionID: "inst-a"}
	}
	domain := func() abi.TokenRequest { // a profile's token URL with {domain}, as pattern's and nikohealth's
		r := cc()
		r.TokenURL, r.Domain = "", f.URL()[len("http://"):]
		r.Profile.TokenURL = "http://{domain}" + providertest.PatternPath
		return r
	}
	smart := func() abi.TokenRequest { return smartRequest(s1, "rsa-1", "RS384") }
	profile := func(p func(*abi.Profile)) func(*abi.TokenRequest) {
		return func(r *abi.TokenRequest) { p(r.Profile) }
	}
	no := false
	type variant struct {
		base   func() abi.TokenRequest
		change func(*abi.TokenRequest)
		// mayShare: the field never reaches the provider, so B may get A's token from the cache.
		mayShare bool
	}
	variants := map[string]variant{
		"provider":       {candescent, func(r *abi.TokenRequest) { r.Provider = "nikohealth" }, false},
		"grant_type":     {grant(abi.GrantPassword), func(r *abi.TokenRequest) { r.GrantType = abi.GrantClientCredentials }, false},
		"client_id":      {cc, func(r *abi.TokenRequest) { r.ClientID = "other-tenant" }, false},
		"client_secret":  {cc, func(r *abi.TokenRequest) { r.ClientSecret = "secret-b" }, false},
		"token_url":      {cc, func(r *abi.TokenRequest) { r.TokenURL += "?tenant=b" }, false},
		"domain":         {domain, func(r *abi.TokenRequest) { r.Domain = "127.0.0.2" }, false},
		"scope":          {cc, func(r *abi.TokenRequest) { r.Scope = "write" }, false},
		"institution_id": {candescent, func(r *abi.TokenRequest) { r.InstitutionID = "inst-b" }, false},
		"username":       {grant(abi.GrantPassword), func(r *abi.TokenRequest) { r.Username = "bob" }, false},
		"password":       {grant(abi.GrantPassword), func(r *abi.TokenRequest) { r.Password = "pw-b" }, false},
		"code":           {grant(abi.GrantAuthorizationCode), func(r *abi.TokenRequest) { r.Code = "code-b" }, false},
		"redirect_uri":   {grant(abi.GrantAuthorizationCode), func(r *abi.TokenRequest) { r.RedirectURI = "https://app.example/other" }, false},
		"code_verifier":  {grant(abi.GrantAuthorizationCode), func(r *abi.TokenRequest) { r.CodeVerifier = "verifier-b-0123456789012345678901234567890123" }, false},
		"refresh_token":  {grant(abi.GrantRefreshToken), func(r *abi.TokenRequest) { r.RefreshToken = "rt-b" }, false},
		"body":           {cc, func(r *abi.TokenRequest) { r.Body = "json" }, false},
		"key_id":         {smart, func(r *abi.TokenRequest) { r.KeyID = "rsa-2" }, false},
		"assertion_alg":  {smart, func(r *abi.TokenRequest) { r.KeyID, r.AssertionAlg = "ec-1", "ES384" }, false},
		"assertion_jti":  {smart, func(r *abi.TokenRequest) { r.AssertionJTI = "jti-b" }, true},
		"params":         {cc, func(r *abi.TokenRequest) { r.Params = map[string]string{"audience": "b"} }, false},
		"headers":        {cc, func(r *abi.TokenRequest) { r.Headers = map[string]string{"X-Tenant": "b"} }, false},
		"profile":        {cc, profile(func(p *abi.Profile) { p.ClientAuth = "basic" }), false},
		"timeout_ms":     {cc, func(r *abi.TokenRequest) { r.TimeoutMS = 9000 }, true},
		"fhir_base":      {smart, func(r *abi.TokenRequest) { r.FHIRBase = s2.FHIRBase() }, false},
		// The profile's own identity fields.
		"profile.token_url":         {domain, profile(func(p *abi.Profile) { p.TokenURL += "?p=b" }), false},
		"profile.body":              {cc, profile(func(p *abi.Profile) { p.Body = "json" }), false},
		"profile.client_auth":       {cc, profile(func(p *abi.Profile) { p.ClientAuth = "basic_rfc6749" }), false},
		"profile.send_grant_type":   {cc, profile(func(p *abi.Profile) { p.SendGrantType = &no }), false},
		"profile.send_scope":        {cc, profile(func(p *abi.Profile) { p.SendScope = &no }), false},
		"profile.headers":           {cc, profile(func(p *abi.Profile) { p.Headers = map[string]string{"X-Tenant": "b"} }), false},
		"profile.expires_in_unit":   {cc, profile(func(p *abi.Profile) { p.ExpiresInUnit = "ms" }), true},
		"profile.grants":            {cc, profile(func(p *abi.Profile) { p.Grants = []string{abi.GrantClientCredentials} }), true},
		"profile.revocation_url":    {cc, profile(func(p *abi.Profile) { p.RevocationURL = f.URL() + "/revoke" }), true},
		"profile.revocation_method": {cc, profile(func(p *abi.Profile) { p.RevocationMethod = "DELETE" }), true},
		"profile.assertion_alg":     {cc, profile(func(p *abi.Profile) { p.AssertionAlg = "HS256" }), true}, // no assertion with client_auth body
		"profile.name":              {cc, profile(func(p *abi.Profile) { p.Name = "tenant-b" }), true},
	}
	// Every identity field of the table has a variant: a field added to it is tried here too.
	for prefix, table := range map[string][]core.Field{"": core.RequestFields(), "profile.": core.ProfileFields()} {
		for _, fd := range table {
			if _, ok := variants[prefix+fd.Name]; fd.Identity && !ok {
				t.Errorf("identity field %s%s has no variant here", prefix, fd.Name)
			}
		}
	}
	ctx := context.Background()
	var served, refused int
	for name, v := range variants {
		t.Run(name, func(t *testing.T) {
			c := newRuntime(t, WithSigner("rsa-1", &kmsSigner{inner: rk}), WithSigner("rsa-2", &kmsSigner{inner: rk}),
				WithSigner("ec-1", &kmsSigner{inner: ek}))
			a := v.base()
			ta, err := c.Token(ctx, a)
			if err != nil {
				t.Fatalf("A: %v", err) // the case must start from a token held, or it proves nothing
			}
			if again, err := c.Token(ctx, a); err != nil || again.AccessToken != ta.AccessToken {
				t.Fatalf("A again: %v, a new token: not held", err)
			}
			b := v.base()
			v.change(&b)
			if ja, jb := mustJSON(t, a), mustJSON(t, b); ja == jb {
				t.Fatal("the variant does not change the request")
			}
			tb, err := c.Token(ctx, b)
			switch {
			case err != nil:
				refused++ // B is refused (the plugin, policy, the provider): it gets no token, A's least of all
				t.Logf("%s: B refused (%s)", name, kindOf(err))
			case tb.AccessToken == ta.AccessToken && !v.mayShare:
				t.Fatalf("B, differing from A in %s alone, got A's token", name)
			default:
				served++
			}
			if again, err := c.Token(ctx, a); err != nil || again.AccessToken != ta.AccessToken {
				t.Fatalf("A after B: %v; B's request replaced A's token", err)
			}
		})
	}
	t.Logf("%d variants served a token of their own, %d refused", served, refused)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
