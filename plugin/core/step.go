package core

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"math"
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
	// AfterOK (then actions only): perform it only if every action before it in then succeeded
	// (answered without "error"): a grant's exchange mark is cleared only once its new refresh
	// token is stored.
	AfterOK bool
}

// phase is where a flow stands: which action's answer it waits for.
type phase uint8

const (
	phaseStart       phase = iota // nothing asked yet
	phaseCached                   // cache_get(K)
	phaseGate                     // cache_get(K/gate)
	phaseLock                     // cache_set(K/lock, nx)
	phaseRecheck                  // cache_get(K) again, holding the lock
	phaseSend                     // http_send
	phaseInvalidate               // invalidate's cache_get(K), to compare access_token
	phaseSign                     // sign: the host signs the client assertion (private_key_jwt)
	phaseGrant                    // cache_get(K/grant): a one-time grant's newest refresh token
	phaseSpend                    // cache_set(K/grant, nx): an authorization code is marked used before it is sent
	phaseSendLineage              // http_send of the lineage's refresh token (see withheld)
	phaseDrop                     // invalidate's cache_set(K/drop, nx): one 401 drop per window, fleet-wide
	phaseMark                     // cache_set(K/sent, nx): a one-time grant's exchange is marked before its credential is read
	phaseEnd                      // not a state: the flow has answered
)

// The flow's operations, as NewFlow takes them and a state carries them: token_step's "op"
// (abi.OpToken, abi.OpInvalidate, abi.OpRevoke) as one byte.
const (
	OpToken      = 't'
	OpInvalidate = 'i'
	OpRevoke     = 'r'
)

// Flow is one token, invalidate or revoke flow of one request. What passes between two steps is its state
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
	jti   string // the client assertion's jti while the host signs it
	// lifeMS is how long after nowMS the flow's state may be resumed: the fleet lock's TTL at the
	// flow's start, carried in the state (the resuming request's timeout_ms has no say).
	lifeMS int64
	// followed: the flow sends the lineage's refresh token, not the request's (see withheld).
	followed bool
	// tokenURL is the token request's URL: a revocation's client assertion names it (aud).
	tokenURL string
	// tokenEnc is the token request as encoded: the state's seal is keyed by its identity, whatever
	// the op (a revocation's request, or one sent with a lineage's refresh token, is another).
	tokenEnc *HTTPRequest
	// fails is how many transient failures in a row the identity's gate counted (read at the gate).
	fails int64
	// seal is the HMAC that authenticates the state (keyed by stateKey), made on first use.
	seal hash.Hash
	sum  [sha256.Size]byte // the HMAC's sum
	// check holds the seal a resumed state should have. (These two are fields because TinyGo
	// allocates such a local on the heap at every step.)
	check [sealChars]byte
	bufs  [6][]byte // the actions' inputs of one step (at most one next, or five then)
	nbuf  int
	// checked: the answers come inside an input already checked as JSON (token_step), so they are
	// not checked again.
	checked bool
	// fromCache: the flow answered with a token from the cache, which it would serve until servedUntil.
	fromCache   bool
	servedUntil int64
	// Then holds the actions of a final answer that are still to be done, in order: storing the
	// token or the gate, releasing the lock. Their answers are not needed.
	Then []Action
}

// NewFlow starts a flow for the TokenRequest in input (op OpToken, OpInvalidate or OpRevoke). An invalid
// request is an error answer, with no flow.
func NewFlow(m *Memo, input []byte, op byte, now Clock) (*Flow, []byte) {
	return m.startFlow(new(Flow), input, op, now, false)
}

