#!/usr/bin/env bash
# keygate's benchmarks, in one run on one machine:
#   1. `keygate bench`: raw SoftHSM sign/HMAC rates (1 and 2 threads, own sessions) against
#      the same operations through keygate's hardware pool.
#   2. HTTP: wrk against GET /healthz and against authenticated GET /api/v1/keys (API key in
#      x-api-key) on the same release server.
#   (These runs use plain HTTP on loopback, `--insecure-http`, so they measure keygate and
#   not TLS; TLS handshakes are measured by ci/bench-tls.sh.)
#   3. Tokens over HTTP: custom-token issuance, the signing service and introspection of a
#      keygate JWT, each beside the raw ceiling from step 1 (SoftHSM ES256 sign, aws-lc-rs
#      P-256 verify).
#   4. CPU per operation: the server's user+sys time (/proc/<pid>/stat) over each wrk run,
#      divided by the requests it completed, beside `keygate bench`'s CPU per raw hardware
#      operation; overhead = (server CPU per request - raw CPU per op) / raw CPU per op.
#   5. Latency at a fixed offered load: `keygate bench --load` (open loop, paced) at
#      LOAD_FRACTION of each token path's measured median rate, p50/p99.
# Results go to stdout and to $OUT (default /tmp/keygate-bench/<UTC time>/).
# Knobs: SECONDS_PER_RUN (10, per wrk run) CONC (32) THREADS (2, wrk) ROUNDS (3, HTTP)
#        BENCH_SECONDS (3) BENCH_ROUNDS (5) for `keygate bench`
#        LAT_SECONDS (10, per open-loop run) LOAD_FRACTION (0.5)
#        SKIP_API_KEY_RUNS (unset; 1 skips step 2, for a quicker token-only run)
#        KEYGATE_BIN (unset: build and use target/release/keygate)
#        NO_RAISED_LIMITS (unset; 1 for a binary older than the `limits` section, which
#        refuses the unknown key and has no quotas to raise)
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh wrk
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONC=${CONC:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-3}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
LAT_SECONDS=${LAT_SECONDS:-10}
LOAD_FRACTION=${LOAD_FRACTION:-0.5}
CLK_TCK=$(getconf CLK_TCK)
# One benchmark key and one ring carry all the load: the default per-credential and
# per-ring quotas (10,000/s) would answer 429. The limiters still run on every request;
# only their quotas are raised.
RAISED_LIMITS=(KEYGATE__LIMITS__PER_CREDENTIAL='{ per_minute = 60000000, burst = 1000000 }'
  KEYGATE__LIMITS__PER_RING='{ per_minute = 60000000, burst = 1000000 }')
