#!/usr/bin/env bash
# Tests the Debian package on this machine (as root): it builds; `dpkg-deb -c` lists the
# expected files; `systemd-analyze verify` accepts the unit and `systemd-analyze security`
# rates it OK or better; `dpkg -i` installs it; the installed keygate passes `config check`
# against a SoftHSM token and serves /healthz when started the way the unit starts it (same
# user, environment, working directory and command line; systemd itself may be absent);
# `dpkg --purge` then removes it cleanly. KEYGATE_BIN as in ci/package.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "package-test: needs root (dpkg -i)" >&2; exit 2; }
if dpkg-query -W -f='${Status}' keygate 2>/dev/null | grep -q installed; then
  echo "package-test: a keygate package is already installed here; not touching it" >&2
  exit 2
fi
DEB=$(./ci/package.sh | tail -1)
echo "package-test: built $DEB ($(du -h "$DEB" | cut -f1))"
WORK=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  if dpkg-query -W -f='${Status}' keygate 2>/dev/null | grep -q installed; then
    rm -rf /var/lib/keygate /etc/keygate/pin
    dpkg --purge keygate >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

dpkg-deb -c "$DEB" >"$WORK/listing"
# cargo-deb writes paths as ./usr/... or usr/... depending on its version.
awk '{p = $6; sub(/^\.\//, "", p); print "./" p}' "$WORK/listing" >"$WORK/contents"
for f in ./usr/bin/keygate ./etc/keygate/keygate.toml ./etc/keygate/softhsm2.conf \
  ./lib/systemd/system/keygate.service ./usr/share/man/man1/keygate.1.gz \
  ./usr/share/doc/keygate/README.md ./usr/share/doc/keygate/deployment.md \
  ./usr/share/doc/keygate/backup.md ./usr/share/doc/keygate/api.md \
  ./usr/share/doc/keygate/examples/tpm.conf; do
  grep -qxF "$f" "$WORK/contents" || fail "the package lacks $f"
done
grep -Eq -- '^-rw-r----- (0/0|root/root) .* (\./)?etc/keygate/keygate.toml$' "$WORK/listing" || fail "keygate.toml is not mode 0640 in the package"
echo "package-test: dpkg-deb -c lists the binary, config, unit, man page and docs"

dpkg -i "$DEB" >/dev/null
[ "$(stat -c '%a %U:%G' /etc/keygate/keygate.toml)" = "640 root:keygate" ] || fail "keygate.toml: $(stat -c '%a %U:%G' /etc/keygate/keygate.toml)"
[ "$(stat -c '%a %U' /var/lib/keygate)" = "750 keygate" ] || fail "/var/lib/keygate: $(stat -c '%a %U' /var/lib/keygate)"
for g in softhsm tss; do
  if getent group "$g" >/dev/null; then id -nG keygate | tr ' ' '\n' | grep -qx "$g" || fail "keygate is not in group $g"; fi
done
man -l /usr/share/man/man1/keygate.1.gz >/dev/null 2>&1 || zcat /usr/share/man/man1/keygate.1.gz | grep -q '^.TH keygate' || fail "bad man page"
echo "package-test: installed; user keygate in $(id -nG keygate | tr ' ' ',')"

UNIT=/lib/systemd/system/keygate.service
systemd-analyze verify --man=no "$UNIT" 2>&1 | tee "$WORK/verify" >&2
[ ! -s "$WORK/verify" ] || fail "systemd-analyze verify complained"
SCORE=$(systemd-analyze security --offline=true "$UNIT" 2>/dev/null | sed -n 's/.*Overall exposure level for keygate.service: //p')
echo "package-test: systemd-analyze verify OK; security: $SCORE"
case "$SCORE" in *OK* | *SAFE*) ;; *) fail "systemd-analyze security rates the unit $SCORE" ;; esac

# A SoftHSM token and PIN, made as the operator would, as the keygate user.
umask 077
PIN=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
SO=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$PIN" >/etc/keygate/pin
chown keygate:keygate /etc/keygate/pin
chmod 0600 /etc/keygate/pin
runuser -u keygate -- env SOFTHSM2_CONF=/etc/keygate/softhsm2.conf \
  softhsm2-util --init-token --free --label keygate --so-pin "$SO" --pin "$PIN" >/dev/null

# The unit's user, environment, working directory and command line.
prop() { sed -n "s/^$1=//p" "$UNIT" | tail -1; }
USER_=$(prop User)
WD=$(prop WorkingDirectory)
ENVS=$(sed -n 's/^Environment=//p' "$UNIT")
EXEC=$(prop ExecStart)
PORT=$((20000 + RANDOM % 20000))
as_unit() { (cd "$WD" && exec setpriv --reuid="$USER_" --regid="$USER_" --init-groups env $ENVS KEYGATE__SERVER__LISTEN="127.0.0.1:$PORT" "$@"); }

as_unit keygate --config /etc/keygate/keygate.toml config check >"$WORK/check" 2>&1 || { cat "$WORK/check" >&2; fail "config check failed"; }
grep -q "backend hsm (pkcs11, token \"keygate\"): module loaded, token found, logged in" "$WORK/check" || { cat "$WORK/check" >&2; fail "config check did not probe the token"; }
echo "package-test: config check passes against the SoftHSM token"
as_unit keygate --config /etc/keygate/keygate.toml tls init --subject CN=localhost --san DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1 || fail "tls init"

# A simple command in the background, exec'ing all the way down: $! is keygate itself.
bash -c 'cd "$1" && shift && exec "$@"' _ "$WD" setpriv --reuid="$USER_" --regid="$USER_" --init-groups \
  env $ENVS KEYGATE__SERVER__LISTEN="127.0.0.1:$PORT" $EXEC >"$WORK/out" 2>"$WORK/err" &
SERVER=$!
for _ in $(seq 300); do grep -qs "listening on" "$WORK/out" && break; kill -0 "$SERVER" 2>/dev/null || break; sleep 0.2; done
grep -qs "keygate listening on https://127.0.0.1:$PORT" "$WORK/out" || { cat "$WORK/out" "$WORK/err" >&2; fail "keygate did not start as the unit starts it"; }
[ "$(ps -o user= -p "$SERVER" | tr -d ' ')" = keygate ] || fail "keygate does not run as the keygate user"
BODY=$(curl -fsS --cacert /var/lib/keygate/tls/cert.pem "https://127.0.0.1:$PORT/healthz") || fail "/healthz"
echo "package-test: /healthz over HTTPS as the keygate user: $BODY"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=

# Purge. The store, tokens and PIN are the operator's to delete (docs/deployment.md); with
# them gone, purge leaves nothing behind.
rm -rf /var/lib/keygate /etc/keygate/pin
dpkg --purge keygate >/dev/null
! dpkg-query -W -f='${Status}' keygate 2>/dev/null | grep -q installed || fail "still installed"
for p in /usr/bin/keygate /etc/keygate /lib/systemd/system/keygate.service /usr/share/doc/keygate /var/lib/keygate; do
  [ ! -e "$p" ] || fail "$p is left after purge"
done
! getent passwd keygate >/dev/null || fail "the keygate user is left after purge"
echo "package-test: purged cleanly"
echo "package-test: OK"
