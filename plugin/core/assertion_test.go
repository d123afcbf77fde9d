package core

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

const smartURL = "https://ehr.example.org/oauth2/token"

func smartReq(kid, alg, extra string) string {
	return `{"provider":"smart","client_id":"backend-app","key_id":"` + kid + `","assertion_alg":"` + alg +
		`","token_url":"` + smartURL + `","scope":"system/Patient.rs system/Observation.rs"` + extra + `}`
}

// testSigner signs as a host would: the JWS signature of the signing input, base64url.
type testSigner struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

func newTestSigner(t *testing.T, alg string) *testSigner {
	t.Helper()
	switch alg {
	case AlgES256:
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return &testSigner{ec: k}
	case AlgES384:
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		return &testSigner{ec: k}
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{rsa: k}
}

func hashOf(alg string, in []byte) (crypto.Hash, []byte) {
	if strings.HasSuffix(alg, "384") {
		h := sha512.Sum384(in)
		return crypto.SHA384, h[:]
	}
	h := sha256.Sum256(in)
	return crypto.SHA256, h[:]
}

func (s *testSigner) sign(in []byte) []byte {
	var a struct {
		Alg          string `json:"alg"`
		SigningInput string `json:"signing_input"`
	}
	json.Unmarshal(in, &a)
	h, d := hashOf(a.Alg, []byte(a.SigningInput))
	var sig []byte
	switch {
	case s.ec != nil:
		r, ss, _ := ecdsa.Sign(rand.Reader, s.ec, d)
		n := (s.ec.Curve.Params().BitSize + 7) / 8
		sig = append(r.FillBytes(make([]byte, n)), ss.FillBytes(make([]byte, n))...)
	case a.Alg == AlgPS256:
		sig, _ = rsa.SignPSS(rand.Reader, s.rsa, h, d, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	default:
		sig, _ = rsa.SignPKCS1v15(rand.Reader, s.rsa, h, d)
	}
	b, _ := json.Marshal(map[string]string{"signature": base64.RawURLEncoding.EncodeToString(sig)})
	return b
}

func (s *testSigner) verify(alg, signingInput string, sig []byte) bool {
	h, d := hashOf(alg, []byte(signingInput))
	switch {
	case s.ec != nil:
		n := len(sig) / 2
		return ecdsa.Verify(&s.ec.PublicKey, d, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:]))
	case alg == AlgPS256:
		return rsa.VerifyPSS(&s.rsa.PublicKey, h, d, sig, nil) == nil
	}
	return rsa.VerifyPKCS1v15(&s.rsa.PublicKey, h, d, sig) == nil
}

// sentAssertion reads the client assertion out of the last token request the host sent.
func sentAssertion(t *testing.T, body string) (header, claims map[string]any, signingInput string, sig []byte) {
	t.Helper()
	form, err := url.ParseQuery(body)
	if err != nil {
		t.Fatal(err)
	}
	if got := form.Get("client_assertion_type"); got != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Fatalf("client_assertion_type %q in %s", got, body)
	}
	parts := strings.Split(form.Get("client_assertion"), ".")
	if len(parts) != 3 {
		t.Fatalf("client_assertion %q", form.Get("client_assertion"))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, dst) != nil {
			t.Fatalf("part %d: %q", i, parts[i])
		}
	}
	sig, err = base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	return header, claims, parts[0] + "." + parts[1], sig
}

