package host

import (
	"encoding/json"
	"sync/atomic"
)

// Metrics counts what a Runtime did. It holds no secrets, keys or tokens. It implements expvar.Var, so
// expvar.Publish("tokenwasm", client.Metrics()) serves it.
type Metrics struct {
	fetches         atomic.Int64 // requests sent to a provider (http_send)
	sharedHits      atomic.Int64 // tokens the plugin served from the shared cache
	refreshes       atomic.Int64 // refreshes started ahead of expiry
	refreshFailures atomic.Int64 // refreshes ahead of expiry that failed (the old token kept serving)
	retries         atomic.Int64 // fetches retried after a transient failure
	pluginCalls     atomic.Int64 // calls into the wasm plugin
	pluginFaults    atomic.Int64 // plugin calls that trapped, timed out or answered garbage
	cacheErrors     atomic.Int64 // Cache operations that failed (treated as misses)
	pendingWaits    atomic.Int64 // waits while another process fetched the same token
	invalidations   atomic.Int64 // tokens dropped because an API answered 401
	rotations       atomic.Int64 // new refresh tokens the provider returned (and the source now uses)
	discoveries     atomic.Int64 // SMART configurations fetched (not served from memory)
	signatures      atomic.Int64 // client assertions signed for the plugin (private_key_jwt)
	errors          map[string]*atomic.Int64

	calls      byOutcome      // fetches by provider and outcome, retries included in one
	attempts   byOutcome      // tries of a fetch by provider and outcome
	latency    []atomic.Int64 // fetch latency histogram: counts per latencyBuckets bound, then above
	latencySum atomic.Int64   // ns
}

func newMetrics() *Metrics {
	m := &Metrics{errors: make(map[string]*atomic.Int64, len(errorKinds)), calls: newByOutcome(),
		attempts: newByOutcome(), latency: make([]atomic.Int64, len(latencyBuckets)+1)}
	for _, k := range errorKinds {
		m.errors[k] = new(atomic.Int64)
	}
	return m
}

func (m *Metrics) countError(kind string) {
	if c, ok := m.errors[kind]; ok {
		c.Add(1)
	}
}

// Snapshot returns the counters by name: errors are "errors.<kind>"; fetches by provider and outcome
// ("ok" or a kind) "calls.<provider>.<outcome>" (one per fetch, retries included) and
// "attempts.<provider>.<outcome>" (one per try); the fetch latency histogram
// "fetch_latency_ms.le_<bound>" (le_inf above the last) and "fetch_latency_ms.sum".
func (m *Metrics) Snapshot() map[string]int64 {
	s := map[string]int64{
		"fetches":          m.fetches.Load(),
		"shared_hits":      m.sharedHits.Load(),
		"refreshes":        m.refreshes.Load(),
		"refresh_failures": m.refreshFailures.Load(),
		"retries":          m.retries.Load(),
		"plugin_calls":     m.pluginCalls.Load(),
		"plugin_faults":    m.pluginFaults.Load(),
		"cache_errors":     m.cacheErrors.Load(),
		"pending_waits":    m.pendingWaits.Load(),
		"invalidations":    m.invalidations.Load(),
		"rotations":        m.rotations.Load(),
		"discoveries":      m.discoveries.Load(),
		"signatures":       m.signatures.Load(),
	}
	for k, c := range m.errors {
		s["errors."+k] = c.Load()
	}
	m.snapshotFetches(s)
	return s
}

// String implements expvar.Var.
func (m *Metrics) String() string {
	b, _ := json.Marshal(m.Snapshot())
	return string(b)
}
