#!/usr/bin/env bash
# Runs keygate on its embedded default: SQLite plus a SoftHSM dev token, both created under
# ./var on first start. It serves HTTPS with a dev identity whose key is in the dev token
# (self-signed certificate at ./var/tls/cert.pem, for curl's --cacert). Prints the URL,
# where everything is, and (first start only) a bootstrap super-admin API key. Extra
# arguments go to `keygate serve` (e.g. --config keygate.toml, or --insecure-http for
# plain HTTP on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh
exec cargo run --release --quiet -- serve --dev "$@"
