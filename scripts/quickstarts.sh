#!/usr/bin/env bash
# Runs the README's quick starts as written, so they cannot drift: each fenced block that follows a
# `<!-- quickstart:NAME -->` line is extracted and run against `tokenwasm fakes -base-port 18080`
# (the ports the blocks name), in a scratch folder:
#   go   saved as quickstart/main.go in a copy of the module's root, run with `go run ./quickstart`
#   js   saved as quickstart.mjs in an app that installed the npm package from a local pack
#   cli  run with sh from the repository's root
#   envoy run with sh from the repository's root (it builds the filter; no Envoy runs here)
# A block must print what its comment says it prints; this script checks each one's output for a
# token type ("Bearer") and fails on anything else.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tmp="$(mktemp -d)"
fakes_pid=""
cleanup() {
  if [ -n "$fakes_pid" ]; then kill "$fakes_pid" 2>/dev/null || true; fi
  rm -rf "$tmp" "$root/build/quickstart"
}
trap cleanup EXIT

# extract NAME writes the block after <!-- quickstart:NAME --> to stdout.
extract() {
  python3 - "$1" <<'PY'
import re, sys
name = sys.argv[1]
text = open("README.md", encoding="utf-8").read()
m = re.search(r"<!-- quickstart:" + re.escape(name) + r" -->\s*\n```[a-z]*\n(.*?)\n```", text, re.S)
if not m:
    sys.exit(f"quickstarts.sh: no quickstart:{name} block in README.md")
print(m.group(1))
PY
}

(cd host/cmd/tokenwasm && go build -o "$tmp/tokenwasm" .) # the CLI, a nested module
"$tmp/tokenwasm" fakes -base-port 18080 -quiet >"$tmp/fakes.json" &
fakes_pid=$!
for _ in $(seq 100); do [ -s "$tmp/fakes.json" ] && break; sleep 0.1; done
[ -s "$tmp/fakes.json" ] || { echo "quickstarts.sh: the fakes did not start" >&2; exit 1; }

check() { # check NAME OUTPUT
  if ! grep -q "Bearer" <<<"$2"; then
    echo "quickstarts.sh: $1 printed no token:" >&2
    echo "$2" >&2
    exit 1
  fi
  echo "quickstarts.sh: $1 ok"
}

# Go: the block is a main package inside the module, as the README tells a newcomer to save it.
mkdir -p "$root/build/quickstart"
extract go >"$root/build/quickstart/main.go"
check go "$(go run ./build/quickstart)"

# CLI: the block runs from the repository's root.
check cli "$(sh -c "$(extract cli)")"

# JS: an app outside the repository with the package installed from a local pack.
mkdir -p "$tmp/app"
(cd host/js && npm pack --silent --pack-destination "$tmp" >/dev/null)
(cd "$tmp/app" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent "$tmp"/tokenwasm-*.tgz)
extract js >"$tmp/app/quickstart.mjs"
check js "$(cd "$tmp/app" && node quickstart.mjs)"

# Envoy: the block builds the filter (no Envoy binary can run here; plugin/envoy/configcheck loads
# the example configuration with Envoy's own types).
sh -c "$(extract envoy)" >/dev/null
[ -s build/envoy-filter.wasm ] || { echo "quickstarts.sh: envoy block built no filter" >&2; exit 1; }
echo "quickstarts.sh: envoy ok (built build/envoy-filter.wasm)"
echo "quickstarts: 4 passed, 0 failed"
