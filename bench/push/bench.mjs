// `make bench-push`: how long a ringing push takes to leave, in the scaled topology.
//
// The scaled topology (gateway, two calls-api, two signaling, media-token, notifier) runs from
// BIN_DIR on Postgres + NATS, with notifier pointed at the APNs and FCM doubles of the JS suite
// (tests/js/lib/push-doubles.mjs in a process of their own: they check the provider JWT, the OAuth2 grant, headers and
// payloads as Apple and Google do, so a push they record is one the real services would take).
// Every invitee has four phones (two iPhones with PushKit tokens, two Android phones) and no
// socket. Calls start at a fixed rate from distinct callers; each caller hangs up after a
// while, so the run also carries the cancel pushes a real deployment sends.
//
// Latency = the double's receive time − the call's `createdAt`. `createdAt` is stamped inside
// the initiate transaction, just before its commit, so the figure is an upper bound of
// "commit → request at Apple/Google" by the commit's own duration.
//
// Settings (environment): BENCH_RATE calls/s (50), BENCH_SECONDS (20), BENCH_DEVICES per
// invitee (4), BENCH_HANGUP_MS after which the caller hangs up (3000), BIN_DIR (release).

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';

import { Client, unique } from '../../tests/js/acceptance/harness.mjs';
import { startCluster } from '../../tests/js/lib/cluster.mjs';
import { pushEnv } from '../../tests/js/lib/push.mjs';

const RATE = Number(process.env.BENCH_RATE ?? 50);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const DEVICES = Number(process.env.BENCH_DEVICES ?? 4);
const HANGUP_MS = Number(process.env.BENCH_HANGUP_MS ?? 3000);
const BUNDLE = 'com.example.calls';
// Long enough that no call of the run times out while the run is still starting calls.
const RING_SECONDS = 30;

const hex = () => randomBytes(32).toString('hex');
const fcmToken = () => `${randomBytes(8).toString('hex')}:APA91b${randomBytes(30).toString('base64url')}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const loadAverage = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summary(name, values) {
  const s = [...values].sort((a, b) => a - b);
  const fmt = (v) => (Number.isFinite(v) ? v.toFixed(1).padStart(7) : '      -');
  return `${name.padEnd(28)} n=${String(s.length).padStart(5)}  p50 ${fmt(percentile(s, 50))} ms  p99 ${fmt(percentile(s, 99))} ms  max ${fmt(s.at(-1))} ms`;
}

/**
 * The doubles in a process of their own (their `--serve` mode), so that the time they stamp on
 * a request is not held back by this driver's event loop.
 */
async function startDoubles() {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'tests', 'js', 'lib', 'push-doubles.mjs');
  const child = spawn(process.execPath, [script, '--serve', '--bundle-id', BUNDLE], { stdio: ['pipe', 'pipe', 'inherit'] });
  const first = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the push doubles exited (${code})`)));
  });
  const info = JSON.parse(first);
  const requests = async (provider) => (await fetch(`${info.control}/${provider}/requests`)).json();
  return {
    env: info.env,
    requests,
    close: () => new Promise((resolve) => { child.once('exit', resolve); child.stdin.end(); }),
  };
}

/** Registers `DEVICES` phones for `user`, alternating iPhone and Android; answers their tokens. */
async function registerPhones(client, user) {
  const tokens = { voip: [], fcm: [] };
  for (let i = 0; i < DEVICES; i++) {
    const ios = i % 2 === 0;
    const body = ios
      ? { platform: 'ios', pushProvider: 'apns', pushToken: hex(), voipToken: hex(), bundleId: BUNDLE }
      : { platform: 'android', pushProvider: 'fcm', pushToken: fcmToken() };
    const res = await client.api(user, 'PUT', `/devices/phone-${i}`, body);
    if (res.status !== 200) throw new Error(`registering a device: ${res.status} ${res.text}`);
    (ios ? tokens.voip : tokens.fcm).push(ios ? body.voipToken : body.pushToken);
  }
  return tokens;
}

