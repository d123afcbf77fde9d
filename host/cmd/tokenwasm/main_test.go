package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

func TestTokenCommand(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	cfg := fake.Config()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(cfg.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-provider", "nikohealth", "-client-id", cfg.ClientID, "-token-url", fake.TokenURL(), "-allow-loopback"}

	var out bytes.Buffer
	if err := runToken(context.Background(), &out, append(base, "-client-secret-file", secretFile)); err != nil {
		t.Fatal(err)
	}
	var res abi.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Token == nil || res.Token.ExpiresIn != 1200 {
		t.Fatalf("output %s: %v", out.String(), err)
	}
	if strings.Contains(out.String(), cfg.ClientSecret) {
		t.Fatal("the output shows the secret")
	}

	t.Setenv("TOKENWASM_CLIENT_SECRET", "wrong-secret")
	err := runToken(context.Background(), &bytes.Buffer{}, base)
	var ae *abi.Error
	if !errors.As(err, &ae) || ae.Kind != abi.KindInvalidClient || strings.Contains(err.Error(), "wrong-secret") {
		t.Fatalf("wrong secret from the environment: %v", err)
	}
}

func TestDemoRuns(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(context.Background(), &out, nil); err != nil {
		t.Fatal(err)
	}
	// 7 rows fetched, the same 7 from the cache, then the refresh_token grant fetched.
	cached := map[string]int{}
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) == 9 && f[0] != "PROVIDER" {
			cached[f[6]]++
		}
	}
	if cached["yes"] != 7 || cached["no"] != 8 || !strings.Contains(out.String(), "refresh_token") {
		t.Fatalf("cached column %v; demo output:\n%s", cached, out.String())
	}
}