// Step advances the flow with the answer to the last action (nil on the first step, or when the host
// returned nothing). It returns the next action, or, when next.Import is "", the final answer, with
// the actions still to be done in f.Then.
func (f *Flow) Step(answer []byte) (next Action, final []byte) {
	r := f.r
	f.nbuf = 0
	switch f.phase {
	case phaseStart:
		if f.op == OpRevoke {
			if revokesLineage(r) { // the grant's newest refresh token, not the request's used one
				return f.ask(phaseGrant, f.getAction(f.key, grantSuffix))
			}
			return f.send()
		}
		if f.op == OpInvalidate {
			if r.AccessToken == "" {
				return f.finish([]byte("{}"), f.deleteAction(f.key, "", ""))
			}
			return f.ask(phaseInvalidate, f.getAction(f.key, ""))
		}
		if !r.Force {
			return f.ask(phaseCached, f.getAction(f.key, ""))
		}
		return f.ask(phaseGate, f.getAction(f.key, gateSuffix))
	case phaseCached:
		if out := f.cached(answer); out != nil {
			return f.finish(out)
		}
		return f.ask(phaseGate, f.getAction(f.key, gateSuffix))
	case phaseGate:
		if v, ok := f.cacheValue(answer); ok && f.ours(v) {
			g := gjson.Parse(v)
			f.fails = min(max(0, int64(g.Get("fails").Num)), maxFails)
			if until := int64(g.Get("until_ms").Num); until > f.nowMS {
				if e := g.Get("error"); e.IsObject() {
					return f.finish(errorJSON(rememberedError(e, until-f.nowMS)))
				}
				return f.finish(errorJSON(&abi.Error{Kind: abi.KindRateLimited, Retryable: true, RetryAfterMS: until - f.nowMS,
					Message: "provider rate-limited token requests; waiting for its Retry-After"}))
			}
		}
		// Fleet single-flight: one fetcher per identity across every host sharing the cache.
		if r.FleetLock {
			f.owner = newRequestID()
			return f.ask(phaseLock, f.setAction(f.key, lockSuffix, f.owner, f.lockTTL(), true))
		}
		return f.fetch()
	case phaseLock:
		// A host whose cache cannot store-if-absent: everyone fetches.
		if f.notStored(answer) {
			f.owner = ""
			return f.finish(pendingJSON(pendingRetryMS))
		}
		if !r.Force { // the previous lock holder may have stored the token since the first look
			return f.ask(phaseRecheck, f.getAction(f.key, ""))
		}
		return f.fetch()
	case phaseRecheck:
		if out := f.cached(answer); out != nil {
			return f.finish(out)
		}
		return f.fetch()
	case phaseMark:
		switch {
		case cacheFailed(answer, f.checked):
			return f.finish(errorJSON(&abi.Error{Kind: abi.KindTransport, Retryable: true,
				Message: "the cache could not mark this grant's exchange; nothing was sent"}))
		case f.notStored(answer):
			// A mark left by an exchange that could not store its new refresh token (a cache that
			// failed at that moment): the lineage in the cache is stale, and sending it would replay
			// a used one. Fail closed; the new refresh token went to the caller and the hook.
			return f.finish(errorJSON(&abi.Error{Kind: abi.KindInvalidGrant,
				Message: "an earlier exchange of this grant could not store its new refresh token: nothing was sent; " +
					"restart from the refresh token the refresh-token hook received"}))
		}
		return f.ask(phaseGrant, f.getAction(f.key, grantSuffix))
	case phaseGrant:
		return f.lineage(answer)
	case phaseSpend:
		if cacheFailed(answer, f.checked) {
			return f.finish(errorJSON(&abi.Error{Kind: abi.KindTransport, Retryable: true,
				Message: "the cache could not mark the authorization code used; nothing was sent"}), f.unmark())
		}
		if f.notStored(answer) {
			// Another host marked the code first: it sends it, and its lineage answers the next flow.
			return f.finish(pendingJSON(pendingRetryMS), f.unmark())
		}
		return f.send()
	case phaseSign:
		if len(answer) == 0 || string(answer) == "null" { // a host that does not know the action
			return f.finish(errorJSON(&abi.Error{Kind: abi.KindSigningRequired,
				Message: "private_key_jwt needs the host to sign the client assertion: this host answered nothing to token_step's sign action"}))
		}
		signed, err := f.enc.jwt.signed(r, answer, f.checked, f.jti, f.nowMS/1000)
		if err != nil {
			return f.finish(errorJSON(err))
		}
		f.enc.signed, f.jti = signed, ""
		return f.ask(f.sendPhase(), f.sendAction())
	case phaseSend, phaseSendLineage:
		if f.op == OpRevoke {
			return f.revoked(answer)
		}
		return f.received(answer)
	case phaseInvalidate:
		if v, ok := f.cacheValue(answer); ok && f.ours(v) && gjson.Get(v, "access_token").String() == r.AccessToken {
			// The 401 window: of every host sharing the cache, one drops this identity's token per
			// window; a 401 within it is the API's answer, not a stale token's.
			return f.ask(phaseDrop, f.setAction(f.key, dropSuffix, f.idRecord(), DropWindowMS, true))
		}
		return f.finish([]byte(`{"retry":true}`)) // already replaced (or gone): a fresh token is worth a try
	case phaseDrop:
		if f.notStored(answer) {
			return f.finish([]byte(`{"retry":false}`))
		}
		return f.finish([]byte(`{"retry":true}`), f.deleteAction(f.key, "", ""))
	}
	return f.finish(errorJSON(invalidRequest("token_step: the flow has ended")))
}

// unmark clears a one-time grant's exchange mark.
func (f *Flow) unmark() Action { return f.deleteAction(f.key, sentSuffix, "") }

// cacheFailed reports whether a cache import answered that the cache failed ("error").
func cacheFailed(answer []byte, checked bool) bool {
	return (checked || gjson.ValidBytes(answer)) && gjson.GetBytes(answer, "error").Exists()
}

// notStored reports whether a cache_set with nx answered that the key was held: "stored" false. A
// host whose cache cannot store-if-absent answers "stored" true, or nothing.
func (f *Flow) notStored(answer []byte) bool {
	return (f.checked || gjson.ValidBytes(answer)) && gjson.GetBytes(answer, "stored").Type == gjson.False
}

