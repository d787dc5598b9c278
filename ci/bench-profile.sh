#!/usr/bin/env bash
# CPU profiles of keygate's hot paths under load, as flame graphs (docs/performance.md,
# "Where the time goes"). A benchmark, not a test.
#
# On a fresh dev layout it starts the release server, drives one path at a time with wrk
# (the same requests as ci/bench.sh) and samples the server with `perf record` (software
# cpu-clock at PERF_FREQ Hz, DWARF call chains: release builds have no frame pointers).
# Each profile becomes $FLAME_DIR/<path>.svg (ci/perf/flamegraph.py) and
# $OUT/<path>-top.txt (largest inclusive and self shares).
# Knobs: PROFILE_SECONDS (8) WARMUP (2) CONC (32) THREADS (2) PERF_FREQ (499)
#        PERF_STACK (32768: bytes of stack copied per sample; async stacks are deep)
#        FLAME_DIR (docs/perf) PATHS ("custom sign introspect apikey")
#        KEYGATE_BIN (unset: build and use target/release/keygate)
#        NO_RAISED_LIMITS (unset; 1 for a binary older than the `limits` section)
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh wrk linux-perf
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
WARMUP=${WARMUP:-2}
CONC=${CONC:-32}
THREADS=${THREADS:-2}
PERF_FREQ=${PERF_FREQ:-499}
PERF_STACK=${PERF_STACK:-32768}
FLAME_DIR=${FLAME_DIR:-docs/perf}
PATHS=${PATHS:-custom sign introspect apikey}
OUT=${OUT:-/tmp/keygate-profile/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT" "$FLAME_DIR"
if [ -n "${KEYGATE_BIN:-}" ]; then BIN=$KEYGATE_BIN; else cargo build --release --quiet; BIN=target/release/keygate; fi
DATA=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

"$BIN" --data-dir "$DATA" serve --dev --insecure-http --listen 127.0.0.1:0 >"$OUT/server-init.out" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$OUT/server-init.out" && break; sleep 0.1; done
KEY=$(grep -o 'kg_[A-Za-z0-9_-]*' "$OUT/server-init.out" | head -1)
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=

# As in ci/bench.sh: one key carries all the load, so its quotas are raised (still checked).
RAISED_LIMITS=(KEYGATE__LIMITS__PER_CREDENTIAL='{ per_minute = 60000000, burst = 1000000 }'
  KEYGATE__LIMITS__PER_RING='{ per_minute = 60000000, burst = 1000000 }')
[ -z "${NO_RAISED_LIMITS:-}" ] || RAISED_LIMITS=()
env "${RAISED_LIMITS[@]}" RUST_LOG=warn \
  "$BIN" --data-dir "$DATA" serve --insecure-http --listen 127.0.0.1:0 >"$OUT/server.out" 2>"$OUT/server.err" &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$OUT/server.out" && break; sleep 0.1; done
addr=$(sed -n 's/^keygate listening on //p' "$OUT/server.out")
[ -n "$addr" ] || { echo "server did not start" >&2; cat "$OUT/server.err" >&2; exit 1; }
jwt=$(curl -fsS -H "x-api-key: $KEY" -d grant_type=custom_token -d subject=bench -d expires_in=3600 \
      "$addr/api/v1/auth/token" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$jwt" ] || { echo "could not get a custom token" >&2; exit 1; }
curl -fsS -o /dev/null -H "x-api-key: $KEY" -H 'content-type: application/json' \
  -d '{"ring":"bench-sign","algorithm":"ES256"}' "$addr/api/v1/keys"

for kind in $PATHS; do
  case $kind in
    custom) args=(-s ci/bench/post.lua "$addr/api/v1/auth/token")
            envs=(WRK_CTYPE=application/x-www-form-urlencoded WRK_BODY="grant_type=custom_token&subject=svc&expires_in=300") ;;
    sign) args=(-s ci/bench/post.lua "$addr/api/v1/keys/bench-sign/sign")
          envs=(WRK_CTYPE=application/json WRK_BODY='{"claims":{"sub":"device-1"},"audience":"https://gateway.example"}') ;;
    introspect) args=(-s ci/bench/post.lua "$addr/api/v1/auth/introspect")
                envs=(WRK_CTYPE=application/x-www-form-urlencoded WRK_BODY="token=$jwt") ;;
    apikey) args=(-H "x-api-key: $KEY" "$addr/api/v1/keys"); envs=() ;;
    *) echo "unknown path $kind" >&2; exit 2 ;;
  esac
  env WRK_KEY="$KEY" "${envs[@]}" wrk -t"$THREADS" -c"$CONC" -d"$((WARMUP + PROFILE_SECONDS + 1))s" "${args[@]}" >"$OUT/$kind-wrk.txt" &
  WRK=$!
  sleep "$WARMUP"
  perf record -q -F "$PERF_FREQ" --call-graph dwarf,"$PERF_STACK" -p "$SERVER" -o "$OUT/$kind.data" -- sleep "$PROFILE_SECONDS" 2>"$OUT/$kind-perf.err"
  wait "$WRK"
  if grep -q Non-2xx "$OUT/$kind-wrk.txt"; then echo "errors during load ($kind)" >&2; exit 3; fi
  perf script -i "$OUT/$kind.data" --no-inline 2>/dev/null \
    | python3 ci/perf/flamegraph.py --title "keygate $kind under wrk -c$CONC ($(awk '/Requests\/sec/ {print $2}' "$OUT/$kind-wrk.txt") req/s)" \
        --folded "$OUT/$kind.folded" "$FLAME_DIR/$kind.svg" >"$OUT/$kind-top.txt"
  rm -f "$OUT/$kind.data"
  echo "$kind: $(awk '/Requests\/sec/ {print $2}' "$OUT/$kind-wrk.txt") req/s; $FLAME_DIR/$kind.svg; top frames in $OUT/$kind-top.txt"
done
echo "results in $OUT"
