package core

import (
	"bytes"
	"fmt"
	"testing"
)

// TestProfileNullIsAbsent: every profile field given as null encodes as if it were left out, as
// ABI.md says of every field (a null field was invalid_request in the profile only).
func TestProfileNullIsAbsent(t *testing.T) {
	base := `{"provider":"custom","client_id":"id","client_secret":"s","token_url":"https://auth.example.com/token","profile":{%s}}`
	absent := Encode(nil, []byte(fmt.Sprintf(base, ``)), nil)
	for _, field := range []string{"token_url", "body", "client_auth", "send_grant_type", "send_scope", "expires_in_unit", "headers", "grants", "name"} {
		got := Encode(nil, []byte(fmt.Sprintf(base, `"`+field+`":null`)), nil)
		if !bytes.Equal(got, absent) {
			t.Errorf("profile.%s null: %s\nabsent: %s", field, got, absent)
		}
	}
	if got := Encode(nil, []byte(fmt.Sprintf(base, `"body":7`)), nil); !bytes.Contains(got, []byte(`"invalid_request"`)) {
		t.Errorf("a wrong type is still refused: %s", got)
	}
}
