//go:build wasip1 && tokenwasm_testenv

package main

import (
	"encoding/base64"
	"strings"
	"syscall"
)

// testEnviron is the environment the tests' build of the filter gives itself (the tag
// tokenwasm_testenv, never in ./build.sh's build): proxytest's wasm engine runs the module with no
// environment variables, so the compiled filter could not otherwise be tested reading a key from
// secret_env. The tests set it with -ldflags -X: base64 of NAME=VALUE entries separated by NUL.
// Nothing else differs from the shipped build: the filter reads the variables as it does in Envoy.
var testEnviron string

func init() {
	b, _ := base64.StdEncoding.DecodeString(testEnviron)
	for kv := range strings.SplitSeq(string(b), "\x00") {
		if name, value, ok := strings.Cut(kv, "="); ok {
			_ = syscall.Setenv(name, value)
		}
	}
}
