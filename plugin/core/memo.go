package core

import (
	"hash"
	"strings"

	"github.com/tokenwasm/tokenwasm/abi"
)

// Memo remembers the last request an instance parsed and encoded, by its exact input bytes. Hosts
// send the same request again and again (a token source at every refresh, a host that calls encode
// and then decode, every step of a token_step flow), and parsing, encoding and hashing it is a large
// part of a call's cost in wasm. A hit renews the per-request id, so no two requests ever share one.
// Every request within MaxRequestBytes is remembered.
//
// A Memo is not safe for concurrent use: the plugin keeps one per instance, which runs one call at a
// time. A nil *Memo remembers nothing.
type Memo struct {
	// Reuse lets the memo keep one storage for the request it remembers (requestBufs) and overwrite
	// it when another request comes, so an instance allocates nothing in proportion to a request
	// once its buffers have grown. Set it only when nothing parsed from a request outlives the call
	// that parsed it (the plugin's exports). Without it every request gets storage of its own, which
	// a flow that waits across calls while other requests start needs (the Envoy filter).
	Reuse bool

	input string
	r     *Request
	enc   *HTTPRequest
	key   string // computed on first use: encode and decode need no cache key
	// answer is encode's answer for enc, kept when the request has no per-request id.
	answer []byte
	// bufs is the remembered request's storage (with Reuse); again where it is encoded again
	// (Request.Encode); tmp the storage of a request decode parses without remembering it.
	bufs, again, tmp *requestBufs
	// scratch holds the response body being decoded when it had to be unescaped: one buffer reused
	// by every call of the instance rather than a new one per call (see rawjson.go). It is about the
	// request being served only during that call, never after.
	scratch []byte
	// step is what token_step reuses from call to call (step.go): its flow and its answer's buffer.
	// Every call overwrites them whole before it answers; nothing in them outlives the call.
	step *stepScratch
	// seal is the HMAC of enc's token_step states (Flow.sealMAC): no secret of its own, derived
	// from enc's identity, and dropped with enc.
	seal hash.Hash
	// sealed is the last state sealed for enc, with its seal (Flow.appendSeal): dropped with enc.
	sealed sealedState
}

// requestBufs is the storage of one parsed and encoded request: what is parsed and encoded from
// input aliases it. The request's strings are substrings of input or unescaped into strs; its lists
// are params, headers and profileHeaders; its encoded body, headers and Authorization value are
// body, hdrs and auth; encode's answer is answer; a client assertion is made in claims and jws.
// Reused (Memo.Reuse), each buffer grows, by doubling, to the largest request seen and no further:
// TinyGo's collector may never free a large buffer dropped (rawjson.go), so a buffer made anew for
// each request of a few hundred KiB would add up.
type requestBufs struct {
	input                                 []byte
	strs                                  []byte
	strsMax                               int // the most strs needs: the length of the JSON parsed
	params, headers, profileHeaders, hdrs []header
	body, auth, answer                    []byte
	claims, jws                           []byte // a client assertion's claims, and the assertion
}

// startParse empties strs for the strings of a request of n bytes.
func (b *requestBufs) startParse(n int) { b.strs, b.strsMax = b.strs[:0], n }

// str returns the content of raw, a JSON string with its quotes, as gjson's Str would: a substring
// of raw without escapes, else unescaped into strs.
func (b *requestBufs) str(raw string) string {
	s := raw[1 : len(raw)-1]
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	if cap(b.strs)-len(b.strs) < len(s) { // room for every string of the request: unescaped, none is longer
		b.strs = grow(b.strs, len(b.strs)+max(len(s), b.strsMax))
	}
	start := len(b.strs)
	b.strs = appendUnescaped(b.strs, s, len(s))
	return view(b.strs[start:])
}

// grow returns b with room for n bytes in all, its contents kept: a new array at least twice as large
// when it has less, so a buffer that follows growing requests is replaced a few times, not each time.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b
	}
	return append(make([]byte, 0, max(n, 2*cap(b))), b...)
}

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
	b := new(requestBufs)
	if m != nil {
		// Whatever the memo held describes another request now, and with Reuse its storage is about
		// to be overwritten: keep this one, or nothing.
		if m.Reuse {
			if m.bufs == nil {
				m.bufs = new(requestBufs)
			}
			b = m.bufs
		}
		*m = Memo{Reuse: m.Reuse, bufs: m.bufs, again: m.again, tmp: m.tmp, scratch: m.scratch, step: m.step,
			sealed: sealedState{body: m.sealed.body[:0]}}
	}
	b.input = append(grow(b.input[:0], len(input)), input...)
	r, enc, err := parseAndEncode(b)
	if err != nil {
		return nil, nil, err
	}
	if m != nil {
		m.input, m.r, m.enc = view(b.input), r, enc
		if m.Reuse {
			if m.again == nil {
				m.again = new(requestBufs)
			}
			r.encodeBufs = m.again
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

// encodeAnswer returns encode's answer for enc: {"request": HttpRequest}. With Reuse, for the request
// the memo remembers or its encoding again, it is written in that storage: valid until the next call.
func (m *Memo) encodeAnswer(enc *HTTPRequest) []byte {
	remembered := m != nil && m.enc == enc
	if remembered && m.answer != nil && enc.jwt == nil {
		return m.answer
	}
	n := 16 + enc.jsonSize()
	reused := m != nil && m.Reuse && enc.bufs != nil && (enc.bufs == m.bufs || enc.bufs == m.again)
	var b []byte
	if reused {
		b = grow(enc.bufs.answer[:0], n)
	} else {
		b = make([]byte, 0, n)
	}
	o := newObject(b)
	o.key("request")
	o.b = enc.JSON(o.b)
	answer := o.end()
	if reused {
		enc.bufs.answer = answer
	}
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

// parseOnly parses raw, a request decode reads without remembering it: with Reuse into the memo's
// second storage, valid until the next call.
func (m *Memo) parseOnly(raw string) (*Request, *abi.Error) {
	b := new(requestBufs)
	if m != nil && m.Reuse {
		if m.tmp == nil {
			m.tmp = b
		}
		b = m.tmp
	}
	return parseRequest(raw, b)
}

// equal reports whether s and b hold the same bytes. TinyGo copies b to compare it as a string, and
// the input can be hundreds of KiB.
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
