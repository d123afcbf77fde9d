//go:build !wasip1

package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// private_key_jwt in the filter: the flow's sign action answered with a key from secret_env, against
// the SMART fake, which verifies each assertion against the client's public keys and refuses a jti it
// has seen. The compiled filter gets the keys' variables from testenv_wasip1.go (its only way to an
// environment in proxytest's wasm engine); the native one from the process environment.

// testKey is a client key, as the filter reads it from its environment variable.
type testKey struct {
	env, value string // the variable and its value (PEM or JWK)
	alg, kid   string
	signer     crypto.Signer
}

const (
	smartClientID  = "envoy-smart-client"
	garbledKeyEnv  = "TOKENWASM_TEST_GARBLED_KEY"
	unsetKeyEnv    = "TOKENWASM_TEST_UNSET_KEY"
	smartScope     = "system/Patient.rs"
	smartCluster   = "smart_token"
	smartPrefix    = "tokenwasm." + smartCluster + ".smart."
	assertionField = "client_assertion"
)

var (
	keysOnce sync.Once
	// es384Key is PKCS #8 PEM, rs384Key PKCS #1 PEM (RSA 2048), es384JWK the ES384 key as a JWK.
	es384Key, rs384Key, es384JWK *testKey
	garbledKey                   string // PEM armour around bytes that are no key
)

func testKeys() {
	keysOnce.Do(func() {
		ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			panic(err)
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		p8, _ := x509.MarshalPKCS8PrivateKey(ec)
		es384Key = &testKey{env: "TOKENWASM_TEST_ES384_KEY", alg: "ES384", kid: "envoy-es384", signer: ec,
			value: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}))}
		rs384Key = &testKey{env: "TOKENWASM_TEST_RS384_KEY", alg: "RS384", kid: "envoy-rs384", signer: rk,
			value: string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))}
		es384JWK = &testKey{env: "TOKENWASM_TEST_ES384_JWK", alg: "ES384", kid: "envoy-es384", signer: ec, value: ecJWK(ec, "envoy-es384")}
		junk := make([]byte, 120)
		rand.Read(junk)
		garbledKey = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: junk}))
	})
}

// wasmEnviron is the compiled filter's environment (testenv_wasip1.go): the keys' variables.
func wasmEnviron() string {
	testKeys()
	var b strings.Builder
	for _, k := range []*testKey{es384Key, rs384Key, es384JWK} {
		b.WriteString(k.env + "=" + k.value + "\x00")
	}
	b.WriteString(garbledKeyEnv + "=" + garbledKey)
	return base64.StdEncoding.EncodeToString([]byte(b.String()))
}

