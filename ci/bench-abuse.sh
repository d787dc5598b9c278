#!/usr/bin/env bash
# The abuse benchmark of issue 14 (a benchmark, not a test; docs/performance.md):
#   0. raw ceilings: `keygate bench` (SoftHSM sign and HMAC, raw cryptoki and through
#      keygate's pool) on the same data directory, same run;
#   1. a valid client alone: wrk issuing custom tokens with a valid API key (127.0.0.1);
#   2. a flood of random well-formed API keys, refresh tokens and revocations from ONE
#      source (127.0.0.2), at the load generator's full rate: alone (HSM calls and audit
#      rows it causes, from /metrics and the store) and beside the valid client (its rate
#      as a share of step 1);
#   3. the same flood spread over 256 sources (127.0.1.0-255);
#   4. slowloris: CONNS_SLOW connections from 4 sources sending a header byte every 10 s;
#      the valid client's p99 latency (GET /api/v1/keys) with and without it.
# Results go to stdout and $OUT (default /tmp/keygate-bench-abuse/<UTC time>/).
# Knobs: SECONDS_PER_RUN (10) CONC (16, wrk) THREADS (1, wrk) FLOOD_CONNS (64)
#        CONNS_SLOW (1000) KEYGATE_BIN (target/release/keygate, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh wrk
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONC=${CONC:-16}
THREADS=${THREADS:-1}
FLOOD_CONNS=${FLOOD_CONNS:-64}
CONNS_SLOW=${CONNS_SLOW:-1000}
OUT=${OUT:-/tmp/keygate-bench-abuse/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
BIN=${KEYGATE_BIN:-target/release/keygate}
if [ ! -x "$BIN" ]; then cargo build --release --quiet; fi
DATA=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
S="$OUT/summary.txt"
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); binary $BIN" | tee "$S"

"$BIN" --data-dir "$DATA" serve --dev --insecure-http --listen 127.0.0.1:0 >"$OUT/server-init.out" 2>&1 &
SERVER=$!
for _ in $(seq 300); do grep -q "listening on" "$OUT/server-init.out" && break; sleep 0.1; done
KEY=$(grep -o 'kg_[A-Za-z0-9_-]*' "$OUT/server-init.out" | head -1)
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
echo "== raw ceilings (keygate bench, same run)" | tee -a "$S"
"$BIN" --data-dir "$DATA" bench --seconds 3 --rounds 1 --concurrency "$CONC" | tee -a "$S"

ulimit -n 65536 2>/dev/null || true
KEYGATE__SERVER__OPS_LISTEN=127.0.0.1:0 RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --dev --insecure-http --listen 127.0.0.1:0 >"$OUT/server.out" 2>"$OUT/server.log" &
SERVER=$!
for _ in $(seq 300); do grep -q "listening on" "$OUT/server.out" && break; sleep 0.1; done
BASE=$(sed -n 's/^keygate listening on //p' "$OUT/server.out")
HOSTPORT=${BASE#http://}
# `/metrics` is served only by the ops listener (server.ops_listen).
OPS=$(sed -n 's/^keygate ops listening on //p' "$OUT/server.out" | head -1)

calls() { curl -fsS "$OPS/metrics" | awk -v op="op=\"$1\"" '/^keygate_hardware_call_duration_seconds_count\{/ && index($0, op) {s += $NF} END {printf "%d", s}'; }
audit_rows() { sqlite3 "$DATA/keygate.db" "SELECT COUNT(*) FROM audit_log"; }
rate() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99() { awk '/ 99%/ {print $2}' "$1"; }
valid() { # valid LABEL: custom tokens with the valid key for SECONDS_PER_RUN
  WRK_KEY=$KEY WRK_CTYPE=application/x-www-form-urlencoded WRK_BODY="grant_type=custom_token&subject=svc&expires_in=300" \
    wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -s ci/bench/post.lua "$BASE/api/v1/auth/token" >"$OUT/valid-$1.txt"
}
flood() { # flood LABEL SOURCES
  python3 ci/bench/abuse_flood.py "$HOSTPORT" "$SECONDS_PER_RUN" "$FLOOD_CONNS" "$2" >"$OUT/flood-$1.json"
}

valid warmup >/dev/null
valid alone
R0=$(rate "$OUT/valid-alone.txt")
printf '== valid client alone: %s custom tokens/s (p99 %s)\n' "$R0" "$(p99 "$OUT/valid-alone.txt")" | tee -a "$S"

for sources in 1 256; do
  label="flood$sources"
  m0=$(calls mac); r0=$(calls random); s0=$(calls sign); a0=$(audit_rows)
  flood "$label-alone" "$sources"
  m1=$(calls mac); r1=$(calls random); s1=$(calls sign); a1=$(audit_rows)
  printf '== flood from %s source(s), alone: %s\n' "$sources" "$(cat "$OUT/flood-$label-alone.json")" | tee -a "$S"
  printf '   hardware calls caused by the flood: mac %d, random %d, sign %d; audit rows written: %d\n' \
    $((m1 - m0)) $((r1 - r0)) $((s1 - s0)) $((a1 - a0)) | tee -a "$S"
  flood "$label-with-valid" "$sources" &
  FLOOD=$!
  valid "$label"
  wait "$FLOOD"
  R1=$(rate "$OUT/valid-$label.txt")
  printf '   valid client during the flood: %s custom tokens/s = %.0f%% of alone (target 80%%); flood meanwhile: %s\n' \
    "$R1" "$(awk -v a="$R1" -v b="$R0" 'BEGIN{print 100*a/b}')" "$(cat "$OUT/flood-$label-with-valid.json")" | tee -a "$S"
done

echo "== slowloris: $CONNS_SLOW connections from 4 sources, a header byte every 10 s" | tee -a "$S"
wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -H "x-api-key: $KEY" "$BASE/api/v1/keys" >"$OUT/keys-alone.txt"
python3 ci/bench/slowloris.py "$HOSTPORT" $((SECONDS_PER_RUN + 15)) "$CONNS_SLOW" 4 10 >"$OUT/slowloris.json" &
SLOW=$!
sleep 10
wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -H "x-api-key: $KEY" "$BASE/api/v1/keys" >"$OUT/keys-slowloris.txt"
open_now=$(curl -fsS "$OPS/metrics" | awk '/^keygate_http_connections_open / {print $2}')
wait "$SLOW"
printf '   GET /api/v1/keys: alone %s req/s p99 %s; under slowloris %s req/s p99 %s (server connections open then: %s); slowloris: %s\n' \
  "$(rate "$OUT/keys-alone.txt")" "$(p99 "$OUT/keys-alone.txt")" \
  "$(rate "$OUT/keys-slowloris.txt")" "$(p99 "$OUT/keys-slowloris.txt")" "$open_now" "$(cat "$OUT/slowloris.json")" | tee -a "$S"
echo "results in $OUT"
