#!/usr/bin/env node
// A newcomer's first call: walks the integration guide's recommended flow (docs/calls-integration-guide.md,
// section 5) end to end against a running backend, with the official socket.io-client and fetch, printing
// each step. It is also `make smoke`.
//
//   BASE_URL=http://localhost:8080 JWT_SECRET=... node examples/first-call.mjs
//
// Tokens: set ALICE_TOKEN and BOB_TOKEN, or JWT_SECRET (the HS256 secret the backend verifies with)
// and the script mints short-lived development tokens itself.
import { createHmac, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'tests', 'js', 'package.json'));
const { io } = require('socket.io-client');

const BASE = (process.env.BASE_URL ?? 'http://localhost:8080').replace(/\/$/, '');
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS ?? 10000);

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

// A development HS256 token, exactly what `make token USER=alice` prints.
function mint(sub) {
  const secret = process.env.JWT_SECRET;
  if (!secret) throw new Error('set JWT_SECRET (or ALICE_TOKEN and BOB_TOKEN)');
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = { sub, iat: now, exp: now + 3600 };
  if (process.env.JWT_ISSUER) claims.iss = process.env.JWT_ISSUER;
  if (process.env.JWT_AUDIENCE) claims.aud = process.env.JWT_AUDIENCE;
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  return `${header}.${body}.${sig}`;
}

let stepNo = 0;
const started = Date.now();
function step(text) {
  stepNo += 1;
  console.log(`${String(stepNo).padStart(2)}. [${String(Date.now() - started).padStart(5)} ms] ${text}`);
}

async function api(token, method, route, body) {
  const res = await fetch(`${BASE}/api/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json().catch(() => ({}));
  return { status: res.status, json };
}

async function expectOk(token, method, route, body, wanted = [200]) {
  const { status, json } = await api(token, method, route, body);
  if (!wanted.includes(status)) {
    throw new Error(`${method} ${route} answered ${status} ${json.code ?? ''}: ${json.message ?? JSON.stringify(json)}`);
  }
  return json;
}

function connect(name, token) {
  const socket = io(`${BASE}/calls`, { auth: { token }, transports: ['websocket'], reconnection: false });
  socket.seen = [];
  socket.onAny((event, data) => socket.seen.push({ event, data }));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}'s socket did not connect within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
    socket.on('connect', () => { clearTimeout(timer); resolve(socket); });
    socket.on('connect_error', (err) => { clearTimeout(timer); reject(new Error(`${name}'s socket was refused: ${err.message}`)); });
  });
}

// Waits for an event matching `pred` (also one that already arrived).
function waitFor(socket, who, event, pred = () => true) {
  const hit = socket.seen.find((e) => e.event === event && pred(e.data));
  if (hit) return Promise.resolve(hit.data);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.offAny(listener);
      reject(new Error(`${who} never received ${event} within ${STEP_TIMEOUT_MS} ms (got: ${socket.seen.map((e) => e.event).join(', ') || 'nothing'})`));
    }, STEP_TIMEOUT_MS);
    const listener = (name, data) => {
      if (name === event && pred(data)) { clearTimeout(timer); socket.offAny(listener); resolve(data); }
    };
    socket.onAny(listener);
  });
}

function emitAck(socket, event, payload) {
  return socket.timeout(STEP_TIMEOUT_MS).emitWithAck(event, payload).then((ack) => {
    if (!ack?.ok) throw new Error(`${event} was refused: ${ack?.error?.code} ${ack?.error?.message}`);
    return ack.data;
  });
}

