package core

import (
	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// PluginVersion is the version describe reports.
const PluginVersion = "1.0.0"

// Describe is the describe export: the ABI version and every built-in provider's capabilities.
func Describe() []byte {
	o := newObject(make([]byte, 0, 2048))
	o.str("abi", abi.Version)
	o.str("version", PluginVersion)
	o.key("providers")
	o.b = append(o.b, '[')
	for i, p := range providers {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = p.describe(o.b)
	}
	o.b = append(o.b, ']')
	o.key("client_auth")
	c := newObject(o.b)
	c.strings("methods", []string{AuthBody, AuthBasic, AuthBasicRFC6749, AuthClientSecretJWT, AuthPrivateKeyJWT, AuthTLSClient})
	c.strings("assertion_algs", append([]string{AlgHS256}, privateKeyAlgs...))
	// What a host must provide beyond the four imports: private_key_jwt's signature, as token_step's
	// sign action; tls_client_auth's client certificate, named by http_send's client_cert.
	c.key("host_signs")
	h := newObject(c.b)
	h.strings("methods", []string{AuthPrivateKeyJWT})
	h.str("export", abi.ExportTokenStep)
	h.str("action", ImportSign)
	c.b = h.end()
	c.key("host_certificate")
	h = newObject(c.b)
	h.strings("methods", []string{AuthTLSClient})
	h.str("http_send_field", "client_cert")
	c.b = h.end()
	o.b = c.end()
	return o.end()
}

func (p *Profile) describe(b []byte) []byte {
	o := newObject(b)
	o.str("name", p.Name)
	o.str("doc", p.Doc)
	o.str("token_url", p.TokenURL)
	o.strings("grants", p.Grants)
	o.str("body", p.Body)
	o.bool("body_selectable", p.BodySelectable)
	o.str("client_auth", p.ClientAuth)
	o.bool("send_grant_type", p.SendGrantType)
	o.bool("send_scope", p.SendScope)
	o.str("expires_in_unit", p.ExpiresInUnit)
	o.strings("required", p.required(p.Grants[0]))
	o.key("grant_required")
	g := newObject(o.b)
	for _, grant := range p.Grants {
		g.strings(grant, p.required(grant))
	}
	o.b = g.end()
	var fh []header
	for _, f := range p.FieldHeaders {
		fh = append(fh, header{f.Field, f.Header})
	}
	o.headers("field_headers", fh)
	o.strOmit("request_id_header", p.RequestIDHeader)
	o.strings("token_hosts", p.TokenHosts)
	if len(p.AssertionAlgs) > 0 {
		o.strings("assertion_algs", p.AssertionAlgs)
	}
	o.strOmit("scope_prefix", p.ScopePrefix)
	o.strOmit("discovery", p.Discovery)
	return o.end()
}

// Encode is the encode export: TokenRequest -> {"request": HttpRequest} | {"error": Error}. A
// client_secret_jwt request gets a fresh assertion (now is its iat); a private_key_jwt one is
// signing_required: only token_step asks the host to sign.
func Encode(m *Memo, input []byte, now Clock) []byte {
	r, enc, err := m.prepare(input)
	if err != nil {
		return errorJSON(err)
	}
	if a := enc.jwt; a != nil {
		if a.hostSigns() {
			return errorJSON(SigningRequired())
		}
		jti := a.jti
		if jti == "" {
			jti = newRequestID()
		}
		enc.signed = a.hmacSigned(jti, r.now(now)/1000)
	}
	return m.encodeAnswer(enc)
}

// decodeMembers are decode's input members; of a repeated one the first is read (Members).
var decodeMembers = [...]string{"request", "response", "now_ms"}

// Decode is the decode export: {"request","response","now_ms"?} -> {"token"} | {"error"}.
func Decode(m *Memo, input []byte, now Clock) []byte {
	v, err := parseJSONView(input, "input") // nothing read from it outlives the call
	if err != nil {
		return errorJSON(err)
	}
	var in [len(decodeMembers)]string
	Members(v.Raw, decodeMembers[:], in[:])
	reqV, respV, nowV := gjson.Parse(in[0]), gjson.Parse(in[1]), parseValue(in[2])
	if !reqV.IsObject() || !respV.IsObject() {
		return errorJSON(invalidRequest("decode needs request and response objects"))
	}
	if len(reqV.Raw) > MaxRequestBytes {
		return errorJSON(requestTooLarge())
	}
	r := m.request(reqV.Raw)
	if r == nil {
		if r, err = m.parseOnly(reqV.Raw); err != nil {
			return errorJSON(err)
		}
	}
	resp, err := parseResponse(respV, m.scratchBuf())
	if err != nil {
		return errorJSON(err)
	}
	var nowMS int64 // decode's own now_ms, else the request's, else the clock
	if n := nowV; n.Type == gjson.Number && n.Num > 0 {
		nowMS = int64(n.Num)
	} else {
		nowMS = r.now(now)
	}
	t, err := r.Decode(resp, nowMS)
	if err != nil {
		return errorJSON(err)
	}
	return tokenResult(t, -1)
}
