#!/usr/bin/env bash
# Soak (a benchmark, not a test): 10 minutes of mixed traffic at 80% of the capacity
# measured just before, on a release server with a fresh SoftHSM token. Reports per
# minute: errors (target 0), p50/p99/p99.9 latency, RSS, open fds, HSM sessions; writes
# soak.json and soak.png (matplotlib, in a venv under target/) to $OUT.
# Knobs: DURATION (600 s) CAPACITY_SECONDS (20) FRACTION (0.8) THREADS (16)
#        METRICS_URL (default: /metrics of the ops listener the script starts; set it to
#        read another) OUT (default /tmp/keygate-soak/<UTC time>).
# See docs/performance.md ("Soak").
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh python3-venv
OUT=${OUT:-/tmp/keygate-soak/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
VENV=target/soak-venv
if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet matplotlib
fi
# KEYGATE_BIN: a prebuilt binary (e.g. target/debug/keygate to try the script); the
# figures in the docs come from the release build.
BIN=${KEYGATE_BIN:-target/release/keygate}
[ -n "${KEYGATE_BIN:-}" ] || cargo build --release --quiet
DATA=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
# `/metrics` is served only by the ops listener (server.ops_listen).
env "KEYGATE__APPROVALS__ROTATE-NOW__REQUIRED=0" KEYGATE__APPROVALS__REGENERATE__REQUIRED=1 \
  KEYGATE__SERVER__OPS_LISTEN=127.0.0.1:0 RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --dev \
  --listen 127.0.0.1:0 --insecure-http >"$OUT/server.out" 2>"$OUT/server.log" &
SERVER=$!
for _ in $(seq 1 300); do
  grep -q '^keygate listening on ' "$OUT/server.out" 2>/dev/null && break
  sleep 0.1
done
BASE=$(sed -n 's/^keygate listening on //p' "$OUT/server.out" | head -1)
ADMIN_KEY=$(sed -n 's/^bootstrap super-admin API key.* //p' "$OUT/server.out" | head -1)
[ -n "$BASE" ] && [ -n "$ADMIN_KEY" ] || { echo "keygate did not start:"; cat "$OUT/server.log"; exit 1; }
echo "soak: server $BASE (pid $SERVER), results in $OUT"
OPS=$(sed -n 's/^keygate ops listening on //p' "$OUT/server.out" | head -1)
BASE=$BASE METRICS_URL=${METRICS_URL:-$OPS/metrics} ADMIN_KEY=$ADMIN_KEY PID=$SERVER OUT=$OUT \
  "$VENV/bin/python" ci/soak/soak.py | tee "$OUT/soak.txt"
