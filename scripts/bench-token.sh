#!/usr/bin/env bash
# `make bench-token`: one run, same machine.
#  1. token builder throughput on one thread: ours (Rust, release) vs Agora's npm `agora-token`;
#  2. the media-token gRPC service (release) under concurrent load from a Rust client.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${BENCH_SECONDS:-5}

echo "== builder, one thread, ${SECONDS_PER_RUN}s each"
rust=$(BENCH_SECONDS=$SECONDS_PER_RUN target/release/examples/bench_builder)
node=$(BENCH_SECONDS=$SECONDS_PER_RUN node bench/token/builder.mjs)
echo "$rust"; echo "$node"
python3 - "$rust" "$node" <<'PY'
import json, sys
r, n = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"builder ratio (ours / npm agora-token): {r['tokensPerSec'] / n['tokensPerSec']:.1f}x")
PY

echo "== gRPC service (release), ${SECONDS_PER_RUN}s per load level"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export MEDIA_TOKEN_LISTEN=127.0.0.1:$port MEDIA_TOKEN_SERVICE_TOKENS=bench-credential \
  AGORA_APP_ID=970CA35de60c44645bbae8a215061b33 AGORA_APP_CERTIFICATE=5CFd2fd1755d40ecb72977518be15d3b RUST_LOG=warn
target/release/media-token serve & server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
# Server CPU time per token (utime+stime from /proc, in clock ticks) complements wall-clock
# throughput: the load generator shares the machine's two cores with the server.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
tick_hz=$(getconf CLK_TCK)
for conc in 16 64 256; do
  before=$(cpu_ticks)
  line=$(target/release/examples/grpc_load "http://127.0.0.1:$port" bench-credential "$SECONDS_PER_RUN" "$conc" 4)
  after=$(cpu_ticks)
  echo "$line"
  python3 - "$line" "$before" "$after" "$tick_hz" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[3]) - int(sys.argv[2]); hz = int(sys.argv[4])
# warm-up requests are served but not counted; this slightly overstates CPU per token.
us = ticks / hz * 1e6 / max(r["requests"], 1)
print(f"  server CPU per token: {us:.1f} us  (=> {1e6/us:,.0f} tokens/s per server core)" if us else "  server CPU: n/a")
PY
done
