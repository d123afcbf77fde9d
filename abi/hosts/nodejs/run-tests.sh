#!/usr/bin/env bash
# Runs the Node.js host's suite: `npm ci` (exactly the locked @extism/extism), the Go `tokenwasm`
# command built for its fake providers, then `node --test`. Exits non-zero on any failure.
#   TOKENWASM_WASM  the plugin to test (default: ../../../host/tokenwasm.wasm from this folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
# A relative TOKENWASM_WASM is taken from the caller's directory; the default from this folder.
wasm="${TOKENWASM_WASM:-$here/../../../host/tokenwasm.wasm}"
wasm="$(realpath -m "$wasm")"
cd "$here"
[ -f "$wasm" ] || { echo "run-tests.sh: no plugin at $wasm (build it: ./build.sh)" >&2; exit 1; }

npm ci --no-audit --no-fund --loglevel=error

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && go build -o "$tmp/tokenwasm" ./host/cmd/tokenwasm)

# --no-warnings: Node 20 prints an ExperimentalWarning for its built-in WASI on every instance.
TOKENWASM_WASM="$wasm" TOKENWASM_FAKES_BIN="$tmp/tokenwasm" node --no-warnings --test
