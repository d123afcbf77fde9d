package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
)

// syncBuffer is a bytes.Buffer the command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeEntry is one fake in the fakes command's JSON line.
type fakeEntry struct {
	TokenURL string            `json:"token_url"`
	APIURL   string            `json:"api_url"`
	StatsURL string            `json:"stats_url"`
	FHIRBase string            `json:"fhir_base"`
	CAFile   string            `json:"ca_file"`
	Config   map[string]string `json:"config"`
}

// startFakesCommand runs `tokenwasm fakes args...` in this process until the test ends, and returns
// its JSON line and what it printed on stderr.
func startFakesCommand(t *testing.T, args ...string) (map[string]fakeEntry, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- runFakes(ctx, &stdout, &stderr, args) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fakes: %v", err)
		}
	})
	quiet := slices.Contains(args, "-quiet")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("fakes returned early: %v\n%s", err, stdout.String())
		default:
		}
		if strings.HasSuffix(stdout.String(), "\n") && (quiet || strings.Contains(stderr.String(), fakesLastLine)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fakes printed no JSON line and paste lines in 20 s:\n%s\n%s", stdout.String(), stderr.String())
		}
	}
	var fakes map[string]fakeEntry
	if err := json.Unmarshal([]byte(stdout.String()), &fakes); err != nil {
		t.Fatalf("JSON line: %v\n%s", err, stdout.String())
	}
	return fakes, stderr.String()
}

// TestFakesHelp: fakes -h lists every flag and the ports' order, and starts nothing.
func TestFakesHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), &stdout, &stderr, []string{"fakes", "-h"}); code != exitOK || stdout.Len() != 0 {
		t.Fatalf("exit %d, stdout %q", code, stdout.String())
	}
	for _, want := range []string{"-addr", "-base-port", "-tls", "-ca-out", "-quiet",
		"P candid, P+1 pattern, P+2 candescent, P+3 nikohealth, P+4 smart, P+5 mtls"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("fakes -h does not say %q:\n%s", want, stderr.String())
		}
	}
}

// freeBase returns the first of six consecutive loopback ports that were free a moment ago.
func freeBase(t *testing.T) int {
	t.Helper()
	for try := 0; try < 20; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if base > 65535-6 {
			continue
		}
		free := true
		for i := 0; i < 6 && free; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if free = err == nil; free {
				l.Close()
			}
		}
		if free {
			return base
		}
	}
	t.Fatal("no six free consecutive ports")
	return 0
}

