# tokenwasm: `make demo` runs the demo, `make test` runs every test (what CI runs).
# Toolchains are installed on demand by ./build.sh --install (TinyGo under a cache folder).

GO      ?= go
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0
BENCHSTAT   = $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260512194132-3cf34090a3db

# Every go test has its own -timeout, so that a hung test fails with every goroutine's stack instead of
# hanging CI, and a slow machine is not mistaken for a hung test. RACE_TIMEOUT: `go test -race ./...`
# ran ./host for 10 min 56 s on a loaded 2-core machine, past go test's default of 10 min. Since the
# long loops run fewer times under -race: 139 s alone (116 s of CPU), 5-7 min in `make unit` beside
# other sessions' work, and 11 min at worst, with busy loops on both cores as well (load 9-12).
# 20 min still ends a hung test, and leaves that worst case room.
RACE_TIMEOUT ?= 20m
# TEST_TIMEOUT: the run without -race below (TestResponseLimits: 2 min on a loaded machine).
TEST_TIMEOUT ?= 10m

# FULL_COUNT_TESTS run fewer iterations under -race (internal/race.Iterations), where each call is
# 3-50x slower; `unit` runs them again without -race with their full count. A test that starts using
# race.Iterations goes here too (internal/race's TestFullCountRunsSomewhere fails until it does).
FULL_COUNT_TESTS = TestResponseLimits|TestPoolRecyclesAfterLargeCalls|TestStepAttacksThroughWasm|TestLargeRequestsOnOneInstance|TestEcho
FULL_COUNT_PKGS  = ./host ./host/internal/extism

# TEST_TARGETS: what `make test` runs, in order, each one whatever the others did (`make test
# TEST_TARGETS="lint unit"` runs a few).
TEST_TARGETS = tools lint check-deps build-go check-embed unit test-otel test-wasmtime test-rediscache test-cli test-witness test-js test-envoy test-envoy-config test-quickstart

# GO_MODULES: every Go module in the tree (RATIONALE.md, "Module lines"): the main one, and the nested
# ones that keep their dependencies out of it. lint vets and staticchecks each.
GO_MODULES = . host/otelmetrics host/rediscache host/cmd/tokenwasm host/gosdkwitness host/wasmtimetest plugin/envoy plugin/envoy/configcheck

.PHONY: all demo test tools build build-go embed check-embed lint check-deps unit test-otel test-wasmtime test-rediscache test-cli test-witness test-js test-envoy test-envoy-config test-quickstart fuzz bench clean

all: build

## demo: a token from each of the six providers (every grant of the built-in ones) through the
## embedded wasm against local fake providers, then again from the cache (the CLI, its own module)
demo:
	$(GO) run -C host/cmd/tokenwasm . demo

## test: the whole suite: lint, the module lines, both plugin builds, the embedded copy check, go test
## -race in every module (with a throwaway redis-server for the fleet-cache tests), the example
## envoy.yaml against Envoy's types, the README's quick starts. Every target runs even when one before it
## failed (a lint finding must not hide a failing test); a summary line per target closes the output,
## and make fails if any target did.
test:
	@failed=""; summary=""; \
	for t in $(TEST_TARGETS); do \
		echo "=== make $$t"; start=$$(date +%s); \
		if $(MAKE) --no-print-directory $$t; then res=ok; else res=FAIL; failed="$$failed $$t"; fi; \
		summary="$$summary$$(printf '%-17s %-4s %4ss' $$t $$res $$(( $$(date +%s) - start )))\n"; \
	done; \
	printf '\nmake test: summary\n%b' "$$summary"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo "make test: all $(words $(TEST_TARGETS)) targets passed"

tools:
	./build.sh --install

build:
	./build.sh

build-go:
	TOOLCHAIN=go ./build.sh

embed:
	./build.sh --embed

check-embed:
	./build.sh --check

## lint: gofmt over the Go files git knows (tracked, or new and not ignored: never node_modules), then
## go vet and staticcheck in every module; every module is linted, and lint fails if any failed
lint:
	@out=$$(git ls-files --cached --others --exclude-standard -- '*.go' | xargs gofmt -l); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./plugin/...
	@rc=0; for m in $(GO_MODULES); do \
		echo "lint: $$m"; (cd $$m && $(GO) vet ./... && $(STATICCHECK) ./...) || rc=1; \
	done; exit $$rc

## check-deps: a program importing only the Go host gets no dependency of the nested modules
## (go-redis, go-sdk, proxy-wasm-go-sdk) in its module graph (scripts/check-deps.sh)
check-deps:
	./scripts/check-deps.sh