// received decodes the provider's answer: a token is cached for no longer than its life, and a
// one-time grant's new refresh token becomes its lineage's newest, stored before the lock is
// released; a 429 closes the gate that every host sharing the cache honours until it ends.
func (f *Flow) received(answer []byte) (Action, []byte) {
	resp, err := parseHostResponse(answer, f.m.scratchBuf())
	if err == nil {
		var t *abi.Token
		var refreshLife int64
		if t, refreshLife, err = f.r.decode(resp, f.nowMS); err == nil {
			out := tokenJSON(t, false)
			var then [4]Action
			n := 0
			if ttl := t.ExpiresAtMS - f.nowMS - skewMS(t); ttl > 0 {
				then[n] = f.setAction(f.key, "", view(tokenJSONCached(t, f.binding())), ttl, false)
				n++
			}
			if f.oneTime() && t.RefreshToken != "" {
				if refreshLife == 0 {
					refreshLife = GrantTTLMS
				}
				then[n] = f.setAction(f.key, grantSuffix, f.grantRecord(t.RefreshToken), refreshLife, false)
				n++
			}
			if f.fails > 0 { // the provider answers again: the failures' count starts over
				then[n] = f.deleteAction(f.key, gateSuffix, "")
				n++
			}
			if f.oneTime() {
				// The exchange's mark goes only once its new refresh token is stored.
				then[n] = f.unmark()
				then[n].AfterOK = true
				n++
			}
			return f.finish(out, then[:n]...)
		}
	}
	if f.phase == phaseSendLineage {
		err = withheld(err)
	}
	if f.oneTime() && err.Kind == abi.KindInvalidGrant && err.Status >= 400 && err.Status <= 499 {
		// The provider refused the refresh token or code sent: the lineage ends refused, so that no
		// host sharing the cache (another replica or vm_id, this one after a restart) sends it again.
		// Only a 4xx is a refusal (RFC 6749 5.2): a 5xx quoting invalid_grant is the server failing,
		// and marking it would drop the lineage's newest refresh token, its only copy.
		return f.failed(err, f.setAction(f.key, grantSuffix, f.lineageEnd("refused"), GrantTTLMS, false), f.unmark())
	}
	if f.oneTime() {
		// The provider answered no token: the credential sent stays the lineage's, and the mark goes
		// (a transport failure too: whether the provider used it cannot be known, and a resend of a
		// refresh token that still works is no replay).
		return f.failed(err, f.unmark())
	}
	return f.failed(err)
}

// failed ends the flow with err, remembering a 429 or a transient failure in the gate; then are
// actions to do first.
func (f *Flow) failed(err *abi.Error, then ...Action) (Action, []byte) {
	if err.Kind == abi.KindRateLimited && err.RetryAfterMS > 0 {
		o := newObject(nil)
		o.int("until_ms", f.nowMS+err.RetryAfterMS)
		if f.fails > 0 {
			o.int("fails", f.fails)
		}
		o.str("id", f.binding())
		return f.finish(errorJSON(err), append(then, f.setAction(f.key, gateSuffix, view(o.end()), err.RetryAfterMS, false))...)
	}
	if err.Retryable {
		// A transient failure closes the gate for a backoff that doubles with each failure in a row,
		// fleet-wide: every host sharing the cache is answered this error until then, and the
		// provider is not asked again before.
		e := *err
		n := min(f.fails+1, maxFails)
		e.RetryAfterMS = backoffMS(n)
		o := newObject(nil)
		o.int("until_ms", f.nowMS+e.RetryAfterMS)
		o.int("fails", n)
		o.key("error")
		o.b = append(o.b, errorJSON(&abi.Error{Kind: e.Kind, Status: e.Status, Message: e.Message, Retryable: true})[len(`{"error":`):]...)
		o.b = o.b[:len(o.b)-1] // errorJSON's closing brace
		o.str("id", f.binding())
		return f.finish(errorJSON(&e), append(then, f.setAction(f.key, gateSuffix, view(o.end()), 2*e.RetryAfterMS, false))...)
	}
	return f.finish(errorJSON(err), then...)
}

// The backoff after transient failures: 50 ms after the first (room for a host's quick retry of a
// blip), doubling with each failure in a row, at most 30 s.
const (
	firstBackoffMS = 50
	maxBackoffMS   = 30000
	maxFails       = 15 // one hex digit in the state
)

func backoffMS(fails int64) int64 {
	return min(maxBackoffMS, int64(firstBackoffMS)<<min(fails-1, 10))
}

// rememberedError is the answer while a transient failure's gate is closed: that failure, retryable,
// with the time left.
func rememberedError(e gjson.Result, retryAfterMS int64) *abi.Error {
	kind := e.Get("kind").Str
	if kind != abi.KindTransport && kind != abi.KindServerError {
		kind = abi.KindServerError
	}
	return &abi.Error{Kind: kind, Status: int(e.Get("status").Int()), Retryable: true, RetryAfterMS: retryAfterMS,
		Message: "an earlier token request failed; waiting before asking the provider again: " + e.Get("message").Str}
}

// DropWindowMS is the 401 window: a token is dropped for an API's 401 at most once per window per
// identity, across every host sharing the cache.
const DropWindowMS = 30000

// dropSuffix names an identity's 401 window.
const dropSuffix = "/drop"

// idRecord is a value that only names the identity: a 401 window's or an exchange mark's, whose
// presence is all they say.
func (f *Flow) idRecord() string {
	o := newObject(make([]byte, 0, 64))
	o.str("id", f.binding())
	return view(o.end())
}

// cached returns the token answer for a cache_get answer holding a token that is still valid (past
// the skew and min_ttl_ms), else nil.
func (f *Flow) cached(answer []byte) []byte {
	if v, ok := f.cacheValue(answer); ok {
		if t, ok := parseToken(gjson.Parse(v)); ok && f.ours(v) {
			if until := servedUntil(t, f.r.MinTTLMS); f.nowMS < until {
				f.fromCache, f.servedUntil = true, until
				return tokenJSON(t, true)
			}
		}
	}
	return nil
}

