package core

import "github.com/tokenwasm/tokenwasm/abi"

// Memo remembers the last request an instance parsed and encoded, by its exact input bytes. Hosts
// send the same request again and again (a token source at every refresh, a host that calls encode
// and then decode), and parsing, encoding and hashing it is a large part of a call's cost in wasm.
// A hit renews the per-request id, so no two requests ever share one.
//
// A Memo is not safe for concurrent use: the plugin keeps one per instance, which runs one call at a
// time. A nil *Memo remembers nothing.
type Memo struct {
	input string
	r     *Request
	enc   *HTTPRequest
	key   string // computed on first use: encode and decode need no cache key
	// answer is encode's answer for enc, kept when the request has no per-request id.
	answer []byte
	// scratch holds the response body being decoded when it had to be unescaped: one buffer reused
	// by every call of the instance rather than a new one per call (see rawjson.go). It is about the
	// request being served only during that call, never after.
	scratch []byte
	// step is what token_step reuses from call to call (step.go): its flow and its answer's buffer.
	// Every call overwrites them whole before it answers; nothing in them outlives the call.
	step *stepScratch
}

// memoMaxInput bounds what a memo holds: a request is a few hundred bytes, and an instance should not
// keep megabytes alive between calls for a pathological one.
const memoMaxInput = 64 << 10

// prepare returns the request in input parsed and encoded.
func (m *Memo) prepare(input []byte) (*Request, *HTTPRequest, *abi.Error) {
	if len(input) > MaxRequestBytes {
		return nil, nil, requestTooLarge()
	}
	if m != nil && m.r != nil && equal(m.input, input) {
		if m.enc.requestID >= 0 {
			m.enc.Headers[m.enc.requestID].value = newRequestID()
		}
		return m.r, m.enc, nil
	}
	r, enc, err := parseAndEncode(input)
	if err != nil {
		return nil, nil, err
	}
	if m != nil {
		// Whatever the memo held describes another request now: keep this one, or nothing.
		*m = Memo{scratch: m.scratch, step: m.step}
		if len(input) <= memoMaxInput {
			*m = Memo{input: string(input), r: r, enc: enc, scratch: m.scratch, step: m.step}
		}
	}
	return r, enc, nil
}

// Prepare parses and encodes a request and names its cache entry. The key is always that of the
// request in input: it comes from the memo only when the memo holds this very request.
func (m *Memo) Prepare(input []byte) (*Request, *HTTPRequest, string, *abi.Error) {
	r, enc, err := m.prepare(input)
	if err != nil {
		return nil, nil, "", err
	}
	if m == nil || m.r != r {
		return r, enc, CacheKey(r.profile.Name, enc), nil
	}
	if m.key == "" {
		m.key = CacheKey(r.profile.Name, enc)
	}
	return r, enc, m.key, nil
}

// encodeAnswer returns encode's answer for enc: {"request": HttpRequest}.
func (m *Memo) encodeAnswer(enc *HTTPRequest) []byte {
	remembered := m != nil && m.enc == enc
	if remembered && m.answer != nil && enc.jwt == nil {
		return m.answer
	}
	o := newObject(make([]byte, 0, 16+enc.jsonSize()))
	o.key("request")
	o.b = enc.JSON(o.b)
	answer := o.end()
	if remembered && enc.requestID < 0 && enc.jwt == nil {
		m.answer = answer
	}
	return answer
}

// requestJSON returns enc as the HttpRequest JSON that http_send takes: the inside of encode's answer.
func (m *Memo) requestJSON(enc *HTTPRequest) []byte {
	answer := m.encodeAnswer(enc)
	return answer[len(`{"request":`) : len(answer)-1]
}

// request returns the request whose JSON is raw, if it is the one remembered.
func (m *Memo) request(raw string) *Request {
	if m != nil && m.r != nil && raw == m.input {
		return m.r
	}
	return nil
}

// equal reports whether s and b hold the same bytes. TinyGo copies b to compare it as a string, and
// the input can be megabytes.
func equal(s string, b []byte) bool {
	if len(s) != len(b) {
		return false
	}
	for i := range len(b) {
		if s[i] != b[i] {
			return false
		}
	}
	return true
}

// scratchBuf returns the memo's body buffer, or nil for a nil memo (then bodies get their own).
func (m *Memo) scratchBuf() *[]byte {
	if m == nil {
		return nil
	}
	return &m.scratch
}
