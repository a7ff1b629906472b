#!/usr/bin/env bash
# The whole test suite: installs what it needs (tests/setup.sh), checks formatting and lints,
# then runs every test of the workspace — unit tests, the end-to-end suite against the real
# OpenID provider, upstreams and headless Chromium, and the privileged eBPF tests (root); then a
# short smoke run of every fuzz target (tests/fuzz.sh) and of the load benchmark (its numbers
# mean nothing here: it checks that the harness still sets up, logs in, measures and reports).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tests/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets --no-fail-fast
tests/fuzz.sh
# The bare hyper proxy the benchmark measures as its floor (`cargo test` builds examples but does
# not put them at target/debug/examples/NAME).
cargo build -p sekisho-tests --example hyper_floor
target="${CARGO_TARGET_DIR:-$root/target}/debug"
SEKISHO_BIN="$target/sekisho" FLOOR_BIN="$target/examples/hyper_floor" DURATION=1s ROUNDS=1 \
    WARMUP=0 IDLE_CONNECTIONS=200 HANDSHAKES=50 tests/bench/run.sh
