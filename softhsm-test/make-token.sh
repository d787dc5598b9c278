#!/usr/bin/env bash
# Makes a throwaway SoftHSM token in its own directory, with its own SOFTHSM2_CONF.
#
#   softhsm-test/make-token.sh DIR [LABEL] [USER_PIN] [SO_PIN]
#
# Prints `export SOFTHSM2_CONF=DIR/softhsm2.conf` so a shell can `eval` it. Every test
# process gets its own DIR: two processes sharing one token directory see each other's
# half-written object files and fail intermittently.
set -euo pipefail
dir=${1:?usage: make-token.sh DIR [LABEL] [USER_PIN] [SO_PIN]}
label=${2:-keygate}
pin=${3:-1234}
so_pin=${4:-12345678}
command -v softhsm2-util >/dev/null || { echo "softhsm2-util not found: run ./ci/setup.sh" >&2; exit 1; }
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF=$dir/softhsm2.conf
if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label:[[:space:]]*$label\$"; then
  softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
fi
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
