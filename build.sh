#!/usr/bin/env bash
# Builds the tokenwasm plugin and installs the toolchain it needs.
#
#   ./build.sh              TinyGo build -> build/tokenwasm.wasm (installs TinyGo first if missing)
#   ./build.sh --tinygo     the same (also: TOOLCHAIN=tinygo ./build.sh)
#   ./build.sh --go         standard Go build -> build/tokenwasm-go.wasm (also: TOOLCHAIN=go ./build.sh)
#   ./build.sh --install    install TinyGo 0.40.1, its Debian packages, redis-server and wabt (idempotent)
#   ./build.sh --embed      TinyGo build, copied to host/tokenwasm.wasm (the copy the Go host embeds)
#                           and host/js/tokenwasm.wasm (the copy the npm package ships)
#   ./build.sh --check      TinyGo build; fails if either copy differs from it
#   ./build.sh --envoy      the proxy-wasm filter for Envoy -> build/envoy-filter.wasm (standard Go)
#
# The last line of stdout is the absolute path of the .wasm built; everything else goes to stderr.
# TinyGo is built from its Go module (no release binary can be downloaded here) against Debian's
# LLVM 19, under TINYGO_HOME (default ~/.cache/tokenwasm/tinygo-0.40.1), a fixed folder outside the
# checkout that every clone shares. The TinyGo output is byte-identical across clones at any path
# because of -no-debug: without it the DWARF holds the checkout's and TINYGOROOT's absolute paths.
set -euo pipefail

TINYGO_VERSION=0.40.1
GO_FOR_TINYGO=go1.25.7 # TinyGo 0.40 accepts Go 1.19-1.25; the exact version also fixes the output
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TINYGO_HOME="${TINYGO_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenwasm/tinygo-$TINYGO_VERSION}"
TARGET="$TINYGO_HOME/targets/wasip1-debian.json"
# What the TinyGo build needs: LLVM 19, Debian's wasi-libc and compiler-rt, and wasm-opt (binaryen),
# which TinyGo always runs. python3 derives the target file (llvm-19-tools depends on it anyway).
APT_BUILD=(llvm-19-dev libclang-19-dev clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 binaryen python3)
# What only --install adds: redis-server for the fleet-cache tests, wabt (wasm-objdump) to inspect plugins.
APT_EXTRA=(redis-server wabt)
TMP_TINYGO=""

log() { echo "build.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}
cleanup() { if [ -n "$TMP_TINYGO" ]; then rm -rf "$TMP_TINYGO"; fi; }
trap cleanup EXIT

# install_apt installs those of the given Debian packages that are missing (apt-get update first).
install_apt() {
  command -v dpkg-query >/dev/null || die "no dpkg here: install the equivalent of $* yourself"
  local installed p missing=() sudo=()
  installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)"
  for p in "$@"; do
    awk -v p="$p" '$1 == p && $2 == "ii" { found = 1 } END { exit !found }' <<<"$installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
}

# install_tinygo builds TinyGo into TINYGO_HOME unless it is there, then brings the derived target
# file up to date.
install_tinygo() {
  if [ ! -x "$TINYGO_HOME/bin/tinygo" ]; then
    install_apt "${APT_BUILD[@]}"
    build_tinygo_binary
  fi
  derive_target
}

build_tinygo_binary() {
  local json dir start=$SECONDS
  log "go mod download github.com/tinygo-org/tinygo@v$TINYGO_VERSION"
  # Outside the checkout: the repository's go.mod and GOFLAGS have no say in this download.
  json="$(cd / && GOFLAGS='' go mod download -json "github.com/tinygo-org/tinygo@v$TINYGO_VERSION")" ||
    die "could not download the TinyGo module: $json"
  dir="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])' <<<"$json")"
  [ -d "$dir/targets" ] || die "no TinyGo sources in '$dir'"

  # Built in a temporary folder beside TINYGO_HOME and renamed into place when complete, so an
  # interrupted or concurrent install never leaves a half-built TinyGo behind.
  mkdir -p "$(dirname "$TINYGO_HOME")"
  TMP_TINYGO="$(mktemp -d "$TINYGO_HOME.tmp.XXXXXX")"
  log "copy $dir -> $TINYGO_HOME"
  cp -R "$dir/." "$TMP_TINYGO/"
  chmod -R u+w "$TMP_TINYGO" # the module cache is read-only
  mkdir -p "$TMP_TINYGO/src/net" # a git submodule the module zip lacks; the plugin does not use net
  log "go build -tags llvm19 (TinyGo against Debian's LLVM 19; 30-40 s on 2 cores)"
  (cd "$TMP_TINYGO" && GOTOOLCHAIN=$GO_FOR_TINYGO GOFLAGS=-buildvcs=false \
    go build -tags llvm19 -o bin/tinygo . >&2)
  if [ -x "$TINYGO_HOME/bin/tinygo" ]; then
    log "another build.sh installed TinyGo meanwhile; keeping that one"
    rm -rf "$TMP_TINYGO"
  else
    rm -rf "$TINYGO_HOME"
    mv "$TMP_TINYGO" "$TINYGO_HOME"
  fi
  TMP_TINYGO=""
  log "installed in $((SECONDS - start)) s: $(GOTOOLCHAIN=$GO_FOR_TINYGO TINYGOROOT="$TINYGO_HOME" \
    "$TINYGO_HOME/bin/tinygo" version 2>&1 || true)"
}

