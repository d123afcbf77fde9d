package core

import (
	"strings"
	"testing"
)

// TestUnknownFieldsAreNamed: a misspelt or unknown field is invalid_request naming it, in the
// request and in a custom profile ("scopes" for "scope" got a token without its scope); the fields a
// host reads and the plugin ignores (fhir_base, a profile's name) stay allowed.
func TestUnknownFieldsAreNamed(t *testing.T) {
	const niko = `{"provider":"nikohealth","client_id":"c","client_secret":"s","domain":"acme"%s}`
	const custom = `{"provider":"custom","client_id":"c","client_secret":"s","token_url":"https://auth.example.com/t","profile":{"body":"form"%s}}`
	for _, tt := range []struct{ in, want string }{
		{strings.Replace(niko, "%s", `,"scopes":"external"`, 1), `unknown field \"scopes\"`},
		{strings.Replace(niko, "%s", `,"Scope":"external"`, 1), `unknown field \"Scope\"`},
		{strings.Replace(niko, "%s", `,"x\u0041":1`, 1), `unknown field \"xA\"`},
		{strings.Replace(niko, "%s", `,"`+strings.Repeat("k", 100)+`":1`, 1), `unknown field \"` + strings.Repeat("k", 64) + `...\"`},
		{strings.Replace(custom, "%s", `,"revocation_methods":"DELETE"`, 1), `profile: unknown field \"revocation_methods\"`},
		{strings.Replace(niko, "%s", `,"scope":"external"`, 1), ``},
		{strings.Replace(niko, "%s", `,"fhir_base":"https://ehr.example.org/fhir"`, 1), ``},
		{strings.Replace(custom, "%s", `,"name":"mine"`, 1), ``},
	} {
		got := string(Encode(nil, []byte(tt.in), nil))
		if tt.want == "" && strings.Contains(got, `"error"`) || tt.want != "" && !strings.Contains(got, `"message":"`+tt.want+`"`) {
			t.Errorf("%s\n  answered %s\n  want %q", tt.in, got, tt.want)
		}
	}
}
