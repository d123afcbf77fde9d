package core

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// TestTokenHostBinding: a built-in provider's credentials go to its own hosts (and loopback) only; a
// token_url or domain that points them elsewhere is refused at encode with kind policy.
func TestTokenHostBinding(t *testing.T) {
	const allowed, refused = true, false
	tests := []struct {
		provider string
		url      string // token_url, or "domain:<d>"
		want     bool
	}{
		{"candid", "https://api.joincandidhealth.com/api/auth/v2/token", allowed},
		{"candid", "https://API.JoinCandidHealth.COM/api/auth/v2/token", allowed},
		{"candid", "https://api.joincandidhealth.com:443/api/auth/v2/token", allowed},
		{"candid", "https://api.joincandidhealth.com./api/auth/v2/token", allowed},
		{"candid", "https://api.candescent.com/digitalbanking/oauth2/v1/token", refused},
		{"candid", "https://acme.nikohealth.com/token", refused},
		{"candid", "https://api.joincandidhealth.com.evil.example/token", refused},
		{"candid", "https://api.joincandidhealth.com@evil.example/token", refused},
		{"candid", "https://evil.example/token?h=api.joincandidhealth.com", refused},
		{"candid", `https://evil.example\@api.joincandidhealth.com/token`, refused},
		{"candid", "https://api%2Ejoincandidhealth.com/token", refused},
		{"candid", "ftp://api.joincandidhealth.com/token", refused},
		{"candid", "api.joincandidhealth.com/token", refused},
		{"candid", "http://127.0.0.1:8080/api/auth/v2/token", allowed},
		{"candid", "http://localhost:8080/token", allowed},
		{"candid", "http://LOCALHOST/token", allowed},
		{"candid", "http://[::1]:8080/token", allowed},
		{"candid", "http://127.255.0.1/token", allowed},
		{"candid", "http://127.0.0.1.evil.example/token", refused},
		{"candid", "http://127.1/token", refused},
		{"candescent", "https://api.candescent.com/digitalbanking/oauth2/v1/token", allowed},
		{"candescent", "https://Api.Candescent.Com/x", allowed},
		{"candescent", "https://api.candescent.com.evil.example/token", refused},
		{"candescent", "https://api.candescent.com@evil.example/", refused},
		{"candescent", "https://api.joincandidhealth.com/api/auth/v2/token", refused},
		{"candescent", "https://sandbox.candescent.com/token", refused},
		{"candescent", "http://127.0.0.1:9/token", allowed},
		{"nikohealth", "https://acme.nikohealth.com/api/identity/connect/token", allowed},
		{"nikohealth", "https://ACME.NikoHealth.com/api/identity/connect/token", allowed},
		{"nikohealth", "https://a.b.nikohealth.com/token", allowed},
		{"nikohealth", "https://nikohealth.com/token", refused},
		{"nikohealth", "https://evilnikohealth.com/token", refused},
		{"nikohealth", "https://acme.nikohealth.com.evil.example/token", refused},
		{"nikohealth", "https://acme.nikohealth.com@evil.example/token", refused},
		{"nikohealth", "https://api.candescent.com/token", refused},
		{"nikohealth", "domain:acme", allowed},
		{"nikohealth", "http://[::1]/token", allowed},
		{"pattern", "https://pattern.customer.example/api/auth/token", allowed},
		{"pattern", "domain:pattern.customer.example", allowed},
		{"pattern", "domain:api.joincandidhealth.com", refused},
		{"pattern", "https://api.joincandidhealth.com/api/auth/v2/token", refused},
		{"pattern", "https://API.JOINCANDIDHEALTH.COM/api/auth/v2/token", refused},
		{"pattern", "https://api.candescent.com/token", refused},
		{"pattern", "https://acme.nikohealth.com/token", refused},
		{"pattern", "https://api.candescent.com.evil.example/token", allowed}, // not Candescent's: a customer's
		{"pattern", "https://user@api.candescent.com/token", refused},
		{"pattern", "http://127.0.0.1:8080/api/auth/token", allowed},
		{"custom", "https://api.joincandidhealth.com/api/auth/v2/token", allowed},
		{"custom", "https://idp.example/token", allowed},
	}
	for _, tt := range tests {
		t.Run(tt.provider+" "+tt.url, func(t *testing.T) {
			req := map[string]any{"provider": tt.provider, "client_id": "c", "client_secret": "secret-1", "institution_id": "i"}
			if d, ok := strings.CutPrefix(tt.url, "domain:"); ok {
				req["domain"] = d
			} else {
				req["token_url"] = tt.url
			}
			if tt.provider == "custom" {
				req["profile"] = map[string]any{}
			}
			in, _ := json.Marshal(req)
			var res abi.Result
			if err := json.Unmarshal(Encode(nil, in, nil), &res); err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.want && res.Request == nil:
				t.Fatalf("refused: %+v", res.Error)
			case !tt.want && (res.Error == nil || res.Error.Kind != abi.KindPolicy || res.Error.Retryable || res.Error.Status != 0):
				t.Fatalf("got %+v %+v, want a non-retryable policy error", res.Request, res.Error)
			case !tt.want && strings.Contains(res.Error.Message, "secret-1"):
				t.Fatalf("the message holds the secret: %s", res.Error.Message)
			}
		})
	}
}

// TestDescribeTokenHosts: describe shows each provider's token hosts.
func TestDescribeTokenHosts(t *testing.T) {
	var d struct {
		Providers []struct {
			Name       string   `json:"name"`
			TokenHosts []string `json:"token_hosts"`
		} `json:"providers"`
	}
	if err := json.Unmarshal(Describe(), &d); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"candid": "api.joincandidhealth.com", "pattern": "*", "candescent": "api.candescent.com", "nikohealth": "*.nikohealth.com", "smart": "*"}
	for _, p := range d.Providers {
		if got := strings.Join(p.TokenHosts, ","); got != want[p.Name] {
			t.Errorf("%s: token_hosts %q, want %q", p.Name, got, want[p.Name])
		}
	}
	if len(d.Providers) != len(want) {
		t.Fatalf("%d providers", len(d.Providers))
	}
}
