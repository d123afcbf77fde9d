#!/usr/bin/env bash
# Runs the Node host's suite: npm ci, the Go fakes binary, node --test. Called by `make test-node`.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../../.. && pwd)"
npm ci --no-audit --no-fund --loglevel=error
bin="$(mktemp -d)/tokenwasm"
(cd "$root" && go build -o "$bin" ./host/cmd/tokenwasm)
TOKENWASM_FAKES_BIN="$bin" TOKENWASM_WASM="${TOKENWASM_WASM:-$root/host/tokenwasm.wasm}" node --test test/
