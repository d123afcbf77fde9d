package providertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
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
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// NewMTLS starts an mTLS fake on loopback for client clientID.
func NewMTLS(clientID string) *MTLS {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "providertest mTLS CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		panic("providertest: mTLS CA: " + err.Error())
	}
	ca, _ := x509.ParseCertificate(der)
	m := &MTLS{ca: ca, caKey: caKey}
	f, mux := unstartedFake("mtls", MTLSPath, Config{ClientID: clientID}, func(f *Fake, w http.ResponseWriter, r *http.Request) { m.token(w, r) })
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point; the fakes log nothing
	f.srv.StartTLS()
	m.Fake = f
	return m
}

// ClientCertificate issues a client certificate for subject CN cn from the fake's CA.
func (m *MTLS) ClientCertificate(cn string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca, &key.PublicKey, m.caKey)
	if err != nil {
		panic("providertest: mTLS client certificate: " + err.Error())
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
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