## unit: go test -race over the main module (the nested ones have targets of their own), then
## FULL_COUNT_TESTS again without -race; both run, and unit fails if either did
unit: export TOKENWASM_WASM_TINYGO = $(CURDIR)/build/tokenwasm.wasm
unit: export TOKENWASM_WASM_GO = $(CURDIR)/build/tokenwasm-go.wasm
unit:
	rc=0; \
	$(GO) test -race -count=1 -timeout $(RACE_TIMEOUT) ./... || rc=1; \
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '^($(FULL_COUNT_TESTS))$$' $(FULL_COUNT_PKGS) || rc=1; \
	exit $$rc

## test-js: the npm package (host/js) in Node 20, Node 26, Deno, Bun and workerd, held to the same
## vectors (the official Extism JS SDK as witness), its Redis cache against a throwaway redis-server
test-js:
	./scripts/with-redis.sh ./host/js/run-tests.sh

## test-otel: the OpenTelemetry adapter, a nested module (its dependencies stay out of the main one)
test-otel:
	cd host/otelmetrics && $(GO) test -race -count=1 -timeout $(RACE_TIMEOUT) ./...

## test-wasmtime: every conformance vector through the plugin on wasmtime (wasmtime-go, cgo: gcc), the
## engine of Extism's other-language SDKs; a nested module, so wasmtime-go stays out of the main one.
## It runs the embedded build, and build/'s TinyGo and standard-Go builds when they exist.
test-wasmtime: export TOKENWASM_WASM_TINYGO = $(wildcard $(CURDIR)/build/tokenwasm.wasm)
test-wasmtime: export TOKENWASM_WASM_GO = $(wildcard $(CURDIR)/build/tokenwasm-go.wasm)
test-wasmtime:
	cd host/wasmtimetest && $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

## test-rediscache: the Redis fleet cache (a nested module, with go-redis), against a throwaway
## redis-server (its tests skip, saying why, without one)
test-rediscache:
	cd host/rediscache && ../../scripts/with-redis.sh $(GO) test -race -count=1 -timeout $(RACE_TIMEOUT) ./...

## test-cli: the tokenwasm command (a nested module: its fleet demo needs go-redis)
test-cli:
	cd host/cmd/tokenwasm && $(GO) test -race -count=1 -timeout $(RACE_TIMEOUT) ./...

## test-witness: every vector under the official Extism go-sdk and under our host, both plugin builds
## (a nested module, with go-sdk)
test-witness: export TOKENWASM_WASM_TINYGO = $(CURDIR)/build/tokenwasm.wasm
test-witness: export TOKENWASM_WASM_GO = $(CURDIR)/build/tokenwasm-go.wasm
test-witness:
	cd host/gosdkwitness && $(GO) test -race -count=1 -timeout $(RACE_TIMEOUT) ./...

## test-quickstart: the README's quick starts (Go, JavaScript, CLI, Envoy build), extracted and run as
## written against the fakes (scripts/quickstarts.sh), so they cannot drift
test-quickstart:
	./scripts/quickstarts.sh

## test-envoy: the proxy-wasm filter, a nested module (proxy-wasm-go-sdk stays out of the main one):
## vet for wasip1 (lint vets it natively), and its tests, natively and compiled in proxytest's wasm engine
test-envoy:
	cd plugin/envoy && GOOS=wasip1 GOARCH=wasm $(GO) vet ./... && \
		$(GO) test -race -count=1 -timeout $(RACE_TIMEOUT) ./...

## test-envoy-config: plugin/envoy/envoy.yaml read with Envoy's own configuration types (go-control-plane,
## a nested module), its clusters' TLS and stats_tags checked, the filter started on its configuration
test-envoy-config:
	cd plugin/envoy/configcheck && $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

## fuzz: a short run of each fuzz target (the corpus in testdata/fuzz is replayed by `make test`)
fuzz:
	$(GO) test ./plugin/core -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 60s -timeout 5m
	$(GO) test ./plugin/core -run '^$$' -fuzz '^FuzzEncode$$' -fuzztime 60s -timeout 5m

## bench: one table of every figure with a goal (Go host, Envoy filter, Node and Deno), each beside its
## peer from the same run, medians of BENCH_COUNT runs, the ratio, the goal, met or not
## (internal/benchtable); the raw output is kept in build/bench.txt for benchstat. JS needs `npm ci` in host/js.
## Benchmarks without a goal (Call, Instance, Stampede, host/gosdkwitness) run with go test -bench.
BENCH_COUNT ?= 5
bench:
	@$(GO) run ./internal/benchtable -count $(BENCH_COUNT) -raw build/bench.txt

clean:
	rm -rf build
