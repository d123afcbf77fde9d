package core

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// TestHostRefusalKinds: a request the host refused by its policy is kind policy and not retryable;
// a transport failure stays retryable.
func TestHostRefusalKinds(t *testing.T) {
	tests := []struct {
		name      string
		response  string
		kind      string
		retryable bool
	}{
		{"policy refusal", `{"error":"host \"evil.example\" is not an allowed token host","policy":true}`, abi.KindPolicy, false},
		{"policy false", `{"error":"connection refused","policy":false}`, abi.KindTransport, true},
		{"no flag", `{"error":"connection refused"}`, abi.KindTransport, true},
		{"policy null", `{"error":"connection refused","policy":null}`, abi.KindTransport, true},
		{"policy not a boolean", `{"error":"x","policy":"yes"}`, abi.KindInvalidRequest, false},
		{"policy without error is a response", `{"status":200,"policy":true,"body":"{\"access_token\":\"t\"}"}`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"request":{"provider":"nikohealth","client_id":"c","client_secret":"niko-secret-1","domain":"acme"},"response":` + tt.response + `,"now_ms":1767225600000}`
			var res abi.Result
			if err := json.Unmarshal(Decode(nil, []byte(in), nil), &res); err != nil {
				t.Fatal(err)
			}
			if tt.kind == "" {
				if res.Token == nil {
					t.Fatalf("got %+v, want a token", res.Error)
				}
				return
			}
			if res.Error == nil || res.Error.Kind != tt.kind || res.Error.Retryable != tt.retryable || res.Error.Status != 0 {
				t.Fatalf("got %+v, want kind %s retryable %v without a status", res.Error, tt.kind, tt.retryable)
			}
		})
	}
}

// TestTokenPolicyRefusalNotCached: the token flow answers a policy refusal as is, and caches nothing
// (no gate, no token), so a fixed configuration works at once.
func TestTokenPolicyRefusalNotCached(t *testing.T) {
	h := newFakeHost(t, func(abi.HTTPRequest) abi.HTTPResponse {
		return abi.HTTPResponse{Error: "token URL must be https", Policy: true}
	})
	res := h.token(t, `{"provider":"nikohealth","client_id":"c","client_secret":"niko-secret-1","domain":"acme"}`)
	if res.Error == nil || res.Error.Kind != abi.KindPolicy || res.Error.Retryable {
		t.Fatalf("got %+v", res)
	}
	if len(h.cache) != 0 {
		t.Fatalf("cached %v", h.cache)
	}
}

// TestRetryAfterClamp: Retry-After is honoured up to one hour, as seconds or as an HTTP date.
func TestRetryAfterClamp(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   int64
	}{
		{"3599", 3599000},
		{"3600", 3600000},
		{"3601", 3600000},
		{"86400", 3600000},
		{"99999999999999999999", DefaultRetryAfterMS}, // not an int64: unreadable, the default
		{now.Add(24 * time.Hour).Format(httpDate), 3600000},
		{now.Add(30 * time.Minute).Format(httpDate), 1800000},
		{"0", 1000},
		{"", DefaultRetryAfterMS},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			r := &Request{profile: Lookup("candid")}
			resp := &Response{Status: 429, Headers: gjson.Parse(`{"Retry-After":` + mustJSON(tt.header) + `}`)}
			_, e := r.Decode(resp, now.UnixMilli())
			if e == nil || e.Kind != abi.KindRateLimited || e.RetryAfterMS != tt.want {
				t.Fatalf("Retry-After %q: got %+v, want retry_after_ms %d", tt.header, e, tt.want)
			}
		})
	}
}
