#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite against real
# SoftHSM tokens. Safe to run again; installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== src/store/dispatch.rs is up to date (ci/gen-store-dispatch.py)"
python3 ci/gen-store-dispatch.py --check
echo "== cargo test"
cargo test --all-targets
echo "== integration tests on PostgreSQL (ci/pg.sh: a throwaway cluster; docs/deployment.md#ci)"
# Tests that open the SQLite file or run CLI commands on the dev layout's SQLite store,
# and the in-process hardware suites, which use no store, are not run twice.
KEYGATE_TEST_REQUIRE_PG=1 ./ci/pg.sh cargo test --test keygate -- $(./ci/pg-skips.sh)
echo "== Debian package (ci/package-test.sh, with the dev binary the tests built)"
KEYGATE_BIN=target/debug/keygate ./ci/package-test.sh
echo "== console browser suite (ci/console-test.sh: Playwright + Debian chromium)"
./ci/console-test.sh
echo "== schemathesis (API conformance, bounded)"
./ci/schemathesis.sh
echo "== ci/crash.sh (crash loops, bounded to 3 minutes)"
./ci/crash.sh
