package rediscache

import (
	"context"
	"testing"
	"time"
)

// TestPlantedLocksTakenOver: a lock key of the wrong type or holding garbage that does not decrypt,
// with or without a TTL, stalls nothing: it is taken over at once.
func TestPlantedLocksTakenOver(t *testing.T) {
	rdb := client(t, redisURL(t))
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		plant func(rk string)
	}{
		{"hash no TTL", func(rk string) { rdb.HSet(ctx, rk, "a", "b") }},
		{"list with 60s TTL", func(rk string) { rdb.RPush(ctx, rk, "x"); rdb.PExpire(ctx, rk, 60*time.Second) }},
		{"garbage string with 60s TTL", func(rk string) { rdb.Set(ctx, rk, "garbage", 60*time.Second) }},
		{"gate of wrong type", func(rk string) { rdb.RPush(ctx, rk[:len(rk)-len("/lock")]+"/gate", "x") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, cache, k := coldKnownKey(t, rdb)
			tc.plant(cache.redisKey(k + "/lock"))
			start := time.Now()
			_, err := fetchWith(t, newCache(t, rdb), fake, "")
			t.Logf("%s: err=%v after %v, %d requests", tc.name, err, time.Since(start).Round(time.Millisecond), fake.Requests())
			if err != nil {
				t.Errorf("planted %s stalls the credential set: %v", tc.name, err)
			}
		})
	}
}