// TestPrivateKeyJWT: for every algorithm, the host signs the plugin's signing input, and the request
// sent carries an assertion whose signature verifies with the host's key and whose claims are SMART's:
// iss = sub = client_id, aud = token URL, exp = iat + 240 s, a UUID jti; kid and alg in the header.
// A second call is served from the cache without signing.
func TestPrivateKeyJWT(t *testing.T) {
	for _, alg := range []string{AlgRS256, AlgRS384, AlgES256, AlgES384, AlgPS256} {
		t.Run(alg, func(t *testing.T) {
			var body string
			h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
				body = r.Body
				return abi.HTTPResponse{Status: 200, Body: `{"access_token":"smart-tok","token_type":"bearer","expires_in":300}`}
			})
			h.steps = true
			s := newTestSigner(t, alg)
			h.sign = s.sign
			req := strings.Replace(smartReq("key-1", alg, ""), `"provider":"smart"`, `"provider":"custom","profile":{"client_auth":"private_key_jwt"}`, 1)
			if alg == AlgRS384 || alg == AlgES384 {
				req = smartReq("key-1", alg, "")
			}
			res := h.token(t, req)
			if res.Token == nil || res.Token.AccessToken != "smart-tok" {
				t.Fatalf("got %+v", res)
			}
			if got := strings.Join(h.calls, ","); got != "cache_get,cache_get,sign,http_send,cache_set" {
				t.Fatalf("calls %s", got)
			}
			header, claims, in, sig := sentAssertion(t, body)
			if !s.verify(alg, in, sig) {
				t.Fatal("the assertion's signature does not verify with the host's key")
			}
			if header["alg"] != alg || header["kid"] != "key-1" || header["typ"] != "JWT" {
				t.Fatalf("header %v", header)
			}
			iat := float64(h.nowMS / 1000)
			if claims["iss"] != "backend-app" || claims["sub"] != "backend-app" || claims["aud"] != smartURL ||
				claims["iat"] != iat || claims["exp"] != iat+AssertionLifeS || !uuidRE.MatchString(claims["jti"].(string)) {
				t.Fatalf("claims %v", claims)
			}
			if strings.Contains(body, "client_id=") || strings.Contains(body, "client_secret") {
				t.Fatalf("body %s", body)
			}
			if res := h.token(t, req); !res.Cached || strings.Join(h.calls, ",") != "cache_get" {
				t.Fatalf("second call: %+v via %v", res, h.calls)
			}
		})
	}
}

// TestAssertionIdentity: the jti and the times change on every request and stay out of the cache
// key; a new kid, algorithm, client or token URL is a new identity.
func TestAssertionIdentity(t *testing.T) {
	key := func(req string) string {
		_, _, k, err := (*Memo)(nil).Prepare([]byte(req))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key(smartReq("key-1", AlgRS384, ""))
	if k := key(smartReq("key-1", AlgRS384, `,"now_ms":1767225600000,"assertion_jti":"fixed-1"`)); k != base {
		t.Fatal("now_ms or the jti changed the identity")
	}
	for name, req := range map[string]string{
		"kid":    smartReq("key-2", AlgRS384, ""),
		"alg":    smartReq("key-1", AlgES384, ""),
		"client": strings.Replace(smartReq("key-1", AlgRS384, ""), "backend-app", "other-app", 1),
		"aud":    strings.Replace(smartReq("key-1", AlgRS384, ""), "/oauth2/token", "/oauth2/token2", 1),
	} {
		if key(req) == base {
			t.Errorf("a new %s kept the identity", name)
		}
	}

	var jtis []string
	h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
		_, claims, _, _ := sentAssertion(t, r.Body)
		jtis = append(jtis, claims["jti"].(string))
		return abi.HTTPResponse{Status: 200, Body: `{"access_token":"t","expires_in":300}`}
	})
	h.steps, h.sign = true, newTestSigner(t, AlgES384).sign
	forced := smartReq("key-1", AlgES384, `,"force":true`)
	for range 3 {
		h.token(t, forced)
	}
	if len(jtis) != 3 || jtis[0] == jtis[1] || jtis[1] == jtis[2] || jtis[0] == jtis[2] {
		t.Fatalf("jtis %v", jtis)
	}
	if n := len(h.cache); n != 1 {
		t.Fatalf("%d cache entries for one identity", n)
	}
}

