#!/usr/bin/env bash
# `make bench-gateway`: the gateway and nginx (Debian's package) proxying the same upstream, in
# one run on this machine. Not a test: it prints numbers for docs/BENCHMARKS.md.
#
# Method
# - Upstream: a tiny hyper server (services/gateway/examples/bench_upstream.rs, release) that
#   answers every request with a 55-byte JSON envelope.
# - Proxies: the gateway (release, GATEWAY_WORKER_THREADS=1, per-IP and per-user rate limits ON
#   with limits too high to trigger, access log off via RUST_LOG=warn) and nginx (worker_processes
#   1, upstream keep-alive, the same X-Forwarded-*/X-Request-Id headers, access_log off;
#   bench/gateway/nginx.conf.template). Both run pinned to CPU 1; the upstream and wrk share
#   CPU 0 (with fewer than 2 CPUs nothing is pinned).
# - Load: wrk (Debian's package), one thread, fixed connections and duration:
#     latency    -c 1              unloaded round trip;
#     throughput -c BENCH_CONNECTIONS (64) saturating the proxy.
#   Targets per round, in this order: direct to the upstream, nginx, the gateway on a public route
#   (/api/docs/openapi.json, no token: like for like with nginx), the gateway on an authenticated
#   route (/api/v1/calls with an HS256 token, verified at the edge; nginx has no equivalent).
#   BENCH_ROUNDS (3) rounds of BENCH_SECONDS (10) s per run; the median over rounds is reported.
#   Added latency = proxy percentile - direct percentile in the same scenario.
# - Before/after: BENCH_BASELINE_GATEWAY=<path to another gateway binary> runs it too, as the
#   target "baseline" (public route), in the same rounds, so a change is measured against the
#   previous build under the same machine load rather than against an earlier run.
# Installs nginx and wrk with apt-get when missing (without starting the system nginx service).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
OUT=${BENCH_OUT:-target/bench-gateway}
NGINX=/usr/sbin/nginx

