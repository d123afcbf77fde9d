package host

import (
	"context"
	"strconv"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// TestSourcesBounded: distinct credential sets beyond the bound do not grow the client's memory.
func TestSourcesBounded(t *testing.T) {
	c, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for i := range maxSources + 100 {
		c.TokenSource(abi.TokenRequest{Provider: "candescent", GrantType: abi.GrantRefreshToken, ClientID: "c",
			ClientSecret: "s", RefreshToken: "rt-" + strconv.Itoa(i)})
	}
	checkSourcesBounded(t, c)
}

// checkSourcesBounded fails t if c holds more sources than its bound.
func checkSourcesBounded(t *testing.T, c *Runtime) {
	t.Helper()
	c.sources.mu.Lock()
	n := len(c.sources.m)
	c.sources.mu.Unlock()
	if n > maxSources {
		t.Fatalf("%d sources held, bound %d", n, maxSources)
	}
}
