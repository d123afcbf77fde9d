package host

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// sharedMemory is a MemoryCache that says it is shared, so the plugin takes the fleet lock in it:
// two Runtimes on one sharedMemory behave as two processes on one Redis.
type sharedMemory struct{ *MemoryCache }

func (sharedMemory) Shared() bool { return true }

// TestDriversShareOneFleet: a Runtime driving token_step and a Runtime calling token, sharing one
// cache as two processes of a fleet would, speak the same keys, lock and gate: 100 cold callers
// across both make one request, and a 429 one of them gets closes the gate for the other.
func TestDriversShareOneFleet(t *testing.T) {
	set := providertest.StartAll()
	defer set.Close()
	cache := sharedMemory{NewMemoryCache(0)}
	var clients [2]*Runtime
	for i, steps := range []bool{false, true} {
		c, err := New(context.Background(), WithLoopback(), WithCache(cache), withStepFlow(steps))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		clients[i] = c
	}
	req := cases(set)["nikohealth/client_credentials"]
	fake := set.NikoHealth
	var n atomic.Int64
	failed := concurrently(100, func() error {
		_, err := clients[n.Add(1)%2].Token(context.Background(), req)
		return err
	})
	if failed != 0 || fake.Requests() != 1 {
		t.Fatalf("%d failed, %d requests at the fake, want 0 and 1", failed, fake.Requests())
	}
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	})
	other := req
	other.Scope = "other" // another identity: a cold cache
	for i, c := range clients {
		_, err := c.Token(context.Background(), other)
		var e *abi.Error
		if !errors.As(err, &e) || e.Kind != abi.KindRateLimited {
			t.Fatalf("client %d: %v, want rate_limited", i, err)
		}
	}
	if fake.Requests() != 2 {
		t.Fatalf("%d requests: the gate one driver closed did not hold the other", fake.Requests())
	}
}

// TestSlowProviderHoldsNoInstance: with one plugin instance, a fetch from a provider that stalls
// does not hold it, so another credential set's fetch completes meanwhile (token_step: the I/O runs
// between plugin calls). Through the token export, the stalled fetch holds the only instance and the
// other waits behind it: the reason the Go host drives token_step.
func TestSlowProviderHoldsNoInstance(t *testing.T) {
	set := providertest.StartAll()
	defer set.Close()
	release := make(chan struct{})
	set.Candid.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		<-release
		return false
	})
	for _, driver := range []struct {
		name      string
		steps     bool
		fastFirst bool // the fast fetch ends while the slow one is still stalled
	}{{"token_step", true, true}, {"token", false, false}} {
		t.Run(driver.name, func(t *testing.T) {
			c, err := New(context.Background(), WithLoopback(), WithMaxInstances(1), withStepFlow(driver.steps))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			reqs := cases(set)
			before := set.Candid.Requests()
			slowDone := make(chan error, 1)
			go func() {
				_, err := c.Token(context.Background(), reqs["candid/json"])
				slowDone <- err
			}()
			for set.Candid.Requests() == before { // the slow fetch is at the provider
				time.Sleep(5 * time.Millisecond)
			}
			fastDone := make(chan error, 1)
			go func() {
				_, err := c.Token(context.Background(), reqs["nikohealth/client_credentials"])
				fastDone <- err
			}()
			select {
			case err := <-fastDone:
				if !driver.fastFirst {
					t.Fatal("the fast fetch ended while the slow one held the only instance")
				}
				if err != nil {
					t.Fatal(err)
				}
				release <- struct{}{}
			case <-time.After(time.Second):
				if driver.fastFirst {
					t.Fatal("the fast fetch waited for the slow provider")
				}
				release <- struct{}{}
				if err := <-fastDone; err != nil {
					t.Fatal(err)
				}
			}
			if err := <-slowDone; err != nil {
				t.Fatal(err)
			}
		})
	}
}
