#!/usr/bin/env bash
# TLS 1.3 full handshakes per second (new TCP + TLS connection per request, no resumption)
# against keygate with its identity key in SoftHSM, measured with peers/tlsload, in the same
# shape as the nginx-pkcs11 peer harness's `1core` mode: the server pinned to CPU 0, the
# load generator pinned to CPU 1. Also prints the raw SoftHSM ES256 sign ceiling
# (`keygate bench`) from the same run, and the server's CPU time per handshake.
#
# Needs tlsload: TLSLOAD=path (default /tmp/peers/tlsload-target/release/tlsload, which the
# nginx-pkcs11 peer harness builds). To put nginx beside it, run that harness right after
# (`MODES=1core bash <peers>/nginx-pkcs11/run.sh`), or set PEER_NGINX=<that run.sh> and the
# rounds are interleaved: keygate, nginx, keygate, nginx, ...
# Knobs: ROUNDS (3) DURATION (10) WARMUP (2) CONC (16) PORT (18443) BENCH_SECONDS (3)
#        KEYGATE_BIN (unset: build and use target/release/keygate)
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONC=${CONC:-16}
PORT=${PORT:-18443}
# `/metrics` is served only by the plain-HTTP ops listener (server.ops_listen).
OPS_PORT=${OPS_PORT:-$((PORT + 2))}
BENCH_SECONDS=${BENCH_SECONDS:-3}
TLSLOAD=${TLSLOAD:-/tmp/peers/tlsload-target/release/tlsload}
OUT=${OUT:-/tmp/keygate-bench/tls-$(date -u +%Y%m%dT%H%M%SZ)}
[ -x "$TLSLOAD" ] || { echo "bench-tls.sh: no tlsload at $TLSLOAD (run the nginx-pkcs11 peer harness once, or set TLSLOAD)" >&2; exit 2; }
mkdir -p "$OUT"
if [ -n "${KEYGATE_BIN:-}" ]; then BIN=$KEYGATE_BIN; else cargo build --release --quiet; BIN=target/release/keygate; fi
DATA=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

start() { # start LOG [ARGS...]: starts keygate pinned to CPU 0, waits for it to listen
  local log=$1; shift
  taskset -c 0 env RUST_LOG=warn KEYGATE__SERVER__OPS_LISTEN="127.0.0.1:$OPS_PORT" "$BIN" --data-dir "$DATA" serve "$@" >"$log" 2>"$log.err" &
  SERVER=$!
  for _ in $(seq 200); do grep -qs "^keygate listening on" "$log" && return 0; sleep 0.1; done
  cat "$log.err" >&2; echo "keygate did not start" >&2; exit 1
}
stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

{
  echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load: $(uptime | sed 's/.*load average: //')"
  echo "keygate: TLS 1.3 (rustls, aws-lc-rs), identity ES256 in SoftHSM $(dpkg-query -W -f='${Version}' softhsm2), server on CPU 0, tlsload -c $CONC on CPU 1, ${WARMUP}s warm-up + ${DURATION}s, GET /healthz"
} | tee "$OUT/summary.txt"

# The dev layout and the TLS identity (key in the dev token, self-signed certificate).
start "$OUT/init.out" --dev --listen "127.0.0.1:$PORT"
stop
echo "== raw SoftHSM ceilings (keygate bench, same run)" | tee -a "$OUT/summary.txt"
"$BIN" --data-dir "$DATA" bench --seconds "$BENCH_SECONDS" --rounds 3 --concurrency "$CONC" | tee -a "$OUT/summary.txt"

