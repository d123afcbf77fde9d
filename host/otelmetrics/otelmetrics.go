// Package otelmetrics exports a tokenwasm Runtime's fetches as OpenTelemetry metrics: fetches and
// attempts by provider, grant and outcome, and fetch latency as a histogram. Any OpenTelemetry
// exporter takes them from there (Prometheus: see the example).
//
// It is a module of its own, so the tokenwasm module itself does not depend on OpenTelemetry.
package otelmetrics

import (
	"context"

	"github.com/tokenwasm/tokenwasm/host"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instrument names.
const (
	Fetches  = "tokenwasm.fetches"        // counter: token fetches, retries included in one
	Attempts = "tokenwasm.fetch.attempts" // counter: tries of a fetch
	Duration = "tokenwasm.fetch.duration" // histogram, seconds: a whole fetch
	scope    = "github.com/tokenwasm/tokenwasm/host/otelmetrics"
)

// Observer records a Runtime's fetches on OpenTelemetry instruments: pass it to host.WithObserver.
// Attributes are provider, grant and outcome ("ok" or the error kind); never a secret or a key.
type Observer struct {
	fetches, attempts metric.Int64Counter
	duration          metric.Float64Histogram
}

// New creates the instruments on mp's meter.
func New(mp metric.MeterProvider) (*Observer, error) {
	m := mp.Meter(scope)
	var o Observer
	var err error
	if o.fetches, err = m.Int64Counter(Fetches, metric.WithUnit("{fetch}"),
		metric.WithDescription("Token fetches, by provider, grant and outcome; retries count once.")); err != nil {
		return nil, err
	}
	if o.attempts, err = m.Int64Counter(Attempts, metric.WithUnit("{attempt}"),
		metric.WithDescription("Tries of a token fetch, by provider, grant and outcome.")); err != nil {
		return nil, err
	}
	if o.duration, err = m.Float64Histogram(Duration, metric.WithUnit("s"),
		metric.WithDescription("Token fetch latency, retries and their waits included."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	return &o, nil
}

var _ host.Observer = (*Observer)(nil)

// ObserveAttempt implements host.Observer.
func (o *Observer) ObserveAttempt(ctx context.Context, f host.Fetch) {
	o.attempts.Add(ctx, 1, metric.WithAttributeSet(attributes(f)))
}

// ObserveFetch implements host.Observer.
func (o *Observer) ObserveFetch(ctx context.Context, f host.Fetch) {
	set := metric.WithAttributeSet(attributes(f))
	o.fetches.Add(ctx, 1, set)
	o.duration.Record(ctx, f.Latency.Seconds(), set)
}

func attributes(f host.Fetch) attribute.Set {
	outcome := f.Kind
	if outcome == "" {
		outcome = "ok"
	}
	return attribute.NewSet(attribute.String("provider", f.Provider), attribute.String("grant", f.Grant),
		attribute.String("outcome", outcome))
}
