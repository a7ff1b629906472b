#!/usr/bin/env bash
# Sets up and runs the quickstart: the test OpenID provider (127.0.0.1:9090), a "whoami" demo
# upstream (127.0.0.1:9091) and sekisho (http://127.0.0.1:8080) with examples/quickstart.yaml.
# Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

tests/setup.sh --quickstart
cargo build --release -p sekisho

state=.sekisho/quickstart
mkdir -p "$state"
[ -s "$state/cookie.key" ] || target/release/sekisho gen-cookie-key > "$state/cookie.key"
[ -s "$state/signing.pem" ] || target/release/sekisho gen-signing-key > "$state/signing.pem"
chmod 600 "$state/cookie.key" "$state/signing.pem"
# The demo client's secret, as registered at the test IdP (tests/quickstart/idp.json).
export SEKISHO_CLIENT_SECRET=quickstart-client-secret
target/release/sekisho check -c examples/quickstart.yaml

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

node tests/node/idp.mjs tests/quickstart/idp.json > "$state/idp.out" 2> "$state/idp.log" &
pids+=($!)
python3 tests/quickstart/whoami.py 9091 2> "$state/whoami.log" &
pids+=($!)
for _ in $(seq 100); do grep -q issuer "$state/idp.out" 2>/dev/null && break; sleep 0.1; done
grep -q issuer "$state/idp.out" || { echo "the test IdP did not start; see $state/idp.log" >&2; exit 1; }

cat <<'TXT'

  sekisho quickstart
  ------------------
  Open http://127.0.0.1:8080/ and sign in as one of the demo users:
    alice / alice-pw   (groups: eng, admins)
    bob   / bob-pw     (groups: sales)
  Sign out at http://127.0.0.1:8080/.sekisho/logout
  Ctrl-C stops everything.

TXT
target/release/sekisho run -c examples/quickstart.yaml &
pids+=($!)
wait "${pids[-1]}"
