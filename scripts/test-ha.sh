#!/usr/bin/env bash
# `make test-ha`: the high-availability drills (tests/js/ha/drills.mjs) on clustered engines — a
# 3-node NATS cluster and a pg_auto_failover formation, started by the test on free loopback ports
# in temp directories and removed afterwards, whatever happens. Installs what it needs from the
# distribution first: nats-server, and pg_auto_failover for the PostgreSQL the machine has.
# Never touches the shared Postgres (5432) or NATS (4222).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=${BIN_DIR:-target/debug}
[[ $BIN_DIR == /* ]] || BIN_DIR=$PWD/$BIN_DIR
pg_bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
pg_major=$(basename "$(dirname "${pg_bindir:-/usr/lib/postgresql/15/bin}")")

need=()
[[ -x ${NATS_SERVER_BIN:-/usr/sbin/nats-server} ]] || need+=(nats-server)
[[ -n $pg_bindir && -x $pg_bindir/pg_ctl ]] || need+=("postgresql-$pg_major")
command -v pg_autoctl >/dev/null || need+=(pg-auto-failover-cli)
[[ -f /usr/lib/postgresql/$pg_major/lib/pgautofailover.so ]] || need+=("postgresql-$pg_major-auto-failover")
if ((${#need[@]})); then
  echo "test-ha: installing ${need[*]}" >&2
  sudo=
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  pg_bindir=${PG_BINDIR:-/usr/lib/postgresql/$pg_major/bin}
fi

for bin in media-token calls-api signaling gateway; do
  [[ -x $BIN_DIR/$bin ]] || { echo "test-ha: $BIN_DIR/$bin is missing; run 'cargo build --workspace --bins'" >&2; exit 1; }
done

cd tests/js
BIN_DIR=$BIN_DIR PG_BINDIR=$pg_bindir exec node --test --test-reporter=spec --test-timeout=300000 ha/drills.mjs
