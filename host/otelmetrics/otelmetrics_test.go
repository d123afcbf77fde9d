package otelmetrics

import (
	"context"
	"errors"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestObserverRecords: one good fetch and one refused fetch reach the instruments with their
// provider and outcome, and the histogram counts both; no attribute holds the secret.
func TestObserverRecords(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	reader := sdkmetric.NewManualReader()
	obs, err := New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback(), host.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	cfg := host.Config{Provider: host.NikoHealth, ClientID: fake.Config().ClientID, ClientSecret: fake.Config().ClientSecret,
		TokenURL: fake.TokenURL(), Host: c}
	if _, err := cfg.Token(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.ClientSecret = "wrong-secret-canary"
	if _, err := cfg.Token(ctx); !errors.Is(err, abi.ErrInvalidClient) {
		t.Fatalf("wrong secret: %v", err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	var histCount uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					prov, _ := p.Attributes.Value("provider")
					out, _ := p.Attributes.Value("outcome")
					for _, kv := range p.Attributes.ToSlice() {
						if kv.Value.AsString() == "wrong-secret-canary" {
							t.Fatal("a secret became an attribute")
						}
					}
					got[m.Name+"/"+prov.AsString()+"/"+out.AsString()] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					histCount += p.Count
				}
			}
		}
	}
	for k, want := range map[string]int64{
		Fetches + "/nikohealth/ok": 1, Fetches + "/nikohealth/invalid_client": 1,
		Attempts + "/nikohealth/ok": 1, Attempts + "/nikohealth/invalid_client": 1,
	} {
		if got[k] != want {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], want, got)
		}
	}
	if histCount != 2 {
		t.Errorf("duration histogram counted %d fetches, want 2", histCount)
	}
}
