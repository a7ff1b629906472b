#!/usr/bin/env bash
# Smoke run of every fuzz target (proxy/fuzz, cargo-fuzz + libFuzzer on nightly): each target
# runs for FUZZ_SECONDS (default 20) from an empty corpus. A target fails by panicking on a
# violated property; the run then stops with the target's log and the crashing input, which
# cargo-fuzz leaves in proxy/fuzz/artifacts/<target>/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/proxy/fuzz"
seconds=${FUZZ_SECONDS:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo +nightly fuzz build --debug-assertions
for target in $(cargo +nightly fuzz list); do
  if ! cargo +nightly fuzz run --debug-assertions "$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz: $target FAILED"
    tail -n 60 "$log"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz: $target ok (${runs:-?} inputs in ${seconds}s)"
done
echo "fuzz: ok"
