package host

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// TestPluginFaultReplacesInstance: a call whose deadline passes inside the plugin (here, while the
// provider stalls) loses that call only; the instance is replaced and the next call works.
func TestPluginFaultReplacesInstance(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	c, err := New(context.Background(), WithLoopback(), WithMaxInstances(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	cfg := fake.Config()
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL()}
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client hanging up
		select {                           // stall until the client gives up
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var out abi.Result
	in, _ := json.Marshal(req)
	start := time.Now()
	if err := c.call(ctx, abi.ExportToken, in, &out); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled call: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the deadline took %v to stop the call", d)
	}
	fake.Intercept(nil)
	if _, err := c.Token(context.Background(), req); err != nil {
		t.Fatalf("next call after a fault: %v", err)
	}
	if c.Metrics().Snapshot()["plugin_faults"] != 1 {
		t.Fatalf("metrics = %v", c.Metrics().Snapshot())
	}
}
