#!/usr/bin/env bash
# `make cluster`: the scaled topology as separate processes on one machine — the gateway, two
# calls-api, two signaling nodes, one media-token and NOTIFIER_REPLICAS (default 2) notifiers —
# against DATABASE_URL (Postgres) and NATS_URL. Every service reads the same environment
# variables as in production; this script only wires listen addresses and upstream URLs. Access
# tokens are verified with whichever of JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL (with
# JWT_ISSUER) is set; `make cluster` sets a development JWT_SECRET only when the other two are
# unset. The gateway's /metrics is on GATEWAY_ADMIN_LISTEN (default 127.0.0.1:9090). Ctrl-C or
# SIGTERM stops every child.
# CLUSTER_RESTART=on-exit starts a service that exits again, on the same port, as Kubernetes
# restarts a pod (the rolling-restart drill of `make test-ha` relies on it); by default a
# service that exits stays down.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=${BIN_DIR:-target/debug}
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/calls}"
: "${NATS_URL:=nats://127.0.0.1:4222}"
# Defaults in this script's environment; an empty GATEWAY_LISTEN or GATEWAY_ADMIN_LISTEN means
# the default too.
: "${GATEWAY_LISTEN:=0.0.0.0:8080}"
: "${GATEWAY_ADMIN_LISTEN:=127.0.0.1:9090}"
if [[ -z "${JWT_SECRET:-}${JWT_PUBLIC_KEY_FILE:-}${JWT_JWKS_URL:-}" ]]; then
  echo "cluster: set JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL (make cluster sets a development JWT_SECRET)" >&2
  exit 1
fi
if [[ -n "${JWT_PUBLIC_KEY_FILE:-}" && ! -r "$JWT_PUBLIC_KEY_FILE" ]]; then
  echo "cluster: JWT_PUBLIC_KEY_FILE=$JWT_PUBLIC_KEY_FILE is not a readable file" >&2
  exit 1
fi
export DATABASE_URL NATS_URL
LOG_DIR=${CLUSTER_LOG_DIR:-$(mktemp -d -t calls-cluster.XXXXXX)}
mkdir -p "$LOG_DIR"

