package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

type recorder struct {
	mu                sync.Mutex
	attempts, fetches []Fetch
}

func (r *recorder) ObserveAttempt(_ context.Context, f Fetch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, f)
}

func (r *recorder) ObserveFetch(_ context.Context, f Fetch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetches = append(r.fetches, f)
}

// TestObservability: a refused client is logged at Warn with provider, grant, kind, status and
// attempts and no secret; a 5xx fetch counts one call and three attempts; a success counts ok and a
// latency; an Observer sees what the Metrics count.
func TestObservability(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	var logs bytes.Buffer
	rec := &recorder{}
	ctx := context.Background()
	c, err := New(ctx, WithLoopback(), WithObserver(rec),
		WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	cfg := fake.Config()
	good := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
	bad := good
	bad.ClientSecret = "wrong-secret-canary"
	if _, err := c.Token(ctx, bad); !errors.Is(err, abi.ErrInvalidClient) {
		t.Fatalf("bad secret: %v", err)
	}
	var rec1 map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(logs.String(), "\n", 2)[0]), &rec1); err != nil {
		t.Fatalf("no Info-level record for invalid_client: %q", logs.String())
	}
	for k, want := range map[string]any{"level": "WARN", "provider": "nikohealth", "grant": "client_credentials",
		"kind": "invalid_client", "status": float64(401), "attempts": float64(1)} {
		if rec1[k] != want {
			t.Errorf("log %s = %v, want %v (%s)", k, rec1[k], want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "wrong-secret-canary") || strings.Contains(logs.String(), cfg.ClientSecret) {
		t.Fatal("a secret reached the log")
	}

	var fails atomic.Int32
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if fails.Add(1) <= 3 {
			w.WriteHeader(http.StatusBadGateway)
			return true
		}
		return false
	})
	if _, err := c.Token(ctx, good); !errors.Is(err, abi.ErrServerError) {
		t.Fatalf("5xx: %v", err)
	}
	// At once: the plugin still remembers the failures (their backoff, fleet-wide), so the first
	// attempt is answered that, and the second, after its retry_after_ms, gets the token.
	if _, err := c.Token(ctx, good); err != nil {
		t.Fatal(err)
	}
	m := c.Metrics().Snapshot()
	for k, want := range map[string]int64{
		"calls.nikohealth.invalid_client": 1, "attempts.nikohealth.invalid_client": 1,
		"calls.nikohealth.server_error": 1, "attempts.nikohealth.server_error": 4,
		"calls.nikohealth.ok": 1, "attempts.nikohealth.ok": 1,
	} {
		if m[k] != want {
			t.Errorf("%s = %d, want %d", k, m[k], want)
		}
	}
	var inHistogram int64
	for k, v := range m {
		if strings.HasPrefix(k, "fetch_latency_ms.le_") {
			inHistogram += v
		}
	}
	if inHistogram != 3 {
		t.Errorf("histogram holds %d fetches, want 3: %v", inHistogram, m)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.fetches) != 3 || len(rec.attempts) != 6 || rec.fetches[1].Attempt != 3 || rec.fetches[2].Kind != "" || rec.fetches[2].Attempt != 2 {
		t.Fatalf("observer saw fetches %+v, attempts %d", rec.fetches, len(rec.attempts))
	}
}

// TestRecordsSayWhatAndHowLong: every record of a fetch names its provider and grant, durations are
// milliseconds a person reads, a 401 is a response (not "failed"), and Error() carries the status and
// the provider's (redacted) description as x/oauth2's RetrieveError does.
func TestRecordsSayWhatAndHowLong(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	var logs bytes.Buffer
	ctx := context.Background()
	c, err := New(ctx, WithLoopback(), WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	cfg := fake.Config()
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
	if _, err := c.Token(ctx, req); err != nil {
		t.Fatal(err)
	}
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_scope","error_description":"scope x is not granted"}`))
		return true
	})
	req.Scope = "x"
	_, err = c.Token(ctx, req)
	if want := `tokenwasm: invalid_scope (HTTP 400): provider refused the token request; provider says "scope x is not granted"`; err == nil || err.Error() != want {
		t.Fatalf("Error() = %v\nwant      %s", err, want)
	}
	records := 0
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if msg, _ := rec["msg"].(string); !strings.Contains(msg, "token") {
			continue
		}
		records++
		if rec["provider"] != "nikohealth" || rec["grant"] != "client_credentials" {
			t.Errorf("record without provider and grant: %s", line)
		}
		for _, gone := range []string{"failed", "elapsed", "latency"} {
			if _, ok := rec[gone]; ok {
				t.Errorf("record has %q: %s", gone, line)
			}
		}
		if ms, ok := rec["latency_ms"].(float64); !ok || ms < 0 || ms > 60000 {
			t.Errorf("latency_ms %v is not milliseconds: %s", rec["latency_ms"], line)
		}
	}
	if records < 3 {
		t.Fatalf("%d fetch records: %s", records, logs.String())
	}
}

