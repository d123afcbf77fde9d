package host

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// cases returns one request per provider and grant against the fakes in set.
func cases(set *providertest.Set) map[string]abi.TokenRequest {
	c := func(f *providertest.Fake) providertest.Config { return f.Config() }
	cand, pat, desc, niko := c(set.Candid), c(set.Pattern), c(set.Candescent), c(set.NikoHealth)
	d := func(grant string) abi.TokenRequest {
		return abi.TokenRequest{Provider: "candescent", GrantType: grant, ClientID: desc.ClientID, ClientSecret: desc.ClientSecret,
			InstitutionID: desc.InstitutionID, TokenURL: set.Candescent.TokenURL()}
	}
	pw := d(abi.GrantPassword)
	pw.Username, pw.Password = desc.Username, desc.Password
	code := d(abi.GrantAuthorizationCode)
	code.Code, code.RedirectURI, code.CodeVerifier, code.Scope = desc.Code, desc.RedirectURI, desc.CodeVerifier, "offline_access"
	return map[string]abi.TokenRequest{
		"candid/json":                   {Provider: "candid", ClientID: cand.ClientID, ClientSecret: cand.ClientSecret, TokenURL: set.Candid.TokenURL()},
		"candid/form":                   {Provider: "candid", ClientID: cand.ClientID, ClientSecret: cand.ClientSecret, TokenURL: set.Candid.TokenURL(), Body: "form"},
		"pattern/client_credentials":    {Provider: "pattern", ClientID: pat.ClientID, ClientSecret: pat.ClientSecret, TokenURL: set.Pattern.TokenURL()},
		"candescent/client_credentials": d(abi.GrantClientCredentials),
		"candescent/password":           pw,
		"candescent/authorization_code": code,
		"nikohealth/client_credentials": {Provider: "nikohealth", ClientID: niko.ClientID, ClientSecret: niko.ClientSecret, TokenURL: set.NikoHealth.TokenURL(), Scope: "external"},
	}
}

func fakeOf(set *providertest.Set, provider string) *providertest.Fake {
	for _, f := range set.All() {
		if f.Name() == provider {
			return f
		}
	}
	return nil
}

// TestEveryProviderEndToEnd gets a token from every provider and grant through the real plugin in
// this host against the fakes, with each driver of the plugin's flow (the token export, and
// token_step one step per call), uses it on the fake's API, gets it again from the cache, and after
// invalidate a new one.
func TestEveryProviderEndToEnd(t *testing.T) {
	set := providertest.StartAll()
	defer set.Close()
	for _, driver := range []struct {
		name  string
		steps bool
	}{{"token", false}, {"token_step", true}} {
		t.Run(driver.name, func(t *testing.T) {
			forEachBuild(t, func(t *testing.T, c *Runtime) { endToEnd(t, c, set) }, WithLoopback(), withStepFlow(driver.steps))
		})
	}
}

func endToEnd(t *testing.T, c *Runtime, set *providertest.Set) {
	ctx := context.Background()
	for name, req := range cases(set) {
		fake := fakeOf(set, req.Provider)
		before := fake.Requests()
		tok, err := c.Token(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tok.TokenType != "Bearer" || tok.ExpiresIn < 60 || tok.AccessToken == "" {
			t.Fatalf("%s: token %+v", name, tok)
		}
		if got := fake.Requests() - before; got != 1 {
			t.Fatalf("%s: %d requests at the fake, want 1", name, got)
		}
		if status := callAPI(t, fake.APIURL(), tok.AccessToken); status != http.StatusOK {
			t.Fatalf("%s: API answered %d to the token", name, status)
		}
		again, err := c.Token(ctx, req)
		if err != nil || again.AccessToken != tok.AccessToken || fake.Requests()-before != 1 {
			t.Fatalf("%s: second call fetched again (%d requests) or differs: %v", name, fake.Requests()-before, err)
		}
		if err := c.Invalidate(ctx, req); err != nil {
			t.Fatalf("%s: invalidate: %v", name, err)
		}
		fresh, err := c.Token(ctx, req)
		if err != nil || fresh.AccessToken == tok.AccessToken || fake.Requests()-before != 2 {
			t.Fatalf("%s: after invalidate: %d requests, %v", name, fake.Requests()-before, err)
		}
	}
}

// TestUnitsNormalized checks each provider's expiry in seconds: Candid's JWT exp (5 h) wins over its
// expires_in (86400), Pattern's milliseconds, Candescent's string, NikoHealth's seconds.
func TestUnitsNormalized(t *testing.T) {
	set := providertest.StartAll()
	defer set.Close()
	want := map[string]int64{"candid/json": 5 * 3600, "pattern/client_credentials": 3600, "candescent/client_credentials": 900, "nikohealth/client_credentials": 1200}
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		all := cases(set)
		for name, secs := range want {
			tok, err := c.Token(context.Background(), all[name])
			if err != nil {
				t.Fatal(err)
			}
			if tok.ExpiresIn < secs-5 || tok.ExpiresIn > secs {
				t.Errorf("%s: expires_in %d, want about %d", name, tok.ExpiresIn, secs)
			}
		}
	}, WithLoopback())
}

