#!/usr/bin/env bash
# Envoy benchmark (run by `make bench`, not by `make test`): installs valgrind
# and wrk from Debian if missing, then counts instructions per request in one
# Envoy 1.40 per case under callgrind (the primary figure) and times every case
# under wrk (tests/src/bin/bench.rs). Results: bench/results.json, bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
command -v valgrind >/dev/null || missing="$missing valgrind"
command -v wrk >/dev/null || missing="$missing wrk"
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # shellcheck disable=SC2086
  $sudo apt-get install -y -q $missing || { $sudo apt-get update -q && $sudo apt-get install -y -q $missing; }
fi
exec cargo run --quiet --release -p switchyard-tests --bin bench -- "$@"
