#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine of this kind (root, Rust
# stable + nightly via rustup, Node.js 20). Idempotent: re-running skips what is there. (The
# quickstart, `cargo run -p sekisho -- quickstart`, needs nothing but cargo.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

npm_setup() {
  if [ ! -d "$here/node/node_modules/oidc-provider" ] || [ ! -d "$here/node/node_modules/playwright-core" ]; then
    echo "setup: npm ci in tests/node"
    (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
need_apt=()
for pair in chromium:/usr/bin/chromium nginx:/usr/sbin/nginx wrk:/usr/bin/wrk redis-server:/usr/bin/redis-server redis-tools:/usr/bin/redis-cli openssh-server:/usr/sbin/sshd openssh-client:/usr/bin/ssh caddy:/usr/bin/caddy openssl:/usr/bin/openssl iproute2:/usr/sbin/ip; do
  pkg=${pair%%:*}; bin=${pair#*:}
  [ -x "$bin" ] || need_apt+=("$pkg")
done
# The third-party relying party of the built-in provider's interop test (Debian's python3).
/usr/bin/python3 -c 'import authlib, requests' 2>/dev/null || need_apt+=(python3-authlib python3-requests)
if [ ${#need_apt[@]} -gt 0 ]; then
  # nginx-light is the smallest Debian nginx; it carries the proxy module the benchmark needs.
  pkgs=("${need_apt[@]/nginx/nginx-light}")
  echo "setup: apt-get install ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# Kernel-side Rust: nightly with rust-src, and bpf-linker built against nightly's own LLVM.
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "setup: rustup component add rust-src --toolchain nightly"
  rustup component add rust-src --toolchain nightly
fi
if ! command -v bpf-linker >/dev/null 2>&1; then
  echo "setup: building bpf-linker 0.13.0 against nightly's LLVM (about 2 minutes)"
  SYSROOT=$(rustc +nightly --print sysroot)
  MAJOR=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  LIB=$(ls "$SYSROOT"/lib/libLLVM.so.*-rust-* | head -1)
  PREFIX=${BPF_LLVM_PREFIX:-$HOME/.local/bpf-llvm}
  mkdir -p "$PREFIX/lib"
  ln -sf "$LIB" "$PREFIX/lib/$(basename "$LIB")"
  ln -sf "$(basename "$LIB")" "$PREFIX/lib/libLLVM.so"
  LLVM_PREFIX="$PREFIX" cargo install bpf-linker@0.13.0 --locked --no-default-features --features "llvm-$MAJOR"
fi

# The fuzz targets' smoke run (tests/fuzz.sh): cargo-fuzz drives libFuzzer on nightly.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: cargo install cargo-fuzz"
  cargo install cargo-fuzz@0.13.2 --locked
fi

# Python side: the OTLP receiver decodes with the OpenTelemetry project's own bindings.
if ! python3 -c 'import opentelemetry.proto.collector.logs.v1.logs_service_pb2' 2>/dev/null; then
  echo "setup: pip install opentelemetry-proto"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'opentelemetry-proto==1.45.2'
fi

# Node side: the test OpenID provider and the browser driver.
npm_setup
echo "setup: ok"