func TestRefreshTokenGrant(t *testing.T) {
	set := providertest.StartAll()
	defer set.Close()
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		ctx := context.Background()
		pw := cases(set)["candescent/password"]
		tok, err := c.Token(ctx, pw)
		if err != nil || tok.RefreshToken == "" {
			t.Fatalf("password grant: %+v %v", tok, err)
		}
		rt := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: pw.ClientID,
			ClientSecret: pw.ClientSecret, RefreshToken: tok.RefreshToken, TokenURL: pw.TokenURL}
		next, err := c.Token(ctx, rt)
		if err != nil || next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken || next.AccessToken == tok.AccessToken {
			t.Fatalf("refresh grant: %+v %v", next, err)
		}
		// The source follows the rotation: forcing the same request again sends the newest refresh
		// token, and succeeds.
		rt.Force = true
		if _, err := c.Token(ctx, rt); err != nil {
			t.Fatalf("forced refresh after rotation: %v", err)
		}
		// Another client holding the rotated-away refresh token gets invalid_grant, with no secret in it.
		other, err := New(ctx, WithLoopback())
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close(ctx)
		_, err = other.Token(ctx, rt)
		var ae *abi.Error
		if !errors.As(err, &ae) || ae.Kind != abi.KindInvalidGrant || strings.Contains(err.Error()+ae.Description, tok.RefreshToken) {
			t.Fatalf("reused refresh token: %v", err)
		}
		distinct, missing := set.Candescent.TransactionIDs()
		if missing != 0 || distinct != set.Candescent.Requests() {
			t.Fatalf("transactionIds: %d distinct, %d missing, %d requests", distinct, missing, set.Candescent.Requests())
		}
	}, WithLoopback())
}

// TestStampede: 200 goroutines asking a cold cache for the same credentials cause one request.
func TestStampede(t *testing.T) {
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
		defer fake.Close()
		req := abi.TokenRequest{Provider: "nikohealth", ClientID: fake.Config().ClientID, ClientSecret: fake.Config().ClientSecret, TokenURL: fake.TokenURL()}
		var wg sync.WaitGroup
		tokens := make([]string, 200)
		errs := make([]error, 200)
		start := make(chan struct{})
		for i := range tokens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tok, err := c.Token(context.Background(), req)
				errs[i] = err
				if err == nil {
					tokens[i] = tok.AccessToken
				}
			}()
		}
		close(start)
		wg.Wait()
		for i := range tokens {
			if errs[i] != nil || tokens[i] != tokens[0] {
				t.Fatalf("caller %d: %q %v", i, tokens[i], errs[i])
			}
		}
		if n := fake.Requests(); n != 1 {
			t.Fatalf("%d requests at the fake, want 1", n)
		}
	}, WithLoopback())
}

// TestTransportRetriesOnce401: a revoked token makes the API answer 401; the Transport invalidates
// it, gets one new token and retries once.
func TestTransportRetriesOnce401(t *testing.T) {
	forEachBuild(t, func(t *testing.T, c *Runtime) {
		fake := providertest.NewPattern(providertest.DefaultConfig("pattern"))
		defer fake.Close()
		req := abi.TokenRequest{Provider: "pattern", ClientID: fake.Config().ClientID, ClientSecret: fake.Config().ClientSecret, TokenURL: fake.TokenURL()}
		hc := &http.Client{Transport: c.Transport(nil, req)}
		get := func() int {
			resp, err := hc.Post(fake.APIURL(), "application/json", strings.NewReader(`{"q":1}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode
		}
		if s := get(); s != 200 || fake.Requests() != 1 || fake.APICalls() != 1 {
			t.Fatalf("first: %d, %d token requests, %d API calls", s, fake.Requests(), fake.APICalls())
		}
		fake.RevokeAll()
		if s := get(); s != 200 || fake.Requests() != 2 || fake.APICalls() != 3 {
			t.Fatalf("after revoke: %d, %d token requests (want 2), %d API calls (want 3)", s, fake.Requests(), fake.APICalls())
		}
		// A 401 to the token fetched because of a 401 moments ago is returned as is: no new fetch.
		fake.RefuseAPI(true)
		if s := get(); s != 401 || fake.Requests() != 2 || fake.APICalls() != 4 {
			t.Fatalf("persistent 401: %d, %d token requests (want 2), %d API calls (want 4)", s, fake.Requests(), fake.APICalls())
		}
	}, WithLoopback())
}

func callAPI(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
