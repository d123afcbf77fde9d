#!/usr/bin/env bash
# Runs the JavaScript package's tests: `npm ci` (the locked runtimes and test-only packages), the Go
# `tokenwasm` command built for its fake providers, `node --test` (Node 20: vectors with the official
# SDK as witness, policy, secrets, leaks, signing, SMART discovery, Redis when REDIS_URL is set), then
# the suite in Node 20, Node 26, Deno, Bun and workerd and an app outside the repository
# (test/runtimes.js), then the edge example from an app outside the repository: bundled with esbuild
# and wrangler, served by workerd (examples/edge-worker).
#   TOKENWASM_WASM  the plugin to test (default: host/tokenwasm.wasm)
#   REDIS_URL       a redis-server for the Redis cache's tests (make test starts one)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
wasm="$(realpath -m "${TOKENWASM_WASM:-$root/host/tokenwasm.wasm}")"
cd "$here"
[ -f "$wasm" ] || { echo "run-tests.sh: no plugin at $wasm (build it: ./build.sh)" >&2; exit 1; }

npm ci --no-audit --no-fund --loglevel=error

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$root/host/cmd/tokenwasm" && go build -o "$tmp/tokenwasm" .) # the CLI, a nested module
export TOKENWASM_WASM="$wasm" TOKENWASM_FAKES_BIN="$tmp/tokenwasm"

# Debian's Node 20 (not node_modules/.bin's Node 26); --no-warnings: WASI's ExperimentalWarning.
node=/usr/bin/node
[ -x "$node" ] || node="$(command -v node)"
"$node" --no-warnings --test test/*.test.js
"$node" test/runtimes.js
"$node" --no-warnings --test ../../examples/edge-worker/
