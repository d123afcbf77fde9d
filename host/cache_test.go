package host

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestMemoryCacheKeepsLineages: when the cache is full, a one-time grant's lineage and exchange mark
// go last, whatever their TTL: evicted, the next exchange would send a used refresh token or code.
func TestMemoryCacheKeepsLineages(t *testing.T) {
	ctx := context.Background()
	c := NewMemoryCache(4)
	lineage := "tokenwasm/1/candescent/abc/grant"
	mark := "tokenwasm/1/candescent/abc/sent"
	// The lineage expires soonest of all: without the rule it would be the first to go.
	if err := c.Set(ctx, lineage, []byte(`{"refresh_token":"rt"}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, mark, []byte(`{}`), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for i := range 10 { // other tenants' tokens that live for hours
		if err := c.Set(ctx, "tokenwasm/1/nikohealth/t"+strconv.Itoa(i), []byte("tok"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{lineage, mark} {
		if _, ok, _ := c.Get(ctx, k); !ok {
			t.Fatalf("%s was evicted", k)
		}
	}
	if _, ok, _ := c.Get(ctx, "tokenwasm/1/nikohealth/t9"); !ok {
		t.Fatal("the newest token is not there: the cache evicted instead of making room")
	}
}
