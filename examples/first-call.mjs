#!/usr/bin/env node
// @ts-check
// A newcomer's first call: the integration guide's flow (docs/calls-integration-guide.md, section 5)
// end to end on the TypeScript client (clients/js, `@calls-backend/client`), against a running
// backend, printing each step. It is also `make smoke` (which builds the client first).
//
//   BASE_URL=http://localhost:8080 JWT_SECRET=... node examples/first-call.mjs
//
// Tokens: set ALICE_TOKEN and BOB_TOKEN, or JWT_SECRET (the HS256 secret the backend verifies with)
// and the script mints short-lived development tokens itself.
import { createHmac, randomUUID } from 'node:crypto';

// In an app: import { CallsClient } from '@calls-backend/client';
import { CallsClient, isCallsApiError } from '../clients/js/dist/esm/index.js';

const BASE = (process.env.BASE_URL ?? 'http://localhost:8080').replace(/\/$/, '');
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS ?? 10000);

/** A development HS256 token, exactly what `make token USER=alice` prints. @param {string} sub */
function mint(sub) {
  const secret = process.env.JWT_SECRET;
  if (!secret) throw new Error('set JWT_SECRET (or ALICE_TOKEN and BOB_TOKEN)');
  const b64url = (/** @type {object} */ v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  /** @type {Record<string, unknown>} */
  const claims = { sub, iat: now, exp: now + 3600 };
  if (process.env.JWT_ISSUER) claims.iss = process.env.JWT_ISSUER;
  if (process.env.JWT_AUDIENCE) claims.aud = process.env.JWT_AUDIENCE;
  const unsigned = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

let stepNo = 0;
const started = Date.now();
/** @param {string} text */
function step(text) {
  stepNo += 1;
  console.log(`${String(stepNo).padStart(2)}. [${String(Date.now() - started).padStart(5)} ms] ${text}`);
}

/**
 * Resolves with the first `event` of `emitter` that matches `pred`, or fails after STEP_TIMEOUT_MS.
 * @template T
 * @param {{ on(event: any, listener: (value: any) => void): () => void }} emitter
 * @param {string} event
 * @param {string} what
 * @param {(value: T) => boolean} [pred]
 * @returns {Promise<T>}
 */
function next(emitter, event, what, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`${what} did not happen within ${STEP_TIMEOUT_MS} ms`)); }, STEP_TIMEOUT_MS);
    const off = emitter.on(event, (/** @type {T} */ value) => {
      if (!pred(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

async function main() {
  const suffix = randomUUID().slice(0, 8);
  const [aliceId, bobId, room] = [`alice-${suffix}`, `bob-${suffix}`, `room-${suffix}`];
  const aliceToken = process.env.ALICE_TOKEN ?? mint(aliceId);
  const bobToken = process.env.BOB_TOKEN ?? mint(bobId);

  console.log(`First call against ${BASE} (users ${aliceId} and ${bobId}, chat room ${room})`);
  // getToken is called for every handshake and again when the server refuses a token.
  const alice = new CallsClient({ baseUrl: BASE, getToken: () => aliceToken, ackTimeoutMs: STEP_TIMEOUT_MS });
  const bob = new CallsClient({ baseUrl: BASE, getToken: () => bobToken, ackTimeoutMs: STEP_TIMEOUT_MS });
  alice.connect();
  bob.connect();
  await Promise.all([alice.waitUntilConnected(), bob.waitUntilConnected()]);
  step('both apps connected their /calls sockets (websocket transport, token in the handshake)');

  const ringing = next(bob, 'incoming_call', "bob's phone ringing");
  const aliceCall = await alice.startCall(room, { type: 'video', isGroupCall: false, inviteUserIds: [bobId] });
  step(`alice started a 1:1 video call ${aliceCall.id} (status ${aliceCall.state.status}) and follows it (seq ${aliceCall.state.seq})`);

  /** @type {import('../clients/js/dist/esm/index.js').IncomingCall} */
  const incoming = await ringing;
  const stillRinging = await bob.reportRinging(incoming.callId);
  step(`bob's phone rings: incoming_call from ${incoming.from.userId}; he reported ringing (${stillRinging ? 'still ringing' : 'already over'})`);

  const aliceSeesBob = next(aliceCall, 'participant_joined', 'alice seeing bob join', (e) => e.participant.userId === bobId);
  const bobCall = await bob.answer(incoming.callId, { isMicMuted: false, isCameraOff: false });
  step(`bob answered: joined over REST and follows the call (status ${bobCall.state.status}, seq ${bobCall.state.seq})`);
  const seenJoin = await aliceSeesBob;
  step(`alice saw participant_joined for bob (seq ${seenJoin.seq}); her call is ${aliceCall.state.status}`);

  const media = bobCall.startMedia({ onRenew: (s) => console.log(`    (renewed the Agora token, valid until ${s.expiresAt})`) });
  try {
    const s = await media.ready;
    step(`bob got Agora credentials: appId ${s.appId}, channel ${s.channelName}, account ${s.userAccount}, token ${s.rtcToken.slice(0, 12)}… until ${s.expiresAt} (renewed automatically)`);
  } catch (err) {
    if (!isCallsApiError(err, 'MEDIA_PROVIDER_NOT_CONFIGURED')) throw err;
    step('media session: Agora is not configured on this server (set AGORA_APP_ID and AGORA_APP_CERTIFICATE) — skipping the Agora join');
  }

  const muted = next(aliceCall, 'participant_media_changed', 'alice seeing bob mute', (e) => e.userId === bobId && e.isMicMuted);
  await bobCall.setMedia({ isMicMuted: true });
  step(`bob muted over the socket; alice saw participant_media_changed (seq ${(await muted).seq})`);

  const cameraOff = next(aliceCall, 'participant_media_changed', 'alice seeing bob turn his camera off', (e) => e.userId === bobId && e.isCameraOff);
  await bob.updateMedia(incoming.callId, { isMicMuted: false, isCameraOff: true });
  await cameraOff;
  const bobSeenByAlice = aliceCall.participants.find((p) => p.userId === bobId);
  step(`bob unmuted and turned the camera off over REST (PATCH /calls/:id/media); alice's state: mic muted ${bobSeenByAlice?.isMicMuted}, camera off ${bobSeenByAlice?.isCameraOff}`);

  const ended = next(aliceCall, 'ended', 'the call ending for alice');
  await bobCall.leave();
  step(`bob left with leave_call; the 1:1 ended "${(await ended).reason}" and alice's call says ${aliceCall.state.status}`);

  const final = await alice.getCall(aliceCall.id);
  step(`GET /calls/:id: status ${final.status}, endReason ${final.endReason}`);

  alice.close();
  bob.close();
  console.log(`\nDone: the call flow works end to end (${Date.now() - started} ms).`);
}

main().catch((err) => {
  console.error(`\nFAILED at step ${stepNo + 1}: ${err.message}`);
  process.exit(1);
});
