#!/usr/bin/env bash
# Builds the tokenwasm plugin and installs the toolchain it needs.
#
#   ./build.sh              TinyGo build -> build/tokenwasm.wasm (installs TinyGo first if missing)
#   ./build.sh --go         standard Go build -> build/tokenwasm-go.wasm (also: TOOLCHAIN=go ./build.sh)
#   ./build.sh --install    install TinyGo 0.40.1, its Debian packages and redis-server for tests (idempotent)
#   ./build.sh --embed      TinyGo build, copied to host/tokenwasm.wasm (the copy the Go host embeds)
#   ./build.sh --check      TinyGo build; fails if host/tokenwasm.wasm differs from it
#   ./build.sh --envoy      the proxy-wasm filter for Envoy -> build/envoy-filter.wasm (standard Go)
#
# The last line of stdout is the path of the .wasm built; everything else goes to stderr.
# TinyGo is built from its module (no release binary can be downloaded here) against Debian's LLVM 19,
# under TINYGO_HOME (default ~/.cache/tokenwasm/tinygo-0.40.1): a fixed path outside the checkout,
# so builds from any clone are byte-identical.
set -euo pipefail

TINYGO_VERSION=0.40.1
GO_FOR_TINYGO=go1.25.7 # TinyGo 0.40 accepts Go 1.19-1.25
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TINYGO_HOME="${TINYGO_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenwasm/tinygo-$TINYGO_VERSION}"
TARGET="$TINYGO_HOME/targets/wasip1-debian.json"
APT_PACKAGES=(llvm-19-dev libclang-19-dev clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 binaryen)

log() { echo "build.sh: $*" >&2; }

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

install_tinygo() {
  if [ -x "$TINYGO_HOME/bin/tinygo" ] && [ -f "$TARGET" ]; then
    return 0
  fi
  install_apt
  log "building TinyGo $TINYGO_VERSION into $TINYGO_HOME (about a minute)"
  local dir
  dir="$(cd "$ROOT" && go mod download -json "github.com/tinygo-org/tinygo@v$TINYGO_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$dir" ] || { log "could not download the TinyGo module"; exit 1; }
  rm -rf "$TINYGO_HOME.tmp"
  mkdir -p "$(dirname "$TINYGO_HOME")"
  cp -r "$dir" "$TINYGO_HOME.tmp"
  chmod -R u+w "$TINYGO_HOME.tmp"
  mkdir -p "$TINYGO_HOME.tmp/src/net" # a git submodule the module zip lacks; unused by the plugin
  (cd "$TINYGO_HOME.tmp" && GOTOOLCHAIN=$GO_FOR_TINYGO GOFLAGS=-buildvcs=false go build -tags llvm19 -o bin/tinygo .)
  derive_target "$TINYGO_HOME.tmp/targets/wasip1.json" "$TINYGO_HOME.tmp/targets/wasip1-debian.json"
  rm -rf "$TINYGO_HOME"
  mv "$TINYGO_HOME.tmp" "$TINYGO_HOME"
  log "TinyGo installed: $("$TINYGO_HOME/bin/tinygo" version 2>&1 || true)"
}

# derive_target writes a wasip1 target that links Debian's prebuilt wasi-libc and compiler-rt
# instead of the ones TinyGo would build from submodules, without LLVM 20-only features.
derive_target() {
  python3 - "$1" "$2" <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
t = json.load(open(src))
t["libc"] = ""
t["rtlib"] = ""
t["features"] = ",".join(f for f in t.get("features", "").split(",")
                         if f not in ("+bulk-memory-opt", "+call-indirect-overlong"))
t["cflags"] = t.get("cflags", []) + ["-nostdlibinc", "-isystem", "/usr/include/wasm32-wasi"]
t["ldflags"] = t.get("ldflags", []) + ["-L/usr/lib/wasm32-wasi", "-lc",
    "/usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a"]
json.dump(t, open(dst, "w"), indent=2)
PY
}

build_tinygo() {
  install_tinygo
  mkdir -p "$ROOT/build"
  log "tinygo build (-scheduler=none)"
  (cd "$ROOT" && GOTOOLCHAIN=$GO_FOR_TINYGO TINYGOROOT="$TINYGO_HOME" PATH="$TINYGO_HOME/bin:$PATH" \
    tinygo build -target "$TARGET" -buildmode=c-shared -no-debug -scheduler=none \
    -o build/tokenwasm.wasm ./plugin)
  echo "$ROOT/build/tokenwasm.wasm"
}

build_go() {
  mkdir -p "$ROOT/build"
  log "go build (wasip1, c-shared)"
  (cd "$ROOT" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' \
    -o build/tokenwasm-go.wasm ./plugin)
  echo "$ROOT/build/tokenwasm-go.wasm"
}

build_envoy() {
  mkdir -p "$ROOT/build"
  log "go build (proxy-wasm filter)"
  (cd "$ROOT" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' \
    -o build/envoy-filter.wasm ./plugin/envoy)
  echo "$ROOT/build/envoy-filter.wasm"
}

case "${1:-}" in
  --envoy) build_envoy ;;
  --install)
    install_apt redis-server
    install_tinygo
    ;;
  --go) build_go ;;
  --tinygo) build_tinygo ;;
  --embed)
    out="$(build_tinygo)"
    cp "$out" "$ROOT/host/tokenwasm.wasm"
    log "embedded $(wc -c <"$out") bytes"
    echo "$ROOT/host/tokenwasm.wasm"
    ;;
  --check)
    out="$(build_tinygo)"
    if ! cmp -s "$out" "$ROOT/host/tokenwasm.wasm"; then
      log "host/tokenwasm.wasm differs from a fresh build: run ./build.sh --embed and commit it"
      exit 1
    fi
    log "host/tokenwasm.wasm matches a fresh build"
    echo "$out"
    ;;
  "")
    if [ "${TOOLCHAIN:-tinygo}" = go ]; then build_go; else build_tinygo; fi
    ;;
  *)
    sed -n '2,10p' "$0" >&2
    exit 2
    ;;
esac
