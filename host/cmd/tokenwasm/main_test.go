package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

func TestTokenCommand(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	cfg := fake.Config()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(cfg.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-provider", "nikohealth", "-client-id", cfg.ClientID, "-token-url", fake.TokenURL(), "-allow-loopback"}

	var out bytes.Buffer
	if err := runToken(context.Background(), &out, io.Discard, append(base, "-client-secret-file", secretFile)); err != nil {
		t.Fatal(err)
	}
	var res abi.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Token == nil || res.Token.ExpiresIn != 1200 {
		t.Fatalf("output %s: %v", out.String(), err)
	}
	if strings.Contains(out.String(), cfg.ClientSecret) {
		t.Fatal("the output shows the secret")
	}

	t.Setenv("TOKENWASM_CLIENT_SECRET", "wrong-secret")
	err := runToken(context.Background(), &bytes.Buffer{}, io.Discard, base)
	var ae *abi.Error
	if !errors.As(err, &ae) || ae.Kind != abi.KindInvalidClient || strings.Contains(err.Error(), "wrong-secret") {
		t.Fatalf("wrong secret from the environment: %v", err)
	}
}

// TestDemoRuns: the demo gets a token from every row (each of the six providers, every grant of the
// built-in ones, custom twice), then the same from the cache, then the refresh_token grant.
func TestDemoRuns(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(context.Background(), &out, nil); err != nil {
		t.Fatal(err)
	}
	cached := map[string]int{}
	rows := map[string]int{} // provider/grant/client auth -> rows
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) == 10 && f[0] != "PROVIDER" {
			cached[f[7]]++
			rows[f[0]+"/"+f[1]+"/"+f[2]]++
		}
	}
	// 10 rows fetched, the same 10 from the cache, then the refresh_token grant fetched.
	if cached["yes"] != 10 || cached["no"] != 11 {
		t.Fatalf("cached column %v; demo output:\n%s", cached, out.String())
	}
	for _, want := range []string{
		"candid/client_credentials/body", "pattern/client_credentials/basic", "candescent/client_credentials/basic",
		"candescent/password/basic", "candescent/authorization_code/basic", "candescent/refresh_token/basic",
		"nikohealth/client_credentials/basic_rfc6749", "smart/client_credentials/private_key_jwt",
		"custom/client_credentials/basic", "custom/client_credentials/tls_client_auth",
	} {
		if rows[want] == 0 {
			t.Errorf("no %s row; demo output:\n%s", want, out.String())
		}
	}
}