// TestObservedLabelsAreBounded: what an Observer (and so the OTel adapter's attributes) and the
// logs see of a request is a fixed set of labels: a grant type the caller made up (or filled with a
// secret by mistake) is "other", not a new label per value; an error kind the plugin does not list
// is never counted as a success.
func TestObservedLabelsAreBounded(t *testing.T) {
	rec := &recorder{}
	var logs bytes.Buffer
	ctx := context.Background()
	c, err := New(ctx, WithLoopback(), WithObserver(rec),
		WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for i := range 3 {
		req := abi.TokenRequest{Provider: "nikohealth", ClientID: "id", ClientSecret: "s", Domain: "acme",
			GrantType: fmt.Sprint("CANARY-grant-", i)}
		if _, err := c.Token(ctx, req); !errors.Is(err, abi.ErrInvalidRequest) && !errors.Is(err, abi.ErrUnsupportedGrantType) {
			t.Fatalf("made-up grant: %v", err)
		}
	}
	rec.mu.Lock()
	seen := append(append([]Fetch(nil), rec.fetches...), rec.attempts...)
	rec.mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("nothing observed: the test is not testing")
	}
	for _, f := range seen {
		if f.Grant != "other" {
			t.Errorf("grant label %q, want other", f.Grant)
		}
	}
	if strings.Contains(logs.String(), "CANARY-grant") {
		t.Errorf("a made-up grant type reached the logs as a label: %s", logs.String())
	}

	m := newMetrics()
	m.fetch(Fetch{Provider: "candid", Kind: "not_a_kind"})
	m.attempt(Fetch{Provider: "candid", Kind: "not_a_kind"})
	if s := m.Snapshot(); s["calls.candid.ok"] != 0 || s["attempts.candid.ok"] != 0 {
		t.Errorf("a failure of an unlisted kind counted as ok: %v", s)
	}
}

// TestFetchRunsUnderItsCallersProfilerLabels: a fetch runs on a worker goroutine that outlives it
// (workers.go); it runs under the profiler labels (pprof.Do) of the call that started it, never
// under those of the call that started the worker's earlier fetch: tenant B's CPU time is not
// tenant A's in a profile labelled by tenant.
func TestFetchRunsUnderItsCallersProfilerLabels(t *testing.T) {
	_, reqA := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	_, reqB := nikoFake(t, providertest.DefaultConfig("nikohealth"))
	lt := &labelTransport{}
	c := newRuntime(t, WithHTTPTransport(lt))
	for _, tc := range []struct {
		tenant string
		req    abi.TokenRequest
	}{{"A", reqA}, {"B", reqB}, {"A", reqA}} {
		tc.req.Force = true
		pprof.Do(context.Background(), pprof.Labels("tenant", tc.tenant), func(ctx context.Context) {
			if _, err := c.Token(ctx, tc.req); err != nil {
				t.Fatal(err)
			}
		})
	}
	want := []string{`{"tenant":"A"}`, `{"tenant":"B"}`, `{"tenant":"A"}`}
	if fmt.Sprint(lt.seen) != fmt.Sprint(want) {
		t.Fatalf("the fetches ran under the labels %q, want %q", lt.seen, want)
	}
}

// labelTransport records the profiler labels of the goroutine that sends each request.
type labelTransport struct {
	mu   sync.Mutex
	seen []string
}

func (lt *labelTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	labels := goroutineLabels("labelTransport).RoundTrip")
	lt.mu.Lock()
	lt.seen = append(lt.seen, labels)
	lt.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// goroutineLabels returns the labels of the goroutine whose stack holds frame, as the goroutine
// profile prints them: Go has no call that reads the current goroutine's labels.
func goroutineLabels(frame string) string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	for _, rec := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(rec, frame) {
			for _, l := range strings.Split(rec, "\n") {
				if rest, ok := strings.CutPrefix(l, "# labels: "); ok {
					return rest
				}
			}
			return "none"
		}
	}
	return "not found"
}
