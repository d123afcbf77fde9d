package main

import (
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// Config is the filter's plugin configuration (JSON).
type Config struct {
	// Request is the token request of ABI v1 (abi.TokenRequest).
	Request json.RawMessage `json:"request"`
	// SecretFile, when set, holds the client secret (read at start), instead of request.client_secret.
	SecretFile string `json:"secret_file,omitempty"`
	// Cluster is the Envoy cluster that reaches the token endpoint.
	Cluster string `json:"cluster"`
	// Header is the header to set (default Authorization, value "Bearer <token>").
	Header string `json:"header,omitempty"`
	// RefreshAheadMS starts a refresh this long before expiry, on the tick (default 60000).
	RefreshAheadMS int64 `json:"refresh_ahead_ms,omitempty"`
	// Paths and Hosts limit the filter to requests whose path has one of the prefixes and whose
	// :authority is one of the hosts (empty: all).
	Paths []string `json:"paths,omitempty"`
	Hosts []string `json:"hosts,omitempty"`
	// FailureStatus is the local reply's status when no token can be had (default 503).
	FailureStatus uint32 `json:"failure_status,omitempty"`
	// WaitMS bounds how long a request waits for a token fetch (default 10000).
	WaitMS int64 `json:"wait_ms,omitempty"`
}

const tickMS = 50 // how often waiting requests on other workers look for the token, and refresh runs

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	return &pluginContext{waiting: map[uint32]int64{}}
}

