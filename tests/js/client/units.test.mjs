// @calls-backend/client without a server: event ordering in a LiveCall (out of order, duplicated,
// stale, gaps, unknown events), push payloads of CONTRACT section 8, ring de-duplication, errors,
// tokens, and the package itself (ESM and CJS alike, no Node built-ins at runtime).

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { describe, test } from 'node:test';

import { CLIENT_DIR, sdk, sdkCjs } from './lib.mjs';

const { LiveCall, CallsApiError, CallsClient, parseVoipPush, parseFcmMessage, parseCallPush, ringTimeLeftMs, tokenExpiry, decodeJwtClaims } = sdk;

const AT = '2026-02-24T12:00:00Z';
const CALL_ID = '0193a3c4-0000-7000-8000-000000000001';

function participant(userId, extra = {}) {
  return {
    userId, role: userId === 'alice' ? 'host' : 'participant', status: 'joined', isMicMuted: false, isCameraOff: false,
    isSharingScreen: false, invitedAt: AT, joinedAt: AT, leftAt: null, declineReason: null, isConnected: true, inMedia: false, ...extra,
  };
}

function call(seq = 2, extra = {}) {
  return {
    id: CALL_ID, chatRoomId: 'room-1', type: 'video', isGroupCall: true, status: 'active', initiatorId: 'alice',
    maxParticipants: 8, createdAt: AT, startedAt: AT, endedAt: null, endReason: null, endedBy: null, seq,
    participants: [participant('alice'), participant('bob')], ...extra,
  };
}

const media = (seq, userId, isMicMuted) => ({ callId: CALL_ID, seq, at: AT, userId, isMicMuted, isCameraOff: false, isSharingScreen: false });

/** A LiveCall on a fake link: `snapshot` answers join_call, `getCall` the REST call. */
function liveCall(initial = call(), { snapshot = () => ({ callId: CALL_ID, seq: initial.seq, status: initial.status, participants: initial.participants }), gapTimeoutMs = 50, getCall = async () => initial } = {}) {
  const joins = [];
  const link = {
    rest: { getCall },
    joinCall: async () => { joins.push(Date.now()); return snapshot(); },
    command: () => undefined,
    release: () => {},
    startMedia: () => { throw new Error('not here'); },
    userId: () => 'bob',
    connected: () => true,
    gapTimeoutMs,
  };
  const live = new LiveCall(initial, link);
  const applied = [];
  const resyncs = [];
  live.on('event', (e) => applied.push(e.seq));
  live.on('resync', (r) => resyncs.push(r));
  return { live, applied, resyncs, joins };
}

