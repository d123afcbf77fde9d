# tokenwasm: `make demo` runs the demo, `make test` runs every test (what CI runs).
# Toolchains are installed on demand by ./build.sh --install (TinyGo under a cache folder).

GO      ?= go
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0
BENCHSTAT   = $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260512194132-3cf34090a3db

.PHONY: all demo test tools build build-go embed check-embed lint unit test-otel test-js test-envoy-config test-quickstart fuzz bench clean

all: build

## demo: a token from each of the six providers (every grant of the built-in ones) through the
## embedded wasm against local fake providers, then again from the cache
demo:
	$(GO) run ./host/cmd/tokenwasm demo

## test: the whole suite: lint, both plugin builds, the embedded copy check, go test -race (with a
## throwaway redis-server for the fleet-cache tests), the example envoy.yaml against Envoy's types
test: tools lint build-go check-embed unit test-otel test-js test-envoy-config test-quickstart

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

lint:
	@out=$$(gofmt -l . | grep -v '^build/' || true); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./plugin/...
	$(STATICCHECK) ./...

unit:
	TOKENWASM_WASM_TINYGO=$(CURDIR)/build/tokenwasm.wasm TOKENWASM_WASM_GO=$(CURDIR)/build/tokenwasm-go.wasm \
		./scripts/with-redis.sh $(GO) test -race -count=1 ./...

## test-js: the npm package (host/js) in Node 20, Node 26, Deno, Bun and workerd, held to the same
## vectors (the official Extism JS SDK as witness), its Redis cache against a throwaway redis-server
test-js:
	./scripts/with-redis.sh ./host/js/run-tests.sh

## test-otel: the OpenTelemetry adapter, a nested module (its dependencies stay out of the main one)
test-otel:
	cd host/otelmetrics && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) test -race -count=1 ./...

## test-quickstart: the README's quick starts (Go, JavaScript, CLI, Envoy build), extracted and run as
## written against the fakes (scripts/quickstarts.sh), so they cannot drift
test-quickstart:
	./scripts/quickstarts.sh

## test-envoy-config: plugin/envoy/envoy.yaml read with Envoy's own configuration types (go-control-plane,
## a nested module), its clusters' TLS and stats_tags checked, the filter started on its configuration
test-envoy-config:
	cd plugin/envoy/configcheck && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) test -count=1 ./...

## fuzz: a short run of each fuzz target (the corpus in testdata/fuzz is replayed by `make test`)
fuzz:
	$(GO) test ./plugin/core -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 60s
	$(GO) test ./plugin/core -run '^$$' -fuzz '^FuzzEncode$$' -fuzztime 60s

bench:
	$(GO) test ./host/... -run '^$$' -bench . -benchmem -count 5 | tee build/bench.txt
	$(BENCHSTAT) build/bench.txt

clean:
	rm -rf build
