#!/usr/bin/env bash
# Checks the module lines: a program that imports only github.com/tokenwasm/tokenwasm/host (what a user
# of the Go host writes) must get none of the dependencies kept in nested modules. It builds such a
# program in a scratch folder (the checkout replaces the module) and fails if `go mod graph` lists any
# module a nested go.mod requires directly that the main go.mod does not: among them
#   github.com/redis/go-redis              (host/rediscache and the CLI, host/cmd/tokenwasm)
#   github.com/extism/go-sdk               (the witness tests, host/gosdkwitness)
#   github.com/proxy-wasm/proxy-wasm-go-sdk (the Envoy filter, plugin/envoy)
# and OpenTelemetry, wasmtime-go and go-control-plane. Those three must be in the list, so the check
# cannot pass by finding nothing to look for. It needs no network once the modules are in the module
# cache (make lint has fetched them).
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

# requires lists the modules a go.mod requires; with "direct", only those not marked // indirect.
requires() {
  awk -v only_direct="${2:-}" '/^require \(/ { in_req = 1; next } in_req && /^\)/ { in_req = 0; next }
    /^require [^(]/ { if (!only_direct || $0 !~ /\/\/ indirect/) print $2; next }
    in_req && NF >= 2 && (!only_direct || $0 !~ /\/\/ indirect/) { print $1 }' "$1"
}
# kept: what the nested modules require directly, but for what the main go.mod requires too (a
# module both need, as wazero) and the project's own modules.
main_reqs="$(requires "$root/go.mod")"
kept=()
while IFS= read -r mod; do
  [ "$mod" = go.mod ] && continue # the main module
  while IFS= read -r m; do
    case "$m" in github.com/tokenwasm/*) continue ;; esac
    grep -qxF "$m" <<<"$main_reqs" || kept+=("$m")
  done < <(requires "$root/$mod" direct)
done < <(git -C "$root" ls-files -- 'go.mod' '*/go.mod')
for m in github.com/redis/go-redis/v9 github.com/extism/go-sdk github.com/proxy-wasm/proxy-wasm-go-sdk; do
  if ! printf '%s\n' "${kept[@]}" | grep -qxF "$m"; then
    echo "check-deps.sh: $m is not a dependency kept in a nested module (moved, or required by the main go.mod)" >&2
    exit 1
  fi
done
mapfile -t kept < <(printf '%s\n' "${kept[@]}" | sort -u)

cd "$tmp"
go mod tidy
go build -o /dev/null .
graph="$(go mod graph)"
found=0
for m in "${kept[@]}"; do
  if lines="$(grep -F " $m@" <<<"$graph")"; then
    echo "check-deps.sh: a program importing only host gets $m:" >&2
    echo "$lines" >&2
    found=1
  fi
done
[ "$found" = 0 ] || exit 1
echo "check-deps.sh: a program importing only host: $(wc -l <<<"$graph") module requirements, none of the ${#kept[@]} modules kept in nested ones (go-redis, go-sdk, proxy-wasm-go-sdk among them)"
