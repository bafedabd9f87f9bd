#!/usr/bin/env bash
# Runs a command with DATABASE_URL pointing at a PostgreSQL server:
#   1. DATABASE_URL as given, if set;
#   2. else the server on 127.0.0.1:5432 (user postgres), if it answers;
#   3. else a throwaway cluster made with the system's initdb, removed after.
# Tests create their own databases on that server and drop them after.
set -euo pipefail

if [[ -n "${DATABASE_URL:-}" ]]; then
  exec "$@"
fi

local_url="postgres://postgres@127.0.0.1:5432/postgres"
if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 -U postgres; then
  DATABASE_URL="$local_url" exec "$@"
fi

pg_bin=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n1)")
if [[ ! -x "$pg_bin/initdb" ]]; then
  echo "with-postgres: no PostgreSQL at 127.0.0.1:5432 and no initdb to start one; set DATABASE_URL" >&2
  exit 1
fi

cluster=$(mktemp -d /tmp/ordermesh-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# initdb refuses to run as root: run the cluster as the postgres user then.
as_owner=()
if [[ $(id -u) == 0 ]]; then
  chown postgres "$cluster"
  as_owner=(runuser -u postgres --)
fi
cleanup() {
  "${as_owner[@]}" "$pg_bin/pg_ctl" -D "$cluster/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$cluster"
}
trap cleanup EXIT
"${as_owner[@]}" "$pg_bin/initdb" -D "$cluster/data" -U postgres --auth=trust >/dev/null
"${as_owner[@]}" "$pg_bin/pg_ctl" -D "$cluster/data" -l "$cluster/log" -w \
  -o "-p $port -k $cluster -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
echo "with-postgres: started a throwaway cluster on 127.0.0.1:$port" >&2
DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres" "$@"