for bin in media-token calls-api signaling notifier gateway; do
  [[ -x "$BIN_DIR/$bin" ]] || { echo "cluster: $BIN_DIR/$bin is missing; run 'cargo build --workspace --bins'" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Postgres: create the database if it does not exist yet (the first run on a laptop).
if [[ "$DATABASE_URL" == postgres* ]] && command -v psql >/dev/null; then
  # The query (target_session_attrs=read-write for a replicated Postgres) applies to the
  # admin connection too: psql must create the database on the primary.
  db=${DATABASE_URL##*/}; query=
  [[ $db == *\?* ]] && query="?${db#*\?}"
  db=${db%%\?*}
  admin=${DATABASE_URL%/*}/postgres$query
  psql "$admin" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>/dev/null | grep -q 1 \
    || psql "$admin" -qc "CREATE DATABASE \"$db\"" >/dev/null 2>&1 || true
fi

# Services by name, in start order; how to start each (for restarts) and its current pid.
names=()
declare -A spec=() pid_of=()
stop() {
  trap - INT TERM EXIT
  for name in "${names[@]}"; do kill -TERM "${pid_of[$name]}" 2>/dev/null || true; done
  for name in "${names[@]}"; do wait "${pid_of[$name]}" 2>/dev/null || true; done
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

wait_healthy() {
  local name=$1 url=$2 pid=$3
  for _ in $(seq 1 300); do
    curl -sf "$url/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "cluster: $name exited; its log:" >&2; tail -n 30 "$LOG_DIR/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "cluster: $name did not become healthy at $url" >&2; exit 1
}

# start NAME LOG ENV... -- ARGS...: runs $BIN_DIR/NAME with extra environment, logs to LOG.
start() {
  local bin=$1 log=$2; shift 2
  local envs=()
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  names+=("$log")
  spec[$log]=$(printf '%q ' "$bin" "${#envs[@]}" "${envs[@]}" "$@")
  : >"$LOG_DIR/$log.log"
  launch "$log"
}

# launch LOG: (re)starts the service named LOG as it was first started, appending to its log.
launch() {
  local log=$1
  eval "set -- ${spec[$log]}"
  local bin=$1 n=$2; shift 2
  local envs=("${@:1:n}"); shift "$n"
  env "${envs[@]}" "$BIN_DIR/$bin" "$@" >>"$LOG_DIR/$log.log" 2>&1 &
  last_pid=$!
  pid_of[$log]=$last_pid
  # "name pid" per service, for operators and for the failure tests (rewritten on a restart).
  for name in "${names[@]}"; do echo "$name ${pid_of[$name]}"; done >"$LOG_DIR/pids.new"
  mv "$LOG_DIR/pids.new" "$LOG_DIR/pids"
}

credential=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

media_port=$(free_port)
start media-token media-token MEDIA_TOKEN_LISTEN=127.0.0.1:$media_port MEDIA_TOKEN_SERVICE_TOKENS=$credential -- serve
wait_healthy media-token "http://127.0.0.1:$media_port" "$last_pid"

# Migrations first, once, as in a rolling upgrade; then both replicas start on the same schema.
"$BIN_DIR/calls-api" migrate >"$LOG_DIR/migrate.log" 2>&1 || { echo "cluster: migrations failed:" >&2; cat "$LOG_DIR/migrate.log" >&2; exit 1; }

api_urls=()
for i in 1 2; do
  port=$(free_port)
  start calls-api calls-api-$i CALLS_API_LISTEN=127.0.0.1:$port MEDIA_TOKEN_URL=http://127.0.0.1:$media_port MEDIA_TOKEN_SERVICE_TOKEN=$credential
  wait_healthy calls-api-$i "http://127.0.0.1:$port" "$last_pid"
  api_urls+=("http://127.0.0.1:$port")
done

signaling_urls=()
for i in 1 2; do
  port=$(free_port)
  start signaling signaling-$i SIGNALING_LISTEN=127.0.0.1:$port SIGNALING_NODE_ID=signaling-$i-$$
  wait_healthy signaling-$i "http://127.0.0.1:$port" "$last_pid"
  signaling_urls+=("http://127.0.0.1:$port")
done

# notifier replicas share the durable event consumer and the delivery queue; pushes stay off
# unless APNS_* / FCM_* are in the environment.
notifier_urls=()
for i in $(seq 1 "${NOTIFIER_REPLICAS:-2}"); do
  port=$(free_port)
  start notifier notifier-$i NOTIFIER_LISTEN=127.0.0.1:$port
  wait_healthy notifier-$i "http://127.0.0.1:$port" "$last_pid"
  notifier_urls+=("http://127.0.0.1:$port")
done

start gateway gateway GATEWAY_LISTEN=$GATEWAY_LISTEN GATEWAY_ADMIN_LISTEN=$GATEWAY_ADMIN_LISTEN \
  CALLS_API_UPSTREAMS="$(IFS=,; echo "${api_urls[*]}")" SIGNALING_UPSTREAMS="$(IFS=,; echo "${signaling_urls[*]}")" \
  NOTIFIER_UPSTREAMS="$(IFS=,; echo "${notifier_urls[*]}")"
gateway_port=${GATEWAY_LISTEN##*:}
wait_healthy gateway "http://127.0.0.1:$gateway_port" "$last_pid"

cat >&2 <<INFO

  calls backend cluster is running (2 calls-api, 2 signaling, 1 media-token, ${#notifier_urls[@]} notifier, gateway)

    REST API     http://localhost:$gateway_port/api/v1
    Socket.IO    io('http://localhost:$gateway_port/calls', { auth: { token } })
    Swagger UI   http://localhost:$gateway_port/api/docs
    calls-api    ${api_urls[*]}
    signaling    ${signaling_urls[*]}
    notifier     ${notifier_urls[*]}
    media-token  127.0.0.1:$media_port (gRPC)
    gateway-admin http://$GATEWAY_ADMIN_LISTEN  (/metrics, not on the public port)
    Tokens       $(if [[ -n "${JWT_JWKS_URL:-}" ]]; then echo "JWKS $JWT_JWKS_URL"; elif [[ -n "${JWT_PUBLIC_KEY_FILE:-}" ]]; then echo "public key $JWT_PUBLIC_KEY_FILE"; else echo "HS256 JWT_SECRET"; fi)
    Database     ${DATABASE_URL%%@*}@…   NATS $NATS_URL
    Logs         $LOG_DIR

  Stop with Ctrl-C.
INFO

# Runs until a signal. A service that dies is reported once; the others keep serving (the
# gateway routes around a dead replica), as they would in a real deployment. With
# CLUSTER_RESTART=on-exit it is started again instead.
declare -A reported=()
interval=1
[[ ${CLUSTER_RESTART:-} == on-exit ]] && interval=0.2
while true; do
  for name in "${names[@]}"; do
    pid=${pid_of[$name]}
    kill -0 "$pid" 2>/dev/null && continue
    if [[ ${CLUSTER_RESTART:-} == on-exit ]]; then
      echo "cluster: $name (pid $pid) exited; starting it again" >&2
      launch "$name"
    elif [[ -z ${reported[$pid]:-} ]]; then
      echo "cluster: $name (pid $pid) exited; see $LOG_DIR and $LOG_DIR/pids" >&2
      reported[$pid]=1
    fi
  done
  sleep "$interval" &
  wait $! || true
done