// TestMain lets a test run the command itself as a child process (exit codes, signals): its
// arguments are TOKENWASM_TEST_ARGS split at spaces, or those after "--" (from a shell, as typed).
func TestMain(m *testing.M) {
	if os.Getenv("TOKENWASM_TEST_MAIN") == "1" {
		args := strings.Fields(os.Getenv("TOKENWASM_TEST_ARGS"))
		if i := slices.Index(os.Args, "--"); i >= 0 {
			args = os.Args[i+1:]
		}
		os.Args = append([]string{"tokenwasm"}, args...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// command runs tokenwasm with args in a child process.
func command(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TOKENWASM_TEST_MAIN=1", "TOKENWASM_TEST_ARGS="+strings.Join(args, " "))
	return cmd
}

// TestExitCodes: each cause has its exit status, documented in -h; -h on every command is no
// failure and starts nothing; every error is one JSON line on stdout with its kind; never a panic.
func TestExitCodes(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	limited := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer limited.Close()
	limited.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	})
	cfg := fake.Config()
	profile := filepath.Join(t.TempDir(), "profile.json")
	if err := os.WriteFile(profile, []byte(`{"client_auth":"basic_rfc6749"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	badProfile := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badProfile, []byte(`{"client_auth":"basic","colour":"red"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	token := func(url string, extra ...string) []string {
		return append([]string{"token", "-provider", "nikohealth", "-client-id", cfg.ClientID, "-token-url", url, "-allow-loopback"}, extra...)
	}
	for _, tt := range []struct {
		args   []string
		secret string
		code   int
		kind   string // of the JSON error on stdout; "" for none
	}{
		{[]string{"token", "-h"}, "", exitOK, ""},
		{[]string{"demo", "-h"}, "", exitOK, ""},
		{[]string{"describe", "-h"}, "", exitOK, ""},
		{[]string{"fakes", "-h"}, "", exitOK, ""}, // answers -h instead of starting the fakes
		{[]string{"version", "-h"}, "", exitOK, ""},
		{[]string{"help"}, "", exitOK, ""},
		{[]string{"version"}, "", exitOK, ""},
		{token(fake.TokenURL()), cfg.ClientSecret, exitOK, ""},
		{[]string{"token", "-provider", "custom", "-profile-file", profile, "-client-id", cfg.ClientID, "-token-url", fake.TokenURL(), "-allow-loopback"}, cfg.ClientSecret, exitOK, ""},
		{[]string{"token", "-provider", "custom", "-profile-file", badProfile, "-client-id", "x"}, "s", exitUsage, "usage"},
		{[]string{"fleet-child"}, "", exitUsage, "usage"},
		{[]string{"nonsense"}, "", exitUsage, "usage"},
		{nil, "", exitUsage, "usage"},
		{[]string{"describe", "extra"}, "", exitUsage, "usage"},
		{[]string{"token", "-provider", "nikohealth", "extra"}, "", exitUsage, "usage"},
		{[]string{"token", "-code", "abc"}, "", exitUsage, "usage"},                                              // no secret as a flag value: -code is not a flag
		{[]string{"token", "-provider", "nikohealth", "-client-id", "x"}, "", exitUsage, abi.KindInvalidRequest}, // no domain, no secret
		{token(fake.TokenURL()), "wrong-secret", exitRefused, abi.KindInvalidClient},
		{token("http://127.0.0.1:1/token"), "s", exitTransport, abi.KindTransport},
		{[]string{"token", "-provider", "nikohealth", "-client-id", "x", "-token-url", fake.TokenURL()}, "s", exitTransport, abi.KindPolicy},
		{token(limited.TokenURL()), cfg.ClientSecret, exitRateLimit, abi.KindRateLimited},
	} {
		cmd := command(t, tt.args...)
		cmd.Env = append(cmd.Env, "TOKENWASM_CLIENT_SECRET="+tt.secret)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		var res abi.Result
		_ = json.Unmarshal(stdout.Bytes(), &res)
		kind := ""
		if res.Error != nil {
			kind = res.Error.Kind
		}
		if code != tt.code || kind != tt.kind || bytes.Contains(stderr.Bytes(), []byte("panic")) ||
			tt.secret != "" && len(tt.secret) > 3 && bytes.Contains(stdout.Bytes(), []byte(tt.secret)) && tt.code != exitOK {
			t.Errorf("tokenwasm %v: exit %d, want %d; error kind %q, want %q; stdout:\n%s\nstderr:\n%s", tt.args, code, tt.code, kind, tt.kind, stdout.String(), stderr.String())
		}
	}
}

// TestUsageDocumentsExitStatus: -h says what each exit status means.
func TestUsageDocumentsExitStatus(t *testing.T) {
	for _, want := range []string{"2  usage", "3  refused by the provider", "4  transport or policy", "5  rate limited"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage does not document %q", want)
		}
	}
}

// TestInterruptStopsToken: Ctrl-C ends a token request waiting on a stalled provider at once.
func TestInterruptStopsToken(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	release := make(chan struct{})
	defer close(release)
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		_, _ = io.Copy(io.Discard, r.Body) // so the server sees the client go away
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	})
	cfg := fake.Config()
	cmd := command(t, "token", "-provider", "nikohealth", "-client-id", cfg.ClientID, "-token-url", fake.TokenURL(), "-allow-loopback")
	cmd.Env = append(cmd.Env, "TOKENWASM_CLIENT_SECRET="+cfg.ClientSecret)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for fake.Requests() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || time.Since(start) > 2*time.Second {
			t.Fatalf("after Ctrl-C: %v after %v; output:\n%s", err, time.Since(start), out.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("Ctrl-C did not stop tokenwasm token within 10 s")
	}
	if !strings.Contains(out.String(), "context canceled") || strings.Contains(out.String(), cfg.ClientSecret) {
		t.Fatalf("output after Ctrl-C:\n%s", out.String())
	}
}

// TestCodeFromFile: the authorization code is a secret, read from a file or the environment.
func TestCodeFromFile(t *testing.T) {
	fake := providertest.NewCandescent(providertest.DefaultConfig("candescent"))
	defer fake.Close()
	cfg := fake.Config()
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var out bytes.Buffer
	err := runToken(context.Background(), &out, io.Discard, []string{"-provider", "candescent", "-grant", "authorization_code",
		"-client-id", cfg.ClientID, "-client-secret-file", write("secret", cfg.ClientSecret), "-institution-id", cfg.InstitutionID,
		"-code-file", write("code", cfg.Code), "-code-verifier-file", write("verifier", cfg.CodeVerifier),
		"-redirect-uri", cfg.RedirectURI, "-token-url", fake.TokenURL(), "-allow-loopback"})
	if err != nil || !strings.Contains(out.String(), "access_token") {
		t.Fatalf("authorization_code with -code-file: %v\n%s", err, out.String())
	}
}

// TestInterruptFinishesOneTimeExchange: Ctrl-C during a refresh_token exchange lets it finish (the
// provider has used up the refresh token by then) and keeps the new one, in the file named by
// -refresh-token-out; a second Ctrl-C aborts at once.
func TestInterruptFinishesOneTimeExchange(t *testing.T) {
	cfg := providertest.DefaultConfig("candescent")
	fake := providertest.NewCandescent(cfg)
	defer fake.Close()
	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	pw, err := c.Token(ctx, abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantPassword, ClientID: cfg.ClientID,
		ClientSecret: cfg.ClientSecret, InstitutionID: cfg.InstitutionID, Username: cfg.Username, Password: cfg.Password, TokenURL: fake.TokenURL()})
	if err != nil || pw.RefreshToken == "" {
		t.Fatalf("password grant: %v", err)
	}
	var stalled atomic.Int32
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		stalled.Add(1)
		time.Sleep(800 * time.Millisecond) // the exchange is under way when Ctrl-C comes
		return false
	})
	start := func(t *testing.T, out string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
		cmd := command(t, "token", "-provider", "candescent", "-grant", "refresh_token", "-client-id", cfg.ClientID,
			"-token-url", fake.TokenURL(), "-allow-loopback", "-refresh-token-out", out)
		cmd.Env = append(cmd.Env, "TOKENWASM_CLIENT_SECRET="+cfg.ClientSecret, "TOKENWASM_REFRESH_TOKEN="+pw.RefreshToken)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for stalled.Load() == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		_ = cmd.Process.Signal(os.Interrupt)
		return cmd, &stdout, &stderr
	}
	out := filepath.Join(t.TempDir(), "refresh-token")
	cmd, stdout, stderr := start(t, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("one Ctrl-C: %v\nstdout %s\nstderr %s", err, stdout, stderr)
	}
	got, err := os.ReadFile(out)
	rt := strings.TrimSpace(string(got))
	if err != nil || rt == "" || rt == pw.RefreshToken {
		t.Fatalf("the new refresh token was not kept: %q %v", got, err)
	}
	if strings.Contains(stdout.String(), rt) || !strings.Contains(stderr.String(), "finishing the one-time exchange") {
		t.Fatalf("stdout %s\nstderr %s", stdout, stderr)
	}
	if info, _ := os.Stat(out); info.Mode().Perm() != 0o600 {
		t.Fatalf("the refresh token file is %v", info.Mode().Perm())
	}

	// Two Ctrl-C: aborted, long before the stalled exchange would end.
	stalled.Store(0)
	cmd, _, stderr = start(t, filepath.Join(t.TempDir(), "rt2"))
	begin := time.Now()
	_ = cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err == nil || time.Since(begin) > 700*time.Millisecond {
		t.Fatalf("two Ctrl-C: %v after %v\nstderr %s", err, time.Since(begin), stderr)
	}
}