describe('a LiveCall applies call events once each, in seq order', () => {
  test('events arriving out of order are held and applied in seq order', () => {
    const { live, applied } = liveCall();
    live.receive('participant_media_changed', media(5, 'bob', true));
    live.receive('participant_media_changed', media(4, 'bob', false));
    assert.deepEqual(applied, [], 'nothing may be applied while seq 3 is missing');
    live.receive('participant_media_changed', media(3, 'alice', true));
    assert.deepEqual(applied, [3, 4, 5]);
    assert.equal(live.state.seq, 5);
    assert.equal(live.state.participants.find((p) => p.userId === 'bob').isMicMuted, true, 'the last change (seq 5) wins, whatever the arrival order');
  });

  test('duplicates and events at or below the current seq are dropped', () => {
    const { live, applied } = liveCall();
    live.receive('participant_media_changed', media(3, 'bob', true));
    live.receive('participant_media_changed', media(3, 'bob', true));
    live.receive('participant_media_changed', media(2, 'bob', false));
    live.receive('participant_media_changed', media(5, 'bob', false));
    live.receive('participant_media_changed', media(5, 'bob', false));
    live.receive('participant_media_changed', media(4, 'alice', true));
    assert.deepEqual(applied, [3, 4, 5]);
    assert.equal(live.stats.dropped, 3);
    assert.equal(live.state.participants.find((p) => p.userId === 'bob').isMicMuted, false);
  });

  test('a snapshot replaces the state and later events continue from it; older snapshots are ignored', () => {
    const { live, applied } = liveCall();
    live.receive('participant_media_changed', media(6, 'bob', true));
    live.applySnapshot({ callId: CALL_ID, seq: 5, status: 'active', participants: [participant('alice'), participant('bob', { isConnected: false })] });
    assert.deepEqual(applied, [6], 'the held event right after the snapshot is applied');
    assert.deepEqual([live.state.seq, live.state.participants[1].isConnected, live.state.participants[1].isMicMuted], [6, false, true]);
    live.applySnapshot({ callId: CALL_ID, seq: 4, status: 'active', participants: [] });
    assert.equal(live.state.participants.length, 2, 'a stale snapshot must not roll the call back');
  });

  test('a snapshot that moves the call on fills startedAt (and the end fields) from the REST call, which snapshots do not carry', async () => {
    const ringing = call(0, { status: 'ringing', startedAt: null, participants: [participant('alice'), participant('bob', { status: 'invited', joinedAt: null })] });
    const answered = call(1);
    const fetched = [];
    const { live } = liveCall(ringing, { getCall: async () => { fetched.push(1); return answered; } });
    live.applySnapshot({ callId: CALL_ID, seq: 1, status: 'active', participants: answered.participants });
    assert.equal(live.state.startedAt, null, 'not in the snapshot');
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(fetched.length, 1);
    assert.deepEqual(live.state, answered);
  });

  test('a gap that stays open triggers a fresh join_call snapshot, and the events it covers are not applied twice', async () => {
    const truth = { callId: CALL_ID, seq: 7, status: 'active', participants: [participant('alice', { isMicMuted: true }), participant('bob')] };
    const { live, applied, resyncs, joins } = liveCall(call(), { snapshot: () => truth });
    live.receive('participant_media_changed', media(4, 'alice', true));
    live.receive('participant_media_changed', media(7, 'alice', true));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(joins.length, 1, 'one resync for one gap');
    assert.deepEqual(resyncs.map((r) => [r.reason, r.fromSeq, r.toSeq]), [['gap', 2, 7]]);
    assert.deepEqual(applied, [], 'events covered by the snapshot are not applied on top of it');
    live.receive('participant_media_changed', media(8, 'bob', true));
    assert.deepEqual(applied, [8]);
  });

  test('an event held across a resync that the snapshot does not cover is dropped as impossible', async () => {
    const { live, applied, resyncs } = liveCall();
    live.receive('participant_media_changed', media(9, 'bob', true));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(resyncs.length, 0, 'the snapshot says nothing happened: no resync to report');
    live.receive('participant_media_changed', media(3, 'bob', false));
    assert.deepEqual(applied, [3], 'the bogus seq 9 must not be applied once 3..8 arrive');
    for (let seq = 4; seq <= 9; seq += 1) live.receive('participant_reconnected', { callId: CALL_ID, seq, at: AT, userId: 'bob' });
    assert.deepEqual(applied, [3, 4, 5, 6, 7, 8, 9]);
    assert.equal(live.state.participants[1].isMicMuted, false, 'the impossible event left no trace');
  });

  test('an event this version does not know advances seq (no false gap) and triggers a resync', async () => {
    const { live, applied, joins } = liveCall(call(), { snapshot: () => ({ callId: CALL_ID, seq: 4, status: 'active', participants: [participant('alice'), participant('bob', { isMicMuted: true }), participant('carol', { status: 'invited' })] }) });
    const seen = [];
    live.on('event', (e) => seen.push([e.type, e.known]));
    // An event of a newer server (here made up): the client cannot apply it itself.
    live.receive('participant_hand_raised', { callId: CALL_ID, seq: 3, at: AT, userId: 'carol' });
    live.receive('participant_media_changed', media(4, 'bob', true));
    assert.deepEqual(applied, [3, 4]);
    assert.deepEqual(seen, [['participant_hand_raised', false], ['participant_media_changed', true]]);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(joins.length, 1);
    assert.equal(live.state.participants.length, 3, 'the snapshot brought the invitee the client could not apply itself');
  });

  test('the roster events apply as the server does: an invitee appears, a 1:1 becomes a group call, the host role moves', async () => {
    const oneToOne = call(2, { isGroupCall: false, maxParticipants: 2 });
    const { live, joins } = liveCall(oneToOne);
    const seen = [];
    live.on('event', (e) => seen.push([e.type, e.known]));
    const carol = participant('carol', { status: 'invited', joinedAt: null });
    live.receive('participant_invited', { callId: CALL_ID, seq: 3, at: AT, participant: carol });
    const updated = { ...oneToOne, isGroupCall: true, maxParticipants: 16, seq: 4, participants: [...oneToOne.participants, carol] };
    live.receive('call_updated', { callId: CALL_ID, seq: 4, at: AT, call: updated });
    live.receive('participant_left', { callId: CALL_ID, seq: 5, at: AT, userId: 'alice', reason: 'left' });
    live.receive('host_changed', { callId: CALL_ID, seq: 6, at: AT, userId: 'bob' });
    assert.deepEqual(seen.map(([, known]) => known), [true, true, true, true], 'a roster event was treated as unknown');
    assert.deepEqual([live.state.isGroupCall, live.state.maxParticipants, live.state.seq], [true, 16, 6]);
    assert.deepEqual(live.state.participants.map((p) => [p.userId, p.role, p.status]), [
      ['alice', 'participant', 'left'], ['bob', 'host', 'joined'], ['carol', 'participant', 'invited'],
    ]);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(joins.length, 0, 'known events must not trigger a resync');
  });

  test('call_ended applies the end rules (joined become left, ringing become missed), emits ended once and stops following', () => {
    const initial = call(2, { participants: [participant('alice'), participant('bob'), participant('carol', { status: 'ringing', joinedAt: null })] });
    const { live } = liveCall(initial);
    const ended = [];
    live.on('ended', (e) => ended.push(e));
    const end = {
      callId: CALL_ID, seq: 3, at: '2026-02-24T12:05:00Z', reason: 'completed', endedBy: 'alice',
      mediaSeconds: 420, participantMediaSeconds: [{ userId: 'alice', mediaSeconds: 300 }, { userId: 'bob', mediaSeconds: 120 }],
    };
    live.receive('call_ended', end);
    live.receive('call_ended', end);
    assert.equal(ended.length, 1);
    assert.deepEqual(ended[0], end);
    assert.deepEqual([live.state.mediaSeconds, live.state.participants.map((p) => p.mediaSeconds)], [420, [300, 120, 0]]);
    assert.deepEqual(live.state.participants.map((p) => [p.userId, p.status, p.leftAt]), [
      ['alice', 'left', '2026-02-24T12:05:00Z'], ['bob', 'left', '2026-02-24T12:05:00Z'], ['carol', 'missed', null],
    ]);
    assert.deepEqual([live.state.status, live.state.endReason, live.state.endedBy, live.following], ['ended', 'completed', 'alice', false]);
  });

  test('participant_media_presence says who is in the Agora channel, and an ended call has nobody there', () => {
    const { live, applied } = liveCall();
    live.receive('participant_media_presence', { callId: CALL_ID, seq: 3, at: AT, userId: 'bob', inMedia: true });
    assert.deepEqual(applied, [3], 'a known event, applied in order');
    assert.deepEqual(live.state.participants.map((p) => [p.userId, p.inMedia]), [['alice', false], ['bob', true]]);
    live.receive('call_ended', { callId: CALL_ID, seq: 4, at: AT, reason: 'completed', endedBy: 'alice' });
    assert.deepEqual(live.state.participants.map((p) => p.inMedia), [false, false]);
  });

  test('state objects are replaced on change, never mutated (React can compare by reference)', () => {
    const { live } = liveCall();
    const before = live.getState();
    const frozen = JSON.stringify(before);
    let notified = 0;
    const unsubscribe = live.subscribe(() => { notified += 1; });
    live.receive('participant_media_changed', media(3, 'bob', true));
    assert.notEqual(live.getState(), before);
    assert.equal(JSON.stringify(before), frozen);
    unsubscribe();
    live.receive('participant_media_changed', media(4, 'bob', false));
    assert.equal(notified, 1);
  });
});

