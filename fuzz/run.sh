#!/usr/bin/env bash
# `make fuzz`: every target under libFuzzer for FUZZ_SECONDS (default 60) each,
# starting from the checked-in seeds (fuzz/corpus/<target>); what a run learns
# stays in target/fuzz/corpus/<target>, crashes go to target/fuzz/artifacts/.
# A crash fails the run: minimise it, copy it to fuzz/regressions/<target>/ and
# fix it; `make test` then replays it for good.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-config matcher jwt jwks credentials deadlines shadow_compare}"
export PATH="$PWD/.tools/cargo-fuzz/bin:$PATH"
report=target/fuzz/report.md
mkdir -p target/fuzz
printf '| target | seconds | executions | corpus | crashes |\n|---|---:|---:|---:|---:|\n' > "$report"
failed=0
cargo +nightly fuzz build --fuzz-dir fuzz/libfuzzer -O
for t in $targets; do
  corpus="target/fuzz/corpus/$t" artifacts="target/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="target/fuzz/$t.log"
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer -O "$t" "$corpus" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" > "$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "$artifacts" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$seconds" "$runs" "$(ls "$corpus" | wc -l)" "$crashes" >> "$report"
  if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    echo "fuzz: $t found a failing input (see $log and $artifacts)" >&2
    grep -E 'panicked|SUMMARY|Test unit written' "$log" >&2 || true
    failed=1
  fi
done
cat "$report"
exit "$failed"
