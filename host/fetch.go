package host

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
)

// One fetch (this file): a flight's call of the plugin, retried on a transient failure within the
// request's timeout_ms.

const (
	// retryAttempts: tries of one fetch on a transient failure, each after the retry_after_ms the
	// plugin gave the failure (its fleet-wide backoff: 1 s, 2 s, ...), within the fetch's timeout.
	retryAttempts = 3
	// defaultTimeout and maxTimeout bound one fetch, retries included, as the plugin bounds timeout_ms
	// (abi/ABI.md, TokenRequest).
	defaultTimeout = 10 * time.Second
	maxTimeout     = 120 * time.Second
)

// fetchWithRetry calls the plugin's token export, retrying transient failures (transport, 5xx) with
// exponential backoff and full jitter. Never 4xx, never a 429 (the gate handles those), never a
// policy refusal. The request's timeout_ms bounds the whole fetch, retries included.
func (s *source) fetchWithRetry(ctx context.Context, req abi.TokenRequest, force bool, minTTL time.Duration) (*abi.Result, error) {
	timeout := defaultTimeout
	if req.TimeoutMS > 0 {
		timeout = min(time.Duration(req.TimeoutMS)*time.Millisecond, maxTimeout)
	}
	deadline := time.Now().Add(timeout)
	// The deadline bounds the HTTP exchanges and the waits, not the plugin's execution: a call stopped
	// inside wasm costs its instance, and the plugin answers a timed-out http_send with a typed error.
	ctx = withFetchLabels(context.WithValue(ctx, fetchDeadlineKey{}, deadline), &req)
	req.Force = force
	req.MinTTLMS = minTTL.Milliseconds()
	if s.c.clock != nil {
		req.NowMS = s.c.clock.now().UnixMilli() // the plugin judges expiry by the same clock as the source
	}
	if sc, ok := s.c.cache.(SharedCache); ok && sc.Shared() {
		req.FleetLock = true
	}
	req, err := s.c.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	input, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		at := time.Now()
		res, err := s.c.fetch(ctx, input)
		cached := res != nil && res.Cached
		s.c.observeAttempt(ctx, newFetch(&req, attempt, at, cached, err))
		var ae *abi.Error
		if err == nil || attempt == retryAttempts || !errors.As(err, &ae) || !ae.Retryable || ae.Kind == abi.KindRateLimited {
			s.c.observeFetch(ctx, newFetch(&req, attempt, start, cached, err))
			return res, err
		}
		wait := time.Duration(ae.RetryAfterMS) * time.Millisecond
		if time.Now().Add(wait).After(deadline) {
			s.c.observeFetch(ctx, newFetch(&req, attempt, start, false, err))
			return nil, err // no time left for another try
		}
		s.c.metrics.retries.Add(1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			s.c.observeFetch(ctx, newFetch(&req, attempt, start, false, err))
			return nil, err
		}
	}
}

// fetchDeadlineKey carries a fetch's deadline (timeout_ms, retries included) to http_send and to
// the waits for another process's fetch.
type fetchDeadlineKey struct{}

// fetchDeadline returns ctx's fetch deadline, if it has one.
func fetchDeadline(ctx context.Context) (time.Time, bool) {
	d, ok := ctx.Value(fetchDeadlineKey{}).(time.Time)
	return d, ok
}
