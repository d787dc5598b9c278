#!/usr/bin/env bash
# Runs keygate on its embedded default: SQLite plus a SoftHSM dev token, both created under
# ./var on first start. Prints the URL, where everything is, and (first start only) a
# bootstrap super-admin API key. Extra arguments go to `keygate serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh
exec cargo run --release --quiet -- serve --dev "$@"