// keyEnvironment gives the native filter the variables the compiled one has.
func keyEnvironment(t *testing.T, runner string) {
	testKeys()
	if runner == "native" {
		for _, k := range []*testKey{es384Key, rs384Key, es384JWK} {
			t.Setenv(k.env, k.value)
		}
		t.Setenv(garbledKeyEnv, garbledKey)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func ecJWK(k *ecdsa.PrivateKey, kid string) string {
	n := (k.Curve.Params().BitSize + 7) / 8
	pub, _ := k.PublicKey.Bytes()
	d := make([]byte, n)
	k.D.FillBytes(d)
	b, _ := json.Marshal(map[string]string{"kty": "EC", "crv": k.Curve.Params().Name, "kid": kid,
		"x": b64(pub[1 : 1+n]), "y": b64(pub[1+n:]), "d": b64(d)})
	return string(b)
}

func rsaJWK(k *rsa.PrivateKey, kid string) string {
	b, _ := json.Marshal(map[string]string{"kty": "RSA", "kid": kid, "n": b64(k.N.Bytes()),
		"e": b64(big.NewInt(int64(k.E)).Bytes()), "d": b64(k.D.Bytes()), "p": b64(k.Primes[0].Bytes()), "q": b64(k.Primes[1].Bytes())})
	return string(b)
}

// keyMaterial lists the forms a key's private parts could take in a leak: the variable's value and
// each line of it, and every private number in base64url, base64, hex and decimal.
func keyMaterial(k *testKey) []string {
	out := []string{k.value}
	for _, line := range strings.Split(k.value, "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	var nums []*big.Int
	switch s := k.signer.(type) {
	case *ecdsa.PrivateKey:
		nums = append(nums, s.D)
	case *rsa.PrivateKey:
		nums = append(nums, s.D, s.Primes[0], s.Primes[1], s.Precomputed.Dp, s.Precomputed.Dq, s.Precomputed.Qinv)
	}
	for _, n := range nums {
		b := n.Bytes()
		out = append(out, b64(b), base64.StdEncoding.EncodeToString(b), hex.EncodeToString(b), n.String())
	}
	return out
}

// seenAssertion is a client assertion the filter sent, as read from its token call.
type seenAssertion struct {
	Alg, Kid, Typ string
	Iss, Sub, Aud string
	Jti           string
	Iat, Exp      int64
}

type smartRun struct {
	*harness
	fake *providertest.SMART
	key  *testKey
	mu   sync.Mutex
	sent []seenAssertion
	wire []string // every token call's headers and body
}

func smartConfig(tokenURL string, key *testKey, extra map[string]any) map[string]any {
	conf := map[string]any{
		"request": map[string]any{"provider": "smart", "client_id": smartClientID, "token_url": tokenURL,
			"key_id": key.kid, "assertion_alg": key.alg, "scope": smartScope},
		"secret_env": map[string]string{"private_key": key.env},
		"cluster":    smartCluster, "paths": []string{"/api/"},
	}
	for k, v := range extra {
		if v == nil {
			delete(conf, k)
		} else {
			conf[k] = v
		}
	}
	return conf
}

// startSMART starts the filter against an https SMART fake that knows the client's public key under
// key.kid. The fake's clock is the filter's: the native runner's clock, or for the compiled filter
// (wazero's fake clock, in 2022) one second after the assertion's iat.
func startSMART(t *testing.T, runner string, key *testKey) *smartRun {
	t.Helper()
	keyEnvironment(t, runner)
	ca, err := providertest.NewCA("tokenwasm envoy test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var fakeNow atomic.Int64
	fake, err := providertest.Server{Certificate: &cert}.NewSMART(providertest.SMARTConfig{ClientID: smartClientID,
		Keys: map[string]crypto.PublicKey{key.kid: key.signer.Public()},
		Now:  func() time.Time { return time.UnixMilli(fakeNow.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	s := &smartRun{fake: fake, key: key}
	s.harness = emulate(t, runner, smartConfig(fake.TokenURL(), key, nil))
	s.upstream, s.cluster = fake.URL(), smartCluster
	s.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	s.onCallout = func(c proxytest.HttpCalloutAttribute) {
		form, err := url.ParseQuery(string(c.Body))
		if err != nil {
			t.Fatalf("token call body: %v", err)
		}
		a := decodeAssertion(t, form.Get(assertionField))
		s.mu.Lock()
		s.sent = append(s.sent, a)
		s.wire = append(s.wire, string(c.Body))
		for _, h := range c.Headers {
			s.wire = append(s.wire, h[0]+": "+h[1])
		}
		s.mu.Unlock()
		if s.clock != nil {
			fakeNow.Store(s.clock.now())
		} else {
			fakeNow.Store((a.Iat + 1) * 1000)
		}
	}
	if st := s.host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("plugin start: %v (critical logs %q)", st, s.host.GetCriticalLogs())
	}
	return s
}

func decodeAssertion(t *testing.T, jwt string) seenAssertion {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("client_assertion is not a compact JWS: %d parts", len(parts))
	}
	var a seenAssertion
	for _, p := range parts[:2] {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || json.Unmarshal(b, &a) != nil {
			t.Fatalf("client_assertion part %q", p)
		}
	}
	return a
}

// fetch makes a request in scope that waits for a token call, answers it, and returns the header.
func (s *smartRun) fetch(t *testing.T) (uint32, string) {
	t.Helper()
	id, act := s.request("/api/Patient")
	if act != types.ActionPause {
		t.Fatalf("request: %v, want a wait for the token call (local reply %v)", act, s.host.GetSentLocalResponse(id))
	}
	if n := s.answerAll(); n != 1 {
		t.Fatalf("%d token calls, want 1", n)
	}
	return id, s.bearer(t, id)
}

func (s *smartRun) bearer(t *testing.T, id uint32) string {
	t.Helper()
	h := s.header(id)
	if typ, tok, _ := strings.Cut(h, " "); !strings.EqualFold(typ, "bearer") || tok == "" {
		r := s.host.GetSentLocalResponse(id)
		var body string
		if r != nil {
			body = string(r.Data)
		}
		t.Fatalf("no token on the request (header %q, local reply %s)", h, body)
	}
	return h
}

// TestPrivateKeyJWT (native and .wasm): with an ES384 key (PKCS #8 PEM) and an RS384 key (PKCS #1
// PEM), the filter fetches SMART tokens whose assertions the fake verifies; each token call carries
// a new assertion (the fake refuses a jti twice; the jtis are checked distinct here too), with the
// configured alg and kid, iss = sub = the client id, aud the token URL, iat the filter's clock and exp
// four minutes on. Natively a third call is the refresher's, ahead of expiry. The private key is
// nowhere in the logs, shared data, metric names or token calls.
func TestPrivateKeyJWT(t *testing.T) {
	testKeys()
	for _, key := range []*testKey{es384Key, rs384Key} {
		t.Run(key.alg, func(t *testing.T) {
			runners(t, func(t *testing.T, runner string) {
				s := startSMART(t, runner, key)
				id1, tok1 := s.fetch(t)
				// The upstream refuses the token: the flow drops it, and the next request fetches anew.
				s.host.CallOnResponseHeaders(id1, [][2]string{{":status", "401"}}, false)
				_, tok2 := s.fetch(t)
				if tok2 == tok1 {
					t.Fatal("the token after a 401 is the dropped one")
				}
				calls := 2
				if s.clock != nil { // the refresher: one call at refresh_at_ms (200 s into a 5-minute token)
					s.clock.advance(201 * time.Second)
					s.ticks(1)
					if n := s.answerAll(); n != 1 {
						t.Fatalf("%d refresh calls, want 1", n)
					}
					calls++
					if got := s.counterOf(t, "refreshes"); got != 1 {
						t.Fatalf("refreshes = %d, want 1", got)
					}
					id3, _ := s.request("/api/Patient")
					if tok3 := s.bearer(t, id3); tok3 == tok2 {
						t.Fatal("the refreshed token is the old one")
					}
				}
				if got := s.counterOf(t, "fetches"); got != uint64(calls) {
					t.Fatalf("fetches = %d, want %d", got, calls)
				}
				s.checkAssertions(t, calls)
				s.checkNoKey(t, key)
			})
		})
	}
}

func (s *smartRun) counterOf(t *testing.T, name string) uint64 {
	t.Helper()
	v, _ := s.host.GetCounterMetric(smartPrefix + name)
	return v
}

func (s *smartRun) checkAssertions(t *testing.T, calls int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sent) != calls {
		t.Fatalf("%d assertions sent, want %d", len(s.sent), calls)
	}
	jtis := map[string]bool{}
	for i, a := range s.sent {
		if jtis[a.Jti] || a.Jti == "" {
			t.Fatalf("assertion %d: jti %q is not new", i, a.Jti)
		}
		jtis[a.Jti] = true
		if a.Alg != s.key.alg || a.Kid != s.key.kid || a.Typ != "JWT" || a.Iss != smartClientID || a.Sub != smartClientID ||
			a.Aud != s.fake.TokenURL() || a.Exp != a.Iat+core.AssertionLifeS {
			t.Fatalf("assertion %d: %+v", i, a)
		}
		if s.clock == nil && (a.Iat < wazeroEpoch || a.Iat > wazeroEpoch+3600) {
			t.Fatalf("assertion %d: iat %d is not the wasm engine's clock (from %d)", i, a.Iat, wazeroEpoch)
		}
		if i > 0 && a.Iat < s.sent[i-1].Iat {
			t.Fatalf("assertion %d: iat %d before the previous one's", i, a.Iat)
		}
	}
	if s.clock != nil {
		if last := s.sent[len(s.sent)-1].Iat; last != s.clock.now()/1000 {
			t.Fatalf("the last assertion's iat %d is not the filter's clock %d", last, s.clock.now()/1000)
		}
	}
}

// wazeroEpoch is wazero's fake wall clock at its start (2022-01-01T00:00:00Z): what the compiled filter
// reads in proxytest.
const wazeroEpoch = 1640995200

// checkNoKey looks for the key's private parts in everything the filter gave its host: logs of every
// level, shared data (keys and values), metric names, local replies and token calls.
func (s *smartRun) checkNoKey(t *testing.T, key *testKey) {
	t.Helper()
	s.mu.Lock()
	seen := append([]string(nil), s.wire...)
	s.mu.Unlock()
	seen = append(seen, hostRecord(t, s.harness)...)
	for _, m := range keyMaterial(key) {
		for _, v := range seen {
			if strings.Contains(v, m) {
				t.Fatalf("key material found in %.80q", v)
			}
		}
	}
}

// hostRecord returns what the emulator holds from the filter: logs, shared data, metric names and
// local replies. proxytest has no accessor for shared data or metric names: they are read from its
// fields, and the test fails if those are gone.
func hostRecord(t *testing.T, h *harness) []string {
	t.Helper()
	var out []string
	for _, logs := range [][]string{h.host.GetTraceLogs(), h.host.GetDebugLogs(), h.host.GetInfoLogs(),
		h.host.GetWarnLogs(), h.host.GetErrorLogs(), h.host.GetCriticalLogs()} {
		out = append(out, logs...)
	}
	root := reflect.ValueOf(h.host).Elem().FieldByName("rootHostEmulator")
	if !root.IsValid() || root.IsNil() {
		t.Fatal("proxytest's host emulator has no rootHostEmulator")
	}
	kvs, names := root.Elem().FieldByName("sharedDataKVS"), root.Elem().FieldByName("metricNameToID")
	if kvs.Kind() != reflect.Map || names.Kind() != reflect.Map {
		t.Fatal("proxytest's host emulator keeps no sharedDataKVS or metricNameToID map")
	}
	if kvs.Len() == 0 || names.Len() == 0 {
		t.Fatal("no shared data or metrics recorded: the look would prove nothing")
	}
	for it := kvs.MapRange(); it.Next(); {
		out = append(out, it.Key().String(), string(it.Value().Elem().FieldByName("data").Bytes()))
	}
	for it := names.MapRange(); it.Next(); {
		out = append(out, it.Key().String())
	}
	for id := uint32(0); id <= h.lastID; id++ {
		if r := localResponse(h, id); r != nil {
			out = append(out, string(r.Data))
		}
	}
	return out
}

// localResponse is the local reply of context id, nil for none or for a context that is no HTTP
// stream (proxytest's lookup panics on those).
func localResponse(h *harness, id uint32) (r *proxytest.LocalHttpResponse) {
	defer func() {
		if recover() != nil {
			r = nil
		}
	}()
	return h.host.GetSentLocalResponse(id)
}

// TestPrivateKeyJWTFromJWK: the key as a JWK (its kid is the configured key_id) signs as the PEM does.
func TestPrivateKeyJWTFromJWK(t *testing.T) {
	testKeys()
	runners(t, func(t *testing.T, runner string) {
		s := startSMART(t, runner, es384JWK)
		s.fetch(t)
		s.checkAssertions(t, 1)
		s.checkNoKey(t, es384JWK)
	})
}

// TestSigningKeyRefusedAtStart (native and .wasm): a private_key_jwt configuration without a usable key
// stops the filter at start, with a critical log that names the field and the variable, never the key.
func TestSigningKeyRefusedAtStart(t *testing.T) {
	testKeys()
	const tokenURL = "https://ehr.example/oauth2/token"
	withRequest := func(key *testKey, set map[string]any) map[string]any {
		conf := smartConfig(tokenURL, key, nil)
		req := conf["request"].(map[string]any)
		for k, v := range set {
			if v == nil {
				delete(req, k)
			} else {
				req[k] = v
			}
		}
		return conf
	}
	garbled := &testKey{env: garbledKeyEnv, alg: "ES384", kid: "k"}
	unset := &testKey{env: unsetKeyEnv, alg: "ES384", kid: "k"}
	nikoConf := nikoConfig(niko(t, 0), map[string]any{"secret_env": map[string]string{"private_key": es384Key.env}})
	tests := []struct {
		name string
		conf map[string]any
		want string
	}{
		{"no key configured", smartConfig(tokenURL, es384Key, map[string]any{"secret_env": nil}),
			"set secret_env.private_key to the environment variable that holds it"},
		{"variable not set", smartConfig(tokenURL, unset, nil),
			"secret_env.private_key: environment variable " + unsetKeyEnv + " is not set"},
		{"garbled key", smartConfig(tokenURL, garbled, nil),
			"secret_env.private_key: environment variable " + garbledKeyEnv + " holds no usable private key: the PEM private key (PKCS #8) cannot be read"},
		{"RSA key for ES384", withRequest(rs384Key, map[string]any{"assertion_alg": "ES384"}),
			"ES384 (request.assertion_alg, or the profile's default), which an RSA 2048-bit key (secret_env.private_key) cannot sign"},
		{"EC key, the profile's default RS384", withRequest(es384Key, map[string]any{"assertion_alg": nil}),
			"RS384 (request.assertion_alg, or the profile's default), which an ECDSA P-384 key (secret_env.private_key) cannot sign: set request.assertion_alg to ES384"},
		{"JWK kid is not key_id", withRequest(es384JWK, map[string]any{"key_id": "another"}),
			"the JWK in environment variable " + es384JWK.env + " has a kid other than request.key_id"},
		{"no key_id", withRequest(es384Key, map[string]any{"key_id": nil}), "key_id"},
		{"a key without an assertion", nikoConf, "secret_env.private_key: the request signs no client assertion"},
		{"assertion_jti", withRequest(es384Key, map[string]any{"assertion_jti": "fixed"}), `unknown or filter-owned field "assertion_jti"`},
		{"tls_client_auth", withRequest(es384Key, map[string]any{"provider": "custom", "profile": map[string]any{"client_auth": "tls_client_auth"}}),
			"tls_client_auth is not supported by the filter"},
		{"the key's variable for a request secret", smartConfig(tokenURL, es384Key, map[string]any{"secret_env": map[string]string{"private_key": es384Key.env, "client_secret": es384Key.env}}),
			"secret_env.client_secret names " + es384Key.env + ", the signing key's variable (secret_env.private_key): the key would be sent as client_secret"},
		{"bad variable name", smartConfig(tokenURL, &testKey{env: "1X", alg: "ES384", kid: "k"}, nil),
			"secret_env.private_key must name an environment variable"},
	}
	runners(t, func(t *testing.T, runner string) {
		keyEnvironment(t, runner)
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				h := emulate(t, runner, tc.conf)
				st := h.host.StartPlugin()
				logs := strings.Join(h.host.GetCriticalLogs(), "\n")
				if st != types.OnPluginStartStatusFailed || !strings.Contains(logs, tc.want) {
					t.Fatalf("start %v, logs %q; want a failure saying %q", st, logs, tc.want)
				}
				for _, k := range []*testKey{es384Key, rs384Key, es384JWK, {value: garbledKey, signer: es384Key.signer}} {
					for _, m := range keyMaterial(k) {
						if strings.Contains(logs, m) {
							t.Fatal("a log holds key material")
						}
					}
				}
			})
		}
	})
}

// TestSigningRefusedEndsTheFlow (native): a sign action the filter's signer refuses (here: its client
// bound to another id) ends the flow with kind signing, no token call, a local reply without the key,
// and the fleet lock released.
func TestSigningRefusedEndsTheFlow(t *testing.T) {
	s := startSMART(t, "native", es384Key)
	s.vm.plugin.s.signer.clientID = "someone-else"
	id, act := s.request("/api/Patient")
	if act != types.ActionPause || len(s.callouts()) != 0 {
		t.Fatalf("action %v, %d token calls; want a local reply and no call", act, len(s.callouts()))
	}
	if status, kind, _ := s.local(id); status != 503 || kind != "signing" {
		t.Fatalf("local reply %d %q, want 503 signing", status, kind)
	}
	if got := s.counterOf(t, "failures.signing"); got != 1 {
		t.Fatalf("failures.signing = %d", got)
	}
	if e := s.vm.plugin.cache.read(s.vm.plugin.s.lockKey); !e.exists || e.live {
		t.Fatalf("the fleet lock was not taken and released: %+v", e)
	}
	s.checkNoKey(t, es384Key)
}

// TestSigningKeyParsing: PEM (PKCS #8, PKCS #1, SEC 1 after EC PARAMETERS) and JWK keys are read, and
// each algorithm's signature verifies; other input is refused with a message that quotes none of it.
func TestSigningKeyParsing(t *testing.T) {
	testKeys()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384 := es384Key.signer.(*ecdsa.PrivateKey)
	rk := rs384Key.signer.(*rsa.PrivateKey)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	rsa8, _ := x509.MarshalPKCS8PrivateKey(rk)
	params := "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
	good := []struct {
		name, data string
		want       crypto.Signer
		algs       []string
	}{
		{"PKCS #8 EC", es384Key.value, p384, []string{"ES384"}},
		{"PKCS #8 RSA", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsa8})), rk, []string{"RS256", "RS384", "PS256"}},
		{"PKCS #1", rs384Key.value, rk, []string{"RS384"}},
		{"SEC 1 after EC PARAMETERS", params + string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), p256, []string{"ES256"}},
		{"EC JWK", "  " + ecJWK(p256, "") + "\n", p256, []string{"ES256"}},
		{"RSA JWK", rsaJWK(rk, "r"), rk, []string{"RS256", "PS256"}},
	}
	input := []byte("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJjIn0")
	for _, tc := range good {
		key, _, err := parseSigningKey([]byte(tc.data))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want.Public()) {
			t.Fatalf("%s: another key", tc.name)
		}
		for _, alg := range tc.algs {
			sig, err := jwsSign(key, alg, input)
			if err != nil || !verifyJWS(tc.want.Public(), alg, input, sig) {
				t.Fatalf("%s %s: signature does not verify (%v)", tc.name, alg, err)
			}
		}
		if _, err := jwsSign(key, "HS256", input); err == nil {
			t.Fatalf("%s: signed HS256", tc.name)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	p521der, _ := x509.MarshalPKCS8PrivateKey(p521)
	pubDER, _ := x509.MarshalPKIXPublicKey(p256.Public())
	badX := strings.Replace(ecJWK(p256, ""), `"x":"`, `"x":"AA`, 1)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ed8, _ := x509.MarshalPKCS8PrivateKey(edKey)
	// A SEC 1 key whose public key is another's: the last bytes of the DER are the public point.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherPoint, _ := other.PublicKey.Bytes()
	otherPub := append(append([]byte(nil), sec1[:len(sec1)-len(otherPoint)]...), otherPoint...)
	publicJWK := strings.Replace(ecJWK(p256, ""), `"d":`, `"_d":`, 1)
	bad := []struct{ name, data, want string }{
		{"empty", " \n", "holds no private key"},
		{"text", "not a key at all, just text", "neither PEM nor a JWK"},
		{"garbled DER", garbledKey, "the PEM private key (PKCS #8) cannot be read"},
		{"garbled PKCS #1", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: sec1})), "the PEM RSA private key cannot be read"},
		{"garbled SEC 1", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})), "the PEM EC private key cannot be read"},
		{"SEC 1 with another public key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: otherPub})), "public key is not its own"},
		{"Ed25519", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ed8})), "neither RSA nor ECDSA"},
		{"public key", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})), "not a private key"},
		{"encrypted", string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: rsa8})), "encrypted"},
		{"two keys", es384Key.value + rs384Key.value, "more than one PEM block"},
		{"trailing text", es384Key.value + "trailing", "something other than PEM follows"},
		{"RSA 1024", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)})), "2048, 3072 or 4096 bits, not 1024"},
		{"P-521", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p521der})), "P-256 or P-384"},
		{"public JWK", publicJWK, "no private part"},
		{"JWK x of another key", badX, "does not match"},
		{"JWK Set", `{"keys":[` + ecJWK(p256, "") + `]}`, "JWK Set"},
		{"JWK not JSON", `{"kty":`, "not a JSON object"},
		{"JWK oct", `{"kty":"oct","k":"c2VjcmV0","d":"x"}`, "kty must be RSA or EC"},
	}
	for _, tc := range bad {
		_, _, err := parseSigningKey([]byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want %q", tc.name, err, tc.want)
		}
		for _, line := range strings.Split(tc.data, "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line) {
				t.Fatalf("%s: the error quotes the input", tc.name)
			}
		}
	}
}

