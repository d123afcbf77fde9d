// Package gosdkwitness holds the Go host to the official Extism go-sdk: every conformance vector runs
// under go-sdk and under the host's own kernel (host/internal/extism) and must answer the same bytes,
// and BenchmarkCall/go-sdk measures go-sdk's side of the host's call benchmark. It is a module of its
// own so that go-sdk and its telemetry dependencies stay out of the host module; `make test-witness`
// runs it.
package gosdkwitness
