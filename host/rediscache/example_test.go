package rediscache_test

import (
	"context"
	"log"
	"os"

	"github.com/redis/go-redis/v9"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/rediscache"
)

// Every process of a fleet builds its Runtime on the same Redis and keys: they then share tokens, 429
// gates and one fetch per credential set. Keys come from a secret store; these read files.
func Example() {
	ctx := context.Background()
	key, err := os.ReadFile("/run/secrets/tokenwasm-aes-key") // 32 bytes
	if err != nil {
		log.Fatal(err)
	}
	hashKey, err := os.ReadFile("/run/secrets/tokenwasm-hash-key") // 32 bytes or more
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "redis:6379"})
	cache, err := rediscache.New(rdb, rediscache.Options{Keys: [][]byte{key}, HashKey: hashKey})
	if err != nil {
		log.Fatal(err)
	}
	c, err := host.New(ctx, host.WithCache(cache))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	cfg := host.Config{Provider: host.NikoHealth, Domain: "acme", ClientID: os.Getenv("NIKO_CLIENT_ID"),
		ClientSecret: os.Getenv("NIKO_CLIENT_SECRET"), Host: c}
	api := cfg.Client(ctx) // every process's api shares one token
	_ = api
}
