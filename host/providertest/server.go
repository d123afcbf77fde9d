package providertest

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"
)

// Server says where a fake listens and whether it serves https. The zero Server is what NewCandid
// and the other New functions use: a free port on 127.0.0.1, plain http (the mTLS fake: https with
// httptest's certificate). Its methods return an error where those panic: a fixed port may be taken.
type Server struct {
	// Addr is the host:port to listen on; "" is "127.0.0.1:0", a free loopback port. A fake listening
	// on an unspecified address (0.0.0.0, [::]) gives its URLs with 127.0.0.1.
	Addr string
	// Certificate, when set, makes the fake serve https with it (CA.ServerCertificate makes one).
	Certificate *tls.Certificate
}

// NewCandid is NewCandid served as s says.
func (s Server) NewCandid(cfg Config) (*Fake, error) {
	f, mux := unstartedFake("candid", CandidPath, cfg, (*Fake).candid)
	f.jwt = true
	return started(f, f.start(s, mux, nil))
}

// NewPattern is NewPattern served as s says.
func (s Server) NewPattern(cfg Config) (*Fake, error) {
	f, mux := unstartedFake("pattern", PatternPath, cfg, (*Fake).pattern)
	return started(f, f.start(s, mux, nil))
}

// NewCandescent is NewCandescent served as s says.
func (s Server) NewCandescent(cfg Config) (*Fake, error) {
	f, mux := unstartedFake("candescent", CandescentPath, cfg, (*Fake).candescent)
	mux.HandleFunc("/_authorize", f.serveAuthorize)
	mux.HandleFunc(CandescentRevokePath, f.candescentRevoke)
	return started(f, f.start(s, mux, nil))
}

// NewNikoHealth is NewNikoHealth served as s says.
func (s Server) NewNikoHealth(cfg Config) (*Fake, error) {
	f, mux := unstartedFake("nikohealth", NikoHealthPath, cfg, (*Fake).nikoHealth)
	return started(f, f.start(s, mux, nil))
}

// must is a fake the New functions start or panic over, as httptest.NewServer does.
func must[T any](v T, err error) T {
	if err != nil {
		panic("providertest: " + err.Error())
	}
	return v
}

// started is v, or nil when err says it did not start.
func started[T any](v T, err error) (T, error) {
	if err != nil {
		var none T
		return none, err
	}
	return v, nil
}

// start serves h as s says. conf, when not nil, is the server's own TLS configuration (the mTLS
// fake's client-certificate check) and makes it https with or without s.Certificate.
func (f *Fake) start(s Server, h http.Handler, conf *tls.Config) error {
	ln, err := net.Listen("tcp", cmp.Or(s.Addr, "127.0.0.1:0"))
	if err != nil {
		return fmt.Errorf("%s fake: %w", f.name, err)
	}
	// Refused handshakes and dropped clients are part of the tests; the fakes log nothing.
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}}
	if conf != nil || s.Certificate != nil {
		srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if conf != nil {
			srv.TLS = conf.Clone()
		}
		if s.Certificate != nil {
			srv.TLS.Certificates = []tls.Certificate{*s.Certificate}
		}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
		scheme, _, _ := strings.Cut(srv.URL, "://")
		srv.URL = scheme + "://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(a.Port))
	}
	f.srv = srv
	return nil
}

// CA is a throwaway certificate authority, its key in memory only: it issues the server
// certificates of fakes served over https (Server.Certificate) and the mTLS fake's client
// certificates. A client that trusts it (Pool, PEM) reaches those fakes and nothing else.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// certLife is how long the certificates made here are valid: a fake lives for a test or a session.
const certLife = 7 * 24 * time.Hour

// NewCA makes a CA whose certificate's subject CN is name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(certLife), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, MaxPathLenZero: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key}, nil
}

// Certificate returns the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// PEM returns the CA's certificate as PEM, for a client's trust store (curl --cacert,
// NODE_EXTRA_CA_CERTS, tokenwasm token -ca-file).
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// Pool returns a pool holding the CA's certificate alone, for a Go client's RootCAs.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// ServerCertificate issues a server certificate for hosts: each an IP address or a DNS name.
func (ca *CA) ServerCertificate(hosts ...string) (tls.Certificate, error) {
	tmpl := ca.leaf(pkix.Name{CommonName: "providertest fake"}, x509.ExtKeyUsageServerAuth)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl)
}

// ClientCertificate issues a client certificate whose subject CN is cn (tls_client_auth).
func (ca *CA) ClientCertificate(cn string) (tls.Certificate, error) {
	return ca.issue(ca.leaf(pkix.Name{CommonName: cn}, x509.ExtKeyUsageClientAuth))
}

func (ca *CA) leaf(subject pkix.Name, usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{SerialNumber: serial(), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(certLife),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
}

func (ca *CA) issue(tmpl *x509.Certificate) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// serial is a random certificate serial number, so certificates from two runs never collide in a
// client's cache.
func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return n
}
