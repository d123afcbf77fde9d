//go:build !wasip1

package main

import "testing"

// TestParseAnswerReadsFirstOfRepeatedMember: the filter reads a flow's answer with the plugin's rule
// (abi/ABI.md, "Shapes"): of a repeated member the first.
func TestParseAnswerReadsFirstOfRepeatedMember(t *testing.T) {
	a := parseAnswer([]byte(`{"token":{"access_token":"first","token_type":"Bearer","expires_at_ms":2000,"issued_at_ms":1000,` +
		`"access_token":"second","token_type":"mac","expires_at_ms":9000,"issued_at_ms":8000},"cached":true,"cached":false}`))
	if a.token != "first" || a.tokenType != "Bearer" || a.expiresAtMS != 2000 || a.issuedAtMS != 1000 || !a.cached {
		t.Fatalf("parseAnswer = %+v, want the first of each member", a)
	}
}
