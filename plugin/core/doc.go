// Package core is the tokenwasm token flow, written once: what every host runs, compiled into the
// Extism plugin (../main.go, with TinyGo or Go for wasip1), into the Envoy filter (../envoy), and
// natively in tests. It does no I/O of its own: it parses a TokenRequest, encodes the provider's
// token request, decodes the answer, and asks its host for every read and write of the outside
// world, in the JSON shapes of abi/ABI.md.
//
// Where things live:
//
//   - profile.go: the built-in providers, one row each (Providers); a provider differs by its row,
//     never by a code path.
//   - fields.go: the TokenRequest's fields, once (RequestFields): type, secret, credential set or one
//     call's option; the parser, redaction and the hosts' credential-set keys read it.
//   - request.go: the TokenRequest parser; encode.go and decode.go: the provider's HTTP request and
//     its answer; assertion.go: client assertions (RFC 7523); hosts.go: the token hosts a provider's
//     credentials may go to; redact.go: what of an answer may be repeated in an error; jsonw.go and
//     rawjson.go: the JSON writer and reader the flow uses instead of reflection.
//   - step.go: the flow itself, a step function (Flow, Action): cache lookup, the 429 gate, the fleet
//     lock, signing, the fetch, storing, a one-time grant's lineage, the 401 window; revoke.go its
//     revoke op; transitions.go: the flow's transitions, the one table Step and resume both read
//     (abi/ABI.md renders it).
//   - flow.go: the cache keys and the schedule (RefreshAtMS, StaleAtMS), and the drivers that run the
//     flow with the imports called inline (Token, Invalidate).
//   - exports.go: the other exports (Describe, Encode, Decode); memo.go: the last request prepared,
//     kept across calls (Memo).
//
// How hosts drive it: a host that can block inside an import (the Go host's wazero, any Extism
// SDK) calls the token export, which runs the flow with Imports called inline (Token). A host that
// cannot (proxy-wasm callbacks, JavaScript's fetch) calls token_step (TokenStep) once per step: each
// answer names the next import and its input, with a sealed state the host sends back with the
// import's answer; the Envoy filter steps a Flow from NewFlow the same way, without the JSON round
// trip. Both drivers run the same steps, so given the same answers they ask for the same imports in
// the same order; testdata/flow holds the vectors every host is held to.
package core
