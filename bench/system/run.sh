#!/usr/bin/env bash
# `make bench-system`: the whole system under load, and the database's ceiling, in one run.
#
# 1. Builds the services and the driver (release).
# 2. The ceiling: pgbench runs bench/system/call.pgbench — the statements one call makes,
#    transaction by transaction, read from services/calls-api/src/store — against a fresh
#    database with the calls-api schema on the same Postgres: call lifecycles per second.
# 3. Starts the scaled topology (scripts/cluster.sh: gateway, 2 calls-api, 2 signaling,
#    media-token, notifier) from target/release on a fresh database and NATS subject prefix.
# 4. bench-system (bench/system/src) connects BENCH_USERS users with real sockets through the
#    gateway and starts calls at each rate of BENCH_RATES for BENCH_STEP_SECONDS, and prints per
#    step: setups/s, latencies, errors by code, CPU per call per service, database work per call.
# 5. With BENCH_PROFILE=1, `perf record` samples the services and Postgres during the last step
#    and the hottest symbols are printed (installs Debian's linux-perf if missing; needs root).
#
# A benchmark, not a test: it prints numbers and never fails on them. The machine is shared,
# so every number is printed with the load average.
#
# Knobs: BENCH_USERS (2000), BENCH_RATES ("25,50,100,200" calls/s), BENCH_STEP_SECONDS (30),
# BENCH_GROUP_PERCENT (10), BENCH_PGBENCH_CLIENTS (20, the two calls-api pools),
# BENCH_PGBENCH_SECONDS (20), BENCH_PROFILE (0), BENCH_QUICK=1 (200 users, "10,20", 10 s steps).
# Needs Postgres (CALLS_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres)
# and NATS with JetStream (NATS_URL, default nats://127.0.0.1:4222).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  : "${BENCH_USERS:=200}" "${BENCH_RATES:=10,20}" "${BENCH_STEP_SECONDS:=10}" "${BENCH_PGBENCH_SECONDS:=10}"
fi
export BENCH_USERS=${BENCH_USERS:-2000}
export BENCH_RATES=${BENCH_RATES:-25,50,100,200}
export BENCH_STEP_SECONDS=${BENCH_STEP_SECONDS:-30}
PGBENCH_CLIENTS=${BENCH_PGBENCH_CLIENTS:-20}
PGBENCH_SECONDS=${BENCH_PGBENCH_SECONDS:-20}
PG_ADMIN=${CALLS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
OUT=target/bench-system
mkdir -p "$OUT"

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
if ! command -v pgbench >/dev/null || ! command -v psql >/dev/null; then
  echo "bench-system: installing pgbench (postgresql-client)" >&2
  as_root apt-get install -y -qq postgresql-client >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq postgresql-client >/dev/null; }
fi
if [[ ${BENCH_PROFILE:-0} == 1 ]] && ! command -v perf >/dev/null; then
  echo "bench-system: installing perf (linux-perf)" >&2
  as_root apt-get install -y -qq linux-perf >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq linux-perf >/dev/null; }
fi

echo "bench-system: building (release) ..." >&2
cargo build --release --quiet -p calls-api -p signaling -p gateway -p media-token -p notifier -p bench-system --bins
BIN=target/release
ulimit -n "$(ulimit -Hn)"

