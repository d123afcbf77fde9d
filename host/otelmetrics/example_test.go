package otelmetrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/otelmetrics"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Prometheus through OpenTelemetry: the OTel Prometheus exporter is the meter provider's reader, and
// promhttp serves its registry at /metrics. A fake NikoHealth stands in for the provider.
func Example_prometheus() {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()

	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		panic(err)
	}
	obs, err := otelmetrics.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback(), host.WithObserver(obs))
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)
	cfg := host.Config{Provider: host.NikoHealth, ClientID: fake.Config().ClientID,
		ClientSecret: fake.Config().ClientSecret, TokenURL: fake.TokenURL(), Host: c}
	if _, err := cfg.Token(ctx); err != nil {
		panic(err)
	}

	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "tokenwasm_fetches_total") || strings.HasPrefix(line, "tokenwasm_fetch_duration_seconds_count") {
			fmt.Println(line)
		}
	}
	// Output:
	// tokenwasm_fetch_duration_seconds_count{grant="client_credentials",outcome="ok",provider="nikohealth"} 1
	// tokenwasm_fetches_total{grant="client_credentials",outcome="ok",provider="nikohealth"} 1
}