// TestFakesPasteLines: every fake is in the JSON line, on the ports and scheme asked for, and every
// line printed to paste works when pasted into a shell: the exports, then each tokenwasm token
// command (this command, run as a child process) gets a token.
func TestFakesPasteLines(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to paste into")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nTOKENWASM_TEST_MAIN=1 exec %s -test.run='^$' -- \"$@\"\n", shellQuote(self))
	if err := os.WriteFile(filepath.Join(bin, "tokenwasm"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	base := freeBase(t)
	for _, tt := range []struct {
		name string
		args []string
		base int // of the ports asked for; 0: any
		tls  bool
	}{
		{"free ports, http", nil, 0, false},
		{"fixed ports, https", []string{"-tls", "-base-port", strconv.Itoa(base), "-ca-out", filepath.Join(t.TempDir(), "ca.pem")}, base, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fakes, paste := startFakesCommand(t, tt.args...)
			for i, name := range fakeNames {
				f, ok := fakes[name]
				if !ok {
					t.Fatalf("no %s in the JSON line", name)
				}
				u, err := url.Parse(f.TokenURL)
				if err != nil || u.Hostname() != "127.0.0.1" || (u.Scheme == "https") != (tt.tls || name == "mtls") ||
					tt.base != 0 && u.Port() != strconv.Itoa(tt.base+i) {
					t.Errorf("%s: token URL %s", name, f.TokenURL)
				}
				if f.APIURL == "" || f.StatsURL == "" || (f.CAFile != "") != (u.Scheme == "https") {
					t.Errorf("%s: %+v", name, f)
				}
			}
			var exports, commands []string
			for _, line := range strings.Split(paste, "\n") {
				switch {
				case strings.HasPrefix(line, "export TOKENWASM_"):
					exports = append(exports, line)
				case strings.Contains(line, "tokenwasm token ") && !strings.HasPrefix(line, "#"):
					commands = append(commands, line)
				}
			}
			for _, want := range []string{"host.WithLoopback()", "allowLoopback: true", "-allow-loopback"} {
				if !strings.Contains(paste, want) {
					t.Errorf("the paste lines do not name the loopback opt-in %q", want)
				}
			}
			// 6 fakes' URLs, ids and secrets, then Candescent's grant inputs, the SMART and mTLS files.
			if len(exports) < 6*4 || len(commands) != 8 {
				t.Fatalf("%d export lines, %d commands:\n%s", len(exports), len(commands), paste)
			}
			for _, name := range fakeNames {
				if !strings.Contains(paste, "export TOKENWASM_"+strings.ToUpper(name)+"_TOKEN_URL="+fakes[name].TokenURL+"\n") {
					t.Errorf("no export line for %s's token URL", name)
				}
			}
			var wg sync.WaitGroup
			slots := make(chan struct{}, 4) // each child compiles the plugin: a few at a time
			for _, line := range commands {
				wg.Add(1)
				go func() {
					defer wg.Done()
					slots <- struct{}{}
					defer func() { <-slots }()
					cmd := exec.Command("sh", "-c", strings.Join(exports, "\n")+"\n"+line)
					cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
					var out bytes.Buffer
					cmd.Stdout, cmd.Stderr = &out, &out
					var res abi.Result
					if err := cmd.Run(); err != nil || json.Unmarshal(out.Bytes(), &res) != nil || res.Token == nil || res.Token.AccessToken == "" {
						t.Errorf("pasted %s\n%v: %s", line, err, out.String())
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestFakesTLS: with -tls, a Go client that trusts only the CA written to -ca-out gets a token over
// https from each fake; without the CA, the certificate is not trusted and nothing is fetched.
func TestFakesTLS(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "fakes-ca.pem")
	fakes, paste := startFakesCommand(t, "-tls", "-ca-out", caFile)
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(paste, string(caPEM)) {
		t.Fatal("the CA certificate is not printed")
	}
	onlyCA := x509.NewCertPool()
	if !onlyCA.AppendCertsFromPEM(caPEM) {
		t.Fatal("-ca-out holds no certificate")
	}
	smart, mtls := fakes["smart"].Config, fakes["mtls"].Config
	keyPEM, err := os.ReadFile(smart["key_file"])
	if err != nil {
		t.Fatal(err)
	}
	signer, _, err := host.ParseSigner(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(mtls["client_cert_file"], mtls["client_cert_file"])
	if err != nil {
		t.Fatal(err)
	}
	client := func(roots *x509.CertPool) *host.Runtime {
		transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
		c, err := host.New(context.Background(), host.WithLoopback(), host.WithHTTPTransport(transport),
			host.WithSigner(smart["key_id"], signer), host.WithClientCertificate("cert", cert))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	trusting := client(onlyCA)
	cfg := func(name string) map[string]string { return fakes[name].Config }
	requests := map[string]abi.TokenRequest{
		"candid":  {Provider: "candid", ClientID: cfg("candid")["client_id"], ClientSecret: cfg("candid")["client_secret"]},
		"pattern": {Provider: "pattern", ClientID: cfg("pattern")["client_id"], ClientSecret: cfg("pattern")["client_secret"]},
		"candescent": {Provider: "candescent", ClientID: cfg("candescent")["client_id"], ClientSecret: cfg("candescent")["client_secret"],
			InstitutionID: cfg("candescent")["institution_id"]},
		"nikohealth": {Provider: "nikohealth", ClientID: cfg("nikohealth")["client_id"], ClientSecret: cfg("nikohealth")["client_secret"]},
		"smart": {Provider: "smart", ClientID: smart["client_id"], KeyID: smart["key_id"], AssertionAlg: smart["assertion_alg"],
			Scope: smart["scope"], FHIRBase: fakes["smart"].FHIRBase},
		"mtls": {Provider: "custom", ClientID: mtls["client_id"], KeyID: "cert", Profile: &abi.Profile{ClientAuth: "tls_client_auth"}},
	}
	for _, name := range fakeNames {
		t.Run(name, func(t *testing.T) {
			f := fakes[name]
			if !strings.HasPrefix(f.TokenURL, "https://") || f.CAFile != caFile {
				t.Fatalf("%s: token URL %s, CA file %q", name, f.TokenURL, f.CAFile)
			}
			req := requests[name]
			if name != "smart" {
				req.TokenURL = f.TokenURL
			}
			var unknown x509.UnknownAuthorityError
			if resp, err := http.Get(f.StatsURL); !errors.As(err, &unknown) { // the system's roots
				if err == nil {
					resp.Body.Close()
				}
				t.Fatalf("without the CA: %v, want an unknown authority", err)
			}
			tok, err := trusting.Token(context.Background(), req)
			if err != nil || tok.AccessToken == "" {
				t.Fatalf("trusting only the CA: %v", err)
			}
		})
	}
}

// TestFakesRefusals: a bad -base-port is a usage error, a taken port a failure, both before anything
// is printed; -quiet prints the JSON line alone.
func TestFakesRefusals(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"fakes", "-base-port", "65531"}, exitUsage},
		{[]string{"fakes", "-base-port", "-1"}, exitUsage},
		{[]string{"fakes", "extra"}, exitUsage},
		{[]string{"fakes", "-base-port", strconv.Itoa(port)}, exitFailure},
		{[]string{"fakes", "-addr", "127.0.0.1", "-base-port", strconv.Itoa(port - 4)}, exitFailure}, // smart's port is taken
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), &stdout, &stderr, tt.args)
		var res abi.Result
		if code != tt.code || json.Unmarshal(stdout.Bytes(), &res) != nil || res.Error == nil || strings.Contains(stderr.String(), "export ") {
			t.Errorf("%v: exit %d, want %d; stdout %s", tt.args, code, tt.code, stdout.String())
		}
	}
	if _, paste := startFakesCommand(t, "-quiet"); paste != "" {
		t.Fatalf("-quiet printed:\n%s", paste)
	}
}

// TestFakesAddr: -addr puts every fake on that address, and with -tls the certificate names it.
func TestFakesAddr(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	probe.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	fakes, _ := startFakesCommand(t, "-addr", "127.0.0.2", "-tls", "-ca-out", caFile, "-quiet")
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	for _, name := range fakeNames {
		u, err := url.Parse(fakes[name].StatsURL)
		if err != nil || u.Hostname() != "127.0.0.2" {
			t.Fatalf("%s: %s", name, fakes[name].StatsURL)
		}
		if name == "mtls" {
			continue // its handshake needs a client certificate: TestFakesTLS
		}
		resp, err := c.Get(u.String())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
	}
}
