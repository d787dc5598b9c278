#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each, and prints
# the executions per target and in total. Needs a nightly toolchain and cargo-fuzz
# (`rustup toolchain install nightly`, `cargo install cargo-fuzz`); without them it says
# so and exits 0, since the corpora are replayed on stable by ./ci/test.sh anyway.
# New inputs go to fuzz/corpus-new/<target> (not committed). A crash fails the script;
# libFuzzer leaves the input in fuzz/artifacts/<target>/.
# Knobs: FUZZ_SECONDS (60) FUZZ_TARGETS (all) FUZZ_JOBS (1)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-1}
if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly'; then
  echo "ci/fuzz.sh: no nightly toolchain; skipping (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "ci/fuzz.sh: cargo-fuzz is not installed; skipping (cargo install cargo-fuzz)"
  exit 0
fi
cd fuzz
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
if [ -z "${FUZZ_TARGETS:-}" ]; then
  cargo +nightly fuzz build >/dev/null
fi
total=0
for t in $targets; do
  mkdir -p "corpus-new/$t"
  log=$(mktemp)
  # The first corpus directory receives new inputs; the committed one is only read.
  if ! cargo +nightly fuzz run "$t" "corpus-new/$t" "corpus/$t" -- \
      -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -jobs="$FUZZ_JOBS" \
      -workers="$FUZZ_JOBS" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    tail -40 "$log"
    echo "ci/fuzz.sh: target $t FAILED; the input is in fuzz/artifacts/$t/"
    exit 1
  fi
  n=$(awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}' "$log")
  echo "$t: $n executions in ${FUZZ_SECONDS}s, no crash"
  total=$((total + n))
  rm -f "$log"
done
echo "total: $total executions"
