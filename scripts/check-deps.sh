#!/usr/bin/env bash
# Checks the module lines: a program that imports only github.com/tokenwasm/tokenwasm/host (what a user
# of the Go host writes) must get none of the dependencies kept in nested modules. It builds such a
# program in a scratch folder (the checkout replaces the module) and fails if `go mod graph` lists
#   github.com/redis/go-redis              (host/rediscache and the CLI, host/cmd/tokenwasm)
#   github.com/extism/go-sdk               (the witness tests, host/gosdkwitness)
#   github.com/proxy-wasm/proxy-wasm-go-sdk (the Envoy filter, plugin/envoy)
# It needs no network once the modules are in the module cache (make lint has fetched them).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/go.mod" <<MOD
module hostuser

go 1.25.0

require github.com/tokenwasm/tokenwasm v0.0.0

replace github.com/tokenwasm/tokenwasm => $root
MOD
cp "$root/go.sum" "$tmp/go.sum" # the checksums the main module already trusts
cat >"$tmp/main.go" <<'GO'
// Command hostuser imports the Go host and nothing else.
package main

import _ "github.com/tokenwasm/tokenwasm/host"

func main() {}
GO

cd "$tmp"
go mod tidy
go build -o /dev/null .
graph="$(go mod graph)"
found=0
for m in github.com/redis/go-redis github.com/extism/go-sdk github.com/proxy-wasm/proxy-wasm-go-sdk; do
  if lines="$(grep -F " $m" <<<"$graph")"; then
    echo "check-deps.sh: a program importing only host gets $m:" >&2
    echo "$lines" >&2
    found=1
  fi
done
[ "$found" = 0 ] || exit 1
echo "check-deps.sh: a program importing only host: $(wc -l <<<"$graph") module requirements, none of go-redis, go-sdk, proxy-wasm-go-sdk"
