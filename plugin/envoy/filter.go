package main

import (
	"errors"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// The filter is a host of the core token flow (plugin/core/step.go, abi/ABI.md "token_step"): shared
// data is the flow's cache, proxy_http_call its http_send, and the flow resumes in the call's
// callback. The cache lookup, the 429 gate, the fleet lock, decoding and storing, a one-time grant's
// newest refresh token, the token's schedule (when to refresh it, when it is stale), the backoff after
// a transient failure and the 401 window are the flow's, kept in shared data for every worker; what is
// the filter's is what only a proxy can do: which requests get the token, the timers that refresh it
// on the flow's schedule, how long a failure the flow does not remember (a non-retryable one) is, and
// what to answer a request that cannot have one.

const (
	tickMS = 50 // how often requests paused on this worker look for the token, and refreshes start
	// noRetryAfterMS is how long a refresh waits after a retryable answer that says no retry_after_ms
	// (the flow's all say one: its backoff, the 429 gate's time left, the fleet lock's pending).
	noRetryAfterMS = 1000
)

type vmContext struct {
	types.DefaultVMContext
	now func() int64 // Unix ms; tests set it
}

func (v *vmContext) NewPluginContext(uint32) types.PluginContext {
	now := v.now
	if now == nil {
		now = func() int64 { return time.Now().UnixMilli() }
	}
	return &pluginContext{now: now, cache: sharedCache{now: now}, memo: &core.Memo{}, waiting: map[uint32]*httpContext{}}
}

// pluginContext is one worker's filter: its configuration, the requests paused on it, the token
// call it has in flight and its refresh schedule.
type pluginContext struct {
	types.DefaultPluginContext
	s       *settings
	now     func() int64
	cache   sharedCache
	memo    *core.Memo
	hot     hotToken // the last token the flow served from shared data (hot.go)
	m       *metrics
	waiting map[uint32]*httpContext // paused on a token call
	// fetching is this worker's token call in flight; refresh tells whether it is a refresh ahead.
	fetching bool
	refresh  refresher
	// at is the time of the callback being handled, read once, so that drive and orHeld judge the
	// held token at one instant: read twice, a request at its expiry could be left to the refresher
	// (which does not refresh an expired token) and wait a tick for nothing.
	at int64
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		data = nil
	}
	return p.start(data)
}

