package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// echoTokenServer answers every form token request with a token naming the client, secret, scope
// and every parameter it was sent, so a caller can check the token was issued for its own request.
func echoTokenServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		tok := fmt.Sprintf("%s|%s|%s|%s|%s", r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"),
			r.PostForm.Get("scope"), r.PostForm.Get("tenant"), r.Header.Get("X-Tenant"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestTokenIndexConcurrentTenants: many tenants sharing one client id and differing in one field
// each (secret, scope, a param, a header), asked for concurrently by callers that reuse and change
// their maps between calls, while sources are evicted underneath: every token is the caller's own.
func TestTokenIndexConcurrentTenants(t *testing.T) {
	srv := echoTokenServer(t)
	c, err := New(context.Background(), WithLoopback(), WithMaxInstances(4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	profile := &abi.Profile{Body: "form", ClientAuth: "body"}
	const tenants = 24
	want := func(i int) (abi.TokenRequest, string) {
		secret, scope, param, header := "s", "", "", ""
		switch i % 4 {
		case 0:
			secret = fmt.Sprint("s", i)
		case 1:
			scope = fmt.Sprint("sc", i)
		case 2:
			param = fmt.Sprint("p", i)
		case 3:
			header = fmt.Sprint("h", i)
		}
		req := abi.TokenRequest{Provider: "custom", ClientID: "shared-id", ClientSecret: secret, Scope: scope,
			TokenURL: srv.URL + "/token", Profile: profile,
			Params: map[string]string{"tenant": param}, Headers: map[string]string{"X-Tenant": header}}
		return req, fmt.Sprintf("shared-id|%s|%s|%s|%s", secret, scope, param, header)
	}
	stop := make(chan struct{})
	var evictor sync.WaitGroup
	evictor.Add(1)
	go func() { // drops sources at random, as a full map does
		defer evictor.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.sources.mu.Lock()
			for k := range c.sources.m {
				if rand.IntN(3) == 0 {
					c.sources.drop(k)
				}
				break
			}
			c.sources.mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			params, headers := map[string]string{}, map[string]string{} // reused across tenants
			for n := range 300 {
				i := (g*7 + n) % tenants
				req, tok := want(i)
				for k, v := range req.Params {
					params[k] = v
				}
				for k, v := range req.Headers {
					headers[k] = v
				}
				req.Params, req.Headers = params, headers
				got, err := c.Token(context.Background(), req)
				if err != nil {
					errs <- err
					return
				}
				if got.AccessToken != tok {
					errs <- fmt.Errorf("tenant %d got %q, want %q", i, got.AccessToken, tok)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	evictor.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestObservedLabelsAreBounded: what an Observer (and so the OTel adapter's attributes) and the
// logs see of a request is a fixed set of labels: a grant type the caller made up (or filled with a
// secret by mistake) is "other", not a new label per value; an error kind the plugin does not list
// is never counted as a success.
func TestObservedLabelsAreBounded(t *testing.T) {
	rec := &recorder{}
	var logs bytes.Buffer
	ctx := context.Background()
	c, err := New(ctx, WithLoopback(), WithObserver(rec),
		WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for i := range 3 {
		req := abi.TokenRequest{Provider: "nikohealth", ClientID: "id", ClientSecret: "s", Domain: "acme",
			GrantType: fmt.Sprint("CANARY-grant-", i)}
		if _, err := c.Token(ctx, req); !errors.Is(err, abi.ErrInvalidRequest) && !errors.Is(err, abi.ErrUnsupportedGrantType) {
			t.Fatalf("made-up grant: %v", err)
		}
	}
	rec.mu.Lock()
	seen := append(append([]Fetch(nil), rec.fetches...), rec.attempts...)
	rec.mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("nothing observed: the test is not testing")
	}
	for _, f := range seen {
		if f.Grant != "other" {
			t.Errorf("grant label %q, want other", f.Grant)
		}
	}
	if strings.Contains(logs.String(), "CANARY-grant") {
		t.Errorf("a made-up grant type reached the logs as a label: %s", logs.String())
	}

	m := newMetrics()
	m.fetch(Fetch{Provider: "candid", Kind: "not_a_kind"})
	m.attempt(Fetch{Provider: "candid", Kind: "not_a_kind"})
	if s := m.Snapshot(); s["calls.candid.ok"] != 0 || s["attempts.candid.ok"] != 0 {
		t.Errorf("a failure of an unlisted kind counted as ok: %v", s)
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

// TestExtraAnswersAsOAuth2Does: a caller moving from x/oauth2 type-asserts Extra's values as x/oauth2
// gives them for a JSON answer (numbers are float64, strings string): the same fake, asked by both,
// answers each key with a value of the same type.
func TestExtraAnswersAsOAuth2Does(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	ctx := context.Background()
	c, err := New(ctx, WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	fc := fake.Config()
	ours, err := (&Config{Provider: NikoHealth, ClientID: fc.ClientID, ClientSecret: fc.ClientSecret, TokenURL: fake.TokenURL(),
		Scopes: []string{"external"}, Host: c}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := (&clientcredentials.Config{ClientID: fc.ClientID, ClientSecret: fc.ClientSecret, TokenURL: fake.TokenURL(),
		Scopes: []string{"external"}, AuthStyle: oauth2.AuthStyleInHeader}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"expires_in", "scope", "token_type"} {
		if got, want := reflect.TypeOf(ours.Extra(key)), reflect.TypeOf(peer.Extra(key)); got != want {
			t.Errorf("Extra(%q) is a %v, x/oauth2's a %v", key, got, want)
		}
	}
}
