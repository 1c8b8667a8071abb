// Load driver for one server (signaling or the Node reference), one connection count.
//
//   1. N socket.io-client connections (websocket, forceNew), each joins a call; calls have 4
//      members ("rooms of 4");
//   2. idle RSS per connection: the server's RSS after the connections settle, minus before;
//   3. fan-out: the driver plays calls-api and publishes call events on NATS at a fixed rate; each
//      carries its creation time, and every member records the delay to its arrival. Server CPU
//      time (utime + stime from /proc) after the warm-up (the first tenth of the events),
//      divided by the deliveries in that time, is the CPU per delivered event.
//
// Prints one JSON line. Environment: URL, SERVER_PID, NATS_URL, NATS_SUBJECT_PREFIX, CONNECTIONS,
// EVENTS, RATE (events/s), LABEL, PLAY_CALLS_API (1 for signaling: answer join_call/presence).

import { randomUUID, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { NatsClient } from '../../tests/js/lib/signaling-nats.mjs';

const require = createRequire(new URL('../../tests/js/package.json', import.meta.url));
const { io } = require('socket.io-client');

const env = process.env;
const url = env.URL;
const pid = Number(env.SERVER_PID);
const prefix = env.NATS_SUBJECT_PREFIX;
const connections = Number(env.CONNECTIONS ?? 1000);
const events = Number(env.EVENTS ?? 20000);
const rate = Number(env.RATE ?? 1000);
const roomSize = 4;
const secret = env.JWT_SECRET;

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function token(sub) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

function rssKb() {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return Number(m[1]);
}

function cpuSeconds() {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ = 100
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const nats = await NatsClient.connect(env.NATS_URL);
if (env.PLAY_CALLS_API === '1') {
  const reply = (m, body) => m.reply && nats.publish(m.reply, body);
  nats.subscribe(`${prefix}.cmd.*`, (m) => {
    // Commands other than join_call (a socket's recent rings on connect) carry no call.
    const { payload } = m.json();
    reply(m, { ok: true, data: { callId: payload?.callId, seq: 0, status: 'active', participants: [] } });
  }, 'calls-api');
  nats.subscribe(`${prefix}.presence.*`, (m) => reply(m, { ok: true }), 'calls-api');
  await nats.flush();
}

const rooms = Array.from({ length: Math.ceil(connections / roomSize) }, () => randomUUID());
// The first tenth of the events warms up JITs and caches on both sides and is not measured.
const warmup = Math.floor(events / 10);
const latencies = new Float64Array(events * roomSize);
let measured = 0;
let delivered = 0;
const rssBefore = rssKb();
const sockets = [];
const batch = 200;
for (let i = 0; i < connections; i += batch) {
  await Promise.all(Array.from({ length: Math.min(batch, connections - i) }, (_, j) => new Promise((resolve, reject) => {
    const n = i + j;
    const s = io(`${url}/calls`, { auth: { token: token(`user-${n}`) }, transports: ['websocket'], forceNew: true, reconnection: false });
    sockets.push(s);
    s.on('participant_media_changed', (data) => {
      if (!data.warm) latencies[measured++] = now() - data.t;
      delivered += 1;
    });
    const timer = setTimeout(() => reject(new Error(`connection ${n} not joined in 30 s`)), 30000);
    s.once('connect_error', (err) => { clearTimeout(timer); reject(err); });
    s.once('connect', () => {
      s.emit('join_call', { callId: rooms[Math.floor(n / roomSize)] }, (ack) => {
        clearTimeout(timer);
        if (ack?.ok) resolve(); else reject(new Error('join failed'));
      });
    });
  })));
}
console.error(`${env.LABEL}: ${connections} connected and joined`);
await sleep(3000);
const rssIdle = rssKb();

const seq = new Map();
// CPU is counted from the end of the warm-up, like latency: V8 optimises Node's hot paths over
// the first thousands of events, and counting them made Node look a third more expensive than it
// is once warm (49 µs per delivery over 5,000 events, 34 µs over 40,000, on a quiet machine).
let cpuBefore = null;
let deliveredBefore = 0;
const started = now();
// Paced by the clock (not in bursts): event k is due at started + k / rate.
let sent = 0;
while (sent < events) {
  const due = Math.min(events, Math.floor(((now() - started) * rate) / 1000) + 1);
  for (; sent < due; sent++) {
    if (sent === warmup) {
      cpuBefore = cpuSeconds();
      deliveredBefore = delivered;
    }
    const callId = rooms[sent % rooms.length];
    const next = (seq.get(callId) ?? 0) + 1;
    seq.set(callId, next);
    const data = { callId, seq: next, at: new Date().toISOString(), userId: 'bench', isMicMuted: next % 2 === 0, isCameraOff: false, isSharingScreen: false, t: now(), warm: sent < warmup };
    nats.publish(`${prefix}.evt.call.${callId}`, { event: 'participant_media_changed', data }, {
      headers: { 'Nats-Msg-Id': `${callId}-${next}`, 'X-Created-At': String(Math.floor(data.t)) },
    });
  }
  await sleep(1);
}
const expected = events * roomSize;
const deadline = now() + 20000;
while (delivered < expected && now() < deadline) await sleep(20);
const cpuAfter = cpuSeconds();
const elapsed = (now() - started) / 1000;

const sorted = latencies.subarray(0, measured).sort();
console.log(JSON.stringify({
  label: env.LABEL,
  connections,
  rssIdleMb: +(rssIdle / 1024).toFixed(1),
  rssPerConnectionKb: +((rssIdle - rssBefore) / connections).toFixed(1),
  events,
  delivered,
  expected,
  fanoutP50Ms: +percentile(sorted, 50).toFixed(3),
  fanoutP99Ms: +percentile(sorted, 99).toFixed(3),
  cpuPerDeliveryUs: +(((cpuAfter - (cpuBefore ?? cpuAfter)) / Math.max(1, delivered - deliveredBefore)) * 1e6).toFixed(2),
  seconds: +elapsed.toFixed(2),
}));
for (const s of sockets) s.close();
nats.close();
process.exit(0);