async function main() {
  const binDir = process.env.BIN_DIR;
  if (!binDir) throw new Error('BIN_DIR must point at the built binaries (make bench-push sets it)');
  const total = RATE * SECONDS;
  console.log(`bench-push: ${total} calls at ${RATE}/s, ${DEVICES} phones per invitee, binaries from ${binDir}`);
  console.log(`load average before start: ${loadAverage()} (${os.cpus().length} CPUs)`);

  const doubles = await startDoubles();
  const deployment = await startCluster(pushEnv(doubles, {
    CALL_RING_TIMEOUT_SECONDS: String(RING_SECONDS),
    RATE_LIMIT_PER_USER_PER_MINUTE: '0',
    RUST_LOG: 'error',
  }));
  const client = new Client(deployment.base);
  try {
    // Phones first, outside the measurement.
    const pairs = Array.from({ length: total }, () => ({ caller: unique('caller'), callee: unique('callee') }));
    for (let i = 0; i < pairs.length; i += 50) {
      await Promise.all(pairs.slice(i, i + 50).map(async (p) => { p.tokens = await registerPhones(client, p.callee); }));
    }
    console.log(`registered ${total * DEVICES} phones; load average ${loadAverage()}`);

    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const started = [];
    const errors = new Map();
    const initiateMs = [];
    const t0 = performance.now();
    const inflight = [];
    for (let i = 0; i < total; i++) {
      // Open-loop pacing: call i leaves at t0 + i/RATE whatever the previous ones are doing.
      const due = t0 + (i * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const { caller, callee, tokens } = pairs[i];
      inflight.push((async () => {
        const sent = performance.now();
        const res = await client.api(caller, 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'video', isGroupCall: false, inviteUserIds: [callee] });
        initiateMs.push(performance.now() - sent);
        if (res.status !== 201) {
          const code = res.body?.error?.code ?? String(res.status);
          errors.set(code, (errors.get(code) ?? 0) + 1);
          return;
        }
        const call = res.body.data;
        started.push({ call, tokens, createdAt: Date.parse(call.createdAt) });
        await sleep(HANGUP_MS);
        await client.api(caller, 'POST', `/calls/${call.id}/end`);
      })());
    }
    const offeredSeconds = (performance.now() - t0) / 1000;
    await Promise.all(inflight);
    loop.disable();

    // Every ringing push reaches its double well inside the ring timeout; wait for the stragglers.
    const wanted = started.length * DEVICES;
    const rings = async () => {
      const [apns, fcm] = await Promise.all([doubles.requests('apns'), doubles.requests('fcm')]);
      return {
        voip: apns.filter((r) => r.headers['apns-push-type'] === 'voip'),
        fcm: fcm.filter((r) => r.message?.data?.type === 'incoming_call'),
      };
    };
    const deadline = Date.now() + 30_000;
    let got = await rings();
    while (got.voip.length + got.fcm.length < wanted && Date.now() < deadline) {
      await sleep(250);
      got = await rings();
    }
    const byVoip = new Map(got.voip.map((r) => [r.deviceToken, r]));
    const byFcm = new Map(got.fcm.map((r) => [r.token, r]));
    const apnsMs = [];
    const fcmMs = [];
    const firstMs = [];
    let missing = 0;
    for (const { tokens, createdAt } of started) {
      const times = [];
      for (const t of tokens.voip) {
        const r = byVoip.get(t);
        if (r) { apnsMs.push(r.at - createdAt); times.push(r.at - createdAt); } else missing += 1;
      }
      for (const t of tokens.fcm) {
        const r = byFcm.get(t);
        if (r) { fcmMs.push(r.at - createdAt); times.push(r.at - createdAt); } else missing += 1;
      }
      if (times.length) firstMs.push(Math.min(...times));
    }

    console.log('');
    console.log(`offered ${RATE} calls/s for ${offeredSeconds.toFixed(1)} s; ${started.length} calls started; errors: ${errors.size ? JSON.stringify(Object.fromEntries(errors)) : 'none'}`);
    console.log(summary('initiate (REST round trip)', initiateMs));
    console.log(summary('commit → APNs VoIP push', apnsMs));
    console.log(summary('commit → FCM data message', fcmMs));
    console.log(summary('commit → first phone rung', firstMs));
    console.log(`ringing pushes missing: ${missing} of ${wanted}`);
    console.log(`driver event-loop delay: p99 ${(loop.percentile(99) / 1e6).toFixed(1)} ms, max ${(loop.max / 1e6).toFixed(1)} ms (it delays when calls start, not the doubles' clocks: they run in a process of their own)`);
    console.log(`load average after the run: ${loadAverage()}`);
  } finally {
    client.closeAll();
    await deployment.stop();
    await doubles.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