async function main() {
  const suffix = randomUUID().slice(0, 8);
  const alice = `alice-${suffix}`;
  const bob = `bob-${suffix}`;
  const room = `room-${suffix}`;
  const aliceToken = process.env.ALICE_TOKEN ?? mint(alice);
  const bobToken = process.env.BOB_TOKEN ?? mint(bob);

  console.log(`First call against ${BASE} (users ${alice} and ${bob}, chat room ${room})`);
  const aliceSocket = await connect('alice', aliceToken);
  const bobSocket = await connect('bob', bobToken);
  step('both apps connected their /calls sockets (websocket transport, token in the handshake)');

  const initiated = await expectOk(aliceToken, 'POST', `/calls/rooms/${room}/initiate`, { type: 'video', isGroupCall: false, inviteUserIds: [bob] }, [201]);
  const call = initiated.data;
  step(`alice initiated a 1:1 video call ${call.id} (status ${call.status}) → 201 "${initiated.message}"`);

  const incoming = await waitFor(bobSocket, 'bob', 'incoming_call', (d) => d.callId === call.id);
  step(`bob's phone rings: incoming_call from ${incoming.from}`);

  const aliceSnapshot = await emitAck(aliceSocket, 'join_call', { callId: call.id });
  step(`alice subscribed with join_call: snapshot seq ${aliceSnapshot.seq}, ${aliceSnapshot.participants.length} participants`);

  const joined = await expectOk(bobToken, 'POST', `/calls/${call.id}/join`, { isMicMuted: false, isCameraOff: false });
  step(`bob answered: POST /calls/:id/join → call ${joined.data.status}`);

  const bobSnapshot = await emitAck(bobSocket, 'join_call', { callId: call.id });
  await waitFor(bobSocket, 'bob', 'call_participants', (d) => d.callId === call.id);
  step(`bob subscribed with join_call and got call_participants (seq ${bobSnapshot.seq})`);

  const seenJoin = await waitFor(aliceSocket, 'alice', 'participant_joined', (d) => d.participant?.userId === bob);
  step(`alice saw participant_joined for bob (seq ${seenJoin.seq})`);

  const media = await api(bobToken, 'POST', `/calls/${call.id}/media/session`);
  if (media.status === 200) {
    const s = media.json.data;
    step(`bob got Agora credentials: appId ${s.appId}, channel ${s.channelName}, account ${s.userAccount}, token ${s.rtcToken.slice(0, 12)}… until ${s.expiresAt}`);
  } else if (media.json.code === 'MEDIA_PROVIDER_NOT_CONFIGURED') {
    step('media session: Agora is not configured on this server (set AGORA_APP_ID and AGORA_APP_CERTIFICATE) — skipping the Agora join');
  } else {
    throw new Error(`media session answered ${media.status} ${media.json.code}: ${media.json.message}`);
  }

  await emitAck(bobSocket, 'media_state_changed', { callId: call.id, isMicMuted: true });
  const muted = await waitFor(aliceSocket, 'alice', 'participant_media_changed', (d) => d.userId === bob && d.isMicMuted === true);
  step(`bob muted over the socket; alice saw participant_media_changed (seq ${muted.seq})`);

  await expectOk(bobToken, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: false, isCameraOff: true });
  await waitFor(aliceSocket, 'alice', 'participant_media_changed', (d) => d.userId === bob && d.isCameraOff === true);
  step('bob unmuted and turned the camera off over REST (PATCH /calls/:id/media); alice saw it too');

  await emitAck(bobSocket, 'leave_call', { callId: call.id });
  const ended = await waitFor(aliceSocket, 'alice', 'call_ended', (d) => d.callId === call.id);
  step(`bob left with leave_call; the 1:1 ended "${ended.reason}" and alice got call_ended`);

  const final = await expectOk(aliceToken, 'GET', `/calls/${call.id}`);
  step(`GET /calls/:id: status ${final.data.status}, endReason ${final.data.endReason}`);

  aliceSocket.close();
  bobSocket.close();
  console.log(`\nDone: the call flow works end to end (${Date.now() - started} ms).`);
}

main().catch((err) => {
  console.error(`\nFAILED at step ${stepNo + 1}: ${err.message}`);
  process.exit(1);
});
