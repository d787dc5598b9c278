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
# Results go to stdout and to $OUT (default /tmp/keygate-bench/<UTC time>/).
# Knobs: SECONDS_PER_RUN (10, per wrk run) CONC (32) THREADS (2, wrk) ROUNDS (3, HTTP)
#        BENCH_SECONDS (3) BENCH_ROUNDS (5) for `keygate bench`
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh wrk
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONC=${CONC:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-3}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
OUT=${OUT:-/tmp/keygate-bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/keygate
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

# http_runs LABEL [ENV=VALUE...]: starts the server with the given environment, then
# alternates /healthz and authenticated /api/v1/keys for $ROUNDS rounds.
http_runs() {
  local label=$1; shift
  env "$@" RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --insecure-http --listen 127.0.0.1:0 >"$OUT/server-$label.out" 2>"$OUT/server-$label.err" &
  SERVER=$!
  for _ in $(seq 100); do grep -q "listening on" "$OUT/server-$label.out" && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/^keygate listening on //p' "$OUT/server-$label.out")
  [ -n "$addr" ] || { echo "server did not start" >&2; cat "$OUT/server-$label.err" >&2; exit 1; }
  curl -fsS -o /dev/null -H "x-api-key: $KEY" "$addr/api/v1/keys" || { echo "authenticated request failed" >&2; exit 1; }
  for r in $(seq "$ROUNDS"); do
    wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency "$addr/healthz" >"$OUT/$label-healthz-$r.txt"
    wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -H "x-api-key: $KEY" "$addr/api/v1/keys" >"$OUT/$label-keys-$r.txt"
    local h k bad
    h=$(rate "$OUT/$label-healthz-$r.txt"); k=$(rate "$OUT/$label-keys-$r.txt")
    bad=$(non2xx "$OUT/$label-keys-$r.txt")
    printf '%-22s round %s: /healthz %8.0f req/s   /api/v1/keys %8.0f req/s (p99 %s)   ratio %.2f   non-2xx %s\n' \
      "$label" "$r" "$h" "$k" "$(p99 "$OUT/$label-keys-$r.txt")" "$(awk -v a="$k" -v b="$h" 'BEGIN{print a/b}')" "${bad:-0}" | tee -a "$OUT/summary.txt"
    [ -z "$bad" ] || { echo "errors during load" >&2; exit 3; }
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
}

# Default: the hardware MAC of a secret that authenticated is remembered for 60 s.
http_runs verify-cache-60s
# Every request computes HMAC(secret) in the token: the hardware-bound figure.
http_runs hardware-mac-per-req KEYGATE__API_KEYS__VERIFY_CACHE_TTL=0s
# token_runs: custom tokens, the signing service and JWT introspection, $ROUNDS rounds.
token_runs() {
  RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --insecure-http --listen 127.0.0.1:0 >"$OUT/server-tokens.out" 2>"$OUT/server-tokens.err" &
  SERVER=$!
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
  for r in $(seq "$ROUNDS"); do
    WRK_KEY=$KEY WRK_CTYPE=application/x-www-form-urlencoded WRK_BODY="grant_type=custom_token&subject=svc&expires_in=300" \
      wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -s ci/bench/post.lua "$addr/api/v1/auth/token" >"$OUT/custom-$r.txt"
    WRK_KEY=$KEY WRK_CTYPE=application/json WRK_BODY="$sign_body" \
      wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -s ci/bench/post.lua "$addr/api/v1/keys/bench-sign/sign" >"$OUT/sign-$r.txt"
    WRK_KEY=$KEY WRK_CTYPE=application/x-www-form-urlencoded WRK_BODY="token=$jwt" \
      wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_PER_RUN}s" --latency -s ci/bench/post.lua "$addr/api/v1/auth/introspect" >"$OUT/introspect-$r.txt"
    for kind in custom sign introspect; do
      local bad
      bad=$(non2xx "$OUT/$kind-$r.txt")
      printf 'tokens round %s: %-10s %8.0f req/s (p99 %s)  non-2xx %s\n' "$r" "$kind" \
        "$(rate "$OUT/$kind-$r.txt")" "$(p99 "$OUT/$kind-$r.txt")" "${bad:-0}" | tee -a "$OUT/summary.txt"
      [ -z "$bad" ] || { echo "errors during load ($kind)" >&2; exit 3; }
    done
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  # Medians against the raw ceilings printed by `keygate bench` above.
  local sign_raw verify_raw1 verify_raw2
  sign_raw=$(awk '/^ES256 sign/ {print ($3 > $4 ? $3 : $4)}' "$OUT/summary.txt")
  verify_raw1=$(awk '/^P-256 verify/ {print $3}' "$OUT/summary.txt")
  verify_raw2=$(awk '/^P-256 verify/ {print $4}' "$OUT/summary.txt")
  med() { for r in $(seq "$ROUNDS"); do rate "$OUT/$1-$r.txt"; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  {
    echo "== tokens over HTTP (medians of $ROUNDS) vs raw ceilings from this run"
    printf 'custom_token  %8.0f req/s = %3.0f%% of raw SoftHSM ES256 sign (%.0f/s, best of 1-2 threads; target 60%%)\n' \
      "$(med custom)" "$(awk -v a="$(med custom)" -v b="$sign_raw" 'BEGIN{print 100*a/b}')" "$sign_raw"
    printf 'sign service  %8.0f req/s = %3.0f%% of raw SoftHSM ES256 sign (target 60%%)\n' \
      "$(med sign)" "$(awk -v a="$(med sign)" -v b="$sign_raw" 'BEGIN{print 100*a/b}')"
    printf 'introspect    %8.0f req/s = %3.0f%% of raw P-256 verify on 2 threads (%.0f/s; target 50%%), %3.0f%% of 1 thread (%.0f/s)\n' \
      "$(med introspect)" "$(awk -v a="$(med introspect)" -v b="$verify_raw2" 'BEGIN{print 100*a/b}')" "$verify_raw2" \
      "$(awk -v a="$(med introspect)" -v b="$verify_raw1" 'BEGIN{print 100*a/b}')" "$verify_raw1"
  } | tee -a "$OUT/summary.txt"
}

token_runs
echo "results in $OUT"