// RSA keys must be 2048, 3072 or 4096 bits: the flow takes RSA signatures of 256, 384 or 512 bytes.
func TestSigningKeyRSASizes(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2056)
	_, _, err := parseSigningKey(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	if err == nil || !strings.Contains(err.Error(), "2048, 3072 or 4096 bits, not 2056") {
		t.Fatal(err)
	}
}

func verifyJWS(pub crypto.PublicKey, alg string, input, sig []byte) bool {
	h, digest := crypto.SHA256, sha256Sum(input)
	if strings.HasSuffix(alg, "384") {
		h, digest = crypto.SHA384, sha384Sum(input)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if alg == "PS256" {
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil
	case *ecdsa.PublicKey:
		n := (k.Curve.Params().BitSize + 7) / 8
		return len(sig) == 2*n && ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:]))
	}
	return false
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
func sha384Sum(b []byte) []byte { s := sha512.Sum384(b); return s[:] }

// TestSignerBinding: the signer signs only an assertion of its alg and kid whose iss and sub are its
// client, each once in any case; anything else is an error answer without key material.
func TestSignerBinding(t *testing.T) {
	testKeys()
	k := &keySigner{key: es384Key.signer, alg: "ES384", kid: "kid-1", clientID: "client-1"}
	seg := func(v string) string { return b64([]byte(v)) }
	header := seg(`{"alg":"ES384","typ":"JWT","kid":"kid-1"}`)
	action := func(alg, kid, input string) []byte {
		b, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "signing_input": input})
		return b
	}
	okInput := header + "." + seg(`{"iss":"client-1","sub":"client-1","aud":"https://t","jti":"j","iat":1,"exp":241}`)
	var answer struct{ Signature, Error string }
	json.Unmarshal(k.sign(action("ES384", "kid-1", okInput)), &answer)
	sig, _ := base64.RawURLEncoding.DecodeString(answer.Signature)
	if !verifyJWS(es384Key.signer.Public(), "ES384", []byte(okInput), sig) {
		t.Fatalf("the signer's answer does not verify: %+v", answer)
	}
	refused := map[string][]byte{
		"another alg":       action("ES256", "kid-1", okInput),
		"another kid":       action("ES384", "kid-2", okInput),
		"header alg":        action("ES384", "kid-1", seg(`{"alg":"ES256","kid":"kid-1"}`)+"."+seg(`{"iss":"client-1","sub":"client-1"}`)),
		"header kid":        action("ES384", "kid-1", seg(`{"alg":"ES384","kid":"kid-2"}`)+"."+seg(`{"iss":"client-1","sub":"client-1"}`)),
		"another client":    action("ES384", "kid-1", header+"."+seg(`{"iss":"client-2","sub":"client-2"}`)),
		"sub another":       action("ES384", "kid-1", header+"."+seg(`{"iss":"client-1","sub":"client-2"}`)),
		"repeated iss":      action("ES384", "kid-1", header+"."+seg(`{"iss":"client-1","sub":"client-1","iss":"client-2"}`)),
		"case-folded sub":   action("ES384", "kid-1", header+"."+seg(`{"iss":"client-1","sub":"client-1","SUB":"client-2"}`)),
		"no sub":            action("ES384", "kid-1", header+"."+seg(`{"iss":"client-1"}`)),
		"three parts":       action("ES384", "kid-1", okInput+".x"),
		"not base64url":     action("ES384", "kid-1", header+".!!!"),
		"payload not JSON":  action("ES384", "kid-1", header+"."+seg(`{"iss":`)),
		"no signing input":  action("ES384", "kid-1", ""),
		"iss not a string":  action("ES384", "kid-1", header+"."+seg(`{"iss":1,"sub":1}`)),
		"empty action JSON": []byte(`{}`),
	}
	for name, a := range refused {
		out := k.sign(a)
		if err := json.Unmarshal(out, &answer); err != nil || answer.Error == "" || strings.Contains(string(out), "signature") {
			t.Fatalf("%s: %s", name, out)
		}
	}
	if s := strings.Join([]string{
		// A %v of the signer or of the settings holding it shows no key.
		fmt.Sprintf("%v %+v %#v %s", k, k, k, k), fmt.Sprintf("%+v", &settings{signer: k}), fmt.Sprintf("%#v", settings{signer: k}),
	}, " "); strings.Contains(s, es384Key.signer.(*ecdsa.PrivateKey).D.String()) {
		t.Fatal("formatting the signer shows the key")
	}
}