stamp="$$x$(date +%s)"
bench_db=calls_bench_$stamp
pgbench_db=calls_pgbench_$stamp
db_url() { echo "${PG_ADMIN%/*}/$1"; }
prefix=bench${stamp}
logs=$(mktemp -d -t calls-bench-system.XXXXXX)
cluster=
cleanup() {
  if [[ -n $cluster ]]; then kill -TERM "$cluster" 2>/dev/null || true; wait "$cluster" 2>/dev/null || true; fi
  for db in "$bench_db" "$pgbench_db"; do psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true; done
  # The event stream goes with its prefix (JetStream API request over the plain protocol).
  python3 - "$NATS_URL" "CALLS_EVENTS_${prefix^^}" <<'PY' || true
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1].split(',')[0])
s = socket.create_connection((u.hostname or '127.0.0.1', u.port or 4222), timeout=5)
s.recv(4096)
s.sendall(f"CONNECT {{\"verbose\":false}}\r\nPUB $JS.API.STREAM.DELETE.{sys.argv[2]} 0\r\n\r\nPING\r\n".encode())
s.recv(4096)
s.close()
PY
  rm -rf "$logs"
}
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- the ceiling: one whole call's statements per pgbench transaction ----
psql "$PG_ADMIN" -qc "CREATE DATABASE \"$pgbench_db\"" >/dev/null
DATABASE_URL=$(db_url "$pgbench_db") "$BIN/calls-api" migrate >"$logs/migrate-pgbench.log" 2>&1
# notifier migrates at start; its ring and webhook tables are applied directly here.
for f in services/notifier/migrations/postgres/*.sql; do psql -q "$(db_url "$pgbench_db")" -f "$f" >/dev/null; done
echo "bench-system: pgbench ceiling ($PGBENCH_CLIENTS clients, ${PGBENCH_SECONDS} s, load $(load)) ..." >&2
pgbench -n -M prepared -c "$PGBENCH_CLIENTS" -j 2 -T "$PGBENCH_SECONDS" -f bench/system/call.pgbench "$(db_url "$pgbench_db")" >"$OUT/pgbench.txt" 2>&1 || true
ceiling=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$OUT/pgbench.txt" | head -1)
latency=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$OUT/pgbench.txt" | head -1)
pgbench_load=$(load)
echo "bench-system: pgbench: ${ceiling:-?} call lifecycles/s (average ${latency:-?} ms per lifecycle), load $pgbench_load" >&2
[[ -n $ceiling ]] || { echo "bench-system: pgbench failed:" >&2; tail -20 "$OUT/pgbench.txt" >&2; }
psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS \"$pgbench_db\" WITH (FORCE)" >/dev/null

# ---- the scaled topology ----
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export JWT_SECRET=bench-system-secret-0123456789abcdef
BIN_DIR=$BIN DATABASE_URL=$(db_url "$bench_db") NATS_SUBJECT_PREFIX=$prefix \
  GATEWAY_LISTEN=127.0.0.1:$port GATEWAY_ADMIN_LISTEN=127.0.0.1:$admin_port CLUSTER_LOG_DIR=$logs NOTIFIER_REPLICAS=1 \
  RUST_LOG=warn MEMBERSHIP_MODE=open \
  AGORA_APP_ID=0123456789abcdef0123456789abcdef AGORA_APP_CERTIFICATE=fedcba9876543210fedcba9876543210 \
  RATE_LIMIT_PER_IP_PER_MINUTE=0 RATE_LIMIT_PER_USER_PER_MINUTE=0 RATE_LIMIT_INITIATE_PER_USER_PER_MINUTE=0 \
  SIGNALING_EVENTS_PER_SECOND=1000 SIGNALING_EVENTS_BURST=1000 \
  scripts/cluster.sh 2>"$logs/cluster.err" &
cluster=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && [[ -s $logs/pids ]] && grep -q '^gateway ' "$logs/pids" && break
  kill -0 "$cluster" 2>/dev/null || { echo "bench-system: the cluster did not start:" >&2; cat "$logs/cluster.err" >&2; exit 1; }
  sleep 0.2
done
echo "bench-system: cluster up ($(tr '\n' ' ' <"$logs/pids"))" >&2

# ---- the profile (optional): the last step, services and Postgres ----
profile_pid=
step_file=$OUT/step
rm -f "$step_file" "$step_file.done"
if [[ ${BENCH_PROFILE:-0} == 1 ]]; then
  steps=$(tr ',' '\n' <<<"$BENCH_RATES" | grep -c .)
  # The middle half of the last step: its first quarter lets the rate settle.
  lead=$(python3 -c "print($BENCH_STEP_SECONDS*0.25)")
  span=$(python3 -c "print(max(5, int($BENCH_STEP_SECONDS*0.5)))")
  (
    until [[ $(cat "$step_file" 2>/dev/null) == "$steps" ]]; do
      [[ -e $step_file.done ]] && exit 0 # the driver stopped before the last step
      sleep 0.2
    done
    sleep "$lead"
    # The services and the benchmark database's backends (other databases' come and go).
    pids=$(awk '{print $2}' "$logs/pids" | paste -sd, -),$(psql "$(db_url "$bench_db")" -Atc \
      "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    as_root perf record -F 499 -g -o "$OUT/perf.data" -p "$pids" -- sleep "$span" >"$OUT/perf-record.log" 2>&1
  ) &
  profile_pid=$!
fi

BENCH_BASE_URL=http://127.0.0.1:$port BENCH_DATABASE_URL=$(db_url "$bench_db") BENCH_PIDS_FILE=$logs/pids \
  BENCH_OUT=$OUT/report.json BENCH_STEP_FILE=$step_file "$BIN/bench-system" | tee "$OUT/report.txt"

touch "$step_file.done"
if [[ -n $profile_pid ]]; then
  wait "$profile_pid" || true
  echo; echo "== perf: hottest symbols during the last step (self time, by process) =="
  as_root perf report -i "$OUT/perf.data" --no-children -g none --sort dso --stdio >"$OUT/perf-dso.txt" 2>/dev/null || true
  as_root perf report -i "$OUT/perf.data" --no-children -g none --sort dso,sym --stdio >"$OUT/perf-sym.txt" 2>/dev/null || true
  echo "-- by binary --"; grep '%' "$OUT/perf-dso.txt" | head -15 || true
  echo "-- by symbol --"; grep '%' "$OUT/perf-sym.txt" | head -45 || true
fi

python3 - "$OUT/report.json" "${ceiling:-0}" "$pgbench_load" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
ceiling = float(sys.argv[2] or 0)
best = max(report["steps"], key=lambda s: s["setups_per_second"])
print()
print("== summary ==")
print(f"pgbench ceiling: {ceiling:.0f} call lifecycles/s (load {sys.argv[3]})")
for s in report["steps"]:
    frac = s["setups_per_second"] / ceiling if ceiling else float("nan")
    ring = s["ring"]["p99_ms"]
    print(f"step {s['step']}: target {s['target_rate']:g}/s -> {s['setups_per_second']:.1f} setups/s "
          f"({frac:.0%} of the ceiling), ring p99 {ring if ring is not None else '-'} ms, "
          f"errors {sum(s['errors'].values())}, machine {s['machine_busy']:.0%} busy, load {s['load_average']:.2f}")
print(f"best: {best['setups_per_second']:.1f} setups/s = {best['setups_per_second']/ceiling:.0%} of the pgbench ceiling" if ceiling else "")
PY
