//go:build !wasip1

package main

import (
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// TestMetricNamesPerFilter: two filters of one provider define metrics of their own, named by the
// configuration's name or, without one, by their cluster (a dot in it made '_': Envoy splits names
// at dots); a name that is no metric-name segment stops the filter at start.
func TestMetricNamesPerFilter(t *testing.T) {
	fake := niko(t, 0)
	tests := []struct {
		name  string
		extra map[string]any
		want  string // the hits counter's name
	}{
		{"the cluster's name", nil, "tokenwasm.nikohealth_token.nikohealth.hits"},
		{"a configured name", map[string]any{"name": "billing-api"}, "tokenwasm.billing-api.nikohealth.hits"},
		{"a cluster with dots", map[string]any{"cluster": "niko.token:443"}, "tokenwasm.niko_token_443.nikohealth.hits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "native", fake, tc.extra)
			if _, err := h.host.GetCounterMetric(tc.want); err != nil {
				t.Fatalf("%s: %v", tc.want, err)
			}
		})
	}
	for _, bad := range []string{"a.b", "with space", strings.Repeat("x", 65)} {
		t.Run("refused", func(t *testing.T) { // one emulator at a time: each ends with its subtest
			h := emulate(t, "native", nikoConfig(fake, map[string]any{"name": bad}))
			if st := h.host.StartPlugin(); st != types.OnPluginStartStatusFailed ||
				!strings.Contains(strings.Join(h.host.GetCriticalLogs(), "\n"), "name must be 1 to 64 letters") {
				t.Errorf("name %q: start %v, logs %q", bad, st, h.host.GetCriticalLogs())
			}
		})
	}
}