// servedUntil is the rule for serving a cached token: it is served while now is before its expiry
// less the skew, or less min_ttl_ms when that is longer.
func servedUntil(t *abi.Token, minTTLMS int64) int64 {
	margin := max(skewMS(t), minTTLMS) // >= 0: min_ttl_ms is
	if t.ExpiresAtMS < math.MinInt64+margin {
		return math.MinInt64 // a poisoned expiry far in the past: never served
	}
	return t.ExpiresAtMS - margin
}

// CachedUntil reports, for a flow that answered with a token from the cache, the time (Unix ms) from
// which this flow would no longer serve the cache entry it read: a host that reuses the answer while
// that entry is unchanged must stop at this time. ok is false for any other answer.
func (f *Flow) CachedUntil() (untilMS int64, ok bool) {
	return f.servedUntil, f.fromCache && f.phase == phaseEnd
}

func (f *Flow) ask(p phase, a Action) (Action, []byte) {
	if !f.to(p) {
		return f.finish(strayStep())
	}
	return a, nil
}

// finish ends the flow with its answer; then are the actions still to be done, and the lock, if
// this flow holds it, is released last.
func (f *Flow) finish(answer []byte, then ...Action) (Action, []byte) {
	if f.phase != phaseEnd && !f.to(phaseEnd) {
		answer, then = strayStep(), nil
	}
	f.phase = phaseEnd
	f.Then = append(f.Then[:0], then...)
	if f.owner != "" {
		f.Then = append(f.Then, f.deleteAction(f.key, lockSuffix, f.owner))
		f.owner = ""
	}
	return Action{}, answer
}

// lockTTL is how long the fleet lock lives: the fetch's timeout, and a margin. A flow's state lives
// no longer.
func (f *Flow) lockTTL() int64 { return f.enc.TimeoutMS + lockMarginMS }

// oneTime reports whether the flow fetches with a grant that uses up a credential when sent: a
// refresh token the provider may rotate, or an authorization code, which works once.
func (f *Flow) oneTime() bool {
	return f.op == OpToken && oneTimeGrant(f.r.GrantType)
}

func oneTimeGrant(grant string) bool {
	return grant == abi.GrantRefreshToken || grant == abi.GrantAuthorizationCode
}

// GrantTTLMS is how long a grant's lineage is kept after its last exchange when the provider gives
// no refresh_token_expires_in (with one, the lineage lives as long as its refresh token). A lineage
// that expires sends the request's own refresh token again. Each exchange writes it anew.
const GrantTTLMS = 90 * 24 * 3600 * 1000

// fetch goes to the provider: a one-time grant first reads its lineage, so that of every host
// sharing the cache the one holding the lock sends the newest refresh token, and a code only once.
func (f *Flow) fetch() (Action, []byte) {
	if f.oneTime() {
		return f.ask(phaseMark, f.setAction(f.key, sentSuffix, f.idRecord(), GrantTTLMS, true))
	}
	return f.send()
}

// lineage reads the grant's lineage and sends what it says: its newest refresh token (an
// authorization code gives way to the refresh_token grant), or the request's own credential when
// there is none yet, an authorization code after marking it used.
func (f *Flow) lineage(answer []byte) (Action, []byte) {
	if f.op == OpRevoke {
		return f.revokeLineage(answer)
	}
	if cacheFailed(answer, f.checked) {
		// A cache that could not answer may hold the newest refresh token: sending the request's own
		// could replay a used one (RFC 9700 4.14), so nothing is sent.
		return f.finish(errorJSON(&abi.Error{Kind: abi.KindTransport, Retryable: true,
			Message: "the cache could not be read for this grant's newest refresh token; nothing was sent"}), f.unmark())
	}
	if v, ok := f.cacheValue(answer); ok && f.ours(v) {
		rec := gjson.Parse(v)
		if rt := rec.Get("refresh_token"); rt.Type == gjson.String && rt.Str != "" {
			if err := f.follow(rt.Str); err != nil {
				return f.finish(errorJSON(err), f.unmark())
			}
			return f.send()
		}
		if rec.Get("revoked").Type == gjson.True {
			return f.finish(errorJSON(&abi.Error{Kind: abi.KindInvalidGrant,
				Message: "this grant's refresh token was revoked: start a new authorization"}), f.unmark())
		}
		if rec.Get("used").Type == gjson.True {
			return f.finish(errorJSON(&abi.Error{Kind: abi.KindInvalidGrant,
				Message: "the authorization code has been used and the provider returned no refresh token: start a new authorization"}), f.unmark())
		}
		if rec.Get("refused").Type == gjson.True {
			return f.finish(errorJSON(&abi.Error{Kind: abi.KindInvalidGrant,
				Message: "the provider refused this grant's refresh token or code (invalid_grant); nothing was sent: start a new authorization"}), f.unmark())
		}
	}
	if f.r.GrantType == abi.GrantAuthorizationCode {
		return f.ask(phaseSpend, f.setAction(f.key, grantSuffix, f.grantRecord(""), GrantTTLMS, true))
	}
	return f.send()
}

// revokesLineage reports whether a revoke of r revokes a refresh token grant's refresh token, which
// is then the lineage's newest: the request's own may have been used long ago.
func revokesLineage(r *Request) bool {
	return r.AccessToken == "" && r.GrantType == abi.GrantRefreshToken
}

