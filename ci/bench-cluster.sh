#!/usr/bin/env bash
# Replicas on one store (docs/deployment.md, "Replicas and the change feed"), in up to
# four configurations, one after the other, with one summary table at the end:
#
#   ./ci/bench-cluster.sh [MODE...]      MODE: sqlite-1 pg-1 pg-2 sqlite-2
#                                        (default: sqlite-1 pg-1 pg-2)
#
#   sqlite-1  one replica on a fresh SQLite file
#   pg-1      one replica on a fresh PostgreSQL database
#   pg-2      two replicas on one fresh PostgreSQL database behind the same load generator
#             (two wrk processes on this machine, half the connections each, rates summed)
#   sqlite-2  two replicas on one SQLite file (WAL), for comparison: no LISTEN/NOTIFY there
#
# Each configuration measures custom-token issuance (POST /api/v1/auth/token) and
# API-key-authenticated GET /api/v1/keys, and, with two replicas, revocation propagation:
# p50/p99 of the delay from A's 200 to a revocation until B answers 401
# (ci/bench/propagation.py), over $REVOCATIONS revocations.
#
# PostgreSQL modes run against a throwaway cluster: without KEYGATE_TEST_PG_URL the script
# runs itself again under ./ci/pg.sh (one cluster for the whole run; every configuration
# gets a database of its own). Every replica logs in to one SoftHSM token directory per
# configuration.
# Knobs: SECONDS_PER_RUN (10) CONC (32) ROUNDS (2) REVOCATIONS (1000) PROP_WORKERS (8)
#        KEYGATE_BIN (default: a release build made here)
# Results go to stdout and to $OUT (default /tmp/keygate-bench-cluster/<UTC time>/):
# summary.txt (the table), results.tsv (one row per measurement), one directory per mode.
# Try it quickly on a debug build:
#   SECONDS_PER_RUN=2 ROUNDS=1 REVOCATIONS=20 KEYGATE_BIN=target/debug/keygate ./ci/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(sqlite-1 pg-1 pg-2)
for m in "${MODES[@]}"; do
  case $m in sqlite-1 | sqlite-2 | pg-1 | pg-2) ;; *)
    echo "usage: ci/bench-cluster.sh [sqlite-1|pg-1|pg-2|sqlite-2]..." >&2
    exit 2
    ;;
  esac
done
if [[ " ${MODES[*]} " == *" pg-"* ]] && [ -z "${KEYGATE_TEST_PG_URL:-}" ]; then
  exec ./ci/pg.sh bash ./ci/bench-cluster.sh "${MODES[@]}"
fi

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
RESULTS=$OUT/results.tsv
printf 'mode\tmeasure\tround\tvalue\n' >"$RESULTS"

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg); binary $BIN" | tee "$OUT/summary.txt"
echo "settings: SECONDS_PER_RUN=$SECONDS_PER_RUN CONC=$CONC ROUNDS=$ROUNDS REVOCATIONS=$REVOCATIONS PROP_WORKERS=$PROP_WORKERS" | tee -a "$OUT/summary.txt"

