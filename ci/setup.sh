#!/usr/bin/env bash
# Installs what keygate's build, tests and dev server need on Debian. Idempotent: installs
# only missing packages, and runs `apt-get update` only when something is missing.
set -euo pipefail

# procps: the tests stop servers with `kill`.
# python3-jwt, python3-cryptography: the interoperability test verifies keygate's tokens
# with PyJWT, a JOSE library nobody here wrote.
# libtss2-dev, pkg-config: tss-esapi links tpm2-tss 3.2; swtpm, swtpm-tools and the swtpm
# TCTI: the TPM 2.0 simulator the TPM backend's tests run against.
# tpm2-tools: the attestation test parses TPMS_ATTEST with tpm2_print (a tool nobody here wrote).
# openssl: the TLS tests verify and sign keygate's hardware-signed CSR with it.
# dpkg-dev (dpkg-shlibdeps), binutils (strip), adduser and systemd (systemd-analyze): the
# Debian package and its tests (ci/package.sh, ci/package-test.sh).
# python3-venv: ci/schemathesis.sh installs Schemathesis into a venv under target/.
# postgresql: ci/pg.sh runs the tests against a throwaway cluster (initdb, pg_ctl); the
# package's own service is not used.
# chromium: the console's browser tests (ci/console-test.sh) drive Debian's Chromium with
# Playwright; `playwright install` is never run.
# libfaketime: the multi-replica suite drives the replicas' wall clocks past a rotation
# period (tests/common/cluster.rs, DrivenClock).
packages=(softhsm2 opensc sqlite3 curl ca-certificates procps python3 python3-jwt python3-cryptography
  openssl libtss2-dev pkg-config swtpm swtpm-tools libtss2-tcti-swtpm0
  dpkg-dev binutils adduser systemd python3-venv tpm2-tools postgresql chromium libfaketime "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -f /usr/lib/softhsm/libsofthsm2.so ] || { echo "ci/setup.sh: SoftHSM module missing after install" >&2; exit 1; }
command -v swtpm >/dev/null || { echo "ci/setup.sh: swtpm missing after install" >&2; exit 1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "ci/setup.sh: PostgreSQL initdb missing after install" >&2; exit 1; }