// pluginContext holds one worker's configuration and the requests paused on it.
type pluginContext struct {
	types.DefaultPluginContext
	cfg     Config
	input   []byte        // the token request with its secret, as the core reads it
	req     *core.Request // parsed once
	enc     *core.HTTPRequest
	key     string           // the identity's cache key: shared-data keys derive from it
	waiting map[uint32]int64 // paused http contexts -> give-up time (Unix ms)
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err == nil {
		err = p.configure(data)
	}
	if err != nil {
		proxywasm.LogCriticalf("tokenwasm: bad configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if err := proxywasm.SetTickPeriodMilliSeconds(tickMS); err != nil {
		proxywasm.LogCriticalf("tokenwasm: set tick: %v", err)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

// configure parses the configuration and encodes the token request once. Errors never quote the
// request (it holds the secret).
func (p *pluginContext) configure(data []byte) error {
	if err := json.Unmarshal(data, &p.cfg); err != nil {
		return errors.New("configuration is not valid JSON")
	}
	if p.cfg.Cluster == "" {
		return errors.New("cluster is required")
	}
	if p.cfg.Header == "" {
		p.cfg.Header = "Authorization"
	}
	if p.cfg.RefreshAheadMS <= 0 {
		p.cfg.RefreshAheadMS = 60000
	}
	if p.cfg.FailureStatus == 0 {
		p.cfg.FailureStatus = 503
	}
	if p.cfg.WaitMS <= 0 {
		p.cfg.WaitMS = 10000
	}
	var req map[string]any
	if err := json.Unmarshal(p.cfg.Request, &req); err != nil {
		return errors.New("request must be a TokenRequest object")
	}
	if p.cfg.SecretFile != "" {
		b, err := os.ReadFile(p.cfg.SecretFile)
		if err != nil {
			return errors.New("secret_file cannot be read")
		}
		req["client_secret"] = strings.TrimRight(string(b), "\r\n")
	}
	p.input, _ = json.Marshal(req)
	r, enc, key, aerr := core.Prepare(p.input)
	if aerr != nil {
		return errors.New("request: " + aerr.Kind + ": " + aerr.Message)
	}
	p.req, p.enc, p.key = r, enc, key
	return nil
}

func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{id: contextID, p: p}
}

// Shared data, visible to every worker of the VM: the token, the 429 gate, the fetch marker and the
// last failure.
func (p *pluginContext) tokenKey() string { return p.key }
func (p *pluginContext) gateKey() string  { return core.GateKey(p.key) }
func (p *pluginContext) fetchKey() string { return p.key + "/fetch" }
func (p *pluginContext) errorKey() string { return p.key + "/error" }

// held is the token in shared data.
type held struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAtMS int64  `json:"expires_at_ms"`
	IssuedAtMS  int64  `json:"issued_at_ms"`
}

func (p *pluginContext) token() *held {
	b, _, err := proxywasm.GetSharedData(p.tokenKey())
	if err != nil || len(b) == 0 {
		return nil
	}
	var h held
	if json.Unmarshal(b, &h) != nil || h.AccessToken == "" {
		return nil
	}
	return &h
}

// skew is how long before expiry a token stops being used: a minute, or a quarter of a short life.
func skew(h *held) int64 { return min(core.MaxSkewMS, (h.ExpiresAtMS-h.IssuedAtMS)/4) }

func (p *pluginContext) usable(h *held, now int64) bool {
	return h != nil && h.ExpiresAtMS-now > skew(h)
}

// until reads an {"until_ms"} value of shared data.
func until(key string) int64 {
	b, _, err := proxywasm.GetSharedData(key)
	if err != nil || len(b) == 0 {
		return 0
	}
	return gjson.GetBytes(b, "until_ms").Int()
}

func nowMS() int64 { return time.Now().UnixMilli() }

// setShared writes shared data unconditionally. Hosts differ on what CAS 0 means (Envoy: no check;
// proxytest: a mismatch once the key exists), so it writes with the current CAS, retrying a race.
func setShared(key string, value []byte) {
	for range 8 {
		_, cas, _ := proxywasm.GetSharedData(key)
		if err := proxywasm.SetSharedData(key, value, cas); !errors.Is(err, types.ErrorStatusCasMismatch) {
			return
		}
	}
}

// startFetch dispatches the token request unless another worker is fetching. The marker in shared
// data is written with CAS, so exactly one worker wins; its deadline lets a lost call be retried.
func (p *pluginContext) startFetch(now int64) {
	b, cas, err := proxywasm.GetSharedData(p.fetchKey())
	if err == nil && len(b) > 0 && gjson.GetBytes(b, "until_ms").Int() > now {
		return // a fetch is in progress on some worker
	}
	marker := []byte(`{"until_ms":` + strconv.FormatInt(now+p.enc.TimeoutMS+1000, 10) + `}`)
	if err := proxywasm.SetSharedData(p.fetchKey(), marker, cas); err != nil {
		return // another worker won the CAS
	}
	u, err := url.Parse(p.enc.URL)
	if err != nil {
		p.fetchFailed(&abi.Error{Kind: abi.KindInvalidRequest, Message: "token_url cannot be parsed"}, now)
		return
	}
	headers := append([][2]string{{":method", p.enc.Method}, {":path", u.RequestURI()}, {":authority", u.Host}, {":scheme", u.Scheme}}, p.enc.HeaderPairs()...)
	_, err = proxywasm.DispatchHttpCall(p.cfg.Cluster, headers, []byte(p.enc.Body), nil, uint32(p.enc.TimeoutMS), p.onTokenResponse)
	if err != nil {
		p.fetchFailed(dispatchError(err), now)
	}
}

// dispatchError types a failed proxy_http_call. Envoy answers BadArgument when it will not send the
// call at all (the cluster is not configured, a required header is missing): the same call is
// refused again, so it is kind policy, not retryable, like a host's policy refusal. Anything else
// (InternalFailure) may pass.
func dispatchError(err error) *abi.Error {
	if errors.Is(err, types.ErrorStatusBadArgument) || errors.Is(err, types.ErrorStatusNotFound) {
		return &abi.Error{Kind: abi.KindPolicy, Message: "the proxy refused to call the token cluster (is it configured?)"}
	}
	return &abi.Error{Kind: abi.KindTransport, Retryable: true, Message: "cannot reach the token cluster"}
}

// onTokenResponse decodes the provider's answer with the core, shares the token (or the 429 gate,
// or the failure) and resumes the requests waiting on this worker.
func (p *pluginContext) onTokenResponse(numHeaders, bodySize, _ int) {
	now := nowMS()
	resp := &core.Response{Transport: "no response from the token cluster"}
	if numHeaders > 0 {
		hs, _ := proxywasm.GetHttpCallResponseHeaders()
		body, _ := proxywasm.GetHttpCallResponseBody(0, min(bodySize, core.MaxBodyBytes+1))
		resp = &core.Response{Body: string(body)}
		obj := map[string]string{}
		for _, h := range hs {
			if h[0] == ":status" {
				resp.Status, _ = strconv.Atoi(h[1])
			} else {
				obj[h[0]] = h[1]
			}
		}
		hb, _ := json.Marshal(obj)
		resp.Headers = gjson.ParseBytes(hb)
	}
	tok, aerr := p.req.Decode(resp, now)
	setShared(p.fetchKey(), nil)
	if aerr != nil {
		if aerr.Kind == abi.KindRateLimited {
			gate := `{"until_ms":` + strconv.FormatInt(now+aerr.RetryAfterMS, 10) + `}`
			setShared(p.gateKey(), []byte(gate))
		}
		p.fetchFailed(aerr, now)
		return
	}
	b, _ := json.Marshal(held{AccessToken: tok.AccessToken, TokenType: tok.TokenType, ExpiresAtMS: tok.ExpiresAtMS, IssuedAtMS: tok.IssuedAtMS})
	setShared(p.tokenKey(), b)
	setShared(p.errorKey(), nil)
	p.resumeAll(now)
}

// fetchFailed shares the failure briefly (other workers' waiting requests fail with it on their
// tick) and fails this worker's waiting requests now.
func (p *pluginContext) fetchFailed(e *abi.Error, now int64) {
	setShared(p.fetchKey(), nil)
	b := core.ErrorJSON(e)
	setShared(p.errorKey(), []byte(`{"until_ms":`+strconv.FormatInt(now+1000, 10)+`,"body":`+strconv.Quote(string(b))+`}`))
	p.resumeAll(now)
}

// resumeAll resumes (or fails) every request waiting on this worker, from the shared state.
func (p *pluginContext) resumeAll(now int64) {
	for id, giveUp := range p.waiting {
		if err := proxywasm.SetEffectiveContext(id); err != nil {
			delete(p.waiting, id)
			continue
		}
		if done := p.settle(now, giveUp); done {
			delete(p.waiting, id)
		}
	}
}

// settle decides one waiting request: token -> header and resume; gate or failure or timeout -> a
// local reply. It reports whether the request is decided.
func (p *pluginContext) settle(now, giveUp int64) bool {
	if h := p.token(); p.usable(h, now) {
		_ = proxywasm.ReplaceHttpRequestHeader(p.cfg.Header, "Bearer "+h.AccessToken)
		_ = proxywasm.ResumeHttpRequest()
		return true
	}
	if g := until(p.gateKey()); g > now {
		p.reply(core.ErrorJSON(&abi.Error{Kind: abi.KindRateLimited, Retryable: true, RetryAfterMS: g - now,
			Message: "provider rate-limited token requests; waiting for its Retry-After"}))
		return true
	}
	if b, _, err := proxywasm.GetSharedData(p.errorKey()); err == nil && len(b) > 0 && gjson.GetBytes(b, "until_ms").Int() > now {
		p.reply([]byte(gjson.GetBytes(b, "body").String()))
		return true
	}
	if now > giveUp {
		p.reply(core.ErrorJSON(&abi.Error{Kind: abi.KindTransport, Retryable: true, Message: "timed out waiting for a token"}))
		return true
	}
	return false
}

func (p *pluginContext) reply(body []byte) {
	_ = proxywasm.SendHttpResponse(p.cfg.FailureStatus, [][2]string{{"content-type", "application/json"}}, body, -1)
}

// OnTick settles the requests waiting on this worker (the fetch may have run on another) and refreshes
// the token ahead of expiry, so no request waits while a token is valid.
func (p *pluginContext) OnTick() {
	now := nowMS()
	if h := p.token(); h != nil && h.ExpiresAtMS-now < p.cfg.RefreshAheadMS && until(p.gateKey()) <= now {
		p.startFetch(now)
	}
	if len(p.waiting) > 0 {
		p.resumeAll(now)
	}
}

type httpContext struct {
	types.DefaultHttpContext
	id uint32
	p  *pluginContext
}

func (c *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	p := c.p
	if !p.applies() {
		return types.ActionContinue
	}
	now := nowMS()
	if h := p.token(); p.usable(h, now) {
		_ = proxywasm.ReplaceHttpRequestHeader(p.cfg.Header, "Bearer "+h.AccessToken)
		return types.ActionContinue
	}
	if until(p.gateKey()) <= now {
		p.startFetch(now)
	}
	if p.settle(now, now+p.cfg.WaitMS) { // the gate is closed, or a failure is fresh
		return types.ActionPause
	}
	p.waiting[c.id] = now + p.cfg.WaitMS
	return types.ActionPause
}

func (c *httpContext) OnHttpStreamDone() { delete(c.p.waiting, c.id) }

// applies reports whether the current request's path and host are in scope.
func (p *pluginContext) applies() bool {
	if len(p.cfg.Paths) > 0 {
		path, _ := proxywasm.GetHttpRequestHeader(":path")
		ok := false
		for _, pre := range p.cfg.Paths {
			ok = ok || strings.HasPrefix(path, pre)
		}
		if !ok {
			return false
		}
	}
	if len(p.cfg.Hosts) > 0 {
		host, _ := proxywasm.GetHttpRequestHeader(":authority")
		for _, h := range p.cfg.Hosts {
			if strings.EqualFold(h, host) {
				return true
			}
		}
		return false
	}
	return true
}