printf 'round\tserver\trate\tp50_ms\tp99_ms\terrors\tserver_us_per_hs\tclient_cpu_pct\n' >"$OUT/runs.tsv"
for r in $(seq "$ROUNDS"); do
  start "$OUT/server-$r.out" --listen "127.0.0.1:$PORT"
  c0=$(cpu_ticks "$SERVER")
  taskset -c 1 "$TLSLOAD" --addr "127.0.0.1:$PORT" --sni localhost --cert "$DATA/tls/cert.pem" \
    --path /healthz --conc "$CONC" --duration "$DURATION" --warmup "$WARMUP" >"$OUT/tlsload-keygate-$r.txt" 2>&1 \
    || { cat "$OUT/tlsload-keygate-$r.txt" >&2; exit 1; }
  dt=$(( $(cpu_ticks "$SERVER") - c0 ))
  signs=$(curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" \
    | awk '/^keygate_hardware_call_duration_seconds_count\{.*op="tls_sign".*outcome="ok"/ {s += $2} END {print s + 0}')
  stop
  json=$(sed -n 's/^TLSLOAD_JSON //p' "$OUT/tlsload-keygate-$r.txt")
  read -r HS RATE ERRS P50 P99 CCPU < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["handshakes"], round(d["rate"]), d["errors"], d["p50_ms"], d["p99_ms"], d["client_cpu_pct"])' "$json")
  # Every measured handshake (plus warm-up) was signed in hardware.
  [ "$signs" -ge "$HS" ] || { echo "only $signs hardware signatures for $HS handshakes" >&2; exit 1; }
  US=$(awk -v d="$dt" -v n="$signs" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", d / hz / n * 1e6 }')
  printf '%s\tkeygate\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$RATE" "$P50" "$P99" "$ERRS" "$US" "$CCPU" >>"$OUT/runs.tsv"
  printf 'round %s keygate: %6s handshakes/s  p50 %s ms  p99 %s ms  errors %s  server %s us CPU/handshake  (%s hardware signs)\n' \
    "$r" "$RATE" "$P50" "$P99" "$ERRS" "$US" "$signs" | tee -a "$OUT/summary.txt"
  [ "$ERRS" = 0 ] || { echo "handshake errors" >&2; exit 3; }
  if [ -n "${PEER_NGINX:-}" ]; then
    MODES=1core ROUNDS=1 TLS_PORT=$((PORT + 1)) bash "$PEER_NGINX" >"$OUT/nginx-$r.txt" 2>&1 \
      || { tail -20 "$OUT/nginx-$r.txt" >&2; exit 1; }
    grep -E '^  (hsm|file) ' "$OUT/nginx-$r.txt" | sed "s/^ */round $r nginx /" | tee -a "$OUT/summary.txt"
    NG=$(sed -n 's/^  hsm .*: \([0-9]*\) handshakes\/s median.*/\1/p' "$OUT/nginx-$r.txt")
    NGF=$(sed -n 's/^  file .*: \([0-9]*\) handshakes\/s median.*/\1/p' "$OUT/nginx-$r.txt")
    printf '%s\tnginx-hsm\t%s\n%s\tnginx-file\t%s\n' "$r" "$NG" "$r" "$NGF" >>"$OUT/runs.tsv"
    awk -v a="$RATE" -v b="$NG" -v r="$r" 'BEGIN { printf "round %s keygate/nginx-hsm: %.2f\n", r, a / b }' | tee -a "$OUT/summary.txt"
  fi
done
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
KG=$(awk -F'\t' '$2=="keygate" {print $3}' "$OUT/runs.tsv" | med)
echo "keygate TLS1.3 ES256 (SoftHSM) full handshakes: median $KG/s over $ROUNDS rounds" | tee -a "$OUT/summary.txt"
if [ -n "${PEER_NGINX:-}" ]; then
  NGM=$(awk -F'\t' '$2=="nginx-hsm" {print $3}' "$OUT/runs.tsv" | med)
  RAT=$(for r in $(seq "$ROUNDS"); do
    awk -F'\t' -v r="$r" '$1==r && $2=="keygate" {k=$3} $1==r && $2=="nginx-hsm" {n=$3} END {printf "%.3f\n", k / n}' "$OUT/runs.tsv"
  done | med)
  echo "nginx+SoftHSM (pkcs11 engine) median $NGM/s; keygate/nginx-hsm median of per-round ratios: $RAT" | tee -a "$OUT/summary.txt"
fi
echo "load at the end: $(uptime | sed 's/.*load average: //')" | tee -a "$OUT/summary.txt"
echo "results in $OUT"