// revokeLineage revokes the lineage's newest refresh token (the request's own when there is none
// yet); then the grant's lineage goes with its cached token.
func (f *Flow) revokeLineage(answer []byte) (Action, []byte) {
	if cacheFailed(answer, f.checked) {
		return f.finish(errorJSON(&abi.Error{Kind: abi.KindTransport, Retryable: true,
			Message: "the cache could not be read for this grant's newest refresh token; nothing was revoked"}))
	}
	if v, ok := f.cacheValue(answer); ok && f.ours(v) {
		if rt := gjson.Get(v, "refresh_token"); rt.Type == gjson.String && rt.Str != "" {
			r := f.r.withRefreshToken(rt.Str)
			enc, err := r.EncodeRevocation(f.tokenURL)
			if err != nil {
				return f.finish(errorJSON(err))
			}
			f.r, f.enc, f.followed = r, enc, true
		}
	}
	return f.send()
}

// follow makes the flow send the refresh_token grant with rt, the lineage's newest, in place of
// the request's own credential. The cache key stays the request's: the lineage is the credential
// set's as first given.
func (f *Flow) follow(rt string) *abi.Error {
	r := f.r.withRefreshToken(rt)
	r.GrantType = abi.GrantRefreshToken
	r.Code, r.RedirectURI, r.CodeVerifier = "", "", ""
	enc, err := r.Encode()
	if err != nil {
		return err
	}
	f.r, f.enc, f.followed = r, enc, true
	return nil
}

// withRefreshToken is a copy of r carrying rt, a lineage's newest refresh token, with its secrets
// listed anew so that redaction knows rt.
func (r *Request) withRefreshToken(rt string) *Request {
	c := *r
	c.RefreshToken = rt
	c.secretList, c.secretsDone = nil, false
	return &c
}

// withheld drops from an error what the provider or the host could have quoted of a request that
// sent the lineage's refresh token: that token is not in the request the later step is given, so
// redaction would not know it. The kind, status and an RFC 6749 error code stay.
func withheld(err *abi.Error) *abi.Error {
	e := *err
	e.Description = ""
	if !knownOAuthError(e.OAuthError) {
		e.OAuthError = ""
	}
	if e.Kind == abi.KindTransport || e.Kind == abi.KindPolicy {
		e.Message = "token request failed (the host's message is withheld: it may quote the grant's newest refresh token)"
		if e.Kind == abi.KindPolicy {
			e.Message = "token request refused by the host's policy (its message is withheld: it may quote the grant's newest refresh token)"
		}
	}
	return &e
}

// knownOAuthError reports whether code is one of RFC 6749's token error codes.
func knownOAuthError(code string) bool {
	switch code {
	case "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
		"invalid_scope", "server_error", "temporarily_unavailable", "access_denied":
		return true
	}
	return false
}

// grantRecord is a lineage's value: its newest refresh token, or (none) that its code was used.
func (f *Flow) grantRecord(rt string) string {
	if rt == "" {
		return f.lineageEnd("used")
	}
	o := newObject(make([]byte, 0, 96+len(rt)))
	o.str("refresh_token", rt)
	o.str("id", f.binding())
	return view(o.end())
}

// lineageEnd is the value of a lineage with nothing left to send: its code "used" (and no refresh
// token came of it), its refresh token "revoked" by the caller or "refused" by the provider.
func (f *Flow) lineageEnd(flag string) string {
	o := newObject(make([]byte, 0, 64))
	o.bool(flag, true)
	o.str("id", f.binding())
	return view(o.end())
}

// send asks for the provider's answer: first for the host's signature of the client assertion
// (private_key_jwt), or with one made here (client_secret_jwt, a fresh jti and time each send).
func (f *Flow) send() (Action, []byte) {
	f.enc.signed = ""
	if a := f.enc.jwt; a != nil {
		jti := a.jti
		if jti == "" {
			jti = newRequestID()
		}
		if a.hostSigns() {
			f.jti = jti
			return f.ask(phaseSign, f.action(ImportSign, a.signAction(f.input(), jti, f.nowMS/1000)))
		}
		f.enc.signed = a.hmacSigned(jti, f.nowMS/1000)
	}
	return f.ask(f.sendPhase(), f.sendAction())
}

// sendPhase is the phase that waits for http_send's answer.
func (f *Flow) sendPhase() phase {
	if f.followed {
		return phaseSendLineage
	}
	return phaseSend
}

func (f *Flow) sendAction() Action {
	return Action{Import: abi.ImportHTTPSend, Input: f.m.requestJSON(f.enc)}
}

// The actions' inputs are written into buffers the flow reuses from step to step (an action lives
// until the next step): the plugin allocates nothing per step once they have grown.

func (f *Flow) getAction(key, suffix string) Action {
	o := f.input()
	o.key("key")
	o.b = appendKey(o.b, key, suffix)
	return f.action(abi.ImportCacheGet, o)
}

func (f *Flow) setAction(key, suffix, value string, ttlMS int64, nx bool) Action {
	o := f.input()
	o.key("key")
	o.b = appendKey(o.b, key, suffix)
	o.str("value", value)
	o.int("ttl_ms", ttlMS)
	if nx {
		o.bool("nx", true)
	}
	return f.action(abi.ImportCacheSet, o)
}

