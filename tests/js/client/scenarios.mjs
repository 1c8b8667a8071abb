// The @calls-backend/client scenarios, run against each topology through its gateway
// (standalone.test.mjs, scaled.test.mjs): the guide's flow, typed errors, ringing helpers,
// token expiry and rotation mid-call, a cut connection, injected out-of-order, duplicate and lost
// events, and media-session renewal. Each scenario asserts what an app would show: its LiveCall
// state equals the server's, and every seq was applied once or folded into a snapshot.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';

import { mint } from '../lib/cluster.mjs';
import { startProxy } from '../lib/signaling-harness.mjs';
import { STEP_MS, clientFor, closeAll, eventually, next, sdk, unique, watch } from './lib.mjs';

/** The environment both topologies run with: Agora credentials with 4-second tokens, and timers that stay out of the way. */
export const CLIENT_ENV = {
  AGORA_APP_ID: '0123456789abcdef0123456789abcdef',
  AGORA_APP_CERTIFICATE: 'fedcba9876543210fedcba9876543210',
  AGORA_TOKEN_TTL_SECONDS: '4',
  PRESENCE_HEARTBEAT_SECONDS: '1',
  CALL_DISCONNECT_GRACE_SECONDS: '15',
  CALL_RING_TIMEOUT_SECONDS: '60',
  CALL_MAX_DURATION_SECONDS: '0',
  RATE_LIMIT_PER_IP_PER_MINUTE: '0',
};

