package abi

import (
	"errors"
	"fmt"
	"testing"
)

// TestSentinels: every kind's error matches its sentinel, wrapped or not, and no other kind's; two
// provider errors are not equal by kind alone.
func TestSentinels(t *testing.T) {
	sentinels := []error{ErrInvalidRequest, ErrInvalidClient, ErrInvalidGrant, ErrUnauthorizedClient,
		ErrUnsupportedGrantType, ErrInvalidScope, ErrAccessDenied, ErrRateLimited, ErrUnsupportedMediaType,
		ErrServerError, ErrMalformedResponse, ErrTransport, ErrPolicy, ErrSigning, ErrSigningRequired}
	if len(sentinels) != len(Kinds()) {
		t.Fatalf("%d sentinels for %d kinds", len(sentinels), len(Kinds()))
	}
	for i, kind := range Kinds() {
		err := fmt.Errorf("fetch: %w", &Error{Kind: kind, Message: "m", Status: 400})
		for j, s := range sentinels {
			if got := errors.Is(err, s); got != (i == j) {
				t.Errorf("errors.Is(%s error, %v) = %v", kind, s, got)
			}
		}
	}
	a, b := &Error{Kind: KindInvalidClient, Message: "a"}, &Error{Kind: KindInvalidClient, Message: "b"}
	if errors.Is(a, b) {
		t.Error("two provider errors matched by kind")
	}
}