// TestSignAnswers: anything but a signature of the right form and length for the algorithm ends the
// flow with kind signing, sends nothing, and releases the fleet lock.
func TestSignAnswers(t *testing.T) {
	b64 := func(n int) string { return base64.RawURLEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name, alg, answer string
		ok                bool
	}{
		{"RS384 2048-bit", AlgRS384, `{"signature":"` + b64(256) + `"}`, true},
		{"RS384 4096-bit", AlgRS384, `{"signature":"` + b64(512) + `"}`, true},
		{"RS384 one byte short", AlgRS384, `{"signature":"` + b64(255) + `"}`, false},
		{"RS384 1024-bit key", AlgRS384, `{"signature":"` + b64(128) + `"}`, false},
		{"ES384 r||s", AlgES384, `{"signature":"` + b64(96) + `"}`, true},
		{"ES384 DER", AlgES384, `{"signature":"` + b64(103) + `"}`, false},
		{"ES384 with ES256's length", AlgES384, `{"signature":"` + b64(64) + `"}`, false},
		{"padded base64url", AlgES384, `{"signature":"` + b64(96) + `=="}`, false},
		{"standard base64", AlgRS384, `{"signature":"` + strings.Repeat("+/", 170) + `AAAA"}`, false},
		{"host error", AlgRS384, `{"error":"no key key-1"}`, false},
		{"no signature", AlgRS384, `{}`, false},
		{"signature not a string", AlgRS384, `{"signature":42}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t, func(abi.HTTPRequest) abi.HTTPResponse {
				return abi.HTTPResponse{Status: 200, Body: `{"access_token":"t","expires_in":300}`}
			})
			h.steps = true
			h.sign = func([]byte) []byte { return []byte(tt.answer) }
			res := h.token(t, smartReq("key-1", tt.alg, `,"fleet_lock":true`))
			if tt.ok {
				if res.Token == nil || h.sends != 1 {
					t.Fatalf("got %+v, %d sends", res, h.sends)
				}
				return
			}
			if res.Error == nil || res.Error.Kind != abi.KindSigning || res.Error.Retryable || h.sends != 0 {
				t.Fatalf("got %+v, %d sends", res.Error, h.sends)
			}
			for k := range h.cache {
				if strings.HasSuffix(k, lockSuffix) {
					t.Fatal("the fleet lock was not released")
				}
			}
		})
	}
}

// TestTokenExportCannotSign is the compatibility rule (abi/ABI.md): the token export, which calls
// imports inline, answers signing_required where token_step would ask for a signature, having sent
// nothing and released the lock; a cached token is still served.
func TestTokenExportCannotSign(t *testing.T) {
	h := newFakeHost(t, okToken(3600))
	req := smartReq("key-1", AlgRS384, `,"fleet_lock":true`)
	res := h.token(t, req)
	if res.Error == nil || res.Error.Kind != abi.KindSigningRequired || h.sends != 0 {
		t.Fatalf("got %+v, %d sends", res.Error, h.sends)
	}
	if got := strings.Join(h.calls, ","); got != "cache_get,cache_get,cache_set,cache_get,cache_delete" {
		t.Fatalf("calls %s", got)
	}
	h.steps, h.sign = true, newTestSigner(t, AlgRS384).sign
	if res := h.token(t, req); res.Token == nil {
		t.Fatalf("token_step: %+v", res)
	}
	h.steps = false
	if res := h.token(t, req); !res.Cached {
		t.Fatalf("the token export did not serve the cached token: %+v", res)
	}
	var enc abi.Result
	json.Unmarshal(Encode(nil, []byte(req), nil), &enc)
	if enc.Error == nil || enc.Error.Kind != abi.KindSigningRequired {
		t.Fatalf("encode: %+v", enc)
	}
}

// TestClientSecretJWT: HS256 under the client secret, made in the plugin by both drivers and by
// encode; the secret itself is never sent, and a rotated secret is a new identity.
func TestClientSecretJWT(t *testing.T) {
	const secret = "cs-jwt-secret-9f2"
	req := `{"provider":"custom","client_id":"app","client_secret":"` + secret + `","token_url":"` + smartURL +
		`","profile":{"client_auth":"client_secret_jwt"}}`
	for _, steps := range []bool{false, true} {
		var body string
		h := newFakeHost(t, func(r abi.HTTPRequest) abi.HTTPResponse {
			body = r.Body
			return abi.HTTPResponse{Status: 200, Body: `{"access_token":"t","expires_in":300}`}
		})
		h.steps = steps
		if res := h.token(t, req); res.Token == nil {
			t.Fatalf("steps=%v: %+v", steps, res)
		}
		header, claims, in, sig := sentAssertion(t, body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(in))
		if !hmac.Equal(sig, mac.Sum(nil)) || header["alg"] != AlgHS256 || claims["iss"] != "app" || claims["aud"] != smartURL {
			t.Fatalf("steps=%v: header %v claims %v", steps, header, claims)
		}
		if strings.Contains(body, secret) || strings.Contains(strings.Join(h.log, "\n"), secret) {
			t.Fatal("the client secret was sent")
		}
	}
	var enc abi.Result
	json.Unmarshal(Encode(nil, []byte(req), func() int64 { return 1767225600000 }), &enc)
	if enc.Request == nil {
		t.Fatalf("encode: %+v", enc)
	}
	if _, claims, _, _ := sentAssertion(t, enc.Request.Body); claims["iat"] != float64(1767225600) {
		t.Fatalf("encode's iat %v", claims["iat"])
	}
	_, _, k1, _ := (*Memo)(nil).Prepare([]byte(req))
	_, _, k2, _ := (*Memo)(nil).Prepare([]byte(strings.Replace(req, secret, secret+"-rotated", 1)))
	if k1 == k2 {
		t.Fatal("a rotated secret kept the identity")
	}
}

// TestAssertionRequests: what a signing request must hold, refused before anything is sent.
func TestAssertionRequests(t *testing.T) {
	tests := []struct{ name, req, want string }{
		{"smart without key_id", `{"provider":"smart","client_id":"a","token_url":"` + smartURL + `"}`, "key_id is required"},
		{"smart without token_url", `{"provider":"smart","client_id":"a","key_id":"k"}`, "token_url is required for smart: the token_endpoint of {fhir_base}/.well-known/smart-configuration"},
		{"smart with RS256", smartReq("k", AlgRS256, ""), "assertion_alg must be one of RS384, ES384"},
		{"smart user scope", strings.Replace(smartReq("k", AlgRS384, ""), "system/Patient.rs", "user/Patient.rs", 1), "smart scopes have the form system/<resource>.<access>"},
		{"smart scope without access", strings.Replace(smartReq("k", AlgRS384, ""), "system/Patient.rs", "system/Patient", 1), "smart scopes have the form"},
		{"jti without now_ms", smartReq("k", AlgRS384, `,"assertion_jti":"j1"`), "assertion_jti needs now_ms"},
		{"jti with a dot", smartReq("k", AlgRS384, `,"now_ms":1,"assertion_jti":"j.1"`), "assertion_jti needs now_ms"},
		{"json body", `{"provider":"custom","client_id":"a","key_id":"k","token_url":"` + smartURL + `","profile":{"client_auth":"private_key_jwt","body":"json"}}`, "form body"},
		{"client_secret_jwt with RS256", `{"provider":"custom","client_id":"a","client_secret":"s","profile":{"client_auth":"client_secret_jwt","assertion_alg":"RS256"}}`, "profile.assertion_alg"},
		{"client_secret_jwt without secret", `{"provider":"custom","client_id":"a","token_url":"` + smartURL + `","profile":{"client_auth":"client_secret_jwt"}}`, "client_secret is required"},
		{"tls_client_auth without key_id", `{"provider":"custom","client_id":"a","token_url":"` + smartURL + `","profile":{"client_auth":"tls_client_auth"}}`, "key_id is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res abi.Result
			json.Unmarshal(Encode(nil, []byte(tt.req), nil), &res)
			if res.Error == nil || res.Error.Kind != abi.KindInvalidRequest || !strings.Contains(res.Error.Message, tt.want) {
				t.Fatalf("got %+v", res.Error)
			}
		})
	}
}

// TestTLSClientAuth: client_id in the body, no secret anywhere, the certificate named for the host,
// and the certificate part of the identity.
func TestTLSClientAuth(t *testing.T) {
	req := `{"provider":"custom","client_id":"bank-app","key_id":"cert-1","token_url":"` + smartURL + `","profile":{"client_auth":"tls_client_auth"}}`
	var res abi.Result
	json.Unmarshal(Encode(nil, []byte(req), nil), &res)
	if res.Request == nil || res.Request.Body != "grant_type=client_credentials&client_id=bank-app" || res.Request.Headers["Authorization"] != "" {
		t.Fatalf("got %+v", res)
	}
	var raw map[string]any
	json.Unmarshal(Encode(nil, []byte(req), nil), &raw)
	if raw["request"].(map[string]any)["client_cert"] != "cert-1" {
		t.Fatalf("no client_cert in %v", raw)
	}
	_, _, k1, _ := (*Memo)(nil).Prepare([]byte(req))
	_, _, k2, _ := (*Memo)(nil).Prepare([]byte(strings.Replace(req, "cert-1", "cert-2", 1)))
	if k1 == k2 {
		t.Fatal("another certificate kept the identity")
	}
}

// TestSignState: the state while the host signs carries the jti and nothing secret; it resumes only
// with its request, and a sign state for a request that needs no signature is refused.
func TestSignState(t *testing.T) {
	req := smartReq("key-1", AlgRS384, "")
	m := new(Memo)
	var state string
	in := `{"request":` + req + `}`
	for range 3 {
		got := stepOnce(t, m, in)
		var next struct{ Import string }
		json.Unmarshal(got["next"], &next)
		json.Unmarshal(got["state"], &state)
		if next.Import == ImportSign {
			break
		}
		in = `{"request":` + req + `,"state":` + string(got["state"]) + `,"answer":{"hit":false}}`
	}
	parts := strings.Split(unseal(state), ".")
	if len(parts) != 7 || !uuidRE.MatchString(parts[6]) || !strings.HasPrefix(state, "tw2.t70.") {
		t.Fatalf("sign state %q", state)
	}
	for name, tt := range map[string]struct{ req, state, want string }{
		"another kid":        {smartReq("key-2", AlgRS384, ""), state, "another request"},
		"jti with a quote":   {req, sealed(t, req, unseal(state)[:len(unseal(state))-1]+`"`), "not one this plugin gave"},
		"no jti":             {req, sealed(t, req, strings.Join(parts[:6], ".")), "not one this plugin gave"},
		"jti in send phase":  {req, sealed(t, req, strings.Replace(unseal(state), "tw2.t70.", "tw2.t50.", 1)), "not one this plugin gave"},
		"jti changed":        {req, flipLast(unseal(state)) + "." + state[len(state)-sealChars:], "not one this plugin gave"},
		"sign on nikohealth": {nikoReq, nikoSignState(t), "not one this plugin gave"},
	} {
		t.Run(name, func(t *testing.T) {
			st, _ := json.Marshal(tt.state)
			got := stepOnce(t, new(Memo), `{"request":`+tt.req+`,"state":`+string(st)+`,"answer":{"signature":"x"}}`)
			if !strings.Contains(string(got["error"]), tt.want) {
				t.Fatalf("got %s", got["error"])
			}
		})
	}
}

// nikoSignState is a well-formed sign-phase state for nikoReq, which needs no signature.
func nikoSignState(t *testing.T) string {
	var st string
	json.Unmarshal(stepOnce(t, new(Memo), `{"request":`+nikoReq+`}`)["state"], &st)
	p := strings.Split(st, ".")
	return sealed(t, nikoReq, "tw2.t70."+p[2]+"."+p[3]+"."+p[4]+"..0b0f3c4e-5d6a-4b7c-8d9e-0f1a2b3c4d5e")
}

// TestPrepareRefusesAssertions: an entry point that sends the encoded request as is cannot send a
// client assertion, which is made per request: Prepare says so.
func TestPrepareRefusesAssertions(t *testing.T) {
	for _, req := range []string{smartReq("k", AlgRS384, ""),
		`{"provider":"custom","client_id":"a","client_secret":"s","token_url":"` + smartURL + `","profile":{"client_auth":"client_secret_jwt"}}`} {
		if _, _, _, err := Prepare([]byte(req)); err == nil || err.Kind != abi.KindSigningRequired {
			t.Fatalf("%s: %v", req, err)
		}
	}
	if _, _, _, err := Prepare([]byte(nikoReq)); err != nil {
		t.Fatal(err)
	}
}