/** Waits until the LiveCall equals GET /calls/:id, then checks it field by field. */
export async function settled(client, live, what) {
  let truth;
  const until = Date.now() + STEP_MS;
  for (;;) {
    truth = await client.rest.getCall(live.id);
    if (isDeepStrictEqual(truth, live.state)) return;
    // Events may still be on their way; keep comparing until the deadline, then show the difference.
    if (Date.now() > until) assert.deepEqual(live.state, truth, `${what}: the app's call never caught up with GET /calls/:id`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** Alice calling bob (1:1), bob answering: both following, with their clients. */
async function answeredCall(base, { bobId = unique('bob'), bobOptions, aliceOptions, group = false, extra = [] } = {}) {
  const aliceId = unique('alice');
  const alice = clientFor(base, aliceId, aliceOptions);
  const bob = clientFor(base, bobId, bobOptions);
  bob.connect();
  await bob.waitUntilConnected();
  const ringing = next(bob, 'incoming_call', "bob's phone never rang");
  const aliceCall = await alice.startCall(unique('room'), { type: 'video', isGroupCall: group, inviteUserIds: [bobId, ...extra] });
  const incoming = await ringing;
  const bobCall = await bob.answer(incoming.callId);
  await settled(alice, aliceCall, 'alice after bob answered');
  return { alice, bob, aliceId, bobId, aliceCall, bobCall };
}

/** Takes over the client's socket listener: events are held (or dropped) until the test delivers them. */
function intercept(client) {
  const socket = client.rawSocket;
  const [deliver] = socket.listenersAny();
  socket.offAny(deliver);
  const held = [];
  const capture = (event, payload) => held.push([event, payload]);
  socket.onAny(capture);
  return {
    held,
    deliver: (event, payload) => deliver(event, payload),
    restore() {
      socket.offAny(capture);
      socket.onAny(deliver);
    },
  };
}

/** Defines the scenarios; `ctx()` answers `{ base }` of the running deployment. */
export function defineClientScenarios(ctx) {
  after(closeAll);

  test("the guide's whole flow on the SDK: ring, report ringing, answer, media, mute over socket and REST, leave; both apps' calls equal the server's", async () => {
    const { base } = ctx();
    const [aliceId, bobId, room] = [unique('alice'), unique('bob'), unique('room')];
    const alice = clientFor(base, aliceId);
    const bob = clientFor(base, bobId);
    alice.connect();
    bob.connect();
    await Promise.all([alice.waitUntilConnected(), bob.waitUntilConnected()]);
    assert.equal(bob.connectionState, 'connected');

    const ringing = next(bob, 'incoming_call', "bob's phone never rang");
    const aliceCall = await alice.startCall(room, { type: 'audio', isGroupCall: false, inviteUserIds: [bobId] });
    const aliceLog = watch(aliceCall);
    assert.deepEqual([aliceCall.state.status, aliceCall.state.initiatorId, aliceCall.self.role], ['ringing', aliceId, 'host']);
    const incoming = await ringing;
    assert.deepEqual(
      [incoming.callId, incoming.chatRoomId, incoming.callType, incoming.isGroupCall, incoming.from.userId, incoming.source],
      [aliceCall.id, room, 'audio', false, aliceId, 'socket'],
    );

    const glare = await bob.initiateCall(room, { type: 'audio', isGroupCall: false, inviteUserIds: [aliceId] });
    assert.deepEqual([glare.created, glare.call.id], [false, aliceCall.id], 'bob calling alice back at once joins the same call');

    const rang = next(aliceCall, 'participant_status_changed', 'alice never saw bob ringing', (e) => e.userId === bobId && e.status === 'ringing');
    assert.equal(await bob.reportRinging(incoming.callId), true);
    await rang;

    const bobCall = await bob.answer(incoming.callId, { isMicMuted: true });
    assert.equal(bobCall.self.isMicMuted, true);
    await settled(alice, aliceCall, "alice's call after bob answered");
    assert.equal(aliceCall.state.status, 'active');

    const media = bobCall.startMedia();
    const session = await media.ready;
    assert.deepEqual([session.channelName, session.userAccount, session.provider], [`call_${aliceCall.id}`, bobId, 'agora']);
    assert.match(session.rtcToken, /^007/);

    await bobCall.setMedia({ isMicMuted: false, isCameraOff: true });
    await alice.updateMedia(aliceCall.id, { isSharingScreen: true });
    await settled(alice, aliceCall, "alice's call after the media changes");
    await settled(bob, bobCall, "bob's call after the media changes");
    assert.deepEqual(
      aliceCall.participants.map((p) => [p.userId, p.isMicMuted, p.isCameraOff, p.isSharingScreen]),
      [[aliceId, false, true, true], [bobId, false, true, false]], // an audio call starts with cameras off
    );

    const ended = next(aliceCall, 'ended', "alice's call never ended");
    const endedForAlice = next(alice, 'call_ended', 'alice never heard the call end');
    const left = await bobCall.leave();
    assert.equal(left.status, 'ended');
    assert.deepEqual([(await ended).reason, (await endedForAlice).reason], ['completed', 'completed']);
    assert.equal(media.stopped, true, 'leaving stops renewing the media token');
    assert.deepEqual([bobCall.following, aliceCall.following], [false, false]);
    await settled(alice, aliceCall, "alice's ended call");
    aliceLog.assertAccounted("alice's call");
    assert.deepEqual(aliceLog.resyncs(), [], 'nothing went missing, so nothing needed a resync');
  });

  test('the live roster on the SDK: invite makes a 1:1 a group call and rings the newcomer, the host role moves, removeParticipant ends the removed one\'s events; every LiveCall equals the server\'s without a resync', async () => {
    const { base } = ctx();
    const { alice, bob, aliceId, bobId, aliceCall, bobCall } = await answeredCall(base);
    const aliceLog = watch(aliceCall);
    const bobLog = watch(bobCall);
    const carolId = unique('carol');
    const carol = clientFor(base, carolId);
    carol.connect();
    await carol.waitUntilConnected();

    const ringing = next(carol, 'incoming_call', "carol's phone never rang when bob invited her");
    const updated = next(aliceCall, 'call_updated', 'alice never heard the call became a group call');
    const after = await bob.invite(bobCall.id, [carolId]);
    assert.equal(after.isGroupCall, true);
    const incoming = await ringing;
    assert.deepEqual([incoming.callId, incoming.from.userId, incoming.isGroupCall], [aliceCall.id, bobId, true]);
    assert.equal((await updated).call.isGroupCall, true);
    const carolCall = await carol.answer(incoming.callId);
    await settled(alice, aliceCall, 'alice after carol answered');

    const hostChanged = next(bobCall, 'host_changed', 'bob never heard who the new host is');
    await aliceCall.leave();
    assert.equal((await hostChanged).userId, bobId, 'bob joined before carol and becomes host');
    await settled(bob, bobCall, 'bob after alice left');
    assert.equal(bobCall.self.role, 'host');

    const removedEvent = next(carolCall, 'participant_left', 'carol never heard she was removed', (e) => e.userId === carolId);
    await bob.removeParticipant(bobCall.id, carolId);
    assert.equal((await removedEvent).reason, 'removed');
    await settled(bob, bobCall, 'bob after removing carol');
    await assert.rejects(carol.rest.getCall(bobCall.id), (e) => e.code === 'CALL_NOT_FOUND', 'the removed carol still sees the call');
    // (bob's own REST answers move his call on too, so only resyncs are checked, not every seq.)
    assert.deepEqual(bobLog.resyncs(), [], 'the roster events were applied by the client, not folded into a resync');
    assert.deepEqual(aliceLog.resyncs(), [], "alice's client applied the roster events itself");
  });

  test('REST errors are CallsApiError {status, code, message, requestId, details}; a refused token is refreshed once and the request repeated', async () => {
    const { base } = ctx();
    const alice = clientFor(base, unique('alice'));
    await assert.rejects(alice.initiateCall(unique('room'), { type: 'video', isGroupCall: false, inviteUserIds: [] }), (err) => {
      assert.ok(err instanceof sdk.CallsApiError);
      assert.deepEqual([err.status, err.code], [400, 'VALIDATION_FAILED']);
      assert.ok(err.details.length > 0 && err.details.every((d) => typeof d.field === 'string' && typeof d.message === 'string'), JSON.stringify(err.details));
      assert.ok(typeof err.requestId === 'string' && err.requestId.length > 0, 'the request id is there to quote');
      return true;
    });
    await assert.rejects(alice.getCall(randomUUID()), (err) => sdk.isCallsApiError(err, 'CALL_NOT_FOUND') && err.status === 404);
    await assert.rejects(alice.follow(randomUUID()), (err) => sdk.isCallsApiError(err, 'CALL_NOT_FOUND'));

    const carolId = unique('carol');
    const carol = clientFor(base, carolId, { tokens: (n) => mint(carolId, n === 1 ? -3600 : 600) });
    assert.deepEqual((await carol.listCalls({ limit: 5 })).items, []);
    assert.deepEqual(carol.tokenRequests, [{ forceRefresh: false }, { forceRefresh: true }]);

    const dave = clientFor(base, unique('dave'), { tokens: () => 'not-a-token' });
    await assert.rejects(dave.getActiveCall('room'), (err) => sdk.isCallsApiError(err, 'UNAUTHORIZED') && err.status === 401);
    assert.equal(dave.tokenRequests.length, 2, 'one retry with a fresh token, then the error');
  });

  test("ringing helpers: every device rings once, answering on one stops the others ('answered_elsewhere'), declining ends a 1:1", async () => {
    const { base } = ctx();
    const [aliceId, bobId, carolId] = [unique('alice'), unique('bob'), unique('carol')];
    const alice = clientFor(base, aliceId);
    const phone = clientFor(base, bobId);
    const tablet = clientFor(base, bobId);
    phone.connect();
    tablet.connect();
    await Promise.all([phone.waitUntilConnected(), tablet.waitUntilConnected()]);
    const rings = { phone: [], tablet: [] };
    phone.on('incoming_call', (c) => rings.phone.push(c.callId));
    tablet.on('incoming_call', (c) => rings.tablet.push(c.callId));
    const stopped = next(phone, 'incoming_call_cancelled', "bob's phone kept ringing after he answered on the tablet");

    const { call } = await alice.initiateCall(unique('room'), { type: 'video', isGroupCall: false, inviteUserIds: [bobId] });
    await eventually(() => rings.phone.length && rings.tablet.length, 'both of bob\'s devices should ring');
    assert.equal(await phone.reportRinging(call.id), true);
    assert.equal(await tablet.reportRinging(call.id), true, 'reporting ringing from a second device is fine');
    const answered = await tablet.answer(call.id);
    assert.deepEqual([(await stopped).reason, (await stopped).callId], ['answered_elsewhere', call.id]);
    assert.equal(await phone.reportRinging(call.id), false, 'the phone must stop ringing: the call was answered elsewhere');
    assert.equal(await phone.decline(call.id), false, 'nothing left to decline');
    assert.deepEqual([rings.phone, rings.tablet], [[call.id], [call.id]], 'each device rang exactly once');
    await answered.end();

    const carol = clientFor(base, carolId);
    const carolCall = await carol.startCall(unique('room'), { type: 'audio', isGroupCall: false, inviteUserIds: [bobId] });
    const ended = next(carolCall, 'ended', "carol's call never ended after bob declined");
    assert.equal(await phone.decline(carolCall.id, 'busy'), true);
    const end = await ended;
    assert.deepEqual([end.reason, end.endedBy], ['declined', bobId]);
    assert.equal(carolCall.state.participants.find((p) => p.userId === bobId).declineReason, 'busy');
    assert.equal(await phone.decline(carolCall.id), false, 'declining an ended call answers false');
  });

  test('when the access token expires mid-call, the server drops the socket and the client reconnects with a fresh token, re-joins and misses nothing', async () => {
    const { base } = ctx();
    const bobId = unique('bob');
    // The first token is 27 s past `exp`: the server's 30 s leeway leaves it about 3 s.
    const tokens = (n) => mint(bobId, n === 1 ? -27 : 600);
    const { alice, aliceId, bob, bobCall } = await answeredCall(base, { bobId, bobOptions: { tokens, refreshBeforeExpirySeconds: false } });
    const log = watch(bobCall);
    const socketBefore = bob.rawSocket.id;
    await next(bob, 'connection', "the server never dropped bob's expired socket", (s) => s === 'reconnecting', 6_000);
    await alice.updateMedia(bobCall.id, { isMicMuted: true });
    await next(bob, 'connection', 'bob never reconnected', (s) => s === 'connected');
    assert.notEqual(bob.rawSocket.id, socketBefore);
    assert.ok(bob.tokenRequests.some((r) => r.forceRefresh), `the client never asked for a fresh token: ${JSON.stringify(bob.tokenRequests)}`);
    await settled(bob, bobCall, "bob's call after the token expired");
    assert.equal(bobCall.participants.find((p) => p.userId === aliceId).isMicMuted, true, 'bob missed alice muting');
    await alice.updateMedia(bobCall.id, { isMicMuted: false });
    await settled(bob, bobCall, "bob's call after reconnecting");
    log.assertAccounted("bob's call across the expiry");
    assert.equal(bobCall.state.status, 'active');
  });

  test('the client replaces its socket before the token expires: the peer never sees a disconnect and no event is lost or applied twice', async () => {
    const { base } = ctx();
    const bobId = unique('bob');
    // 5-second tokens: the client rotates half-way through each.
    const { alice, aliceCall, bob, bobCall } = await answeredCall(base, { bobId, bobOptions: { tokens: () => mint(bobId, 5) } });
    const log = watch(bobCall);
    const drops = [];
    aliceCall.on('participant_disconnected', (e) => drops.push(e));
    const sockets = new Set([bob.rawSocket.id]);
    const states = [];
    bob.on('connection', (s) => states.push(s));
    for (let i = 0; i < 14; i += 1) {
      await alice.updateMedia(aliceCall.id, { isMicMuted: i % 2 === 0 });
      sockets.add(bob.rawSocket.id);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(sockets.size >= 2, 'the socket was never replaced although its token was about to expire');
    assert.deepEqual(states, [], 'bob\'s app saw its connection drop during the rotation');
    await settled(bob, bobCall, "bob's call across token rotations");
    log.assertAccounted("bob's call across token rotations");
    // Every change reached bob's call: as an event, or (when the new socket's join snapshot is
    // already ahead of the old socket's last event) inside that snapshot, which
    // assertAccounted has checked leaves no gap.
    assert.ok(bobCall.state.seq - log.log[0].seq >= 14, `bob's call moved ${bobCall.state.seq - log.log[0].seq} seqs for alice's 14 changes: ${JSON.stringify(log.log)}`);
    assert.deepEqual(drops, [], 'alice saw bob disconnect while his client only refreshed its token');
  });

  test('a cut connection: the client reconnects, re-joins and resyncs; what happened meanwhile is in its state, nothing applied twice', async () => {
    const { base } = ctx();
    const proxy = await startProxy([Number(new URL(base).port)]);
    try {
      const { alice, aliceId, bob, bobCall } = await answeredCall(base, { bobOptions: { baseUrl: proxy.url } });
      const log = watch(bobCall);
      proxy.refuse(true);
      proxy.cut();
      await next(bob, 'connection', "bob's client never noticed the cut", (s) => s === 'reconnecting');
      for (const patch of [{ isMicMuted: true }, { isCameraOff: true }, { isSharingScreen: true }]) await alice.updateMedia(bobCall.id, patch);
      proxy.refuse(false);
      await next(bob, 'connection', 'bob never reconnected', (s) => s === 'connected', STEP_MS * 2);
      await settled(bob, bobCall, "bob's call after the cut");
      const alicePart = bobCall.participants.find((p) => p.userId === aliceId);
      assert.deepEqual([alicePart.isMicMuted, alicePart.isCameraOff, alicePart.isSharingScreen], [true, true, true]);
      assert.ok(log.resyncs().some((r) => r.reason === 'reconnect'), `no reconnect resync in ${JSON.stringify(log.log)}`);
      await alice.updateMedia(bobCall.id, { isMicMuted: false });
      await settled(bob, bobCall, "bob's call after the cut, live again");
      assert.equal(log.events().at(-1).type, 'participant_media_changed', 'events flow again after the resync');
      log.assertAccounted("bob's call across the cut");
    } finally {
      await proxy.close();
    }
  });

  test('real events delivered out of order and twice, with stale copies, are applied once each in seq order', async () => {
    const { base } = ctx();
    const { alice, bob, bobCall, aliceId } = await answeredCall(base);
    const log = watch(bobCall);
    const tap = intercept(bob);
    try {
      const patches = [{ isMicMuted: true }, { isCameraOff: true }, { isMicMuted: false }, { isSharingScreen: true }];
      for (const patch of patches) await alice.updateMedia(bobCall.id, patch);
      await eventually(() => tap.held.filter(([, p]) => p?.callId === bobCall.id).length >= 4, 'the changes never reached bob\'s socket');
      const events = tap.held.filter(([, p]) => p?.callId === bobCall.id);
      const stale = events.map(([name, p]) => [name, { ...p, seq: p.seq - events.length, isMicMuted: true }]);
      for (const [name, payload] of [...events].reverse().concat(stale, events, [...events].reverse())) tap.deliver(name, payload);
    } finally {
      tap.restore();
    }
    assert.deepEqual(log.events().map((e) => e.seq), [1, 2, 3, 4].map((i) => log.log[0].seq + i));
    assert.ok(bobCall.stats.dropped >= 12, `dropped ${bobCall.stats.dropped}`);
    await settled(bob, bobCall, "bob's call after the shuffled events");
    const alicePart = bobCall.participants.find((p) => p.userId === aliceId);
    assert.deepEqual([alicePart.isMicMuted, alicePart.isCameraOff, alicePart.isSharingScreen], [false, true, true]);
    log.assertAccounted("bob's call");
  });

  test('a lost event leaves a gap that a fresh join_call snapshot heals within the gap timeout', async () => {
    const { base } = ctx();
    const { alice, bob, bobCall, aliceId } = await answeredCall(base);
    const log = watch(bobCall);
    const tap = intercept(bob);
    try {
      await alice.updateMedia(bobCall.id, { isMicMuted: true });
      await alice.updateMedia(bobCall.id, { isCameraOff: true });
      await eventually(() => tap.held.filter(([, p]) => p?.callId === bobCall.id).length >= 2, 'the changes never reached bob\'s socket');
      const [, second] = tap.held.filter(([, p]) => p?.callId === bobCall.id);
      const start = log.log[0].seq;
      tap.deliver(second[0], second[1]);
      assert.equal(bobCall.state.seq, start, 'an event after a gap must wait');
      const resync = await next(bobCall, 'resync', 'the gap was never healed', () => true, 3_000);
      assert.deepEqual([resync.reason, resync.fromSeq, resync.toSeq], ['gap', start, start + 2]);
    } finally {
      tap.restore();
    }
    const alicePart = bobCall.participants.find((p) => p.userId === aliceId);
    assert.deepEqual([alicePart.isMicMuted, alicePart.isCameraOff], [true, true], 'the lost change is in the state');
    assert.deepEqual(log.events(), [], 'the held event was folded into the snapshot, not applied on top of it');
    await settled(bob, bobCall, "bob's call after the gap");
    log.assertAccounted("bob's call");
  });

  test("media sessions renew ahead of expiresAt and on Agora's onTokenPrivilegeWillExpire; none before joining", async () => {
    const { base } = ctx();
    const { alice, bobCall, bobId } = await answeredCall(base);
    const renewed = [];
    const media = bobCall.startMedia({ onRenew: (s) => renewed.push(s) });
    const first = await media.ready;
    assert.ok(Date.parse(first.expiresAt) - Date.now() <= 5_000, `the server's tokens live 4 s: ${first.expiresAt}`);
    await eventually(() => renewed.length >= 1, 'the media token was not renewed before it expired', 6_000);
    assert.ok(Date.parse(renewed[0].expiresAt) > Date.parse(first.expiresAt), 'the renewed token does not outlive the first');
    assert.ok(Date.now() < Date.parse(first.expiresAt) + 1000, 'renewed too late');
    assert.notEqual(renewed[0].rtcToken, first.rtcToken);
    assert.equal(renewed[0].channelName, first.channelName);
    assert.equal(bobCall.startMedia(), media, 'one managed session per call');

    const [a, b] = [media.renew(), media.renew()];
    assert.equal(a, b, "two onTokenPrivilegeWillExpire at once make one request");
    assert.equal((await a).userAccount, bobId);
    assert.equal(media.session.rtcToken, (await a).rtcToken);

    const carolId = unique('carol');
    const { call } = await alice.initiateCall(unique('room'), { type: 'video', isGroupCall: false, inviteUserIds: [carolId] });
    const carol = clientFor(base, carolId);
    const early = carol.startMedia(call.id);
    await assert.rejects(early.ready, (err) => sdk.isCallsApiError(err, 'NOT_JOINED') && err.status === 409);
    assert.equal(early.stopped, true);
    await bobCall.leave();
    assert.equal(media.stopped, true);
  });
}
