#!/usr/bin/env bash
# `make bench-signaling`: signaling (release) against the Node socket.io reference server, one
# run on this machine. A benchmark, not a test: it prints numbers and the ratios.
#
# Each server gets CPU 0 (signaling with one Tokio worker, Node is single-threaded anyway); the
# load driver (bench.mjs) gets CPU 1; NATS floats. Builds signaling (release); needs NATS with
# JetStream (NATS_URL, default nats://127.0.0.1:4222), node and tests/js/node_modules.
#
# Knobs: BENCH_SIZES (default "1000 10000"), BENCH_EVENTS (default 20000), BENCH_RATE (events/s,
# default 1000), BENCH_BASELINE_SIGNALING (another signaling binary, run too as
# "signaling-baseline" with per-user subscriptions: a before/after under the same machine load).
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=${BENCH_SIZES:-"1000 10000"}
EVENTS=${BENCH_EVENTS:-20000}
RATE=${BENCH_RATE:-1000}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
export JWT_SECRET=bench-secret-bench-secret-bench-secret
BIN=target/release/signaling
cargo build --release -p signaling --quiet
[ -d tests/js/node_modules/socket.io ] || { echo "run: make js-deps" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
# taskset execs the program, so $! is the server's own pid (read from /proc for RSS and CPU).
if command -v taskset >/dev/null; then CPU0="taskset -c 0"; CPU1="taskset -c 1"; else CPU0=; CPU1=; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; echo "server did not start" >&2; return 1; }

results=$(mktemp)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; rm -f "$results"' EXIT

for size in $SIZES; do
  kinds="signaling signaling-shared node"
  [ -n "${BENCH_BASELINE_SIGNALING:-}" ] && kinds="signaling-baseline $kinds"
  for kind in $kinds; do
    # Numbers from a busy machine are not comparable with a quiet run's: say how busy it was.
    echo "$kind, $size connections: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    port=$(free_port)
    prefix="bench.$(date +%s%N)"
    if [ "$kind" != node ]; then
      user_subs=per-user; [ "$kind" = signaling-shared ] && user_subs=shared
      bin=$BIN; [ "$kind" = signaling-baseline ] && bin=$BENCH_BASELINE_SIGNALING
      SIGNALING_USER_SUBSCRIPTIONS=$user_subs SIGNALING_LISTEN=127.0.0.1:$port NATS_SUBJECT_PREFIX=$prefix RUST_LOG=error TOKIO_WORKER_THREADS=1 \
        $CPU0 "$bin" & server=$!
      wait_http "http://127.0.0.1:$port/healthz"
      play=1
    else
      PORT=$port NATS_SUBJECT_PREFIX=$prefix $CPU0 node bench/signaling/reference-server.mjs >/dev/null & server=$!
      wait_http "http://127.0.0.1:$port/healthz"
      play=0
    fi
    URL=http://127.0.0.1:$port SERVER_PID=$server NATS_SUBJECT_PREFIX=$prefix CONNECTIONS=$size \
      EVENTS=$EVENTS RATE=$RATE LABEL=$kind PLAY_CALLS_API=$play \
      $CPU1 node --max-old-space-size=4096 --max-semi-space-size=64 bench/signaling/bench.mjs | tee -a "$results"
    kill $server; wait $server 2>/dev/null || true; server=
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["label"], r["connections"]): r for r in rows}
print()
print("| connections | measure | signaling | node socket.io | ratio (signaling / node) |")
print("|---|---|---|---|---|")
for n in sorted({r["connections"] for r in rows}):
  nd = by.get(("node", n))
  for label in ("signaling", "signaling-shared", "signaling-baseline"):
    s = by.get((label, n))
    if not s or not nd:
        continue
    for key, name in [("rssPerConnectionKb", "idle RSS per connection (KB)"), ("fanoutP50Ms", "fan-out p50 (ms)"),
                      ("fanoutP99Ms", "fan-out p99 (ms)"), ("cpuPerDeliveryUs", "server CPU per delivery (µs)")]:
        ratio = s[key] / nd[key] if nd[key] else float("nan")
        print(f"| {n} | {name} | {label}: {s[key]} | {nd[key]} | {ratio:.2f} |")
    print(f"| {n} | delivered / expected | {label}: {s['delivered']}/{s['expected']} | {nd['delivered']}/{nd['expected']} | |")
PY