// Payloads exactly as CONTRACT section 8 pins them.
const DEADLINE = '2026-02-24T12:00:45Z';
const VOIP = {
  aps: {},
  type: 'incoming_call', callId: CALL_ID, chatRoomId: 'room-42', callType: 'video', isGroupCall: false,
  from: { userId: 'alice', displayName: 'Alice', avatarUrl: 'https://example.com/a.png' }, ringDeadline: DEADLINE,
};
const FCM_INCOMING = {
  type: 'incoming_call', callId: CALL_ID, chatRoomId: 'room-42', callType: 'audio', isGroupCall: 'true',
  fromUserId: 'alice', fromDisplayName: 'Alice', ringDeadline: DEADLINE,
};
const FCM_CANCELLED = { type: 'incoming_call_cancelled', callId: CALL_ID, reason: 'answered_elsewhere' };
const FCM_MISSED = { type: 'missed_call', callId: CALL_ID, chatRoomId: 'room-42', fromUserId: 'alice' };

describe('push payloads (CONTRACT section 8) parse into typed objects', () => {
  test('an iOS VoIP push becomes an incoming call with the caller and the ring deadline', () => {
    assert.deepEqual(parseVoipPush(VOIP), {
      type: 'incoming_call', callId: CALL_ID, chatRoomId: 'room-42', callType: 'video', isGroupCall: false,
      from: { userId: 'alice', displayName: 'Alice', avatarUrl: 'https://example.com/a.png' }, ringDeadline: DEADLINE, transport: 'apns-voip',
    });
    const bare = parseVoipPush({ ...VOIP, from: { userId: 'alice' } });
    assert.deepEqual(bare.from, { userId: 'alice' }, 'displayName and avatarUrl are optional');
  });

  test('FCM data messages (all strings) become incoming, cancelled and missed calls, from a RemoteMessage or its data', () => {
    assert.deepEqual(parseFcmMessage({ messageId: 'm1', data: FCM_INCOMING }), {
      type: 'incoming_call', callId: CALL_ID, chatRoomId: 'room-42', callType: 'audio', isGroupCall: true,
      from: { userId: 'alice', displayName: 'Alice' }, ringDeadline: DEADLINE, transport: 'fcm',
    });
    assert.deepEqual(parseFcmMessage(FCM_CANCELLED), { type: 'incoming_call_cancelled', callId: CALL_ID, reason: 'answered_elsewhere', transport: 'fcm' });
    assert.deepEqual(parseFcmMessage({ notification: { title: 'Missed call', body: 'Alice' }, data: FCM_MISSED }), {
      type: 'missed_call', callId: CALL_ID, chatRoomId: 'room-42', from: { userId: 'alice' }, transport: 'fcm',
    });
    assert.equal(parseCallPush(VOIP).transport, 'apns-voip');
    assert.equal(parseCallPush({ data: FCM_INCOMING }).transport, 'fcm');
  });

  test('pushes that are not ours, or are malformed, answer null instead of throwing', () => {
    const bad = [
      null, 'incoming_call', [], {}, { type: 'chat_message', callId: CALL_ID },
      { ...VOIP, callType: 'hologram' }, { ...VOIP, isGroupCall: 'false' }, { ...VOIP, from: 'alice' }, { ...VOIP, ringDeadline: 'soon' },
      { ...VOIP, callId: '' },
      { data: { ...FCM_INCOMING, isGroupCall: true } }, { data: { ...FCM_INCOMING, fromUserId: undefined } },
      { data: { ...FCM_CANCELLED, reason: '' } }, { data: { ...FCM_MISSED, chatRoomId: undefined } },
    ];
    for (const payload of bad) {
      assert.equal(parseCallPush(payload), null, `accepted ${JSON.stringify(payload)}`);
    }
  });

  test('ringTimeLeftMs says how long the phone may still ring', () => {
    const push = parseVoipPush(VOIP);
    assert.equal(ringTimeLeftMs(push, Date.parse(DEADLINE) - 30_000), 30_000);
    assert.equal(ringTimeLeftMs(push, Date.parse(DEADLINE) + 1), 0);
  });

  test('a push and the socket ringing for the same call ring the app once; the stop arrives once too', () => {
    const client = new CallsClient({ baseUrl: 'http://127.0.0.1:9', getToken: () => 't', fetch: async () => { throw new Error('offline'); } });
    const rings = [];
    const stops = [];
    client.on('incoming_call', (c) => rings.push(c.source));
    client.on('incoming_call_cancelled', (c) => stops.push(c.reason));
    assert.equal(client.receivePush(VOIP).type, 'incoming_call');
    client.receivePush({ data: FCM_INCOMING });
    assert.deepEqual(rings, ['apns-voip']);
    client.receivePush({ data: FCM_CANCELLED });
    client.receivePush({ data: FCM_CANCELLED });
    assert.deepEqual(stops, ['answered_elsewhere']);
    assert.equal(client.receivePush({ data: { type: 'chat_message' } }), null);
    client.close();
  });
});

