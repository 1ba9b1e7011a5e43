#!/usr/bin/env bash
# Envoy load benchmark (run by `make bench`, not by `make test`): installs wrk
# from Debian if missing, then times every case in one Envoy 1.40 each
# (tests/src/bin/loadbench.rs). Results: bench/results.json, bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -q wrk || { $sudo apt-get update -q && $sudo apt-get install -y -q wrk; }
fi
exec cargo run --quiet --release -p switchyard-tests --bin loadbench -- "$@"