// deleteAction deletes key, or, with ifValue, only while key holds it (a lock's owner releases its
// own lock).
func (f *Flow) deleteAction(key, suffix, ifValue string) Action {
	o := f.input()
	o.key("key")
	o.b = appendKey(o.b, key, suffix)
	o.strOmit("if_value", ifValue)
	return f.action(abi.ImportCacheDelete, o)
}

// input starts an action's input in the next of the step's buffers.
func (f *Flow) input() object {
	return newObject(f.bufs[f.nbuf][:0])
}

func (f *Flow) action(name string, o object) Action {
	b := o.end()
	f.bufs[f.nbuf] = b
	f.nbuf++
	return Action{Import: name, Input: b}
}

// appendKey appends key+suffix as a JSON string without building it: cache keys and their
// suffixes ("/gate", "/lock") are ASCII that needs no escaping, but key is escaped anyway.
func appendKey(b []byte, key, suffix string) []byte {
	b = appendString(b, key)
	return append(append(b[:len(b)-1], suffix...), '"')
}

// cacheValue reads a cache_get answer: the value of a hit. A broken cache is a miss, never a failure.
func (f *Flow) cacheValue(out []byte) (string, bool) {
	if !f.checked && !validJSON(out, maxDepth) {
		return "", false
	}
	var m [len(cacheGetMembers)]string
	Members(view(out), cacheGetMembers[:], m[:]) // the value is read before out changes
	if m[0] != "true" || m[1] == "" || m[1][0] != '"' {
		return "", false
	}
	return gjson.Parse(m[1]).Str, true
}

// cacheGetMembers are the members of cache_get's answer that a flow reads.
var cacheGetMembers = [...]string{"hit", "value"}

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
// Signing is not an import: a flow that needs the host's signature ends there with
// signing_required (a cached token is still served, and a held lock released).
func (f *Flow) Run(host Imports) []byte {
	var answer []byte
	for {
		next, final := f.Step(answer)
		if next.Import == ImportSign {
			next, final = f.finish(errorJSON(SigningRequired()))
		}
		if next.Import == "" {
			ok := true
			for _, a := range f.Then {
				if a.AfterOK && !ok {
					continue
				}
				ok = !cacheFailed(perform(host, a), false) && ok
			}
			return final
		}
		answer = perform(host, next)
	}
}

// The state of a flow between two token_step calls, as the host carries it:
//
//	tw2.<op><phase><fails>.<now_ms>.<life_ms>.<binding>.<lock owner>[.<jti>].<seal>
//
// fails (one hex digit) is the count of transient failures in a row the gate showed, for the
// backoff of the next one. binding is the first 128 bits of the request's cache-key hash: a state resumes with the request
// whose identity it began with, and no other. life_ms is how long after now_ms it may be resumed.
// jti, while the host signs, is the client assertion's: with now_ms (its iat) it rebuilds the
// signing input when the signature comes back. seal is an HMAC-SHA256 (128 bits, hex) of all that
// came before it, keyed by stateKey: a state the plugin did not write, or changed in any byte, is
// refused, and every instance given the request can check it with no shared configuration. Nothing
// in it is a secret.
const (
	statePrefix  = "tw2."
	bindingChars = 32
	sealChars    = 32
	maxState     = 256
)

// appendState appends the state, as a JSON string (it needs no escaping).
func (f *Flow) appendState(b []byte) []byte {
	b = append(b, '"')
	start := len(b)
	b = append(b, statePrefix...)
	b = append(b, f.op, '0'+byte(f.phase), hexDigits[f.fails], '.')
	b = strconv.AppendInt(b, f.nowMS, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, f.lifeMS, 10)
	b = append(append(b, '.'), f.binding()...)
	b = append(append(b, '.'), f.owner...)
	if f.phase == phaseSign {
		b = append(append(b, '.'), f.jti...)
	}
	b = append(b, '.')
	b = f.appendSeal(b, b[start:len(b)-1])
	return append(b, '"')
}

// appendSeal appends the seal of body: the first sealChars hex digits of its HMAC under stateKey.
// The memo keeps the last state it sealed for the request it holds, and its seal: the next step on
// the instance resumes that very state, and its seal is then read back rather than computed again
// (the same bytes under the same key: the same seal). A flow's steps compute half the HMACs they did.
func (f *Flow) appendSeal(b, body []byte) []byte {
	last := f.lastSealed()
	if last != nil && len(last.body) > 0 && bytes.Equal(last.body, body) {
		return append(b, last.seal[:]...)
	}
	mac := f.sealMAC()
	mac.Write(body)
	b = hex.AppendEncode(b, mac.Sum(f.sum[:0])[:sealChars/2])
	if last != nil {
		last.body = append(last.body[:0], body...)
		copy(last.seal[:], b[len(b)-sealChars:])
	}
	return b
}

// sealedState is a state's body and its seal, as the memo keeps the last one sealed; an empty body:
// none yet (a state is never empty).
type sealedState struct {
	body []byte
	seal [sealChars]byte
}

// lastSealed returns the memo's last sealed state, when the memo holds this flow's request (whose
// identity keys the seal; a memo given another request starts afresh, without it), else nil.
func (f *Flow) lastSealed() *sealedState {
	if !f.memoHoldsRequest() {
		return nil
	}
	return &f.m.sealed
}