describe('errors and tokens', () => {
  test('a refused socket ack becomes a CallsApiError with the status REST uses for the code', () => {
    const err = CallsApiError.fromAck({ code: 'CALL_NOT_FOUND', message: 'Call not found' });
    assert.ok(err instanceof Error && err instanceof CallsApiError);
    assert.deepEqual([err.status, err.code, err.message, err.retryable], [404, 'CALL_NOT_FOUND', 'Call not found', false]);
    assert.equal(CallsApiError.fromAck({ code: 'DEPENDENCY_UNAVAILABLE', message: 'x' }).retryable, true);
  });

  test('the JWT claims are read without Node built-ins, padding or not, and non-JWTs answer null', () => {
    const enc = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const token = `${enc({ alg: 'HS256' })}.${enc({ sub: 'zoë', exp: 1_900_000_000 })}.sig`;
    assert.equal(tokenExpiry(token), 1_900_000_000_000);
    assert.equal(decodeJwtClaims(token).exp, 1_900_000_000);
    assert.equal(tokenExpiry('opaque-token'), null);
    assert.equal(decodeJwtClaims('a.!!!.c'), null);
  });
});

describe('the package', () => {
  test('ESM and CommonJS builds export the same API', () => {
    assert.deepEqual(Object.keys(sdkCjs).sort(), Object.keys(sdk).sort());
    assert.equal(typeof sdkCjs.CallsClient, 'function');
  });

  test('the built code imports nothing but socket.io-client and its own files (it runs in React Native)', () => {
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    for (const flavour of ['esm', 'cjs']) {
      const dir = path.join(CLIENT_DIR, 'dist', flavour);
      for (const file of readdirSync(dir, { recursive: true }).filter((f) => f.endsWith('.js'))) {
        const text = readFileSync(path.join(dir, file), 'utf8');
        const specifiers = [...text.matchAll(/(?:from\s+|import\s*\(\s*|require\(\s*)['"]([^'"]+)['"]/g)].map((m) => m[1]);
        for (const spec of specifiers) {
          assert.ok(!builtins.has(spec), `${flavour}/${file} imports the Node built-in ${spec}`);
          assert.ok(spec.startsWith('.') || spec === 'socket.io-client', `${flavour}/${file} imports ${spec}, which is not a dependency`);
        }
        assert.doesNotMatch(text, /\b(Buffer|process)\./, `${flavour}/${file} uses a Node global`);
      }
    }
    const pkg = JSON.parse(readFileSync(path.join(CLIENT_DIR, 'package.json'), 'utf8'));
    assert.deepEqual(Object.keys(pkg.dependencies), ['socket.io-client'], 'socket.io-client is the only runtime dependency');
  });
});
