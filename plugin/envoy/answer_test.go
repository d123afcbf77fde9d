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

// TestParseAnswerReadsTheSchedule: a token answer's refresh_at_ms and stale_at_ms, the plugin's.
func TestParseAnswerReadsTheSchedule(t *testing.T) {
	a := parseAnswer([]byte(`{"token":{"access_token":"t","token_type":"Bearer","expires_at_ms":600000,"issued_at_ms":0},` +
		`"cached":false,"refresh_at_ms":400000,"stale_at_ms":540000}`))
	if a.refreshAtMS != 400000 || a.staleAtMS != 540000 {
		t.Fatalf("parseAnswer = %+v, want refresh_at_ms 400000 and stale_at_ms 540000", a)
	}
}