# derive_target writes a wasip1 target that links Debian's prebuilt wasi-libc and compiler-rt
# instead of the ones TinyGo would build from its missing submodules, without the LLVM 20-only
# features. It rewrites the file only when its content changes.
derive_target() {
  python3 - "$TINYGO_HOME/targets/wasip1.json" "$TARGET" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src) as f:
    t = json.load(f)
t["libc"] = ""
t["rtlib"] = ""
t["features"] = ",".join(f for f in t.get("features", "").split(",")
                         if f not in ("+bulk-memory-opt", "+call-indirect-overlong"))
t["cflags"] = t.get("cflags", []) + ["-nostdlibinc", "-isystem", "/usr/include/wasm32-wasi"]
t["ldflags"] = t.get("ldflags", []) + ["-L/usr/lib/wasm32-wasi", "-lc",
    "/usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a"]
text = json.dumps(t, indent=2) + "\n"
try:
    with open(dst) as f:
        if f.read() == text:
            sys.exit(0)
except FileNotFoundError:
    pass
tmp = "%s.tmp.%d" % (dst, os.getpid())
with open(tmp, "w") as f:
    f.write(text)
os.replace(tmp, dst)
print("build.sh: wrote " + dst, file=sys.stderr)
PY
}

build_tinygo() {
  install_tinygo
  mkdir -p "$ROOT/build"
  # -opt=2 instead of TinyGo's size-first default: 35% larger (587 KB), and a fetch 16% faster.
  log "tinygo build -no-debug -scheduler=none -opt=2 ./plugin"
  (cd "$ROOT" && GOTOOLCHAIN=$GO_FOR_TINYGO TINYGOROOT="$TINYGO_HOME" PATH="$TINYGO_HOME/bin:$PATH" \
    tinygo build -target "$TARGET" -buildmode=c-shared -no-debug -scheduler=none -opt=2 \
    -o build/tokenwasm.wasm ./plugin >&2)
  echo "$ROOT/build/tokenwasm.wasm"
}

# go_wasm builds a standard Go wasip1 reactor. -buildvcs=false keeps the commit and the dirty flag
# out of the binary (and avoids git's "dubious ownership" failure in CI containers). It builds in the
# package's directory: plugin/envoy is its own module.
go_wasm() {
  mkdir -p "$ROOT/build"
  log "go build -buildmode=c-shared $2 (GOOS=wasip1 GOARCH=wasm)"
  (cd "$ROOT/$2" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false \
    -ldflags='-s -w' -o "$ROOT/build/$1" . >&2)
  echo "$ROOT/build/$1"
}

# toolchain_versions logs what decides the TinyGo output's bytes, to explain a --check failure.
toolchain_versions() {
  log "tinygo: $(GOTOOLCHAIN=$GO_FOR_TINYGO TINYGOROOT="$TINYGO_HOME" "$TINYGO_HOME/bin/tinygo" version 2>&1 || true)"
  log "debian: $(dpkg-query -W -f='${Package}=${Version} ' llvm-19 lld-19 wasi-libc binaryen \
    libclang-rt-19-dev-wasm32 2>/dev/null || true)"
}

case "${1:-}" in
  --install)
    install_apt "${APT_BUILD[@]}" "${APT_EXTRA[@]}"
    install_tinygo
    log "toolchain ready"
    ;;
  --tinygo) build_tinygo ;;
  --go) go_wasm tokenwasm-go.wasm ./plugin ;;
  --envoy) go_wasm envoy-filter.wasm ./plugin/envoy ;;
  --embed)
    out="$(build_tinygo)"
    cp "$out" "$ROOT/host/tokenwasm.wasm"
    cp "$out" "$ROOT/host/js/tokenwasm.wasm"
    log "embedded $(wc -c <"$out") bytes in host/tokenwasm.wasm and host/js/tokenwasm.wasm"
    echo "$ROOT/host/tokenwasm.wasm"
    ;;
  --check)
    out="$(build_tinygo)"
    if ! cmp -s "$out" "$ROOT/host/tokenwasm.wasm"; then
      log "host/tokenwasm.wasm ($(wc -c <"$ROOT/host/tokenwasm.wasm") bytes) differs from a fresh build" \
        "($(wc -c <"$out") bytes): run ./build.sh --embed and commit it"
      toolchain_versions
      exit 1
    fi
    if ! cmp -s "$out" "$ROOT/host/js/tokenwasm.wasm"; then
      log "host/js/tokenwasm.wasm differs from a fresh build: run ./build.sh --embed and commit it"
      exit 1
    fi
    log "host/tokenwasm.wasm and host/js/tokenwasm.wasm match a fresh build"
    echo "$out"
    ;;
  "")
    case "${TOOLCHAIN:-tinygo}" in
      tinygo) build_tinygo ;;
      go) go_wasm tokenwasm-go.wasm ./plugin ;;
      *) die "TOOLCHAIN must be tinygo or go, not '$TOOLCHAIN'" ;;
    esac
    ;;
  -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2 ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
