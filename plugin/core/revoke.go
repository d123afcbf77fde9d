package core

import "github.com/tokenwasm/tokenwasm/abi"

// Revocation (RFC 7009): token_step's "revoke" operation posts the token to the provider's
// revocation endpoint, authenticated as the token request is (a client assertion is signed the same
// way), then drops the cached token of the request's identity, whatever the provider answered: the
// caller asked for it not to be used again.

// EncodeRevocation builds r's revocation request: the access_token it names (hint access_token) or,
// without one, its refresh_token (hint refresh_token). aud is the token URL, which a client
// assertion names as the authorization server.
func (r *Request) EncodeRevocation(aud string) (*HTTPRequest, *abi.Error) {
	p := r.profile
	u := r.RevocationURL
	if u == "" {
		u = p.RevocationURL
	}
	if u == "" {
		return nil, invalidRequest("revocation_url is required to revoke with " + p.Name)
	}
	if err := r.checkTokenHost(u); err != nil {
		return nil, err
	}
	if err := sameHost(u, aud); err != nil {
		return nil, err
	}
	tok, hint := r.AccessToken, "access_token"
	if tok == "" {
		tok, hint = r.RefreshToken, "refresh_token"
	}
	if tok == "" {
		return nil, invalidRequest("revoke needs the access_token or refresh_token to revoke")
	}
	jwt, err := r.assertion(aud, BodyForm)
	if err != nil {
		return nil, err
	}
	b := newBody(BodyForm)
	b.add("token", tok)
	b.add("token_type_hint", hint)
	r.bodyAuth(b)
	h := r.headerAuth([]header{{"Content-Type", "application/x-www-form-urlencoded"}, {"Accept", "application/json"}}, new([]byte))
	enc := r.request(u, append(h, p.Headers...), b, jwt)
	if p.RevocationMethod != "" {
		enc.Method = p.RevocationMethod
	}
	return enc, nil
}

// sameHost refuses a revocation URL on another host than the token URL's: the request carries the
// token and the client's authentication, for private_key_jwt an assertion whose aud is the token
// URL, which another host could replay there within its life.
func sameHost(revocationURL, tokenURL string) *abi.Error {
	h, msg := urlHost(revocationURL)
	if msg != "" {
		return policyError("revocation_url " + msg)
	}
	if t, _ := urlHost(tokenURL); h != t {
		return policyError("revocation_url host " + quote(h) + " is not the token URL's host " + quote(t))
	}
	return nil
}

// revoked ends a revoke flow with the provider's answer: {} for a 2xx, else its typed error; the
// cached token is dropped either way.
func (f *Flow) revoked(answer []byte) (Action, []byte) {
	resp, err := parseHostResponse(answer, f.m.scratchBuf())
	if err == nil {
		_, _, err = f.r.responseError(resp, f.nowMS)
	}
	out := []byte("{}")
	if err != nil {
		if f.phase == phaseSendLineage {
			err = withheld(err)
		}
		out = errorJSON(err)
	}
	if revokesLineage(f.r) && err == nil {
		// The grant's refresh token is revoked: its lineage ends with it, and says so, so that no
		// later fetch sends the request's own (used) refresh token.
		return f.finish(out, f.deleteAction(f.key, "", ""), f.setAction(f.key, grantSuffix, f.lineageEnd("revoked"), GrantTTLMS, false))
	}
	return f.finish(out, f.deleteAction(f.key, "", ""))
}