# run_mode MODE: one configuration, in a subshell so its replicas and files are cleaned up
# whatever happens.
run_mode() (
  local mode=$1
  local engine=${mode%-*} replicas=${mode#*-}
  local dir
  dir=$(mktemp -d)
  local log=$OUT/$mode
  mkdir -p "$log"
  PIDS=()
  cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
  }
  trap cleanup EXIT

  local store_url
  if [ "$engine" = pg ]; then
    local db
    db=kgbench_${mode//-/_}_$$
    psql "$KEYGATE_TEST_PG_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db" >/dev/null
    store_url=${KEYGATE_TEST_PG_URL%/*}/$db
  else
    store_url=sqlite://$dir/keygate.db
  fi
  eval "$(bash softhsm-test/make-token.sh "$dir/hsm" keygate 1234 12345678)"
  printf '1234' >"$dir/pin"
  chmod 600 "$dir/pin"
  cat >"$dir/keygate.toml" <<TOML
[store]
url = "$store_url"
[tokens]
issuer = "http://keygate.bench"
[limits]
enabled = false
[backends.hsm]
type = "pkcs11"
profile = "softhsm2"
token_label = "keygate"
pin_file = "$dir/pin"
[rings.api-key-mac]
backend = "hsm"
algorithm = "HS256"
[rings.jwt-default]
backend = "hsm"
algorithm = "ES256"
TOML

  # start NAME: starts a replica, sets ADDR_<NAME>.
  start() {
    RUST_LOG=warn "$BIN" --config "$dir/keygate.toml" serve --insecure-http --listen 127.0.0.1:0 \
      >"$log/server-$1.out" 2>"$log/server-$1.err" &
    PIDS+=($!)
    for _ in $(seq 300); do grep -q "listening on" "$log/server-$1.out" && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's/^keygate listening on //p' "$log/server-$1.out")
    [ -n "$addr" ] || { echo "$mode: replica $1 did not start" >&2; cat "$log/server-$1.err" >&2; exit 1; }
    printf -v "ADDR_$1" '%s' "$addr"
  }
  rate() { awk '/Requests\/sec/ {print $2}' "$1"; }
  non2xx() { awk '/Non-2xx/ {print $5}' "$1"; }

  # load MEASURE KIND ROUND ADDR...: one wrk per replica, CONC/N connections each, run together.
  load() {
    local measure=$1 kind=$2 round=$3
    shift 3
    local n=$# c=$((CONC / $#)) i=0 total=0 bad=0 wrks=()
    for addr in "$@"; do
      i=$((i + 1))
      if [ "$kind" = custom ]; then
        WRK_KEY=$KEY WRK_CTYPE=application/x-www-form-urlencoded WRK_BODY="grant_type=custom_token&subject=svc&expires_in=300" \
          wrk -t1 -c"$c" -d"${SECONDS_PER_RUN}s" -s ci/bench/post.lua "$addr/api/v1/auth/token" >"$log/$measure-r$round-$i.txt" &
      else
        wrk -t1 -c"$c" -d"${SECONDS_PER_RUN}s" -H "x-api-key: $KEY" "$addr/api/v1/keys" >"$log/$measure-r$round-$i.txt" &
      fi
      wrks+=($!)
    done
    wait "${wrks[@]}"
    for j in $(seq "$n"); do
      total=$(awk -v a="$total" -v b="$(rate "$log/$measure-r$round-$j.txt")" 'BEGIN{print a+b}')
      [ -z "$(non2xx "$log/$measure-r$round-$j.txt")" ] || bad=1
    done
    printf '%-9s %-14s r%s %8.0f req/s%s\n' "$mode" "$measure" "$round" "$total" \
      "$([ $bad = 0 ] || echo '  (non-2xx!)')" | tee -a "$log/summary.txt"
    [ $bad = 0 ] || exit 3
    printf '%s\t%s\t%s\t%.0f\n' "$mode" "$measure" "$round" "$total" >>"$RESULTS"
  }

  echo "== $mode: $replicas replica(s) on $(sed 's#://[^@]*@#://#' <<<"$store_url") (wrk -c$CONC in all, ${SECONDS_PER_RUN}s)" | tee -a "$OUT/summary.txt"
  start A
  KEY=$(grep -o 'kg_[A-Za-z0-9_-]*' "$log/server-A.out" | head -1)
  [ -n "$KEY" ] || { echo "$mode: no bootstrap key" >&2; exit 1; }
  local addrs=("$ADDR_A")
  if [ "$replicas" = 2 ]; then
    start B
    for _ in $(seq 100); do curl -fsS -o /dev/null -H "x-api-key: $KEY" "$ADDR_B/api/v1/keys" && break; sleep 0.1; done
    addrs+=("$ADDR_B")
  fi
  for r in $(seq "$ROUNDS"); do
    load custom_token custom "$r" "${addrs[@]}"
    load get_keys get "$r" "${addrs[@]}"
  done
  if [ "$replicas" = 2 ]; then
    local prop
    prop=$(python3 ci/bench/propagation.py "$ADDR_A" "$ADDR_B" "$KEY" "$REVOCATIONS" "$PROP_WORKERS")
    echo "$mode propagation A -> B: $prop" | tee -a "$log/summary.txt"
    python3 - "$mode" "$prop" >>"$RESULTS" <<'PY'
import json, sys
mode, p = sys.argv[1], json.loads(sys.argv[2])
for k in ("count", "p50_ms", "p99_ms", "max_ms", "errors"):
    print(f"{mode}\tpropagation_{k}\t1\t{p[k]}")
PY
  fi
)

for m in "${MODES[@]}"; do
  run_mode "$m"
done

# One table: median over rounds for the rates, propagation where measured.
python3 - "$RESULTS" "${MODES[@]}" <<'PY' | tee -a "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def get(mode, measure):
    v = [r["value"] for r in rows if r["mode"] == mode and r["measure"] == measure]
    return v
def rate(mode, measure):
    v = [float(x) for x in get(mode, measure)]
    return f"{statistics.median(v):.0f}" if v else "-"
def one(mode, measure):
    v = get(mode, measure)
    return v[0] if v and v[0] != "None" else "-"
head = ["mode", "custom_token req/s", "GET /keys req/s", "revocations", "p50 ms", "p99 ms", "max ms", "errors"]
print()
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for m in sys.argv[2:]:
    cells = [m, rate(m, "custom_token"), rate(m, "get_keys"), one(m, "propagation_count"),
             one(m, "propagation_p50_ms"), one(m, "propagation_p99_ms"),
             one(m, "propagation_max_ms"), one(m, "propagation_errors")]
    print("| " + " | ".join(cells) + " |")
PY
echo "results in $OUT"