// start configures the plugin from its configuration (nil when there is none).
func (p *pluginContext) start(data []byte) types.OnPluginStartStatus {
	var err error
	if data == nil {
		err = errors.New("no plugin configuration")
	} else {
		p.s, err = parseConfig(data)
	}
	if err != nil {
		proxywasm.LogCriticalf("tokenwasm: bad configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.m = newMetrics(p.s.name, p.s.provider)
	if p.s.refreshAheadSet {
		proxywasm.LogWarn("tokenwasm: refresh_ahead_ms is ignored: the plugin's schedule (refresh_at_ms) decides when a token is refreshed")
	}
	if p.s.failureMemSet {
		proxywasm.LogInfo("tokenwasm: failure_memory_ms remembers non-retryable failures only: a transient one is the plugin's, with its backoff (doubling to 30 s)")
	}
	if err := proxywasm.SetTickPeriodMilliSeconds(tickMS); err != nil {
		proxywasm.LogCriticalf("tokenwasm: set tick: %v", err)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{id: contextID, p: p}
}

// failureKey holds the last non-retryable failure of a token call for failure_memory_ms: while it is
// fresh no worker calls the provider again, and requests get that failure at once. A transient failure
// (retryable) is the flow's to remember: its gate, with a backoff that doubles (abi/ABI.md "Failures
// and the 401 window"); the flow remembers no other failure, and a wrong secret would otherwise be a
// token call for every request the fleet gets.
func (p *pluginContext) failureKey() string { return p.s.key + "/failure" }

// rememberedFailure returns the failed call a worker remembered for this identity, if the key holds
// one: a non-retryable error answer of a known kind, ending within failure_memory_ms. Anything else
// there (garbage, a token another filter planted, a retryable failure, an entry outliving the memory
// after the clock stepped back) is ignored, and the next failure overwrites it.
func (p *pluginContext) rememberedFailure() ([]byte, bool) {
	e := p.cache.read(p.failureKey())
	if !e.live || e.untilMS > p.now()+p.s.failureMemoryMS || !gjson.Valid(e.value) {
		return nil, false
	}
	if v := gjson.Get(e.value, "error"); !knownKind(v.Get("kind").Str) || v.Get("retryable").Type != gjson.False {
		return nil, false
	}
	return []byte(e.value), true
}

// flow starts a token flow (or an invalidate flow) for the configured request. extra is spliced
// into the request object ("min_ttl_ms", "access_token"); the memo makes the usual request (no extra)
// cost one comparison.
func (p *pluginContext) flow(op byte, extra []byte) *core.Flow {
	input := p.s.input
	if len(extra) > 0 {
		input = append(append(append(make([]byte, 0, len(extra)+len(input)+2), '{'), extra...), ',')
		input = append(input, p.s.input[1:]...)
	}
	f, _ := core.NewFlow(p.memo, input, op, p.now) // the request was validated at start
	return f
}

// drive runs f from answer: cache actions at once on shared data, and a client assertion's signature
// at once with the configured key, until the flow answers or asks to send the token request, which it
// dispatches (sent: the flow resumes in the callback). The final
// answer's then-actions (the token's store, a one-time grant's newest refresh token, the gate, the
// lock's release) are done in order. Before the flow takes the fleet lock, a fresh remembered failure
// ends it with that failure: no call. Only there: the flow's other store-if-absent (an authorization
// code marked used) comes while it holds the lock, which only the flow's own end releases.
func (p *pluginContext) drive(f *core.Flow, answer []byte, refresh bool) (final []byte, sent bool) {
	for {
		next, final := f.Step(answer)
		switch {
		case next.Import == "":
			ok := true // an action marked AfterOK only if every one before it succeeded
			for _, a := range f.Then {
				if a.AfterOK && !ok {
					continue
				}
				if gjson.GetBytes(p.cache.perform(a), "error").Exists() {
					ok = false
				}
			}
			return final, false
		case next.Import == abi.ImportHTTPSend:
			if answer = p.send(f, next.Input, refresh); answer == nil {
				return nil, true
			}
		case next.Import == core.ImportSign:
			// private_key_jwt: the flow's client assertion (a fresh jti and iat for this call), signed
			// here with the key read at start. No signer (never: the start refuses private_key_jwt
			// without a key) leaves the answer empty, and the flow ends with signing_required.
			answer = p.sign(next.Input)
		case next.Import == abi.ImportCacheSet && gjson.GetBytes(next.Input, "key").Str == p.s.lockKey:
			if failure, ok := p.rememberedFailure(); ok {
				return failure, false
			}
			if !refresh && p.refresh.failing && !p.refresh.stopped {
				if _, ok := p.refresh.servable(p.at); ok {
					// Fetching the held token's successor fails: the refresher tries again when the
					// flow's retry_after_ms says, and requests get the held token meanwhile, with no
					// call of their own.
					return refresherFetches, false
				}
			}
			answer = p.cache.perform(next)
		default:
			answer = p.cache.perform(next)
		}
	}
}

// sign answers the flow's sign action with the configured key. A refusal (the signer's error, with no
// key material) is counted and logged here: the flow then ends with kind signing, and no call is made.
func (p *pluginContext) sign(action []byte) []byte {
	if p.s.signer == nil {
		return nil
	}
	out := p.s.signer.sign(action)
	if e := gjson.GetBytes(out, "error"); e.Exists() {
		p.m.failure(abi.KindSigning)
		proxywasm.LogWarnf("tokenwasm: %s: signing the client assertion failed: %s", p.s.provider, e.Str)
	}
	return out
}

// refresherFetches is drive's answer for a request flow that leaves the call to the refresher: the
// flow is pending, and the request gets the held token (orHeld).
var refresherFetches = []byte(`{"pending":{"retry_after_ms":1000}}`)

// send dispatches the flow's HttpRequest through the cluster. It returns nil when the call is on its
// way, or http_send's answer when the proxy refused it.
func (p *pluginContext) send(f *core.Flow, req []byte, refresh bool) []byte {
	r := gjson.ParseBytes(req)
	u, err := url.Parse(r.Get("url").String())
	if err != nil {
		return []byte(`{"error":"the token URL cannot be parsed","policy":true}`)
	}
	headers := [][2]string{{":method", r.Get("method").String()}, {":path", u.RequestURI()}, {":authority", u.Host}, {":scheme", u.Scheme}}
	r.Get("headers").ForEach(func(k, v gjson.Result) bool {
		headers = append(headers, [2]string{k.String(), v.String()})
		return true
	})
	start := p.now()
	_, err = proxywasm.DispatchHttpCall(p.s.cluster, headers, []byte(r.Get("body").String()), nil, uint32(r.Get("timeout_ms").Int()),
		func(numHeaders, bodySize, _ int) { p.received(f, numHeaders, bodySize, start, refresh) })
	if err != nil {
		return dispatchRefusal(err)
	}
	p.fetching = true
	p.m.fetches.Increment(1)
	if refresh {
		p.m.refreshes.Increment(1)
	}
	return nil
}

// dispatchRefusal is http_send's answer for a proxy_http_call Envoy refused. BadArgument (or
// NotFound) means it will not send this call at all (the cluster is not configured): a policy
// refusal, not retryable. Anything else may pass: a transport error.
func dispatchRefusal(err error) []byte {
	if errors.Is(err, types.ErrorStatusBadArgument) || errors.Is(err, types.ErrorStatusNotFound) {
		return []byte(`{"error":"the proxy refused to call the token cluster (is it configured?)","policy":true}`)
	}
	return []byte(`{"error":"cannot reach the token cluster"}`)
}

// received resumes the flow with the token endpoint's answer, then answers the requests paused on
// this worker.
func (p *pluginContext) received(f *core.Flow, numHeaders, bodySize int, start int64, refresh bool) {
	p.fetching, p.at = false, p.now()
	p.m.fetchMS.Record(uint64(max(p.now()-start, 0)))
	final, sent := p.drive(f, httpResponse(numHeaders, bodySize), refresh)
	if sent { // never: a flow sends once
		return
	}
	a := parseAnswer(final)
	if a.kind != "" {
		p.failed(a, final)
	}
	switch {
	case refresh:
		p.refresh.done(a, p.now())
	case a.token != "":
		p.refresh.seen(a)
	case a.kind != "":
		p.refresh.fetchFailed(a, p.now())
	}
	p.settleAll(p.orHeld(a), final)
}

// failed counts, logs and remembers a failed token call: a non-retryable one for failure_memory_ms; a
// retryable one (a 429, a transient failure) the flow's gate remembers, for every worker.
func (p *pluginContext) failed(a answer, final []byte) {
	p.m.failure(a.kind)
	proxywasm.LogWarnf("tokenwasm: %s token call failed: kind=%s status=%d retryable=%t", p.s.provider, a.kind, a.status, a.retryable)
	if !a.retryable && p.s.failureMemoryMS > 0 {
		p.cache.set(p.failureKey(), string(final), p.s.failureMemoryMS)
	}
}

// httpResponse is http_send's answer for the call's response: {"status","headers","body"}, or a
// transport error when there was none (timeout, reset: Envoy calls back with no headers).
func httpResponse(numHeaders, bodySize int) []byte {
	if numHeaders == 0 {
		return []byte(`{"error":"no response from the token cluster"}`)
	}
	hs, _ := proxywasm.GetHttpCallResponseHeaders()
	var body []byte
	if bodySize > 0 {
		body, _ = proxywasm.GetHttpCallResponseBody(0, min(bodySize, core.MaxBodyBytes+1))
	}
	b := make([]byte, 0, len(body)+256)
	b = append(b, `{"headers":{`...)
	status, seen := "0", map[string]bool{}
	for _, h := range hs {
		if h[0] == ":status" {
			if allDigits(h[1]) && h[1] != "" {
				status = h[1]
			}
			continue
		}
		if seen[h[0]] {
			continue
		}
		if len(seen) > 0 {
			b = append(b, ',')
		}
		seen[h[0]] = true
		b = appendJSONString(appendJSONString(b, h[0], ':'), h[1])
	}
	b = append(append(append(b, `},"status":`...), status...), `,"body":`...)
	return appendJSONString(b, string(body), '}')
}

// answer is what the filter reads from a flow's final answer.
type answer struct {
	token, tokenType        string
	expiresAtMS, issuedAtMS int64
	// The token's schedule, the plugin's: refresh from refreshAtMS; from staleAtMS the flow no longer
	// serves it from shared data, and the filter gives it only while fetching its successor fails.
	refreshAtMS, staleAtMS int64
	cached, pending        bool
	held                   bool // the token this worker holds, given in place of a failure (orHeld)
	kind                   string
	status                 int
	retryable              bool
	retryAfterMS           int64
}

// answerTokenMembers are the members of the answer's token the filter reads.
var answerTokenMembers = [...]string{"access_token", "token_type", "expires_at_ms", "issued_at_ms"}

func parseAnswer(final []byte) answer {
	var a answer
	v := gjson.ParseBytes(final)
	if t := v.Get("token"); t.IsObject() {
		var m [len(answerTokenMembers)]string
		core.Members(t.Raw, answerTokenMembers[:], m[:]) // the plugin's reader and rule: the first of a repeat
		a.token, a.tokenType = gjson.Parse(m[0]).Str, gjson.Parse(m[1]).Str
		a.expiresAtMS, a.issuedAtMS = gjson.Parse(m[2]).Int(), gjson.Parse(m[3]).Int()
		a.cached = v.Get("cached").Bool()
		a.refreshAtMS, a.staleAtMS = v.Get("refresh_at_ms").Int(), v.Get("stale_at_ms").Int()
		return a
	}
	if p := v.Get("pending"); p.Exists() {
		a.pending, a.retryAfterMS = true, p.Get("retry_after_ms").Int()
		return a
	}
	e := v.Get("error")
	a.kind = e.Get("kind").String()
	if !knownKind(a.kind) {
		a.kind = abi.KindTransport
	}
	a.status = int(e.Get("status").Int())
	a.retryable = e.Get("retryable").Bool()
	a.retryAfterMS = e.Get("retry_after_ms").Int()
	return a
}

// knownKind keeps metric names to the ABI's error kinds, whatever a cache entry holds.
func knownKind(k string) bool { return slices.Contains(errorKinds, k) }

// errorKinds is abi.Kinds, read once (it returns a copy per call).
var errorKinds = abi.Kinds()

// orHeld is what requests get for a flow's answer a: a itself, or the token this worker holds, while
// it is past its stale_at_ms and before its expires_at_ms, when a is a failure, or a wait while
// fetching the token's successor fails. That is the plugin's schedule: from stale_at_ms a request
// waits for a fetch, and is still given the token until expires_at_ms if that fetch fails.
func (p *pluginContext) orHeld(a answer) answer {
	if a.kind == "" && !(a.pending && p.refresh.failing) {
		return a
	}
	if h, ok := p.refresh.servable(p.at); ok {
		return h
	}
	return a
}

// settleAll answers every request paused on this worker with a flow's final answer.
func (p *pluginContext) settleAll(a answer, final []byte) {
	for id, c := range p.waiting {
		delete(p.waiting, id)
		if proxywasm.SetEffectiveContext(id) == nil {
			c.settle(a, final, true)
		}
	}
}

// OnTick looks for the token for the requests paused on this worker (the call may run on another
// worker, or be lost: once its lock expires, this flow takes the lock and calls), gives up on
// requests past wait_ms, and refreshes the token ahead of expiry.
func (p *pluginContext) OnTick() {
	now := p.now()
	p.at = now
	if len(p.waiting) > 0 && !p.fetching {
		if final, sent := p.drive(p.flow(core.OpToken, nil), nil, false); !sent {
			a := parseAnswer(final)
			if a.token != "" {
				p.refresh.seen(a)
			} else {
				p.refresh.missed(now)
			}
			if a = p.orHeld(a); !a.pending {
				p.settleAll(a, final)
			}
		}
	}
	for id, c := range p.waiting {
		if now >= c.giveUp {
			delete(p.waiting, id)
			if proxywasm.SetEffectiveContext(id) == nil {
				timeout := core.ErrorJSON(&abi.Error{Kind: abi.KindTransport, Retryable: true, Message: "timed out waiting for a token"})
				c.settle(p.orHeld(parseAnswer(timeout)), timeout, true)
			}
		}
	}
	if !p.fetching && p.refresh.due(now) {
		// min_ttl_ms makes the flow pass over the held token in shared data from its refresh_at_ms,
		// and still take a newer one another worker stored.
		extra := strconv.AppendInt([]byte(`"min_ttl_ms":`), p.refresh.held.expiresAtMS-p.refresh.held.refreshAtMS, 10)
		final, sent := p.drive(p.flow(core.OpToken, extra), nil, true)
		if !sent {
			p.refresh.done(parseAnswer(final), now)
		}
	}
}

// invalidate runs the flow's invalidate for a token the upstream answered 401 to, and returns its
// retry: whether a new token is worth trying. The 401 window is the flow's, in shared data for every
// worker (abi/ABI.md "Failures and the 401 window"): it drops the token only while it is the cached
// one, and at most once per 30 s per identity, so many workers seeing the same 401 drop it once, and
// an API that refuses every token gets its 401s back instead of a token call for each. retry is false
// when the 401 came within the window: nothing was dropped, and this worker keeps the token.
func (p *pluginContext) invalidate(token string) (retry bool) {
	f := p.flow(core.OpInvalidate, appendJSONString([]byte(`"access_token":`), token))
	final, _ := p.drive(f, nil, false) // no http_send: cache actions only, then its delete
	for _, a := range f.Then {
		if a.Import == abi.ImportCacheDelete {
			p.m.invalidated.Increment(1) // this 401 dropped the token
		}
	}
	if retry = gjson.GetBytes(final, "retry").Type == gjson.True; retry && p.refresh.held.token == token {
		p.refresh.forget() // dropped here, or already replaced by another worker
	}
	return retry
}

type httpContext struct {
	types.DefaultHttpContext
	id     uint32
	p      *pluginContext
	giveUp int64
	token  string // the token this request carries upstream
}

func (c *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	p := c.p
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	authority := ""
	if p.s.scope.usesAuthority() {
		authority, _ = proxywasm.GetHttpRequestHeader(":authority")
	}
	if !p.s.scope.applies(path, authority) {
		return types.ActionContinue
	}
	// One clock read for the request (each is a host call): the memo's limit is checked against it.
	p.at = p.now()
	if h, ok := p.hot.lookup(p.s.key, p.at); ok { // the entry the flow last served, unchanged
		p.refresh.seen(h.a)
		return c.give(h.a, h.header, false)
	}
	f := p.flow(core.OpToken, nil)
	p.cache.lastGet = entry{}
	final, sent := p.drive(f, nil, false)
	if sent {
		p.hot = hotToken{}
		p.refresh.missed(p.now())
		return c.wait()
	}
	a := parseAnswer(final)
	p.hot.remember(f, p.cache.lastGet, p.s.key, a)
	if a.token != "" {
		p.refresh.seen(a)
	} else {
		p.refresh.missed(p.now())
	}
	if a = p.orHeld(a); a.pending {
		return c.wait()
	}
	return c.settle(a, final, false)
}

// wait pauses the request for the token call, unless max_waiting requests already wait on this
// worker: then it is answered at once.
func (c *httpContext) wait() types.Action {
	p := c.p
	if len(p.waiting) >= p.s.maxWaiting {
		p.m.shed.Increment(1)
		c.reply(core.ErrorJSON(&abi.Error{Kind: abi.KindTransport, Retryable: true, RetryAfterMS: 1000,
			Message: "too many requests are waiting for a token"}), 1000)
		return types.ActionPause
	}
	c.giveUp = p.now() + p.s.waitMS
	p.waiting[c.id] = c
	return types.ActionPause
}

// settle gives the request its token (header value: the token's type, a space, the token), or the
// flow's failure as a local reply. resume is set for a request paused earlier.
func (c *httpContext) settle(a answer, final []byte, resume bool) types.Action {
	p := c.p
	if a.token != "" {
		return c.give(a, a.tokenType+" "+a.token, resume)
	}
	if a.kind == abi.KindRateLimited && a.status == 0 {
		p.m.gateClosed.Increment(1) // refused by the gate, no call made
	}
	c.reply(final, a.retryAfterMS)
	return types.ActionPause
}

// give sets the token's header (value: the token's type, a space, the token) on the request.
func (c *httpContext) give(a answer, header string, resume bool) types.Action {
	p := c.p
	if a.cached {
		p.m.hits.Increment(1)
	}
	if a.held {
		p.m.held.Increment(1)
	}
	c.token = a.token
	p.refresh.used = p.refresh.used || a.token == p.refresh.held.token
	_ = proxywasm.ReplaceHttpRequestHeader(p.s.header, header)
	if resume {
		_ = proxywasm.ResumeHttpRequest()
	}
	return types.ActionContinue
}

// reply answers the request locally with a typed failure (JSON, no secret: the core redacts), with
// Retry-After when the failure says how long to wait.
func (c *httpContext) reply(body []byte, retryAfterMS int64) {
	headers := [][2]string{{"content-type", "application/json"}}
	if retryAfterMS > 0 {
		headers = append(headers, [2]string{"retry-after", strconv.FormatInt((retryAfterMS+999)/1000, 10)})
	}
	_ = proxywasm.SendHttpResponse(c.p.s.failureStatus, headers, body, -1)
}

// OnHttpResponseHeaders runs the flow's invalidate for the token the upstream refused with a 401.
// The 401 goes back to the client either way: a filter cannot send the request again (its body is
// gone upstream). When the flow's answer is retry (the token was dropped, or another worker already
// replaced it), the client's next request gets a fresh token; within the 401 window it gets the same
// token, and the API its 401s.
func (c *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	if c.token != "" {
		if status, _ := proxywasm.GetHttpResponseHeader(":status"); status == "401" {
			c.p.invalidate(c.token)
		}
	}
	return types.ActionContinue
}

func (c *httpContext) OnHttpStreamDone() { delete(c.p.waiting, c.id) }

// refresher holds the last token a flow answered on this worker and refreshes it once, in the
// background, from the answer's refresh_at_ms (the plugin's schedule), and only if traffic used it.
// After a retryable failure it tries again when the answer's retry_after_ms says (the flow's backoff,
// doubling for every worker, or the 429 gate's time left); a non-retryable failure, or a refresh that
// brings no later expiry, stops refreshing this token (traffic fetches the next one when it is
// stale). While fetching its successor fails, the held token is given to requests from its
// stale_at_ms until its expires_at_ms. The timer is the filter's: the tick.
type refresher struct {
	held          answer // the token, its expiry and its schedule
	used, stopped bool
	failing       bool  // the last fetch for the held token's successor failed, and is tried again
	next          int64 // no attempt before next
}

// seen records the token a flow answered; a new token, or the same one with a new expiry, gets a new
// schedule, unless refreshing has stopped and it expires no later than the one held.
func (r *refresher) seen(a answer) {
	if a.token == r.held.token && a.expiresAtMS == r.held.expiresAtMS {
		return
	}
	if r.stopped && a.expiresAtMS <= r.held.expiresAtMS {
		r.held, r.failing = a, false
		return
	}
	*r = refresher{held: a}
}

// fetchFailed notes a request's fetch that failed: the held token's successor could not be had. It
// counts as a failed refresh: the refresher tries again when the flow's answer says, or stops.
func (r *refresher) fetchFailed(a answer, now int64) {
	if r.held.token != "" {
		r.done(a, now)
	}
}

// forget drops a token that is no longer good.
func (r *refresher) forget() { *r = refresher{} }

// missed notes a flow that found no token in shared data: before the held token's stale_at_ms the
// flow would have served it, so another worker dropped it (an upstream's 401), and it is forgotten.
func (r *refresher) missed(now int64) {
	if r.held.token != "" && now < r.held.staleAtMS {
		r.forget()
	}
}

// servable returns the held token for a request whose fetch failed: from its stale_at_ms (before,
// the flow serves it from shared data) until it expires.
func (r *refresher) servable(now int64) (answer, bool) {
	if r.held.token == "" || now < r.held.staleAtMS || now >= r.held.expiresAtMS {
		return answer{}, false
	}
	a := r.held
	a.cached, a.held = false, true
	return a, true
}

func (r *refresher) due(now int64) bool {
	return r.held.token != "" && r.used && !r.stopped && now >= r.held.refreshAtMS && now >= r.next && now < r.held.expiresAtMS
}

// done reads a refresh's answer: a new token, another worker's call in flight, or a failure.
func (r *refresher) done(a answer, now int64) {
	switch {
	case a.token != "" && a.expiresAtMS <= r.held.expiresAtMS:
		// The provider gives no later expiry (its own cached token, a JWT clamped to a session's end):
		// refreshing again gains nothing; traffic fetches the next token once this one is stale.
		r.stopped, r.failing = true, false
		r.held = a
	case a.token != "":
		r.seen(a) // a new token: used once traffic gets it
	case a.pending: // another worker fetches: look again when the flow says
		r.next = now + retryAfter(a)
	case a.retryable:
		r.next, r.failing = now+retryAfter(a), true
	default:
		// Trying again will not help: refreshing stops, and from stale_at_ms requests fetch (each
		// waits for one call, then gets the held token if it fails).
		r.stopped, r.failing = true, false
	}
}

// retryAfter is how long a refresh waits after a's answer: its retry_after_ms, the flow's.
func retryAfter(a answer) int64 {
	if a.retryAfterMS > 0 {
		return a.retryAfterMS
	}
	return noRetryAfterMS
}
