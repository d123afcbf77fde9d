// Package rawcall lets the go-sdk witness (host/gosdkwitness, a module of its own so that go-sdk
// stays out of the host module's dependencies) call the plugin's exports through the Go host byte for
// byte: on one pooled instance of a runtime, with the runtime's own imports. Package host sets Open;
// nothing else uses it.
package rawcall

import "context"

// Call runs one export on the instance Open took and returns the plugin's answer as it is.
type Call func(ctx context.Context, export string, input []byte) ([]byte, error)

// Open starts a runtime with opts (host.Option values), takes one of its pooled instances and
// returns a Call on it, and release, which puts the instance back and closes the runtime.
var Open func(ctx context.Context, opts ...any) (call Call, release func(), err error)
