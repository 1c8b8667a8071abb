// Single-thread RTC token build throughput of the npm package agora-token, for comparison with
// `cargo run --release -p agora-token --example bench_builder`.
//
//   (cd tests/js && npm install) && node bench/token/builder.mjs
//
// Runs for BENCH_SECONDS (default 3) and prints one JSON line:
// {"impl":"node-agora-token","tokensPerSec":N}. Same inputs as the Rust
// example: publisher role, a fixed channel and account; the package itself uses the current
// time and a fresh random salt for every token.
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

// The package is installed once, for the interop tests, under tests/js/node_modules.
const require = createRequire(fileURLToPath(new URL('../../tests/js/package.json', import.meta.url)))
const { RtcTokenBuilder, RtcRole } = require('agora-token')

const RUN_FOR_MS = 1000 * Number(process.env.BENCH_SECONDS ?? 3)
if (!(RUN_FOR_MS > 0)) throw new Error(`bad BENCH_SECONDS: ${process.env.BENCH_SECONDS}`)
const BATCH = 1000

const appId = '970CA35de60c44645bbae8a215061b33'
const appCertificate = '5CFd2fd1755d40ecb72977518be15d3b'
const build = () =>
  RtcTokenBuilder.buildTokenWithUserAccount(
    appId, appCertificate, 'bench-channel', 'bench-user-2882341273', RtcRole.PUBLISHER, 3600, 3600)

if (!build().startsWith('007')) throw new Error('agora-token did not build a token')

// Warm up the JIT before timing.
let sink = 0
for (let i = 0; i < BATCH; i++) sink += build().length

const start = process.hrtime.bigint()
const elapsedMs = () => Number(process.hrtime.bigint() - start) / 1e6
let built = 0
while (elapsedMs() < RUN_FOR_MS) {
  for (let i = 0; i < BATCH; i++) sink += build().length
  built += BATCH
}
const tokensPerSec = Math.round(built / (elapsedMs() / 1000))
if (sink === 0) throw new Error('unreachable')
console.log(JSON.stringify({ impl: 'node-agora-token', tokensPerSec }))
