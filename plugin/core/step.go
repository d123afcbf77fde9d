package core

import (
	"strconv"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// The token flow as a step function (abi/ABI.md, "token_step"). One flow, two drivers: Token and
// Invalidate run it calling the imports inline, for hosts that can block inside an import; the
// token_step export runs one step per call and hands the I/O to the host, for hosts that cannot
// (proxy-wasm callbacks, JavaScript's fetch). Both drivers run the same steps, so both send the same
// bytes in the same order.

// Action is one piece of I/O the flow asks of its host: the name of an import and that import's JSON
// input. The answer to it is what the import would return.
type Action struct {
	Import string
	Input  []byte
}

// phase is where a flow stands: which action's answer it waits for.
type phase uint8

const (
	phaseStart      phase = iota // nothing asked yet
	phaseCached                  // cache_get(K)
	phaseGate                    // cache_get(K/gate)
	phaseLock                    // cache_set(K/lock, nx)
	phaseRecheck                 // cache_get(K) again, holding the lock
	phaseSend                    // http_send
	phaseInvalidate              // invalidate's cache_get(K), to compare access_token
	phaseEnd                     // not a state: the flow has answered
)

// Flow operations.
const (
	opToken      = 't'
	opInvalidate = 'i'
)

// Flow is one token or invalidate flow of one request. What passes between two steps is its state
// (operation, phase, start time, lock owner): no secret, since the request comes with every step,
// and bound to the request's identity, so it resumes with that request only.
type Flow struct {
	m     *Memo
	r     *Request
	enc   *HTTPRequest
	key   string
	op    byte
	phase phase
	nowMS int64
	owner string // the fleet lock's value while this flow holds the lock
	// Then holds the actions of a final answer that are still to be done, in order: storing the
	// token or the gate, releasing the lock. Their answers are not needed.
	Then []Action
}

// NewFlow starts a flow for the TokenRequest in input (op opToken or opInvalidate). An invalid
// request is an error answer, with no flow.
func NewFlow(m *Memo, input []byte, op byte, now Clock) (*Flow, []byte) {
	r, enc, key, err := m.Prepare(input)
	if err != nil {
		return nil, errorJSON(err)
	}
	return &Flow{m: m, r: r, enc: enc, key: key, op: op, nowMS: r.now(now)}, nil
}

// Step advances the flow with the answer to the last action (nil on the first step, or when the host
// returned nothing). It returns the next action, or, when next.Import is "", the final answer, with
// the actions still to be done in f.Then.
func (f *Flow) Step(answer []byte) (next Action, final []byte) {
	r := f.r
	switch f.phase {
	case phaseStart:
		if f.op == opInvalidate {
			if r.AccessToken == "" {
				return f.finish([]byte("{}"), deleteAction(f.key, ""))
			}
			return f.ask(phaseInvalidate, getAction(f.key))
		}
		if !r.Force {
			return f.ask(phaseCached, getAction(f.key))
		}
		return f.ask(phaseGate, getAction(GateKey(f.key)))
	case phaseCached:
		if out := f.cached(answer); out != nil {
			return f.finish(out)
		}
		return f.ask(phaseGate, getAction(GateKey(f.key)))
	case phaseGate:
		if v, ok := cacheValue(answer); ok {
			if until := int64(gjson.Get(v, "until_ms").Num); until > f.nowMS {
				return f.finish(errorJSON(&abi.Error{Kind: abi.KindRateLimited, Retryable: true, RetryAfterMS: until - f.nowMS,
					Message: "provider rate-limited token requests; waiting for its Retry-After"}))
			}
		}
		// Fleet single-flight: one fetcher per identity across every host sharing the cache.
		if r.FleetLock {
			f.owner = newRequestID()
			return f.ask(phaseLock, setAction(LockKey(f.key), f.owner, f.enc.TimeoutMS+lockMarginMS, true))
		}
		return f.ask(phaseSend, f.sendAction())
	case phaseLock:
		// A host whose cache cannot store-if-absent answers "stored" true, or nothing: everyone fetches.
		if gjson.ValidBytes(answer) && gjson.GetBytes(answer, "stored").Type == gjson.False {
			f.owner = ""
			return f.finish(pendingJSON(pendingRetryMS))
		}
		if !r.Force { // the previous lock holder may have stored the token since the first look
			return f.ask(phaseRecheck, getAction(f.key))
		}
		return f.ask(phaseSend, f.sendAction())
	case phaseRecheck:
		if out := f.cached(answer); out != nil {
			return f.finish(out)
		}
		return f.ask(phaseSend, f.sendAction())
	case phaseSend:
		return f.received(answer)
	case phaseInvalidate:
		if v, ok := cacheValue(answer); ok && gjson.Get(v, "access_token").String() == r.AccessToken {
			return f.finish([]byte("{}"), deleteAction(f.key, ""))
		}
		return f.finish([]byte("{}"))
	}
	return f.finish(errorJSON(invalidRequest("token_step: the flow has ended")))
}

// received decodes the provider's answer: a token is cached for no longer than its life, a 429
// closes the gate that every host sharing the cache honours until it ends.
func (f *Flow) received(answer []byte) (Action, []byte) {
	resp, err := parseHostResponse(answer, f.m.scratchBuf())
	if err == nil {
		var t *abi.Token
		if t, err = f.r.Decode(resp, f.nowMS); err == nil {
			out := tokenJSON(t, false)
			if ttl := t.ExpiresAtMS - f.nowMS - skewMS(t); ttl > 0 {
				return f.finish(out, setAction(f.key, view(tokenJSONCached(t)), ttl, false))
			}
			return f.finish(out)
		}
	}
	if err.Kind == abi.KindRateLimited && err.RetryAfterMS > 0 {
		o := newObject(nil)
		o.int("until_ms", f.nowMS+err.RetryAfterMS)
		return f.finish(errorJSON(err), setAction(GateKey(f.key), view(o.end()), err.RetryAfterMS, false))
	}
	return f.finish(errorJSON(err))
}

// cached returns the token answer for a cache_get answer holding a token that is still valid (past
// the skew and min_ttl_ms), else nil.
func (f *Flow) cached(answer []byte) []byte {
	if v, ok := cacheValue(answer); ok {
		if t, ok := parseToken(gjson.Parse(v)); ok && t.ExpiresAtMS-f.nowMS > max(skewMS(t), f.r.MinTTLMS) {
			return tokenJSON(t, true)
		}
	}
	return nil
}

func (f *Flow) ask(p phase, a Action) (Action, []byte) {
	f.phase = p
	return a, nil
}

// finish ends the flow with its answer; then are the actions still to be done, and the lock, if
// this flow holds it, is released last.
func (f *Flow) finish(answer []byte, then ...Action) (Action, []byte) {
	f.phase = phaseEnd
	f.Then = append(f.Then[:0], then...)
	if f.owner != "" {
		f.Then = append(f.Then, deleteAction(LockKey(f.key), f.owner))
		f.owner = ""
	}
	return Action{}, answer
}

func (f *Flow) sendAction() Action {
	return Action{Import: abi.ImportHTTPSend, Input: f.m.requestJSON(f.enc)}
}

func getAction(key string) Action {
	o := newObject(make([]byte, 0, len(key)+16))
	o.str("key", key)
	return Action{Import: abi.ImportCacheGet, Input: o.end()}
}

func setAction(key, value string, ttlMS int64, nx bool) Action {
	o := newObject(make([]byte, 0, len(key)+len(value)+64))
	o.str("key", key)
	o.str("value", value)
	o.int("ttl_ms", ttlMS)
	if nx {
		o.bool("nx", true)
	}
	return Action{Import: abi.ImportCacheSet, Input: o.end()}
}

// deleteAction deletes key, or, with ifValue, only while key holds it (a lock's owner releases its
// own lock).
func deleteAction(key, ifValue string) Action {
	o := newObject(make([]byte, 0, len(key)+len(ifValue)+32))
	o.str("key", key)
	o.strOmit("if_value", ifValue)
	return Action{Import: abi.ImportCacheDelete, Input: o.end()}
}

// cacheValue reads a cache_get answer: the value of a hit. A broken cache is a miss, never a failure.
func cacheValue(out []byte) (string, bool) {
	if depth(out) > maxDepth || !gjson.ValidBytes(out) {
		return "", false
	}
	v := gjson.ParseBytes(out)
	val := v.Get("value")
	if v.Get("hit").Type != gjson.True || val.Type != gjson.String {
		return "", false
	}
	return val.Str, true
}

// perform calls the import an action names.
func perform(host Imports, a Action) []byte {
	switch a.Import {
	case abi.ImportHTTPSend:
		return host.HTTPSend(a.Input)
	case abi.ImportCacheGet:
		return host.CacheGet(a.Input)
	case abi.ImportCacheSet:
		return host.CacheSet(a.Input)
	default:
		return host.CacheDelete(a.Input)
	}
}

// Run drives the flow to its answer, calling the imports inline: the token and invalidate exports.
func (f *Flow) Run(host Imports) []byte {
	var answer []byte
	for {
		next, final := f.Step(answer)
		if next.Import == "" {
			for _, a := range f.Then {
				perform(host, a)
			}
			return final
		}
		answer = perform(host, next)
	}
}

// The state of a flow between two token_step calls, as the host carries it:
//
//	tw1.<op><phase>.<now_ms>.<binding>.<lock owner>
//
// binding is the first 128 bits of the request's cache-key hash: a state resumes with the request
// whose identity it began with, and no other. Nothing in it is a secret.
const (
	statePrefix  = "tw1."
	bindingChars = 32
)

func (f *Flow) state() string {
	b := make([]byte, 0, 96)
	b = append(b, statePrefix...)
	b = append(b, f.op, '0'+byte(f.phase), '.')
	b = strconv.AppendInt(b, f.nowMS, 10)
	b = append(append(b, '.'), f.binding()...)
	b = append(append(b, '.'), f.owner...)
	return string(b)
}

func (f *Flow) binding() string { return f.key[len(f.key)-bindingChars:] }

// resume restores the state s into f, a flow just started for the request sent with it.
func (f *Flow) resume(s string) *abi.Error {
	bad := invalidRequest("token_step: state is not one this plugin gave for this request")
	rest, ok := strings.CutPrefix(s, statePrefix)
	if !ok || len(s) > 160 {
		return bad
	}
	parts := strings.SplitN(rest, ".", 4)
	if len(parts) != 4 || len(parts[0]) != 2 {
		return bad
	}
	op, p := parts[0][0], phase(parts[0][1]-'0')
	now, err := strconv.ParseInt(parts[1], 10, 64)
	switch {
	case err != nil || now < 0:
		return bad
	case op == opToken && (p < phaseCached || p > phaseSend), op == opInvalidate && p != phaseInvalidate,
		op != opToken && op != opInvalidate:
		return bad
	case parts[2] != f.binding():
		return invalidRequest("token_step: state belongs to another request")
	case parts[3] != "" && (len(parts[3]) != 36 || p < phaseLock || p == phaseInvalidate):
		return bad
	}
	f.op, f.phase, f.nowMS, f.owner = op, p, now, parts[3]
	return nil
}

// stepInput holds token_step's fields, read in one pass; the first of a repeated key wins.
type stepInput struct{ request, state, answer, op string }

func (in *stepInput) member(k, raw string) bool {
	var dst *string
	switch k {
	case "request":
		dst = &in.request
	case "state":
		dst = &in.state
	case "answer":
		dst = &in.answer
	case "op":
		dst = &in.op
	default:
		return true
	}
	if *dst == "" {
		*dst = raw
	}
	return true
}

// TokenStep is the token_step export: one step of the token (or invalidate) flow. Input
// {"request", "state"?, "answer"?, "op"?}; output the next action {"next":{"import","input"},
// "state"}, or the final answer of token (or invalidate), with "then" when actions remain.
func TokenStep(m *Memo, input []byte, now Clock) []byte {
	v, err := parseJSONView(input, "input") // nothing read from it outlives the call
	if err != nil {
		return errorJSON(err)
	}
	var in stepInput
	eachMember(v.Raw, &in)
	if in.request == "" || in.request[0] != '{' {
		return errorJSON(invalidRequest("token_step needs a request object"))
	}
	op := byte(opToken)
	switch in.op {
	case "", `"token"`, "null":
	case `"invalidate"`:
		op = opInvalidate
	default:
		return errorJSON(invalidRequest(`token_step: op must be "token" or "invalidate"`))
	}
	f, out := NewFlow(m, within(input, in.request), op, now)
	if f == nil {
		return out
	}
	var answer []byte
	if in.state != "" && in.state != "null" {
		st := gjson.Parse(in.state)
		if st.Type != gjson.String {
			return errorJSON(invalidRequest("token_step: state must be a string"))
		}
		if err := f.resume(st.Str); err != nil {
			return errorJSON(err)
		}
		if in.answer != "" && in.answer != "null" {
			answer = within(input, in.answer)
		}
	}
	next, final := f.Step(answer)
	if next.Import == "" {
		return appendThen(final, f.Then)
	}
	o := newObject(make([]byte, 0, len(next.Input)+160))
	o.key("next")
	a := newObject(o.b)
	a.str("import", next.Import)
	a.key("input")
	a.b = append(a.b, next.Input...)
	o.b = a.end()
	o.str("state", f.state())
	return o.end()
}

// appendThen adds "then": [actions] to a final answer (a JSON object) when actions remain.
func appendThen(final []byte, then []Action) []byte {
	if len(then) == 0 {
		return final
	}
	n := len(final) + 16
	for _, a := range then {
		n += len(a.Import) + len(a.Input) + 24
	}
	b := append(make([]byte, 0, n), final[:len(final)-1]...)
	if len(final) > 2 {
		b = append(b, ',')
	}
	b = append(b, `"then":[`...)
	for i, a := range then {
		if i > 0 {
			b = append(b, ',')
		}
		o := newObject(b)
		o.str("import", a.Import)
		o.key("input")
		o.b = append(o.b, a.Input...)
		b = o.end()
	}
	return append(b, ']', '}')
}

// within returns the bytes of b that s, a substring of view(b), covers: no copy, however large.
func within(b []byte, s string) []byte {
	if len(s) == 0 || len(b) == 0 {
		return nil
	}
	off := uintptr(unsafe.Pointer(unsafe.StringData(s))) - uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if off >= uintptr(len(b)) || uintptr(len(s)) > uintptr(len(b))-off {
		return []byte(s) // not a view of b: never happens, but a copy is correct
	}
	return b[off : off+uintptr(len(s)) : off+uintptr(len(s))]
}
