// Command gofleet is the Go process of host/js's Go-and-JS fleet test (test/gofleet.test.js): it
// gets one token through the Go host on a Redis shared with the JavaScript package, and prints the
// answer as the ABI's JSON ({token} or {error}).
//
//	gofleet REDIS_URL HEX_AES_KEY REQUEST_JSON
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/rediscache"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gofleet:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) != 3 {
		return errors.New("usage: gofleet REDIS_URL HEX_AES_KEY REQUEST_JSON")
	}
	opt, err := redis.ParseURL(args[0])
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	key, err := hex.DecodeString(args[1])
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	var req abi.TokenRequest
	if err := json.Unmarshal([]byte(args[2]), &req); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	cache, err := rediscache.New(rdb, rediscache.Options{Keys: [][]byte{key}})
	if err != nil {
		return err
	}
	c, err := host.New(ctx, host.WithCache(cache), host.WithLoopback())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	tok, err := c.Token(ctx, req)
	var out any = map[string]any{"token": tok}
	if e := (*abi.Error)(nil); errors.As(err, &e) {
		out = map[string]any{"error": e}
	} else if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
