package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// TestHostCredentialFlags: -key-file, -client-cert-file and -ca-file that cannot be used are the
// command line's fault (exit 2) or a file that cannot be read (exit 1), refused before any request.
func TestHostCredentialFlags(t *testing.T) {
	t.Setenv("TOKENWASM_CLIENT_SECRET", "")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pemKey := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	notPEM := write("not.pem", []byte("not a key"))
	smart := []string{"-provider", "smart", "-client-id", "c", "-fhir-base", "http://127.0.0.1:1/fhir", "-allow-loopback"}
	for _, tt := range []struct {
		name string
		args []string
		code int
	}{
		{"a key and a certificate", append(smart, "-key-file", pemKey, "-key-id", "k", "-client-cert-file", pemKey), exitUsage},
		{"a PEM key without -key-id", append(smart, "-key-file", pemKey), exitUsage},
		{"a key file that holds no key", append(smart, "-key-file", notPEM, "-key-id", "k"), exitUsage},
		{"a certificate file without a certificate", append(smart, "-client-cert-file", pemKey), exitUsage},
		{"a CA file without a certificate", append(smart, "-key-file", pemKey, "-key-id", "k", "-ca-file", notPEM), exitUsage},
		{"a missing key file", append(smart, "-key-file", filepath.Join(dir, "missing"), "-key-id", "k"), exitFailure},
		{"a missing CA file", append(smart, "-key-file", pemKey, "-key-id", "k", "-ca-file", filepath.Join(dir, "missing")), exitFailure},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := runToken(context.Background(), &bytes.Buffer{}, io.Discard, tt.args)
			if ae, code := classify(err); code != tt.code {
				t.Fatalf("exit %d (%v), want %d", code, ae, tt.code)
			}
		})
	}
}

// TestPolicyRefusalNamesOptIn: a loopback token URL without -allow-loopback is refused with a
// message that names the flag (and Go's option), and says it was refused once.
func TestPolicyRefusalNamesOptIn(t *testing.T) {
	t.Setenv("TOKENWASM_CLIENT_SECRET", "a-client-secret") // a one-letter one would redact the message
	err := runToken(context.Background(), &bytes.Buffer{}, io.Discard, []string{"-provider", "nikohealth", "-client-id", "x", "-token-url", "http://127.0.0.1:1/token"})
	ae, code := classify(err)
	if code != exitTransport || ae.Kind != abi.KindPolicy || !strings.Contains(ae.Message, "-allow-loopback") ||
		!strings.Contains(ae.Message, "host.WithLoopback()") || strings.Count(ae.Message, "refused") != 1 {
		t.Fatalf("exit %d, %+v", code, ae)
	}
}
