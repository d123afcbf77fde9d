package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestRefusedBeforeSendingIsUsage: what the plugin refuses before sending anything (an unknown or
// unoffered grant, a profile for a built-in provider, a profile file with more than one JSON value)
// is the command line's fault, exit 2, not "refused by the provider" (3): no provider saw it.
func TestRefusedBeforeSendingIsUsage(t *testing.T) {
	t.Setenv("TOKENWASM_CLIENT_SECRET", "a-client-secret")
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	trailing := write("trailing.json", `{"token_url":"https://127.0.0.1:1/t"} {"token_url":"https://other.example/t"}`)
	profile := write("profile.json", `{"token_url":"https://127.0.0.1:1/t"}`)
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"unknown grant", []string{"-provider", "candid", "-client-id", "a", "-grant", "bogus"}},
		{"grant the provider does not offer", []string{"-provider", "candid", "-client-id", "a", "-grant", "password"}},
		{"two JSON values in the profile file", []string{"-provider", "custom", "-client-id", "a", "-profile-file", trailing, "-allow-loopback"}},
		{"a profile for a built-in provider", []string{"-provider", "candid", "-client-id", "a", "-profile-file", profile, "-allow-loopback"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := runToken(context.Background(), &bytes.Buffer{}, io.Discard, tt.args)
			if ae, code := classify(err); code != exitUsage {
				t.Fatalf("exit %d (%v), want %d", code, ae, exitUsage)
			}
		})
	}
}
