#!/usr/bin/env bash
# The console's browser suite (docs/console.md): Playwright for Python drives Debian's
# Chromium (/usr/bin/chromium, from ci/setup.sh) against a spawned keygate on a fresh
# SoftHSM token. Python tools live in a venv under target/; `playwright install` is never
# run (it would download a browser). Screenshots land in docs/console/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/console-venv
if [ ! -x "$VENV/bin/pytest" ] || ! "$VENV/bin/python" -c "import playwright, jwt, requests" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet playwright requests "PyJWT[crypto]" pytest
fi
[ -x /usr/bin/chromium ] || { echo "ci/console-test.sh: /usr/bin/chromium missing (run ci/setup.sh)"; exit 1; }
export KEYGATE_BIN=${KEYGATE_BIN:-target/debug/keygate}
[ -x "$KEYGATE_BIN" ] || cargo build --quiet
start=$(date +%s)
"$VENV/bin/pytest" -q -p no:cacheprovider tests/console "$@"
echo "console browser suite: $(( $(date +%s) - start )) s"
