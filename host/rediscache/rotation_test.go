package rediscache

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// rotationWorkerEnv marks a re-executed test binary acting as one long-lived process of a fleet
// sharing a rotating grant (TestRotationWorker).
const rotationWorkerEnv = "TOKENWASM_REDIS_ROTATION_WORKER"

// TestRotationWorker is not a test of its own: it is the body of each process TestFleetRotatingGrant
// starts. One Runtime on Redis for the life of the process, as a service keeps it: it prints "ready",
// then answers each "token" line it reads with "token <access_token> <expires_at_ms>" or "error
// <message>", until its input ends.
func TestRotationWorker(t *testing.T) {
	if os.Getenv(rotationWorkerEnv) == "" {
		t.Skip("runs only as a fleet process")
	}
	var req abi.TokenRequest
	if err := json.Unmarshal([]byte(os.Getenv("WORKER_REQUEST")), &req); err != nil {
		t.Fatal(err)
	}
	cc, err := wazero.NewCompilationCacheWithDir(os.Getenv("WORKER_COMPILE_CACHE"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := host.New(context.Background(), host.WithCache(newCache(t, client(t, os.Getenv("REDIS_URL")))), host.WithLoopback(),
		host.WithCompilationCache(cc))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		tok, err := c.Token(context.Background(), req)
		if err != nil {
			fmt.Println("error", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Println("token", tok.AccessToken, tok.ExpiresAtMS)
	}
}

// rotationWorker is one process started by startRotationWorker.
type rotationWorker struct {
	stdin io.WriteCloser
	lines chan string
}

// startRotationWorker starts a process and waits until it is ready. Processes given the same
// compileCache folder compile the plugin once (wazero takes seconds to, tens of them under -race).
func startRotationWorker(t *testing.T, url, compileCache string, req abi.TokenRequest) *rotationWorker {
	t.Helper()
	b, _ := json.Marshal(req)
	cmd := exec.Command(os.Args[0], "-test.run=^TestRotationWorker$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), rotationWorkerEnv+"=1", "REDIS_URL="+url, "WORKER_REQUEST="+string(b), "WORKER_COMPILE_CACHE="+compileCache)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &rotationWorker{stdin: stdin, lines: make(chan string, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // the worker returns when its input ends
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if line := w.next(t); line != "ready" {
		t.Fatalf("worker: %q, want ready", line)
	}
	return w
}

// next returns the worker's next line.
func (w *rotationWorker) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-w.lines:
		if !ok {
			t.Fatal("the worker ended")
		}
		return line
	case <-time.After(60 * time.Second):
		t.Fatal("the worker did not answer")
	}
	return ""
}

// token makes one call in the worker: its access token and expiry.
func (w *rotationWorker) token(t *testing.T) (string, int64) {
	t.Helper()
	if _, err := io.WriteString(w.stdin, "token\n"); err != nil {
		t.Fatal(err)
	}
	line := w.next(t)
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "token" {
		t.Fatalf("worker: %s", line)
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		t.Fatalf("worker: %s", line)
	}
	return f[1], exp
}

// apiStatus is the status the fake's API answers to tok.
func apiStatus(t *testing.T, fake *providertest.Fake, tok string) int {
	t.Helper()
	r, _ := http.NewRequest("GET", fake.APIURL(), nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestFleetRotatingGrant: two long-lived processes on one Redis share one authorization code
// (Candescent, 3-second access tokens, refresh tokens that rotate at every use); calls alternate
// between them, one a second, for 30 s. Each holds its token in memory, refreshes it ahead in the
// background and follows the grant's lineage through Redis: every answer must be a token the fake's
// API accepts, no refresh token (nor the code) may be presented twice (the fake counts replays, and
// revokes the lineage), and no token request may be refused.
func TestFleetRotatingGrant(t *testing.T) {
	url := redisURL(t)
	fake := providertest.NewCandescent(providertest.DefaultConfig("candescent"))
	t.Cleanup(fake.Close)
	cfg := fake.Config()
	req := abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantAuthorizationCode, ClientID: cfg.ClientID,
		ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL(), InstitutionID: cfg.InstitutionID,
		Code: fake.Authorize(3 * time.Second), RedirectURI: cfg.RedirectURI, CodeVerifier: cfg.CodeVerifier,
		Scope: "openid offline_access"}
	t0, dir := time.Now(), t.TempDir()
	workers := []*rotationWorker{startRotationWorker(t, url, dir, req), startRotationWorker(t, url, dir, req)}
	start := time.Now()
	t.Logf("processes ready in %v", start.Sub(t0).Round(time.Millisecond))
	seen := []map[string]bool{{}, {}}
	calls := 0
	for i := 0; time.Since(start) < 30*time.Second; i++ {
		tok, exp := workers[i%2].token(t)
		what := fmt.Sprintf("call %d (worker %d, at %v)", i+1, i%2, time.Since(start).Round(time.Millisecond))
		if now := time.Now().UnixMilli(); exp <= now {
			t.Fatalf("%s: a token that expired %d ms ago", what, now-exp)
		}
		if s := apiStatus(t, fake, tok); s != http.StatusOK {
			t.Fatalf("%s: the fake's API answers %d to the token (replays %d)", what, s, fake.Replays())
		}
		seen[i%2][tok] = true
		calls++
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second)))
	}
	if n := fake.Replays(); n != 0 {
		t.Fatalf("%d replays at the fake (a used refresh token or the code presented again)", n)
	}
	if fake.Requests() != fake.Issued() {
		t.Fatalf("%d token requests, %d tokens issued: the fake refused some", fake.Requests(), fake.Issued())
	}
	if n := fake.Issued(); n < 6 {
		t.Fatalf("%d exchanges in 30 s of 3-second tokens", n)
	}
	shared := 0
	for tok := range seen[1] {
		if seen[0][tok] {
			shared++
		}
	}
	if shared == 0 {
		t.Fatal("the two processes never served the same token: they did not share Redis")
	}
	t.Logf("%d calls, %d exchanges, %d tokens served by both", calls, fake.Issued(), shared)
}