// memoHoldsRequest reports whether the memo holds the request whose identity keys this flow's
// seal: only then may the flow keep its seal's HMAC and last seal there.
func (f *Flow) memoHoldsRequest() bool { return f.m != nil && f.m.enc == f.tokenEnc }

// sealMAC returns the state's HMAC, reset. Deriving its key and pads is most of a seal's cost, and
// every step of a flow seals or checks one: the memo keeps it while it holds the request it is
// keyed by (a memo given another request starts afresh, so no HMAC outlives its request there).
func (f *Flow) sealMAC() hash.Hash {
	if f.seal == nil {
		held := f.memoHoldsRequest()
		if held && f.m.seal != nil {
			f.seal = f.m.seal
		} else {
			key := stateKey(f.tokenEnc)
			f.seal = hmac.New(sha256.New, key[:])
			if held {
				f.m.seal = f.seal
			}
		}
	}
	f.seal.Reset()
	return f.seal
}

func (f *Flow) binding() string { return f.key[len(f.key)-bindingChars:] }

// ours reports whether a cache value (a token or a gate) names this flow's identity. A host that
// gives a flow the answer of another flow's cache_get (callbacks crossed in an asynchronous host)
// then gets a miss, never another tenant's token or gate.
func (f *Flow) ours(v string) bool { return gjson.Get(v, "id").Str == f.binding() }

// resume restores the state s into f, a flow just started for the request sent with it.
func (f *Flow) resume(s string) *abi.Error {
	if len(s) > maxState || len(s) < len(statePrefix)+sealChars+1 || !strings.HasPrefix(s, statePrefix) {
		return badState()
	}
	body, seal := s[:len(s)-sealChars-1], s[len(s)-sealChars:]
	if s[len(body)] != '.' {
		return badState()
	}
	if !hmac.Equal(f.appendSeal(f.check[:0], bytesOf(body)), bytesOf(seal)) {
		// Not written by this plugin for this request: another request's state (its binding differs)
		// is told apart, for the host's sake.
		if !strings.Contains(body, "."+f.binding()+".") {
			return invalidRequest("token_step: state belongs to another request")
		}
		return badState()
	}
	rest := body[len(statePrefix):]
	if len(rest) < 4 || rest[3] != '.' {
		return badState()
	}
	op, p := rest[0], phase(rest[1]-'0')
	fails := int64(strings.IndexByte(hexDigits, rest[2]))
	var fields [5]string
	n := splitN(rest[4:], '.', fields[:])
	if n < 4 {
		return badState()
	}
	now, err1 := strconv.ParseInt(fields[0], 10, 64)
	life, err2 := strconv.ParseInt(fields[1], 10, 64)
	binding, owner := fields[2], fields[3]
	jti, signing := "", n == 5
	if signing {
		jti = fields[4]
	}
	switch {
	case err1 != nil || err2 != nil || now < 0 || life <= 0 || fails < 0 || fails > maxFails:
		return badState()
	case !resumable(op, p): // a phase the transition table has for op
		return badState()
	case binding != f.binding():
		return invalidRequest("token_step: state belongs to another request")
	case now != f.nowMS && (f.r.NowMS > 0 || f.nowMS-now > stateLife(life, p) || now-f.nowMS > stateLife(life, p)):
		// The state's clock is the flow's for every later step: a state kept past the lock's TTL
		// (or replayed after its flow ended) would judge a cached token by a time long gone and claim
		// a lock that has expired. A request that fixes now_ms fixes the state's too. A fresh flow
		// may succeed: retryable.
		e := invalidRequest("token_step: state has expired; start the flow again")
		e.Retryable = true
		return e
	case owner != "" && (!isRequestID(owner) || p < phaseLock || p == phaseInvalidate || p == phaseDrop):
		return badState()
	case signing != (p == phaseSign), signing && (!validJTI(jti) || f.enc.jwt == nil || !f.enc.jwt.hostSigns()):
		return badState()
	}
	f.op, f.phase, f.nowMS, f.lifeMS, f.owner, f.jti, f.fails = op, p, now, life, owner, jti, fails
	return nil
}

// splitN is strings.SplitN(s, sep, len(out)) into out, without allocating: it returns how many
// fields it wrote.
func splitN(s string, sep byte, out []string) int {
	n := 0
	for n < len(out)-1 {
		i := strings.IndexByte(s, sep)
		if i < 0 {
			break
		}
		out[n], s = s[:i], s[i+1:]
		n++
	}
	out[n] = s
	return n + 1
}

// stateSlackMS is how much longer than the lock's TTL a state waiting for the provider's answer or
// the host's signature lives: those take the network's time, and a host slowed down (a busy machine,
// a remote KMS) must not lose an answer that arrived within its own timeout. Such a state judges no
// cached token: its clock only dates the token it decodes, a little early.
const stateSlackMS = 60000

// stateLife is how long after the flow's start a state in phase p may be resumed, for a flow whose
// lock lives lockTTL.
func stateLife(lockTTL int64, p phase) int64 {
	if p == phaseSend || p == phaseSign || p == phaseSendLineage {
		return lockTTL + stateSlackMS
	}
	return lockTTL
}

// isRequestID reports whether s is what newRequestID writes (lower-case hex in the 8-4-4-4-12 form):
// the owner goes back into the next state unescaped, so nothing else may pass.
func isRequestID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !('0' <= c && c <= '9' || 'a' <= c && c <= 'f'):
			return false
		}
	}
	return true
}

