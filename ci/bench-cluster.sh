#!/usr/bin/env bash
# Replicas on one store (docs/deployment.md, "Replicas and the change feed"):
#   1. custom-token issuance and API-key-authenticated GET /api/v1/keys on ONE replica, then
#      on TWO replicas behind the same load generator (two wrk processes on this machine,
#      half the connections each, rates summed);
#   2. revocation propagation: p50/p99 of the delay from A's 200 to a revocation until B
#      answers 401 (ci/bench/propagation.py), over $REVOCATIONS revocations.
# Every replica logs in to one SoftHSM token directory and uses one store:
#   STORE_URL   the store (default: a fresh SQLite file in WAL mode in a temp directory);
#               a postgres:// URL must name an empty database.
# Knobs: SECONDS_PER_RUN (10) CONC (32) ROUNDS (2) REVOCATIONS (1000) PROP_WORKERS (8)
#        KEYGATE_BIN (default: a release build made here)
# Results go to stdout and to $OUT (default /tmp/keygate-bench-cluster/<UTC time>/).
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh wrk
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONC=${CONC:-32}
ROUNDS=${ROUNDS:-2}
REVOCATIONS=${REVOCATIONS:-1000}
PROP_WORKERS=${PROP_WORKERS:-8}
OUT=${OUT:-/tmp/keygate-bench-cluster/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
if [ -z "${KEYGATE_BIN:-}" ]; then
  cargo build --release --quiet
  KEYGATE_BIN=$PWD/target/release/keygate
fi
BIN=$KEYGATE_BIN
DATA=$(mktemp -d)
STORE_URL=${STORE_URL:-sqlite://$DATA/keygate.db}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

eval "$(bash softhsm-test/make-token.sh "$DATA/hsm" keygate 1234 12345678)"
printf '1234' >"$DATA/pin"; chmod 600 "$DATA/pin"
cat >"$DATA/keygate.toml" <<TOML
[store]
url = "$STORE_URL"
[tokens]
issuer = "http://keygate.bench"
[limits]
enabled = false
[backends.hsm]
type = "pkcs11"
profile = "softhsm2"
token_label = "keygate"
pin_file = "$DATA/pin"
[rings.api-key-mac]
backend = "hsm"
algorithm = "HS256"
[rings.jwt-default]
backend = "hsm"
algorithm = "ES256"
TOML

# start NAME: starts a replica, sets ADDR_<NAME>.
start() {
  RUST_LOG=warn "$BIN" --config "$DATA/keygate.toml" serve --insecure-http --listen 127.0.0.1:0 \
    >"$OUT/server-$1.out" 2>"$OUT/server-$1.err" &
  PIDS+=($!)
  for _ in $(seq 200); do grep -q "listening on" "$OUT/server-$1.out" && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/^keygate listening on //p' "$OUT/server-$1.out")
  [ -n "$addr" ] || { echo "replica $1 did not start" >&2; cat "$OUT/server-$1.err" >&2; exit 1; }
  printf -v "ADDR_$1" '%s' "$addr"
}
rate() { awk '/Requests\/sec/ {print $2}' "$1"; }
non2xx() { awk '/Non-2xx/ {print $5}' "$1"; }

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg); store $STORE_URL; binary $BIN" | tee "$OUT/summary.txt"
start A
KEY=$(grep -o 'kg_[A-Za-z0-9_-]*' "$OUT/server-A.out" | head -1)
[ -n "$KEY" ] || { echo "no bootstrap key" >&2; exit 1; }

# load LABEL PATH KIND ADDR...: one wrk per replica, CONC/N connections each, run together.
load() {
  local label=$1 kind=$2; shift 2
  local f=${label//[ \/]/_}
  local n=$# c=$((CONC / $#)) i=0 total=0 bad=0 wrks=()
  for addr in "$@"; do
    i=$((i + 1))
    if [ "$kind" = custom ]; then
      WRK_KEY=$KEY WRK_CTYPE=application/x-www-form-urlencoded WRK_BODY="grant_type=custom_token&subject=svc&expires_in=300" \
        wrk -t1 -c"$c" -d"${SECONDS_PER_RUN}s" -s ci/bench/post.lua "$addr/api/v1/auth/token" >"$OUT/$f-$i.txt" &
    else
      wrk -t1 -c"$c" -d"${SECONDS_PER_RUN}s" -H "x-api-key: $KEY" "$addr/api/v1/keys" >"$OUT/$f-$i.txt" &
    fi
    wrks+=($!)
  done
  wait "${wrks[@]}"
  for j in $(seq "$n"); do
    total=$(awk -v a="$total" -v b="$(rate "$OUT/$f-$j.txt")" 'BEGIN{print a+b}')
    [ -z "$(non2xx "$OUT/$f-$j.txt")" ] || bad=1
  done
  printf '%-28s %8.0f req/s%s\n' "$label" "$total" "$([ $bad = 0 ] || echo '  (non-2xx!)')" | tee -a "$OUT/summary.txt"
  [ $bad = 0 ] || exit 3
}

echo "== one replica (wrk -c$CONC, ${SECONDS_PER_RUN}s)" | tee -a "$OUT/summary.txt"
for r in $(seq "$ROUNDS"); do
  load "1 replica custom_token r$r" custom "$ADDR_A"
  load "1 replica GET /keys r$r" get "$ADDR_A"
done
start B
for _ in $(seq 100); do curl -fsS -o /dev/null -H "x-api-key: $KEY" "$ADDR_B/api/v1/keys" && break; sleep 0.1; done
echo "== two replicas, one load generator (2 x wrk -c$((CONC / 2)), ${SECONDS_PER_RUN}s)" | tee -a "$OUT/summary.txt"
for r in $(seq "$ROUNDS"); do
  load "2 replicas custom_token r$r" custom "$ADDR_A" "$ADDR_B"
  load "2 replicas GET /keys r$r" get "$ADDR_A" "$ADDR_B"
done

echo "== revocation propagation A -> B ($REVOCATIONS revocations, $PROP_WORKERS at once)" | tee -a "$OUT/summary.txt"
python3 ci/bench/propagation.py "$ADDR_A" "$ADDR_B" "$KEY" "$REVOCATIONS" "$PROP_WORKERS" | tee -a "$OUT/summary.txt"
echo "results in $OUT"
