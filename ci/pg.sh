#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster, then stops the cluster and
# deletes it, whether the command passed or not:
#     ./ci/pg.sh cargo test --test keygate
# The cluster lives in a temporary directory, owned by an unprivileged user (the calling
# user, or `keygate-ci` when run as root, created if missing), and listens on a free port
# on 127.0.0.1 only. The command sees KEYGATE_TEST_PG_URL (a superuser URL to the
# `postgres` database); the integration tests then give each server they start a fresh
# database (tests/common/server.rs). Nothing outside the temporary directory is used:
# no system PostgreSQL service is assumed or touched.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: ci/pg.sh COMMAND [ARG...]" >&2; exit 2; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || { echo "ci/pg.sh: PostgreSQL is not installed (run ci/setup.sh)" >&2; exit 1; }

as_user=()
if [ "$(id -u)" -eq 0 ]; then
  id keygate-ci >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin keygate-ci
  as_user=(runuser -u keygate-ci --)
fi

dir=$(mktemp -d /tmp/keygate-pg.XXXXXX)
chmod 755 "$dir"
[ ${#as_user[@]} -eq 0 ] || chown keygate-ci "$dir"
stop() {
  "${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_user[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
  --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
# fsync off: a throwaway cluster; keygate's own durability is tested by killing keygate.
# Enough connections for parallel tests, each server holding a pool of 8.
"${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }

export KEYGATE_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "ci/pg.sh: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)" >&2
set +e
"$@"
rc=$?
set -e
exit $rc
