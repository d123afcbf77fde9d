package providertest

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// Mutual TLS client authentication (RFC 8705 section 2.1.1, tls_client_auth): the fake's TLS
// server requires a client certificate issued by its own CA, and the token endpoint accepts the
// request only when the certificate's subject CN is the client_id in the body (no secret at all).

// MTLSPath is the mTLS fake's token endpoint.
const MTLSPath = "/mtls/token"

// MTLS is a fake token endpoint behind TLS that requires a client certificate.
type MTLS struct {
	*Fake
	ca *CA
}

// NewMTLS starts an mTLS fake on loopback for client clientID.
func NewMTLS(clientID string) *MTLS { return must(Server{}.NewMTLS(clientID)) }

// NewMTLS is NewMTLS served as s says: always https, with s.Certificate or httptest's own.
func (s Server) NewMTLS(clientID string) (*MTLS, error) {
	ca, err := NewCA("providertest mTLS client CA")
	if err != nil {
		return nil, err
	}
	m := &MTLS{ca: ca}
	f, mux := unstartedFake("mtls", MTLSPath, Config{ClientID: clientID}, func(f *Fake, w http.ResponseWriter, r *http.Request) { m.token(w, r) })
	m.Fake = f
	conf := &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	return started(m, f.start(s, mux, conf))
}

// ClientCertificate issues a client certificate for subject CN cn from the fake's CA.
func (m *MTLS) ClientCertificate(cn string) tls.Certificate {
	return must(m.ca.ClientCertificate(cn))
}

// RootCAs trusts the fake's server certificate, for the client's TLS configuration.
func (m *MTLS) RootCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(m.srv.Certificate())
	return pool
}

func (m *MTLS) token(w http.ResponseWriter, r *http.Request) {
	if !clientCredentialsForm(w, r) {
		return
	}
	id := r.PostForm.Get("client_id")
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || id == "" || id != m.cfg.ClientID ||
		r.TLS.PeerCertificates[0].Subject.CommonName != id || r.PostForm.Has("client_secret") || r.Header.Get("Authorization") != "" {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "the client certificate does not match client_id")
		return
	}
	tok := randomHex(24)
	life := m.lifetime(time.Hour)
	m.remember(tok, life)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int64(life / time.Second)})
}