// TestClientSecretJWT (native and .wasm): client_secret_jwt, which the filter refused with private_key_jwt
// (core.Prepare's signing_required), now runs too: the flow signs HS256 with the client secret on each
// token call, a new jti each time.
func TestClientSecretJWT(t *testing.T) {
	const secret = "envoy-cs-jwt-secret-7c1"
	var mu sync.Mutex
	jtis := map[string]bool{}
	var tokenURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		parts := strings.Split(r.PostForm.Get(assertionField), ".")
		if len(parts) != 3 {
			parts = []string{"", "", ""}
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(parts[0] + "." + parts[1]))
		var c seenAssertion
		b, _ := base64.RawURLEncoding.DecodeString(parts[1])
		json.Unmarshal(b, &c)
		mu.Lock()
		fresh := !jtis[c.Jti] && c.Jti != ""
		jtis[c.Jti] = true
		mu.Unlock()
		if b64(mac.Sum(nil)) != parts[2] || !fresh || c.Iss != "cs-client" || c.Sub != "cs-client" || c.Aud != tokenURL ||
			r.PostForm.Has("client_secret") {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		w.Header().Set("content-type", "application/json")
		w.Write([]byte(`{"access_token":"cs-` + c.Jti + `","token_type":"Bearer","expires_in":300}`))
	}))
	t.Cleanup(srv.Close)
	tokenURL = httpsURL(srv.URL) + "/token"
	runners(t, func(t *testing.T, runner string) {
		conf := map[string]any{
			"request": map[string]any{"provider": "custom", "client_id": "cs-client", "client_secret": secret, "token_url": tokenURL,
				"profile": map[string]any{"client_auth": "client_secret_jwt"}},
			"cluster": "nikohealth_token", "paths": []string{"/api/"},
		}
		h := startHarness(t, runner, srv.URL, conf)
		id, _ := h.request("/api/x")
		if n := h.answerAll(); n != 1 || !strings.HasPrefix(h.header(id), "Bearer cs-") {
			t.Fatalf("%d calls, header %q", n, h.header(id))
		}
		h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
		id2, _ := h.request("/api/x")
		if n := h.answerAll(); n != 1 || !strings.HasPrefix(h.header(id2), "Bearer cs-") || h.header(id2) == h.header(id) {
			t.Fatalf("%d calls, header %q", n, h.header(id2))
		}
	})
	if len(jtis) != 4 {
		t.Fatalf("%d distinct jtis, want 4", len(jtis))
	}
}