[ -z "${NO_RAISED_LIMITS:-}" ] || RAISED_LIMITS=()
OUT=${OUT:-/tmp/keygate-bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
if [ -n "${KEYGATE_BIN:-}" ]; then BIN=$KEYGATE_BIN; else cargo build --release --quiet; BIN=target/release/keygate; fi
DATA=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" | tee "$OUT/summary.txt"
echo "== keygate bench (hardware pool vs raw cryptoki)" | tee -a "$OUT/summary.txt"
# Create the dev layout, then stop: two processes must not share one SoftHSM token dir.
"$BIN" --data-dir "$DATA" serve --dev --insecure-http --listen 127.0.0.1:0 >"$OUT/server-init.out" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$OUT/server-init.out" && break; sleep 0.1; done
KEY=$(grep -o 'kg_[A-Za-z0-9_-]*' "$OUT/server-init.out" | head -1)
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
"$BIN" --data-dir "$DATA" bench --seconds "$BENCH_SECONDS" --rounds "$BENCH_ROUNDS" --concurrency "$CONC" | tee -a "$OUT/summary.txt"

echo "== HTTP (wrk -t$THREADS -c$CONC -d${SECONDS_PER_RUN}s, keep-alive, loopback)" | tee -a "$OUT/summary.txt"
rate() { awk '/Requests\/sec/ {print $2}' "$1"; }
non2xx() { awk '/Non-2xx/ {print $5}' "$1"; }
p99() { awk '/ 99%/ {print $2}' "$1"; }
# The server's user+sys CPU, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
# measured OUT CMD...: runs a wrk command with stdout to OUT and writes the server's CPU
# microseconds per completed request to OUT.cpu.
measured() {
  local out=$1; shift
  local c0 c1 n
  c0=$(cpu_ticks)
  "$@" >"$out"
  c1=$(cpu_ticks)
  n=$(awk '/requests in/ {print $1}' "$out")
  awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f\n", (b-a)*1e6/hz/n}' >"$out.cpu"
}
cpu() { cat "$1.cpu"; }

# http_runs LABEL [ENV=VALUE...]: starts the server with the given environment, then
# alternates /healthz and authenticated /api/v1/keys for $ROUNDS rounds.
http_runs() {
  local label=$1; shift
  env "${RAISED_LIMITS[@]}" "$@" RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --insecure-http --listen 127.0.0.1:0 >"$OUT/server-$label.out" 2>"$OUT/server-$label.err" &
  SERVER=$!
  for _ in $(seq 100); do grep -q "listening on" "$OUT/server-$label.out" && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/^keygate listening on //p' "$OUT/server-$label.out")
  [ -n "$addr" ] || { echo "server did not start" >&2; cat "$OUT/server-$label.err" >&2; exit 1; }
  curl -fsS -o /dev/null -H "x-api-key: $KEY" "$addr/api/v1/keys" || { echo "authenticated request failed" >&2; exit 1; }
  for r in $(seq "$ROUNDS"); do
    measured "$OUT/$label-healthz-$r.txt" wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency "$addr/healthz"
    measured "$OUT/$label-keys-$r.txt" wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -H "x-api-key: $KEY" "$addr/api/v1/keys"
    local h k bad
    h=$(rate "$OUT/$label-healthz-$r.txt"); k=$(rate "$OUT/$label-keys-$r.txt")
    bad=$(non2xx "$OUT/$label-keys-$r.txt")
    printf '%-22s round %s: /healthz %8.0f req/s (%s us CPU/req)   /api/v1/keys %8.0f req/s (p99 %s, %s us CPU/req)   ratio %.2f   non-2xx %s\n' \
      "$label" "$r" "$h" "$(cpu "$OUT/$label-healthz-$r.txt")" "$k" "$(p99 "$OUT/$label-keys-$r.txt")" "$(cpu "$OUT/$label-keys-$r.txt")" \
      "$(awk -v a="$k" -v b="$h" 'BEGIN{print a/b}')" "${bad:-0}" | tee -a "$OUT/summary.txt"
    [ -z "$bad" ] || { echo "errors during load" >&2; exit 3; }
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
}

if [ -z "${SKIP_API_KEY_RUNS:-}" ]; then
  # Default: the hardware MAC of a secret that authenticated is remembered for 60 s.
  http_runs verify-cache-60s
  # Every request computes HMAC(secret) in the token: the hardware-bound figure.
  http_runs hardware-mac-per-req KEYGATE__API_KEYS__VERIFY_CACHE_TTL=0s
fi
# token_runs: custom tokens, the signing service and JWT introspection, $ROUNDS rounds.
token_runs() {
  env "${RAISED_LIMITS[@]}" RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --insecure-http --listen 127.0.0.1:0 >"$OUT/server-tokens.out" 2>"$OUT/server-tokens.err" &
  SERVER=$!
  echo "$SERVER" >"$OUT/server-tokens.pid"
  for _ in $(seq 100); do grep -q "listening on" "$OUT/server-tokens.out" && break; sleep 0.1; done
  local addr jwt
  addr=$(sed -n 's/^keygate listening on //p' "$OUT/server-tokens.out")
  [ -n "$addr" ] || { echo "server did not start" >&2; cat "$OUT/server-tokens.err" >&2; exit 1; }
  jwt=$(curl -fsS -H "x-api-key: $KEY" -d grant_type=custom_token -d subject=bench -d expires_in=3600 \
        "$addr/api/v1/auth/token" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
  [ -n "$jwt" ] || { echo "could not get a custom token" >&2; exit 1; }
  local sign_body='{"claims":{"sub":"device-1"},"audience":"https://gateway.example"}'
  # The signing service never signs with the access-token ring (jwt-default): a ring of
  # its own, ES256 on the same token, so the figure stays comparable.
  curl -fsS -o /dev/null -H "x-api-key: $KEY" -H 'content-type: application/json' \
    -d '{"ring":"bench-sign","algorithm":"ES256"}' "$addr/api/v1/keys" 2>/dev/null \
    || curl -fsS -o /dev/null -H "x-api-key: $KEY" "$addr/api/v1/keys" # exists from an earlier round
  declare -A TOKEN_PATH=([custom]=/api/v1/auth/token [sign]=/api/v1/keys/bench-sign/sign [introspect]=/api/v1/auth/introspect)
  declare -A TOKEN_CTYPE=([custom]=application/x-www-form-urlencoded [sign]=application/json [introspect]=application/x-www-form-urlencoded)
  declare -A TOKEN_BODY=([custom]="grant_type=custom_token&subject=svc&expires_in=300" [sign]="$sign_body" [introspect]="token=$jwt")
  med() { for r in $(seq "$ROUNDS"); do rate "$OUT/$1-$r.txt"; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  medcpu() { for r in $(seq "$ROUNDS"); do cpu "$OUT/$1-$r.txt"; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  for r in $(seq "$ROUNDS"); do
    for kind in custom sign introspect; do
      local url ctype body
      url=$addr${TOKEN_PATH[$kind]}; ctype=${TOKEN_CTYPE[$kind]}; body=${TOKEN_BODY[$kind]}
      measured "$OUT/$kind-$r.txt" env WRK_KEY="$KEY" WRK_CTYPE="$ctype" WRK_BODY="$body" \
        wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -s ci/bench/post.lua "$url"
      local bad
      bad=$(non2xx "$OUT/$kind-$r.txt")
      printf 'tokens round %s: %-10s %8.0f req/s (p99 %s, %s us CPU/req)  non-2xx %s\n' "$r" "$kind" \
        "$(rate "$OUT/$kind-$r.txt")" "$(p99 "$OUT/$kind-$r.txt")" "$(cpu "$OUT/$kind-$r.txt")" "${bad:-0}" | tee -a "$OUT/summary.txt"
      [ -z "$bad" ] || { echo "errors during load ($kind)" >&2; exit 3; }
    done
  done
  # Latency at a fixed offered load: LOAD_FRACTION of each path's median rate, open loop.
  for kind in custom sign introspect; do
    local offered
    offered=$(awk -v a="$(med "$kind")" -v f="$LOAD_FRACTION" 'BEGIN{printf "%.0f", a*f}')
    "$BIN" --data-dir "$DATA" bench --load "$addr${TOKEN_PATH[$kind]}" --rate "$offered" \
      --seconds "$LAT_SECONDS" --concurrency "$CONC" --header "x-api-key: $KEY" \
      --header "content-type: ${TOKEN_CTYPE[$kind]}" --body "${TOKEN_BODY[$kind]}" >"$OUT/$kind-open-loop.txt"
    printf 'open loop %-10s %s\n' "$kind" "$(cat "$OUT/$kind-open-loop.txt")" | tee -a "$OUT/summary.txt"
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  # Medians against the raw ceilings printed by `keygate bench` above.
  local sign_raw verify_raw1 verify_raw2
  sign_raw=$(awk '/^ES256 sign/ {print ($3 > $4 ? $3 : $4)}' "$OUT/summary.txt")
  verify_raw1=$(awk '/^P-256 verify/ {print $3}' "$OUT/summary.txt")
  verify_raw2=$(awk '/^P-256 verify/ {print $4}' "$OUT/summary.txt")
  local sign_cpu verify_cpu
  sign_cpu=$(awk '$1 == "cpu" && $2 == "ES256-sign" {print $3}' "$OUT/summary.txt")
  verify_cpu=$(awk '$1 == "cpu" && $2 == "P-256-verify" {print $3}' "$OUT/summary.txt")
  overhead() { awk -v s="$1" -v r="$2" 'BEGIN{printf "%.0f", 100*(s-r)/r}'; }
  {
    echo "== tokens over HTTP (medians of $ROUNDS) vs raw ceilings from this run"
    printf 'custom_token  %8.0f req/s = %3.0f%% of raw SoftHSM ES256 sign (%.0f/s, best of 1-2 threads; target 60%%)\n' \
      "$(med custom)" "$(awk -v a="$(med custom)" -v b="$sign_raw" 'BEGIN{print 100*a/b}')" "$sign_raw"
    printf 'sign service  %8.0f req/s = %3.0f%% of raw SoftHSM ES256 sign (target 60%%)\n' \
      "$(med sign)" "$(awk -v a="$(med sign)" -v b="$sign_raw" 'BEGIN{print 100*a/b}')"
    printf 'introspect    %8.0f req/s = %3.0f%% of raw P-256 verify on 2 threads (%.0f/s; target 50%%), %3.0f%% of 1 thread (%.0f/s)\n' \
      "$(med introspect)" "$(awk -v a="$(med introspect)" -v b="$verify_raw2" 'BEGIN{print 100*a/b}')" "$verify_raw2" \
      "$(awk -v a="$(med introspect)" -v b="$verify_raw1" 'BEGIN{print 100*a/b}')" "$verify_raw1"
    echo "== CPU per operation (server user+sys per completed request, medians of $ROUNDS) vs raw CPU per op (1 thread)"
    printf 'custom_token  %6.1f us/req   raw ES256 sign %5.1f us/op   overhead %4s%% (target <= 35%%)\n' \
      "$(medcpu custom)" "$sign_cpu" "$(overhead "$(medcpu custom)" "$sign_cpu")"
    printf 'sign service  %6.1f us/req   raw ES256 sign %5.1f us/op   overhead %4s%% (target <= 35%%)\n' \
      "$(medcpu sign)" "$sign_cpu" "$(overhead "$(medcpu sign)" "$sign_cpu")"
    printf 'introspect    %6.1f us/req   raw P-256 verify %5.1f us/op overhead %4s%% (target <= 50%%)\n' \
      "$(medcpu introspect)" "$verify_cpu" "$(overhead "$(medcpu introspect)" "$verify_cpu")"
  } | tee -a "$OUT/summary.txt"
}

token_runs
echo "results in $OUT"
