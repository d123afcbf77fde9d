package abi

// Kinds returns every error kind, RFC 6749's first: the one list hosts, metrics and the JSON Schema
// (schema/error.json, checked by a test) follow. It returns a new slice each call: the contract
// exports no mutable variable, so no caller can change the list another package reads.
func Kinds() []string { return append([]string(nil), kinds...) }

var kinds = []string{
	KindInvalidRequest, KindInvalidClient, KindInvalidGrant, KindUnauthorizedClient,
	KindUnsupportedGrantType, KindInvalidScope, KindAccessDenied, KindRateLimited,
	KindUnsupportedMediaType, KindServerError, KindMalformedResponse, KindTransport, KindPolicy,
	KindSigning, KindSigningRequired,
}

// Sentinels, one per kind: errors.Is(err, ErrRateLimited) reports whether err is (or wraps) an
// *Error of that kind. errors.As gives the *Error itself, with its status and retry_after_ms.
const (
	ErrInvalidRequest       KindError = KindInvalidRequest
	ErrInvalidClient        KindError = KindInvalidClient
	ErrInvalidGrant         KindError = KindInvalidGrant
	ErrUnauthorizedClient   KindError = KindUnauthorizedClient
	ErrUnsupportedGrantType KindError = KindUnsupportedGrantType
	ErrInvalidScope         KindError = KindInvalidScope
	ErrAccessDenied         KindError = KindAccessDenied
	ErrRateLimited          KindError = KindRateLimited
	ErrUnsupportedMediaType KindError = KindUnsupportedMediaType
	ErrServerError          KindError = KindServerError
	ErrMalformedResponse    KindError = KindMalformedResponse
	ErrTransport            KindError = KindTransport
	ErrPolicy               KindError = KindPolicy
	ErrSigning              KindError = KindSigning
	ErrSigningRequired      KindError = KindSigningRequired
)

// KindError is an error kind as a sentinel error: the target of errors.Is, never returned itself.
type KindError string

func (k KindError) Error() string { return "tokenwasm: " + string(k) }

// Is makes errors.Is(err, ErrX) match every *Error of X's kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(KindError)
	return ok && string(k) == e.Kind
}
