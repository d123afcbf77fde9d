package providertest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestServerPlacement: each fake listens where its Server says, serves https with its Certificate
// (trusted by a client holding the CA, by no other), and a taken port is an error, not a panic.
func TestServerPlacement(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	start := map[string]func(Server) (*Fake, error){
		"candid":     func(s Server) (*Fake, error) { return s.NewCandid(DefaultConfig("candid")) },
		"pattern":    func(s Server) (*Fake, error) { return s.NewPattern(DefaultConfig("pattern")) },
		"candescent": func(s Server) (*Fake, error) { return s.NewCandescent(DefaultConfig("candescent")) },
		"nikohealth": func(s Server) (*Fake, error) { return s.NewNikoHealth(DefaultConfig("nikohealth")) },
		"smart": func(s Server) (*Fake, error) {
			f, err := s.NewSMART(SMARTConfig{ClientID: "c"})
			if err != nil {
				return nil, err
			}
			return f.Fake, nil
		},
		"mtls": func(s Server) (*Fake, error) {
			f, err := s.NewMTLS("c")
			if err != nil {
				return nil, err
			}
			return f.Fake, nil
		},
	}
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}}
	for name, newFake := range start {
		for _, tt := range []struct {
			how    string
			server Server
			scheme string
		}{
			{"default", Server{}, "http"},
			{"fixed port", Server{Addr: "127.0.0.1:" + freePort(t)}, "http"},
			{"https", Server{Addr: "localhost:0", Certificate: &cert}, "https"},
		} {
			t.Run(name+"/"+tt.how, func(t *testing.T) {
				f, err := newFake(tt.server)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				scheme := tt.scheme
				if name == "mtls" {
					scheme = "https" // always: its client certificate needs TLS
				}
				u, _ := url.Parse(f.URL())
				if u.Scheme != scheme || u.Hostname() != "127.0.0.1" || tt.server.Addr != "" && !strings.HasSuffix(tt.server.Addr, ":0") && u.Host != tt.server.Addr {
					t.Fatalf("URL %s for %+v", f.URL(), tt.server)
				}
				if !strings.HasPrefix(f.TokenURL(), f.URL()+"/") {
					t.Fatalf("token URL %s", f.TokenURL())
				}
				if tt.server.Certificate == nil || name == "mtls" {
					return // the mTLS fake's handshake needs a client certificate: see TestMTLSOnCertificate
				}
				resp, err := trusting.Get(f.URL() + "/_stats")
				if err != nil {
					t.Fatalf("a client trusting the CA: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("stats: %d", resp.StatusCode)
				}
				var unknown x509.UnknownAuthorityError
				if _, err := http.Get(f.URL() + "/_stats"); !errors.As(err, &unknown) {
					t.Fatalf("a client without the CA: %v, want an unknown authority", err)
				}
			})
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if f, err := (Server{Addr: taken.Addr().String()}).NewCandid(DefaultConfig("candid")); f != nil || err == nil || !strings.Contains(err.Error(), "candid fake") {
		t.Fatalf("a taken port: %v, %v", f, err)
	}
	if s, err := (Server{Addr: taken.Addr().String()}).NewSMART(SMARTConfig{}); s != nil || err == nil {
		t.Fatalf("a taken port: %v, %v", s, err)
	}
}

// TestMTLSOnCertificate: the mTLS fake served with a CA's certificate issues a token to a client
// that trusts the CA and presents a certificate for the client id, and to no other.
func TestMTLSOnCertificate(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Server{Certificate: &cert}.NewMTLS("bank-app")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tt := range []struct {
		name   string
		roots  *x509.CertPool
		cn     string
		status int // 0: the handshake fails
	}{
		{"trusted, right certificate", ca.Pool(), "bank-app", http.StatusOK},
		{"trusted, another client's certificate", ca.Pool(), "other-app", http.StatusUnauthorized},
		{"the server not trusted", x509.NewCertPool(), "bank-app", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tt.roots, MinVersion: tls.VersionTLS12,
				Certificates: []tls.Certificate{m.ClientCertificate(tt.cn)}}}}
			resp, err := c.PostForm(m.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {"bank-app"}})
			if tt.status == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatal("a client that does not trust the CA got an answer")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}
