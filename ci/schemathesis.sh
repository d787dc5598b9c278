#!/usr/bin/env bash
# API conformance: Schemathesis against /api/v1/openapi.json of a dev server, with the
# bootstrap super-admin key. Checks: no 5xx, every response matches its documented
# schema and content type, every 4xx is problem+json (ci/schemathesis_hooks.py).
# Bounded by ST_SECONDS (default 120) of generation, so it adds at most ~3 minutes.
# Python tools live in a venv under target/ (schemathesis pinned below).
#
# The server runs with [limits] rate limits off (enabled = false): the run sends
# thousands of failing requests from one address, and 429s would only hide the
# endpoints behind them. Three operations are left out because a super-admin key
# calling them with ids it learned would delete, demote or replace the very key the run
# uses: DELETE/PATCH /api/v1/api-keys/{id} and POST /api/v1/api-keys/{id}/regenerate
# (tests/api_keys.rs covers them).
set -euo pipefail
cd "$(dirname "$0")/.."
ST_SECONDS=${ST_SECONDS:-120}
VENV=target/schemathesis-venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==4.32.5"
fi
BIN=${KEYGATE_BIN:-target/debug/keygate}
[ -x "$BIN" ] || cargo build --quiet
DATA=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
KEYGATE__LIMITS__ENABLED=false RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --dev --insecure-http \
  --listen 127.0.0.1:0 >"$DATA/out" 2>"$DATA/err" &
SERVER=$!
for _ in $(seq 300); do grep -q "listening on" "$DATA/out" && break; sleep 0.2; done
BASE=$(sed -n 's/^keygate listening on //p' "$DATA/out")
KEY=$(grep -o 'kg_[A-Za-z0-9_-]*' "$DATA/out" | head -1)
[ -n "$BASE" ] && [ -n "$KEY" ] || { cat "$DATA/err"; echo "server did not start"; exit 1; }
set +e
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=ci "$VENV/bin/schemathesis" \
  --config-file ci/schemathesis.toml run "$BASE/api/v1/openapi.json" \
  -H "x-api-key: $KEY" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,client_errors_are_problem_json \
  --exclude-name 'DELETE /api/v1/api-keys/{id}' --exclude-name 'PATCH /api/v1/api-keys/{id}' \
  --exclude-name 'POST /api/v1/api-keys/{id}/regenerate' \
  --phases examples,coverage,fuzzing --max-time "$ST_SECONDS" -w 2 --no-color \
  --report junit --report-dir "$DATA/report" >"$DATA/st.log" 2>&1
status=$?
set -e
sed -n '/SUMMARY/,$p' "$DATA/st.log"
# Fail on check failures. Internal errors of the generator itself (a known CPython 3.11
# AST recursion error inside hypothesis) are reported but do not fail the run.
# (grep finds nothing on a clean run; that must not end the script under pipefail.)
failures=$( (grep -o '<failure' "$DATA"/report/*.xml 2>/dev/null || true) | wc -l)
if [ "$failures" -gt 0 ]; then
  sed -n '/FAILURES/,/SUMMARY/p' "$DATA/st.log" | head -200
  echo "schemathesis: $failures failing checks"
  exit 1
fi
if grep -q "5xx\|Server error" "$DATA/st.log" && [ "$status" -ne 0 ]; then
  echo "schemathesis: server errors"; exit 1
fi
if grep -qi "error" "$DATA/err"; then
  echo "server log errors:"; grep -i "error" "$DATA/err" | head -20
fi
echo "schemathesis: no failing checks (exit $status)"
