// Command gofleet is the Go process of host/js's Go-and-JS fleet tests (test/gofleet.test.js): the
// Go host on host/rediscache, on a Redis shared with the JavaScript package.
//
//	gofleet REDIS_URL HEX_AES_KEY REQUEST_JSON        one token, printed as the ABI's JSON ({token} or {error})
//	gofleet serve REDIS_URL HEX_AES_KEY REQUEST_JSON  one Runtime kept for the process: prints "ready",
//	                                                  then answers each line read ("token") with one
//	                                                  such JSON line, until its input ends
//
// serve is a long-lived process of the fleet: it holds its token in memory, refreshes it ahead of
// expiry in the background, and follows a one-time grant's lineage through Redis, as a service
// would between its callers' requests.
package main

import (
	"bufio"
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
	serve := len(args) > 0 && args[0] == "serve"
	if serve {
		args = args[1:]
	}
	if len(args) != 3 {
		return errors.New("usage: gofleet [serve] REDIS_URL HEX_AES_KEY REQUEST_JSON")
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
	out := json.NewEncoder(os.Stdout)
	if !serve {
		return answer(ctx, c, req, out)
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "token" {
			return fmt.Errorf("unknown command %q", in.Text())
		}
		if err := answer(ctx, c, req, out); err != nil {
			return err
		}
	}
	return in.Err()
}

// answer gets one token for req and writes it (or its typed error) as one JSON line.
func answer(ctx context.Context, c *host.Runtime, req abi.TokenRequest, out *json.Encoder) error {
	tok, err := c.Token(ctx, req)
	var v any = map[string]any{"token": tok}
	if e := (*abi.Error)(nil); errors.As(err, &e) {
		v = map[string]any{"error": e}
	} else if err != nil {
		return err
	}
	return out.Encode(v)
}
