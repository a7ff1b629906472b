#!/usr/bin/env bash
# The whole test suite: installs what it needs (tests/setup.sh), checks formatting and lints,
# then runs every test of the workspace — unit tests, the end-to-end suite against the real
# OpenID provider, upstreams and headless Chromium, and the privileged eBPF tests (root); then a
# short smoke run of every fuzz target (tests/fuzz.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tests/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets --no-fail-fast
tests/fuzz.sh
