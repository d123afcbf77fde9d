package core

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestRepeatedMemberFirstRead: a member repeated in an object is read as its first occurrence by
// every reader of the plugin (abi/ABI.md, "Shapes"): the token response, the HttpResponse, decode's
// and token_step's inputs, the TokenRequest, its params and its custom profile. Each case's later
// member would change the answer if it were read, or fail a check if it were checked.
func TestRepeatedMemberFirstRead(t *testing.T) {
	const now = 1767225600000
	req := `{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"}`
	resp := func(status, body string) string {
		return `{"status":` + status + `,"body":` + mustJSON(body) + `}`
	}
	decode := func(in string) string { return string(Decode(nil, []byte(in), nil)) }
	decodeBody := func(status, body string) string {
		return decode(`{"request":` + req + `,"response":` + resp(status, body) + `,"now_ms":1767225600000}`)
	}
	encode := func(in string) string { return string(Encode(nil, []byte(in), nil)) }
	for _, tc := range []struct {
		name string
		got  string
		path string // in the answer
		want string // its raw JSON
	}{
		{"token response: access_token", decodeBody("200", `{"access_token":"first","access_token":"second"}`),
			"token.access_token", `"first"`},
		{"token response: a later access_token is not checked", decodeBody("200", `{"access_token":"first","access_token":"a\nb"}`),
			"token.access_token", `"first"`},
		{"token response: expires_in", decodeBody("200", `{"access_token":"t","expires_in":600,"expires_in":60}`),
			"token.expires_in", `600`},
		{"token response: token_type", decodeBody("200", `{"access_token":"t","token_type":"Bearer","token_type":"mac"}`),
			"token.token_type", `"Bearer"`},
		{"token response: error", decodeBody("400", `{"error":"invalid_client","error":"temporarily_unavailable"}`),
			"error.kind", `"invalid_client"`},
		{"token response: an empty later error does not clear the first", decodeBody("200", `{"error":"invalid_grant","error":"","access_token":"t"}`),
			"error.kind", `"invalid_grant"`},
		{"HttpResponse: status", decode(`{"request":` + req + `,"response":{"status":200,"status":503,"body":"{\"access_token\":\"t\"}"},"now_ms":1}`),
			"token.access_token", `"t"`},
		{"HttpResponse: body", decode(`{"request":` + req + `,"response":{"status":200,"body":"{\"access_token\":\"first\"}","body":"{\"access_token\":\"second\"}"},"now_ms":1}`),
			"token.access_token", `"first"`},
		{"HttpResponse: error", decode(`{"request":` + req + `,"response":{"error":"first","error":7},"now_ms":1}`),
			"error.kind", `"transport"`},
		{"decode input: response", decode(`{"request":` + req + `,"response":` + resp("200", `{"access_token":"first"}`) + `,"response":` + resp("200", `{"access_token":"second"}`) + `,"now_ms":1}`),
			"token.access_token", `"first"`},
		{"decode input: now_ms", decode(`{"request":` + req + `,"response":` + resp("200", `{"access_token":"t","expires_in":60}`) + `,"now_ms":1000,"now_ms":5000}`),
			"token.expires_at_ms", `61000`},
		{"TokenRequest: provider", encode(`{"provider":"nikohealth","provider":"nope","client_id":"c","client_secret":"s","domain":"acme"}`),
			"request.url", `"https://acme.nikohealth.com/api/identity/connect/token"`},
		{"TokenRequest: a later client_id is not checked", encode(`{"provider":"nikohealth","client_id":"c","client_id":5,"client_secret":"s","domain":"acme"}`),
			"request.headers.Authorization", `"Basic Yzpz"`}, // c:s
		{"TokenRequest: params", encode(`{"provider":"nikohealth","client_id":"c","client_secret":"s","domain":"acme","params":{"x":"first","x":"second"}}`),
			"request.body", `"grant_type=client_credentials&x=first"`},
		{"custom profile: token_url", encode(`{"provider":"custom","client_id":"c","client_secret":"s","profile":{"token_url":"https://first.example/token","token_url":"https://second.example/token","client_auth":"body"}}`),
			"request.url", `"https://first.example/token"`},
		{"token_step input: request", string(TokenStep(nil, []byte(`{"request":`+req+`,"request":{"provider":"nope"}}`), func() int64 { return now })),
			"next.import", `"cache_get"`},
		{"token_step input: op", string(TokenStep(nil, []byte(`{"request":`+req+`,"op":"token","op":"bogus"}`), func() int64 { return now })),
			"next.import", `"cache_get"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gjson.Get(tc.got, tc.path).Raw; got != tc.want {
				t.Errorf("%s = %s, want %s\nanswer %s", tc.path, got, tc.want, tc.got)
			}
		})
	}
}

// TestMembersStopsWhenAllFound: once every name is found the rest of the object is not walked, so a
// megabyte after the token costs nothing; a repeat after that is never seen.
func TestMembersStopsWhenAllFound(t *testing.T) {
	obj := `{"a":1,"b":"x","a":2,"big":"` + strings.Repeat("y", 1<<20) + `","b":3}`
	var out [2]string
	Members(obj, []string{"a", "b"}, out[:])
	if out != [2]string{"1", `"x"`} {
		t.Fatalf("members = %q", out)
	}
	allocs := testing.AllocsPerRun(100, func() { Members(obj, []string{"b", "a"}, out[:]) })
	if allocs != 0 {
		t.Fatalf("members allocates %v times", allocs)
	}
}
