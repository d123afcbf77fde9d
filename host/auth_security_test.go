package host

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// Client authentication under attack: the Go host's signing (a signer that hangs), discovery
// (tenants on one EHR vendor), tls_client_auth (a transport that would drop the certificate) and
// revocation. Each test failed on a version of the code; the comments say what it checks.

// hangingSigner is a KMS that never answers until released: crypto.Signer takes no context.
type hangingSigner struct {
	inner   crypto.Signer
	release chan struct{}
}

func (h *hangingSigner) Public() crypto.PublicKey { return h.inner.Public() }

func (h *hangingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	<-h.release
	return h.inner.Sign(r, digest, opts)
}

// TestHangingSignerHonoursTheDeadline: a remote signer that hangs does not outlive the fetch's
// context. The caller's Token returned at its deadline (it waits for the fetch with its own
// context), but the fetch itself waited for the signer forever, through its cancellation: each
// later call for the credential set left one more fetch stuck, and Close never returned. Now the
// fetch ends with the context's error, nothing is sent, and Close returns.
func TestHangingSignerHonoursTheDeadline(t *testing.T) {
	rk, ek, _ := testKeys()
	s := newSMART(t)
	hang := &hangingSigner{inner: rk, release: make(chan struct{})}
	c, err := New(context.Background(), WithLoopback(), WithSigner("rsa-1", hang), WithSigner("ec-1", ek))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(hang.release) }) // after the test: the signer's own goroutine ends too
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := c.Token(ctx, smartRequest(s, "rsa-1", "RS384"))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the deadline", err)
		}
	}
	if n := s.Requests(); n != 0 {
		t.Fatalf("%d token requests sent", n)
	}
	if _, err := c.Token(context.Background(), smartRequest(s, "ec-1", "ES384")); err != nil {
		t.Fatalf("the next credential set: %v", err)
	}
	// A watchdog, not a timing goal: with fetches stuck in the signer, Close waits for them forever.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v (a fetch is still waiting for the signer)", err)
	}
}

// TestSMARTTenantsApart: two hospitals on the same EHR vendor with the app's one client id (as an
// EHR's app gallery hands out), the same scope and key: each gets a token from its own server.
// Runtime.Token's index once compared none of the SMART fields (fhir_base, key_id, ...), so the
// second hospital was served the first one's token; TestSameCredentialsComparesEveryField now holds
// the index to every field.
func TestSMARTTenantsApart(t *testing.T) {
	rk, _, _ := testKeys()
	a, b := newSMART(t), newSMART(t)
	c := newRuntime(t, WithSigner("rsa-1", rk))
	ctx := context.Background()
	ta, err := c.Token(ctx, smartRequest(a, "rsa-1", "RS384"))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := c.Token(ctx, smartRequest(b, "rsa-1", "RS384"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Requests() != 1 || ta.AccessToken == tb.AccessToken {
		t.Fatalf("hospital b: %d token requests; the same token as hospital a: %v", b.Requests(), ta.AccessToken == tb.AccessToken)
	}
	if status := callAPI(t, b.APIURL(), tb.AccessToken); status != http.StatusOK {
		t.Fatalf("hospital b's API answered %d to its token", status)
	}
}

// TestClientCertificateOverridesTransport: a custom transport whose TLS configuration picks a
// client certificate itself (GetClientCertificate, as a process-wide mTLS setup does) still
// presents, for a tls_client_auth request, the certificate registered for its key_id. Go's TLS
// client asks GetClientCertificate before Certificates, so the registered one was never presented:
// every credential set authenticated as whoever the transport's callback named.
func TestClientCertificateOverridesTransport(t *testing.T) {
	m := providertest.NewMTLS("bank-app")
	defer m.Close()
	other := m.ClientCertificate("other-app")
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.RootCAs(), MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &other, nil }}}
	c := newRuntime(t, WithHTTPTransport(transport), WithClientCertificate("cert-1", m.ClientCertificate("bank-app")))
	req := abi.TokenRequest{Provider: "custom", ClientID: "bank-app", KeyID: "cert-1", TokenURL: m.TokenURL(),
		Profile: &abi.Profile{ClientAuth: "tls_client_auth"}}
	if _, err := c.Token(context.Background(), req); err != nil || m.Issued() != 1 {
		t.Fatalf("%v, %d issued", err, m.Issued())
	}
	if transport.TLSClientConfig.GetClientCertificate == nil {
		t.Fatal("the caller's transport was changed")
	}
}
