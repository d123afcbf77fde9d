package host

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// TestAllowList: token URLs the host does not allow are refused with a typed error, and the fake
// behind them sees nothing.
func TestAllowList(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	redirect := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer redirect.Close()
	redirect.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, strings.Replace(fake.TokenURL(), "127.0.0.1", "localhost", 1), http.StatusTemporaryRedirect)
		return true
	})
	cfg := fake.Config()
	tests := []struct {
		name string
		url  string
		opts []Option
		want string
		// provider is nikohealth unless set: Pattern's hosts are per customer, so only its requests
		// reach the host's allow-list with a host outside it (the plugin binds the others' hosts).
		provider string
	}{
		// A refusal an option would lift names it, in Go and as the CLI's flag.
		{"loopback not enabled", fake.TokenURL(), nil, "loopback token hosts are not allowed; host.WithLoopback() (tokenwasm token -allow-loopback) allows them", ""},
		{"plain http elsewhere", "http://acme.nikohealth.com/token", nil, "https", ""},
		{"host not allowed", "https://evil.example/token", []Option{WithLoopback()}, `host "evil.example" is not an allowed token host; host.WithAllowedHosts("evil.example") (tokenwasm token -allow-host evil.example)`, "pattern"},
		{"host and port not allowed", "https://evil.example:8443/token", []Option{WithLoopback()}, `host.WithAllowedHosts("evil.example:8443") (tokenwasm token -allow-host evil.example:8443)`, "pattern"},
		{"redirect to another host", redirect.TokenURL(), []Option{WithLoopback()}, "redirect to another host", ""},
		{"ssh port of an allowed host", "https://acme.nikohealth.com:22/api/identity/connect/token", nil, `not an allowed token port; host.WithAllowedHosts("acme.nikohealth.com:22") (tokenwasm token -allow-host acme.nikohealth.com:22)`, ""},
		{"redis port of an allowed host", "https://acme.nikohealth.com:6379/api/identity/connect/token", nil, "not an allowed token port", ""},
		{"credentials in the URL", "https://user:pw@acme.nikohealth.com/api/identity/connect/token", nil, "", ""},
		{"credentials in a Pattern URL", "https://user:pw@api.pattern.example/api/auth/token", []Option{WithAllowedHosts("api.pattern.example")}, "", "pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(context.Background(), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			provider := cmp.Or(tt.provider, "nikohealth")
			_, err = c.Token(context.Background(), abi.TokenRequest{Provider: provider, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: tt.url})
			var ae *abi.Error
			if !errors.As(err, &ae) || ae.Kind != abi.KindPolicy || ae.Retryable || !strings.Contains(ae.Message, tt.want) {
				t.Fatalf("err = %v, want a policy error (not retryable) mentioning %q", err, tt.want)
			}
			if n := strings.Count(ae.Message, "refused by"); n > 1 { // the plugin's prefix, not the host's too
				t.Fatalf("message %q says it was refused %d times", ae.Message, n)
			}
			if n := c.Metrics().Snapshot()["retries"]; n != 0 {
				t.Fatalf("a policy refusal was retried %d times", n)
			}
			if strings.Contains(err.Error(), cfg.ClientSecret) {
				t.Fatal("error leaks the secret")
			}
		})
	}
	if n := fake.Requests(); n != 0 {
		t.Fatalf("the fake received %d requests", n)
	}
}

// TestAllowListPorts: an entry without a port allows 443 only, "host:port" that port only, and a
// wildcard its subdomains only.
func TestAllowListPorts(t *testing.T) {
	s, _ := newSender(nil, append(DefaultAllowedHosts(), "tokens.example:8443", "*.corp.example"), false, nil)
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"https://api.candescent.com/t", true},
		{"https://api.candescent.com:443/t", true},
		{"https://API.Candescent.com/t", true},
		{"https://api.candescent.com:22/t", false},
		{"https://api.candescent.com:6379/t", false},
		{"https://acme.nikohealth.com/t", true},
		{"https://nikohealth.com/t", false},
		{"https://acme.nikohealth.com.evil.example/t", false},
		{"https://tokens.example:8443/t", true},
		{"https://tokens.example/t", false},
		{"https://tokens.example:9443/t", false},
		{"https://a.corp.example/t", true},
		{"https://a.corp.example:8443/t", false},
		{"https://corp.example/t", false},
		{"http://api.candescent.com/t", false},
		{"https://127.0.0.1:6379/t", false},
	} {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.check(u); (err == nil) != tt.ok {
			t.Errorf("%s: %v, want allowed %v", tt.url, err, tt.ok)
		}
	}
}
