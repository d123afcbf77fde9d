package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/redis/go-redis/v9"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"github.com/tokenwasm/tokenwasm/host/rediscache"
)

// demoKeyEnv carries the demo's throwaway AES key to the second process.
const demoKeyEnv = "TOKENWASM_DEMO_KEY"

// redisClient returns a Runtime whose cache is Redis at url, encrypted with key.
func redisClient(ctx context.Context, url string, key []byte, opts ...host.Option) (*host.Runtime, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	cache, err := rediscache.New(redis.NewClient(opt), rediscache.Options{Keys: [][]byte{key}})
	if err != nil {
		return nil, err
	}
	return host.New(ctx, append(opts, host.WithCache(cache))...)
}

// runFleetDemo shows two processes sharing one token through Redis: this one fetches it, a second
// one (this binary again) gets it from Redis without a request to the provider.
func runFleetDemo(ctx context.Context, w io.Writer, url string) error {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	c, err := redisClient(ctx, url, key, host.WithLoopback())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	cfg := fake.Config() // the fake's URL (a new port each run) makes the cache key new each run
	req := abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL(), Scope: "external"}
	tok, err := c.Token(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "process 1 (pid %d): token %s from the provider; provider requests: %d\n", os.Getpid(), prefix(tok.AccessToken), fake.Requests())

	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, _ := json.Marshal(req)
	cmd := exec.CommandContext(ctx, self, "fleet-child", url)
	cmd.Env = append(os.Environ(), demoKeyEnv+"="+hex.EncodeToString(key), "TOKENWASM_DEMO_REQUEST="+string(in))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("second process: %w: %s", err, out)
	}
	fmt.Fprintf(w, "%s", out)
	fmt.Fprintf(w, "provider requests after both processes: %d (one token for the fleet)\n", fake.Requests())
	return nil
}

// runFleetChild is the second process of the fleet demo.
func runFleetChild(ctx context.Context, w io.Writer, url string) error {
	key, err := hex.DecodeString(os.Getenv(demoKeyEnv))
	if err != nil {
		return err
	}
	var req abi.TokenRequest
	if err := json.Unmarshal([]byte(os.Getenv("TOKENWASM_DEMO_REQUEST")), &req); err != nil {
		return err
	}
	c, err := redisClient(ctx, url, key, host.WithLoopback())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	tok, err := c.Token(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "process 2 (pid %d): token %s from Redis (shared cache hits: %d)\n", os.Getpid(), prefix(tok.AccessToken), c.Metrics().Snapshot()["shared_hits"])
	return nil
}