func badState() *abi.Error {
	return invalidRequest("token_step: state is not one this plugin gave for this request")
}

// stepMembers are token_step's input members; of a repeated one the first is read (Members).
var stepMembers = [...]string{"request", "state", "answer", "op"}

// TokenStep is the token_step export: one step of the token (or invalidate) flow. Input
// {"request", "state"?, "answer"?, "op"?}; output the next action {"next":{"import","input"},
// "state"}, or the final answer of token (or invalidate), with "then" when actions remain.
func TokenStep(m *Memo, input []byte, now Clock) []byte {
	// The answer sits one level down: an answer token would take (maxDepth deep) is taken here too.
	if err := checkJSONDepth(input, "input", maxDepth+1); err != nil {
		return errorJSON(err)
	}
	v, err := asObject(gjson.Parse(view(input)), "input") // nothing read from it outlives the call
	if err != nil {
		return errorJSON(err)
	}
	var in [len(stepMembers)]string
	Members(v.Raw, stepMembers[:], in[:])
	request, state, answerRaw, opRaw := in[0], in[1], in[2], in[3]
	if request == "" || request[0] != '{' {
		return errorJSON(invalidRequest("token_step needs a request object"))
	}
	op := byte(OpToken)
	switch opRaw {
	case "", `"` + abi.OpToken + `"`, "null":
	case `"` + abi.OpInvalidate + `"`:
		op = OpInvalidate
	case `"` + abi.OpRevoke + `"`:
		op = OpRevoke
	default:
		return errorJSON(invalidRequest(`token_step: op must be "token", "invalidate" or "revoke"`))
	}
	f, out := m.stepFlow(within(input, request), op, now, true)
	if f == nil {
		return out
	}
	var answer []byte
	if state != "" && state != "null" {
		st := gjson.Parse(state)
		if st.Type != gjson.String {
			return errorJSON(invalidRequest("token_step: state must be a string"))
		}
		if err := f.resume(st.Str); err != nil {
			return errorJSON(err)
		}
		if answerRaw != "" && answerRaw != "null" {
			answer = within(input, answerRaw)
		}
	}
	next, final := f.Step(answer)
	if next.Import == "" {
		return appendThen(final, f.Then)
	}
	b := m.answerBuf(len(next.Input) + 192)
	b = append(b, `{"next":{"import":`...)
	b = appendString(b, next.Import)
	b = append(append(b, `,"input":`...), next.Input...)
	b = append(b, `},"state":`...)
	b = f.appendState(b)
	b = append(b, '}')
	if m != nil {
		m.step.out = b
	}
	return b
}

// stepScratch is what a Memo keeps for token_step: a flow, and the buffer of its answers.
type stepScratch struct {
	flow Flow
	out  []byte
}

// stepFlow starts a flow in the memo's reusable Flow (a new one for a nil memo): for a flow that
// ends within the call (token_step's one step, the token export's loop). checked: the answers come
// inside an input already checked as JSON.
func (m *Memo) stepFlow(request []byte, op byte, now Clock, checked bool) (*Flow, []byte) {
	if m == nil {
		return m.startFlow(new(Flow), request, op, now, checked)
	}
	return m.startFlow(&m.scratchStep().flow, request, op, now, checked)
}

// startFlow starts in f (its buffers kept) a flow for the TokenRequest in request.
func (m *Memo) startFlow(f *Flow, request []byte, op byte, now Clock, checked bool) (*Flow, []byte) {
	r, enc, key, err := m.Prepare(request)
	if err != nil {
		return nil, errorJSON(err)
	}
	tokenURL, tokenEnc := enc.URL, enc
	if op == OpRevoke {
		if enc, err = r.EncodeRevocation(enc.URL); err != nil {
			return nil, errorJSON(err)
		}
	}
	if (op == OpToken && oneTimeGrant(r.GrantType) || op == OpRevoke && revokesLineage(r)) && enc.jwt != nil && enc.jwt.hostSigns() {
		// The newest refresh token is read from the cache in the step before the send, and the
		// host's signature arrives in a step of its own: one of the two would have to wait in the
		// state, which holds no credential.
		return nil, errorJSON(invalidRequest(r.profile.ClientAuth + " cannot be combined with the " + r.GrantType +
			" grant: the host-signed assertion and the grant's newest refresh token would have to cross steps"))
	}
	*f = Flow{m: m, r: r, enc: enc, key: key, op: op, nowMS: r.now(now), checked: checked, Then: f.Then[:0], bufs: f.bufs,
		tokenURL: tokenURL, tokenEnc: tokenEnc}
	f.lifeMS = f.lockTTL()
	return f, nil
}

func (m *Memo) scratchStep() *stepScratch {
	if m.step == nil {
		m.step = new(stepScratch)
	}
	return m.step
}

// answerBuf returns the memo's answer buffer emptied, with room for n bytes.
func (m *Memo) answerBuf(n int) []byte {
	if m == nil || m.step == nil {
		return make([]byte, 0, n)
	}
	if cap(m.step.out) < n {
		m.step.out = make([]byte, 0, n)
	}
	return m.step.out[:0]
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
		if a.AfterOK {
			o.bool("after_ok", true)
		}
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
