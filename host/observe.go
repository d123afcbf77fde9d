package host

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
)

// Fetch is the outcome of one token fetch, or of one attempt of it: what the logs, the Metrics and
// an Observer see. It holds no secret, key or token.
type Fetch struct {
	Provider string        // the request's provider ("other" for a name the plugin does not know)
	Grant    string        // the grant type; client_credentials when left out, "other" when not a known one
	Kind     string        // "" on success, else the *abi.Error's kind (abi.Kinds()), or "plugin" for a fault
	Status   int           // the provider's HTTP status, when it answered with an error
	Attempt  int           // the attempt's number (1 for the first try); for a whole fetch, the attempts made
	Latency  time.Duration // the attempt's, or the whole fetch's (retries and their waits included)
	Cached   bool          // answered from the shared cache: no request reached the provider
}

// Observer receives every fetch and attempt, to export them (the otelmetrics module adapts
// OpenTelemetry). Its methods are called on the fetch's goroutine: keep them quick.
type Observer interface {
	ObserveAttempt(ctx context.Context, f Fetch)
	ObserveFetch(ctx context.Context, f Fetch)
}

// WithObserver adds an Observer beside the Runtime's own Metrics.
func WithObserver(o Observer) Option {
	return func(c *config) { c.observers = append(c.observers, o) }
}

// providers are the provider labels of metrics: a fixed set, so an unknown name in a request cannot
// grow them.
var providers = []Provider{Candid, Pattern, Candescent, NikoHealth, Custom, "other"}

func providerLabel(name string) string {
	for _, p := range providers[:len(providers)-1] {
		if string(p) == name {
			return name
		}
	}
	return "other"
}

// grants are the grant labels: a fixed set, so a made-up grant type cannot grow them.
var grants = []string{abi.GrantClientCredentials, abi.GrantPassword, abi.GrantAuthorizationCode, abi.GrantRefreshToken}

// grantLabel is req's grant for logs and metrics: client_credentials when left out, "other" when
// not one the plugin knows.
func grantLabel(grant string) string {
	if grant == "" {
		return abi.GrantClientCredentials
	}
	if slices.Contains(grants, grant) {
		return grant
	}
	return "other"
}

// errorKind is err's kind for logs and metrics.
func errorKind(err error) (kind string, status int) {
	var ae *abi.Error
	switch {
	case err == nil:
		return "", 0
	case errors.As(err, &ae) && slices.Contains(errorKinds, ae.Kind):
		return ae.Kind, ae.Status
	case ae != nil: // a kind no list holds (another build of the plugin): a fault, never a label of its own
		return "plugin", ae.Status
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled", 0
	}
	return "plugin", 0
}

// newFetch describes a finished attempt or fetch of req.
func newFetch(req *abi.TokenRequest, attempt int, start time.Time, cached bool, err error) Fetch {
	kind, status := errorKind(err)
	return Fetch{Provider: providerLabel(req.Provider), Grant: grantLabel(req.GrantType), Kind: kind, Status: status,
		Attempt: attempt, Latency: time.Since(start), Cached: cached}
}

func (c *Runtime) observeAttempt(ctx context.Context, f Fetch) {
	c.metrics.attempt(f)
	for _, o := range c.observers {
		o.ObserveAttempt(ctx, f)
	}
}

// observeFetch counts and logs one fetch: failures at Warn, successes at Debug; never a secret.
func (c *Runtime) observeFetch(ctx context.Context, f Fetch) {
	c.metrics.fetch(f)
	for _, o := range c.observers {
		o.ObserveFetch(ctx, f)
	}
	attrs := []slog.Attr{slog.String("provider", f.Provider), slog.String("grant", f.Grant),
		slog.Int("attempts", f.Attempt), latencyMS(f.Latency)}
	if f.Kind == "" {
		c.log.LogAttrs(ctx, slog.LevelDebug, "tokenwasm: token fetched", append(attrs, slog.Bool("cached", f.Cached))...)
		return
	}
	attrs = append(attrs, slog.String("kind", f.Kind))
	if f.Status != 0 {
		attrs = append(attrs, slog.Int("status", f.Status))
	}
	c.log.LogAttrs(ctx, slog.LevelWarn, "tokenwasm: token fetch failed", attrs...)
}

// latencyMS is a duration as a log attribute people read: milliseconds, to a tenth.
func latencyMS(d time.Duration) slog.Attr {
	return slog.Float64("latency_ms", float64(d.Round(100*time.Microsecond))/float64(time.Millisecond))
}

// fetchLabels names what a fetch is for in the records of its imports (http_send's debug record).
type fetchLabels struct{ provider, grant string }

type fetchLabelsKey struct{}

// withFetchLabels puts req's provider and grant (labels, never a secret) on ctx.
func withFetchLabels(ctx context.Context, req *abi.TokenRequest) context.Context {
	return context.WithValue(ctx, fetchLabelsKey{}, fetchLabels{providerLabel(req.Provider), grantLabel(req.GrantType)})
}

// latencyBuckets are the upper bounds of the fetch latency histogram.
var latencyBuckets = []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second}

// errorKinds is abi.Kinds(), read once: the host's own copy of the list.
var errorKinds = abi.Kinds()

// outcomes are the columns of the per-provider counters: success, every kind, then the host's own.
var outcomes = append(append([]string{"ok"}, errorKinds...), "canceled", "plugin")

// byOutcome counts per provider and outcome, lock-free.
type byOutcome [][]atomic.Int64

func newByOutcome() byOutcome {
	b := make(byOutcome, len(providers))
	for i := range b {
		b[i] = make([]atomic.Int64, len(outcomes))
	}
	return b
}

func (b byOutcome) add(f Fetch) {
	p, o := len(providers)-1, 0
	if f.Kind != "" {
		o = len(outcomes) - 1 // a kind not listed is a fault, never "ok"
	}
	for i, name := range providers {
		if string(name) == f.Provider {
			p = i
		}
	}
	if f.Kind != "" {
		for i, name := range outcomes {
			if name == f.Kind {
				o = i
			}
		}
	}
	b[p][o].Add(1)
}

func (b byOutcome) snapshot(prefix string, into map[string]int64) {
	for i, p := range providers {
		for j, o := range outcomes {
			if n := b[i][j].Load(); n != 0 {
				into[prefix+"."+string(p)+"."+o] = n
			}
		}
	}
}

func (m *Metrics) attempt(f Fetch) { m.attempts.add(f) }

func (m *Metrics) fetch(f Fetch) {
	m.calls.add(f)
	i := 0
	for i < len(latencyBuckets) && f.Latency > latencyBuckets[i] {
		i++
	}
	m.latency[i].Add(1)
	m.latencySum.Add(int64(f.Latency))
}

func (m *Metrics) snapshotFetches(s map[string]int64) {
	m.calls.snapshot("calls", s)
	m.attempts.snapshot("attempts", s)
	for i := range m.latency {
		le := "inf"
		if i < len(latencyBuckets) {
			le = strconv.FormatInt(latencyBuckets[i].Milliseconds(), 10)
		}
		s["fetch_latency_ms.le_"+le] = m.latency[i].Load()
	}
	s["fetch_latency_ms.sum"] = time.Duration(m.latencySum.Load()).Milliseconds()
}
