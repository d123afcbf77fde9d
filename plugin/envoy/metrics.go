package main

import "github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"

// metrics are the filter's proxy-wasm metrics, named tokenwasm.<name>.<provider>.<metric> (Envoy shows
// them as wasmcustom.tokenwasm.<name>.<provider>.<metric>; README.md has the stats_tags that make the
// name, the provider and the failure kind tags). The name (the configuration's, or its cluster's) sets
// two filters of one provider apart: Envoy adds up the metrics of every plugin that defines one name.
// The provider is a profile name and the kind an ABI error kind: nothing in a name comes from a
// request, a response or a secret.
type metrics struct {
	prefix                                                        string
	hits, held, fetches, refreshes, gateClosed, invalidated, shed proxywasm.MetricCounter
	fetchMS                                                       proxywasm.MetricHistogram
	failures                                                      map[string]proxywasm.MetricCounter
}

func newMetrics(name, provider string) *metrics {
	p := "tokenwasm." + name + "." + provider + "."
	return &metrics{
		prefix:      p,
		hits:        proxywasm.DefineCounterMetric(p + "hits"),
		held:        proxywasm.DefineCounterMetric(p + "held"),
		fetches:     proxywasm.DefineCounterMetric(p + "fetches"),
		refreshes:   proxywasm.DefineCounterMetric(p + "refreshes"),
		gateClosed:  proxywasm.DefineCounterMetric(p + "gate_closed"),
		invalidated: proxywasm.DefineCounterMetric(p + "invalidated"),
		shed:        proxywasm.DefineCounterMetric(p + "shed"),
		fetchMS:     proxywasm.DefineHistogramMetric(p + "fetch_ms"),
		failures:    map[string]proxywasm.MetricCounter{},
	}
}

// failure counts one failed token call (or a refused one) by its error kind.
func (m *metrics) failure(kind string) {
	c, ok := m.failures[kind]
	if !ok {
		c = proxywasm.DefineCounterMetric(m.prefix + "failures." + kind)
		m.failures[kind] = c
	}
	c.Increment(1)
}

// metricSegment is s with every byte but letters, digits, '_' and '-' replaced by '_': one segment of
// a metric name, which Envoy splits at dots.
func metricSegment(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}