install_tools() {
  local missing=()
  [ -x "$NGINX" ] || missing+=(nginx)
  command -v wrk >/dev/null || missing+=(wrk)
  [ ${#missing[@]} -eq 0 ] && return
  echo "== installing ${missing[*]} (Debian packages)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Keep the package's own nginx service from starting on port 80 during installation.
  local policy=/usr/sbin/policy-rc.d placed=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && placed=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$placed" ] && $sudo rm -f "$policy"
  return 0
}
install_tools

echo "== building (release)"
cargo build --release --quiet -p gateway --bin gateway --example bench_upstream

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPSTREAM_PORT=$(free_port); GATEWAY_PORT=$(free_port); NGINX_PORT=$(free_port)

PROXY_CPU=(); LOAD_CPU=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PROXY_CPU=(taskset -c 1); LOAD_CPU=(taskset -c 0)
fi
# No priority games: trial runs with everything under test at `nice -n -10` made nginx stall
# (p99 in the tens of ms, half its usual req/s) while the gateway did not, for reasons not pinned
# down, so both run at normal priority. A busy machine shows up as spread between rounds.

WORK=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET=bench-secret-0123456789abcdef0123456789
TOKEN=$(python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
now = int(time.time())
claims = b64(json.dumps({"sub": "bench-user", "iat": now, "exp": now + 3600}).encode())
signature = hmac.new(sys.argv[1].encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
print(f"{header}.{claims}.{b64(signature)}")
PY
)

BENCH_UPSTREAM_LISTEN=127.0.0.1:$UPSTREAM_PORT BENCH_UPSTREAM_THREADS=1 \
  "${LOAD_CPU[@]}" target/release/examples/bench_upstream 2>"$WORK/upstream.log" &
pids+=($!)

GATEWAY_LISTEN=127.0.0.1:$GATEWAY_PORT \
CALLS_API_UPSTREAMS=http://127.0.0.1:$UPSTREAM_PORT SIGNALING_UPSTREAMS=http://127.0.0.1:$UPSTREAM_PORT \
JWT_SECRET=$SECRET GATEWAY_WORKER_THREADS=1 RUST_LOG=warn \
RATE_LIMIT_PER_IP_PER_MINUTE=1000000000 RATE_LIMIT_PER_IP_BURST=1000000000 \
RATE_LIMIT_PER_USER_PER_MINUTE=1000000000 RATE_LIMIT_PER_USER_BURST=1000000000 \
  "${PROXY_CPU[@]}" target/release/gateway >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
pids+=($GATEWAY_PID)

BASELINE_PID=""
if [ -n "${BENCH_BASELINE_GATEWAY:-}" ]; then
  BASELINE_PORT=$(free_port); BASELINE_ADMIN_PORT=$(free_port)
  GATEWAY_LISTEN=127.0.0.1:$BASELINE_PORT GATEWAY_ADMIN_LISTEN=127.0.0.1:$BASELINE_ADMIN_PORT \
  CALLS_API_UPSTREAMS=http://127.0.0.1:$UPSTREAM_PORT SIGNALING_UPSTREAMS=http://127.0.0.1:$UPSTREAM_PORT \
  JWT_SECRET=$SECRET GATEWAY_WORKER_THREADS=1 RUST_LOG=warn \
  RATE_LIMIT_PER_IP_PER_MINUTE=1000000000 RATE_LIMIT_PER_IP_BURST=1000000000 \
  RATE_LIMIT_PER_USER_PER_MINUTE=1000000000 RATE_LIMIT_PER_USER_BURST=1000000000 \
    "${PROXY_CPU[@]}" "$BENCH_BASELINE_GATEWAY" >"$WORK/baseline.log" 2>&1 &
  BASELINE_PID=$!
  pids+=($BASELINE_PID)
fi

sed -e "s#@DIR@#$WORK#g" -e "s#@PORT@#$NGINX_PORT#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" \
  bench/gateway/nginx.conf.template >"$WORK/nginx.conf"
"${PROXY_CPU[@]}" "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/error.log" &
NGINX_PID=$!
pids+=($NGINX_PID)

wait_for() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2; cat "$WORK"/*.log >&2 || true; exit 1
}
wait_for "http://127.0.0.1:$UPSTREAM_PORT/healthz"
wait_for "http://127.0.0.1:$NGINX_PORT/healthz"
wait_for "http://127.0.0.1:$GATEWAY_PORT/readyz"
wait_for "http://127.0.0.1:$GATEWAY_PORT/api/docs/openapi.json"
[ -n "$BASELINE_PID" ] && wait_for "http://127.0.0.1:$BASELINE_PORT/api/docs/openapi.json"

declare -A URL=(
  [direct]="http://127.0.0.1:$UPSTREAM_PORT/api/docs/openapi.json"
  [nginx]="http://127.0.0.1:$NGINX_PORT/api/docs/openapi.json"
  [gateway]="http://127.0.0.1:$GATEWAY_PORT/api/docs/openapi.json"
  [gatewayauth]="http://127.0.0.1:$GATEWAY_PORT/api/v1/calls"
)
TARGETS=(direct nginx gateway gatewayauth)
if [ -n "$BASELINE_PID" ]; then
  URL[baseline]="http://127.0.0.1:$BASELINE_PORT/api/docs/openapi.json"
  TARGETS+=(baseline)
fi

# The process doing a target's proxying: its CPU time per request is the efficiency measure,
# much steadier than req/s on a machine that is doing other work at the same time.
proxy_pid() {
  case $1 in
    nginx) pgrep -P "$NGINX_PID" nginx | head -1 ;;
    gateway | gatewayauth) echo "$GATEWAY_PID" ;;
    baseline) echo "$BASELINE_PID" ;;
    *) echo "" ;;
  esac
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_wrk() { # scenario target round connections seconds
  local args=(-t1 -c"$4" -d"$5"s --latency) out="$RESULTS/$1-$2-$3" pid before
  [ "$2" = gatewayauth ] && args+=(-H "Authorization: Bearer $TOKEN")
  pid=$(proxy_pid "$2")
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  "${LOAD_CPU[@]}" wrk "${args[@]}" "${URL[$2]}" >"$out.txt"
  if [ -n "$pid" ]; then
    python3 - "$before" "$(cpu_ticks "$pid")" "$(getconf CLK_TCK)" "$out.txt" >"$out.cpu" <<'PY'
import re, sys
before, after, hz, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
requests = int(re.search(r"(\d+) requests in", open(path).read()).group(1))
print((after - before) / hz * 1e6 / max(requests, 1))
PY
  fi
}

RESULTS="$OUT/runs"
rm -rf "$RESULTS"; mkdir -p "$RESULTS"
echo "== warm-up"
for target in "${TARGETS[@]}"; do run_wrk warmup "$target" 0 "$CONNECTIONS" 2; done
rm -f "$RESULTS"/warmup-*

echo "== $ROUNDS rounds x ${SECONDS_PER_RUN}s per run; proxies run as: ${PROXY_CPU[*]:-as is}; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    run_wrk latency "$target" "$round" 1 "$SECONDS_PER_RUN"
    run_wrk throughput "$target" "$round" "$CONNECTIONS" "$SECONDS_PER_RUN"
  done
  echo "   round $round done"
done

echo "== results (median of $ROUNDS rounds; latency = -c1, throughput = -c$CONNECTIONS)"
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nginx: $("$NGINX" -v 2>&1 | cut -d/ -f2), wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
} | tee "$OUT/machine.txt"
python3 bench/gateway/summarize.py "$RESULTS"
cp "$RESULTS/summary.md" "$RESULTS/summary.json" "$OUT/"
echo "(written to $OUT/summary.md and $OUT/summary.json)"
