// The acceptance scenarios: each is written once, as a function of a deployment reached only
// through its gateway, and registered for both topologies by standalone.test.mjs and
// scaled.test.mjs. A scenario is what an app (or the chat backend, for room membership) would do,
// and every assertion says what a user would have seen go wrong.
//
// The deployments run with MEMBERSHIP_MODE=table, so the chat backend's internal API decides who
// is in a room (as in production), and with short timers (harness.mjs TIMERS).

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';

import accessToken2Module from 'agora-token/src/AccessToken2.js';

import { mint, SECRET } from '../lib/cluster.mjs';
import {
  AGORA_APP_CERTIFICATE, AGORA_APP_ID, NCS_SECRET, STEP_MS, TIMERS, assertInOrder, eventsOf, eventually, quietPeriod, unique, waitFor,
} from './harness.mjs';

const { AccessToken2, kRtcServiceType } = accessToken2Module;

export const INTERNAL_API_TOKEN = 'internal-acceptance-token-0123456789';

const NIL_UUID = '0193a2b4-7c1d-7f00-8000-000000000001';

/** Checks the error envelope of CONTRACT section 1. */
function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: the app expected HTTP ${status} ${code}, got ${res.status} ${res.text}`);
  assert.ok(res.body && typeof res.body === 'object', `${what}: the error was not a JSON envelope: ${res.text}`);
  assert.equal(res.body.statusCode, status, `${what}: statusCode must repeat the HTTP status`);
  assert.equal(res.body.code, code, `${what}: the app cannot tell what went wrong: ${res.text}`);
  assert.equal(typeof res.body.message, 'string', `${what}: no human message`);
  assert.equal(typeof res.body.error, 'string', `${what}: no reason phrase`);
  assert.ok(res.body.requestId, `${what}: support needs a requestId`);
  assert.doesNotMatch(res.text, /panicked|stack backtrace|SELECT |INSERT |sqlx|postgres:\/\/|cluster-test-secret/i, `${what}: the error leaks internals`);
}

/** Decodes an Agora token with the official npm package and checks it against the session. */
function assertAgoraToken(session, callId, user) {
  assert.equal(session.provider, 'agora');
  assert.equal(session.mode, 'sfu');
  assert.equal(session.channelName, `call_${callId}`, `${user}'s app would join the wrong Agora channel`);
  assert.equal(session.userAccount, user, `${user}'s app would join Agora as someone else`);
  assert.equal(session.appId, AGORA_APP_ID, `${user}'s app would use the wrong Agora project`);
  assert.match(session.rtcToken, /^007/, `${user}'s token is not an AccessToken2`);
  const token = new AccessToken2();
  assert.equal(token.from_string(session.rtcToken), true, `Agora's own package cannot read ${user}'s token`);
  assert.equal(token.verifySignature(AGORA_APP_CERTIFICATE), true, `Agora would reject ${user}'s token: wrong signature`);
  assert.equal(token.appId.toString(), AGORA_APP_ID);
  const [rtc] = token.services;
  assert.equal(rtc.service_type(), kRtcServiceType);
  assert.equal(rtc.__channel_name.toString('utf8'), `call_${callId}`, `${user}'s token is for another channel`);
  assert.equal(rtc.__uid.toString('utf8'), user, `${user}'s token is for another account`);
  for (const privilege of [1, 2, 3, 4]) {
    assert.ok(rtc.__privileges[privilege] > 0, `${user} could not join and publish with the token (privilege ${privilege} missing)`);
  }
  const expiresAt = Date.parse(session.expiresAt);
  assert.ok(Math.abs(expiresAt / 1000 - (token.issueTs + token.expire)) <= 2, 'expiresAt does not match the token');
  assert.ok(Math.abs(expiresAt - Date.now() - 900_000) < 60_000, `the token should live AGORA_TOKEN_TTL_SECONDS, expires ${session.expiresAt}`);
  return token;
}

/** Registers every scenario with `node:test`; `ctx()` answers the running deployment. */
export function defineScenarios(ctx) {
  const scenario = (name, fn, options = {}) => test(name, { timeout: 90_000, ...options }, async () => {
    const c = ctx();
    try {
      await fn(c.client, c);
    } finally {
      c.client.closeAll();
    }
  });

  scenario('a 1:1 call follows the integration guide: ring, answer, Agora session, mute, hang up', async (client, { room }) => {
    const alice = unique('alice');
    const bob = unique('bob');
    const roomId = await room([alice, bob]);
    const alicePhone = await client.connect(alice);
    const bobPhone = await client.connect(bob);

    const created = await client.api(alice, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'video', isGroupCall: false, inviteUserIds: [bob] });
    assert.equal(created.status, 201, `alice could not call bob: ${created.text}`);
    assert.equal(created.body.statusCode, 201);
    assert.equal(typeof created.body.message, 'string');
    const call = created.body.data;
    assert.equal(call.status, 'ringing');
    assert.equal(call.type, 'video');
    assert.equal(call.isGroupCall, false);
    assert.equal(call.chatRoomId, roomId);
    assert.equal(call.initiatorId, alice);
    assert.equal(call.startedAt, null);
    assert.equal(typeof call.seq, 'number');
    const host = call.participants.find((p) => p.userId === alice);
    assert.deepEqual([host.role, host.status], ['host', 'joined'], 'alice should be the host, already in the call');
    assert.deepEqual(call.participants.find((p) => p.userId === bob).status, 'invited');

    const ring = await waitFor(bobPhone, 'incoming_call', (e) => e.callId === call.id, "bob's phone never rang");
    assert.equal(ring.call.id, call.id);
    assert.ok(JSON.stringify(ring.from).includes(alice), `bob's phone does not say who is calling: ${JSON.stringify(ring.from)}`);
    assert.ok(ring.at, 'incoming_call carries its time');

    const aliceSnapshot = await client.follow(alicePhone, call.id);
    assert.equal(aliceSnapshot.status, 'ringing');
    await waitFor(alicePhone, 'call_participants', (e) => e.callId === call.id, 'alice never got the call_participants snapshot');

    const ringing = await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'ringing' });
    assert.equal(ringing.status, 200, `bob's phone could not report ringing: ${ringing.text}`);
    await waitFor(alicePhone, 'participant_status_changed', (e) => e.userId === bob && e.status === 'ringing', "alice never heard that bob's phone is ringing");

    const joined = await client.join(bob, call.id, { isMicMuted: false, isCameraOff: false });
    assert.equal(joined.status, 'active', 'the call should be active once bob answers');
    assert.ok(joined.startedAt, 'startedAt is set when the call is answered');
    const bobJoined = await waitFor(alicePhone, 'participant_joined', (e) => e.participant?.userId === bob, 'alice never saw bob answer');
    assert.equal(bobJoined.participant.status, 'joined');
    const bobSnapshot = await client.follow(bobPhone, call.id);
    assert.equal(bobSnapshot.status, 'active');
    assert.deepEqual(bobSnapshot.participants.map((p) => p.status).sort(), ['joined', 'joined']);
    assert.ok(bobSnapshot.seq >= bobJoined.seq, 'the snapshot is not behind the events alice already saw');

    for (const user of [alice, bob]) {
      const session = await client.api(user, 'POST', `/calls/${call.id}/media/session`);
      assert.equal(session.status, 200, `${user} got no Agora session: ${session.text}`);
      assertAgoraToken(session.body.data, call.id, user);
    }

    const mute = await client.emit(bobPhone, 'media_state_changed', { callId: call.id, isMicMuted: true });
    assert.equal(mute.ok, true, `bob could not mute: ${JSON.stringify(mute)}`);
    const muted = await waitFor(alicePhone, 'participant_media_changed', (e) => e.userId === bob && e.isMicMuted === true, 'alice never saw bob mute');
    assert.deepEqual([muted.isCameraOff, muted.isSharingScreen], [false, false]);
    const camera = await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isCameraOff: true });
    assert.equal(camera.status, 200, `alice could not turn her camera off: ${camera.text}`);
    assert.equal(camera.body.data.userId, alice);
    assert.equal(camera.body.data.isCameraOff, true);
    await waitFor(bobPhone, 'participant_media_changed', (e) => e.userId === alice && e.isCameraOff === true, "bob never saw alice's camera go off");

    const leave = await client.emit(bobPhone, 'leave_call', { callId: call.id });
    assert.equal(leave.ok, true, `bob could not hang up: ${JSON.stringify(leave)}`);
    const left = await waitFor(alicePhone, 'participant_left', (e) => e.userId === bob, 'alice never saw bob hang up');
    assert.equal(left.reason, 'left');
    const ended = await waitFor(alicePhone, 'call_ended', (e) => e.callId === call.id, "alice's call never ended after bob hung up");
    assert.equal(ended.reason, 'completed');
    assert.equal(ended.endedBy, bob);

    const final = await client.getCall(alice, call.id);
    assert.equal(final.status, 'ended');
    assert.equal(final.endReason, 'completed');
    assert.ok(final.endedAt, 'endedAt is set');
    assert.equal(final.participants.find((p) => p.userId === alice).isCameraOff, true);
    assertInOrder(alicePhone, call.id);
    assertInOrder(bobPhone, call.id);
    const history = await client.api(alice, 'GET', '/calls?limit=5');
    assert.equal(history.status, 200);
    assert.ok(history.body.data.items.some((c) => c.id === call.id), "the call is missing from alice's history");
  });

  scenario('a group call follows the guide: everyone rings, joins, hears each other, and it ends when the last one leaves', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const phones = Object.fromEntries(await Promise.all([alice, bob, carol].map(async (u) => [u, await client.connect(u)])));
    const call = await client.initiate(alice, [bob, carol], { room: roomId, type: 'audio', group: true });
    assert.equal(call.maxParticipants, TIMERS.maxParticipants, 'a group call without maxParticipants gets CALL_MAX_PARTICIPANTS');
    await client.follow(phones[alice], call.id);
    for (const u of [bob, carol]) {
      await waitFor(phones[u], 'incoming_call', (e) => e.callId === call.id, `${u}'s phone never rang for the group call`);
      await client.join(u, call.id);
      await client.follow(phones[u], call.id);
    }
    await waitFor(phones[alice], 'participant_joined', (e) => e.participant?.userId === carol, 'alice never saw carol join');
    await waitFor(phones[bob], 'participant_joined', (e) => e.participant?.userId === carol, 'bob never saw carol join');

    await client.emit(phones[carol], 'media_state_changed', { callId: call.id, isSharingScreen: true });
    for (const u of [alice, bob]) {
      await waitFor(phones[u], 'participant_media_changed', (e) => e.userId === carol && e.isSharingScreen, `${u} never saw carol share her screen`);
    }

    const notHost = await client.api(bob, 'POST', `/calls/${call.id}/end`);
    assertError(notHost, 403, 'FORBIDDEN', 'bob, not the host, ended the group call for everyone');

    assert.equal((await client.api(alice, 'PATCH', `/calls/${call.id}/status`, { status: 'left' })).status, 200);
    for (const u of [bob, carol]) {
      await waitFor(phones[u], 'participant_left', (e) => e.userId === alice && e.reason === 'left', `${u} never saw the host leave`);
    }
    assert.equal((await client.getCall(bob, call.id)).status, 'active', 'the group call must go on after the host leaves');
    await client.emit(phones[carol], 'leave_call', { callId: call.id });
    await waitFor(phones[bob], 'participant_left', (e) => e.userId === carol, 'bob never saw carol leave');
    assert.equal((await client.getCall(bob, call.id)).status, 'active', 'bob is still in the call');
    await client.emit(phones[bob], 'leave_call', { callId: call.id });
    const ended = await waitFor(phones[alice], 'call_ended', (e) => e.callId === call.id, 'the group call never ended when the last one left (invitees get call_ended)');
    assert.equal(ended.reason, 'completed');
    assert.equal((await client.getCall(alice, call.id)).status, 'ended');
    for (const u of [alice, bob, carol]) assertInOrder(phones[u], call.id);
  });

  scenario('the host ends a group call for everyone, and nobody can act on it afterwards', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const bobPhone = await client.connect(bob);
    const call = await client.initiate(alice, [bob, carol], { room: roomId, group: true });
    await client.join(bob, call.id);
    await client.follow(bobPhone, call.id);
    const end = await client.api(alice, 'POST', `/calls/${call.id}/end`);
    assert.equal(end.status, 200, `the host could not end the call: ${end.text}`);
    assert.equal(end.body.data.status, 'ended');
    assert.equal(end.body.data.endedBy, alice);
    const ended = await waitFor(bobPhone, 'call_ended', (e) => e.callId === call.id, 'bob never heard the host end the call');
    assert.equal(ended.endedBy, alice);
    assert.equal(ended.reason, 'completed');
    // call_ended goes to the call's followers and to every invitee: bob is both, and hears it once.
    await quietPeriod(300);
    assert.equal(eventsOf(bobPhone, call.id, 'call_ended').length, 1, "bob's app was told twice that the call ended");
    assertError(await client.api(carol, 'POST', `/calls/${call.id}/join`), 409, 'CALL_ENDED', 'carol joined a call that was over');
    assertError(await client.api(bob, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true }), 409, 'CALL_ENDED', 'bob changed his mic in an ended call');
    assertError(await client.api(carol, 'PATCH', `/calls/${call.id}/status`, { status: 'declined' }), 409, 'CALL_ENDED', 'carol declined an ended call');
    const socketJoin = await client.emit(bobPhone, 'call_status_changed', { callId: call.id, status: 'joined' });
    assert.equal(socketJoin.ok, false);
    assert.equal(socketJoin.error.code, 'CALL_ENDED', `re-joining an ended call over the socket: ${JSON.stringify(socketJoin)}`);
    const active = await client.api(alice, 'GET', `/calls/rooms/${roomId}/active`);
    assert.equal(active.status, 200);
    assert.equal(active.body.data, null, 'an ended call still shows as the room\'s active call');
  });

  scenario('a callee who declines ends the 1:1 call, and every device of theirs stops ringing', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const alicePhone = await client.connect(alice);
    const bobPhone = await client.connect(bob);
    const bobTablet = await client.connect(bob);
    const call = await client.initiate(alice, [bob], { room: roomId });
    await client.follow(alicePhone, call.id);
    for (const device of [bobPhone, bobTablet]) await waitFor(device, 'incoming_call', (e) => e.callId === call.id, 'one of bob\'s devices never rang');
    const decline = await client.emit(bobPhone, 'call_status_changed', { callId: call.id, status: 'declined', reason: 'in a meeting' });
    assert.equal(decline.ok, true, `bob could not decline: ${JSON.stringify(decline)}`);
    const changed = await waitFor(alicePhone, 'participant_status_changed', (e) => e.userId === bob && e.status === 'declined', 'alice never heard that bob declined');
    assert.equal(changed.reason, 'in a meeting');
    const ended = await waitFor(alicePhone, 'call_ended', (e) => e.callId === call.id, "alice's call kept ringing after bob declined");
    assert.equal(ended.reason, 'declined');
    await waitFor(bobTablet, 'incoming_call_cancelled', (e) => e.callId === call.id && e.reason === 'declined_elsewhere', "bob's tablet kept ringing after he declined on his phone");
    await waitFor(bobTablet, 'call_ended', (e) => e.callId === call.id, "bob's tablet never heard the call end");
    const final = await client.getCall(bob, call.id);
    assert.equal(final.endReason, 'declined');
    assert.equal(final.participants.find((p) => p.userId === bob).declineReason, 'in a meeting');
  });

  scenario('a caller who hangs up before anyone answers cancels the call on the callee\'s phone', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const bobPhone = await client.connect(bob);
    const call = await client.initiate(alice, [bob], { room: roomId });
    await waitFor(bobPhone, 'incoming_call', (e) => e.callId === call.id, "bob's phone never rang");
    const end = await client.api(alice, 'POST', `/calls/${call.id}/end`);
    assert.equal(end.status, 200, `alice could not cancel: ${end.text}`);
    assert.equal(end.body.data.endReason, 'cancelled');
    const cancelled = await waitFor(bobPhone, 'incoming_call_cancelled', (e) => e.callId === call.id, "bob's phone kept ringing after alice hung up");
    assert.equal(cancelled.reason, 'cancelled');
    const ended = await waitFor(bobPhone, 'call_ended', (e) => e.callId === call.id, 'bob never heard the call end');
    assert.equal(ended.reason, 'cancelled');
    assertError(await client.api(bob, 'POST', `/calls/${call.id}/join`), 409, 'CALL_ENDED', 'bob answered a call alice had cancelled');

    // Leaving before an answer (the app's hang-up button over the socket) cancels too.
    const alicePhone = await client.connect(alice);
    const again = await client.initiate(alice, [bob], { room: roomId });
    await waitFor(bobPhone, 'incoming_call', (e) => e.callId === again.id, "bob's phone never rang the second time");
    await client.follow(alicePhone, again.id);
    const leave = await client.emit(alicePhone, 'leave_call', { callId: again.id });
    assert.equal(leave.ok, true, `alice could not hang up: ${JSON.stringify(leave)}`);
    const cancelledAgain = await waitFor(bobPhone, 'call_ended', (e) => e.callId === again.id, "bob's phone kept ringing after alice left");
    assert.equal(cancelledAgain.reason, 'cancelled');
  });

  scenario('either side of an answered 1:1 call may end it, and it ends completed', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const alicePhone = await client.connect(alice);
    const call = await client.initiate(alice, [bob], { room: roomId, type: 'audio' });
    await client.join(bob, call.id);
    await client.follow(alicePhone, call.id);
    const end = await client.api(bob, 'POST', `/calls/${call.id}/end`);
    assert.equal(end.status, 200, `bob, the callee, could not end the 1:1 call: ${end.text}`);
    assert.deepEqual([end.body.data.status, end.body.data.endReason, end.body.data.endedBy], ['ended', 'completed', bob]);
    const ended = await waitFor(alicePhone, 'call_ended', (e) => e.callId === call.id, 'alice never heard bob end the call');
    assert.deepEqual([ended.reason, ended.endedBy], ['completed', bob]);
    assertError(await client.api(alice, 'POST', `/calls/${call.id}/end`), 409, 'CALL_ENDED', 'ending an ended call');
  });

  scenario('an unanswered call rings out: the callee is missed and the call ends missed after the ring timeout', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const alicePhone = await client.connect(alice);
    const bobPhone = await client.connect(bob);
    const started = Date.now();
    const call = await client.initiate(alice, [bob], { room: roomId });
    await client.follow(alicePhone, call.id);
    const missed = await waitFor(alicePhone, 'participant_status_changed', (e) => e.userId === bob && e.status === 'missed', 'bob was never marked missed when the call rang out', TIMERS.ring * 1000 + STEP_MS);
    assert.ok(Date.now() - started >= TIMERS.ring * 1000 - 500, `bob was marked missed before the ring timeout (${Date.now() - started} ms)`);
    const ended = await waitFor(alicePhone, 'call_ended', (e) => e.callId === call.id, "alice's call never ended after ringing out");
    assert.equal(ended.reason, 'missed');
    assert.ok(ended.seq > missed.seq);
    const cancelled = await waitFor(bobPhone, 'incoming_call_cancelled', (e) => e.callId === call.id, "bob's phone kept ringing after the ring timeout");
    assert.equal(cancelled.reason, 'missed');
    assert.equal((await client.getCall(bob, call.id)).participants.find((p) => p.userId === bob).status, 'missed');
  });

  scenario('in a group call an invitee who never answers is missed while the call goes on, and may still join later', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const alicePhone = await client.connect(alice);
    const call = await client.initiate(alice, [bob, carol], { room: roomId, group: true });
    await client.follow(alicePhone, call.id);
    await client.join(bob, call.id);
    await waitFor(alicePhone, 'participant_status_changed', (e) => e.userId === carol && e.status === 'missed', 'carol was never marked missed', TIMERS.ring * 1000 + STEP_MS);
    assert.equal((await client.getCall(alice, call.id)).status, 'active', 'the group call ended although bob answered');
    const late = await client.join(carol, call.id);
    assert.equal(late.participants.find((p) => p.userId === carol).status, 'joined', 'carol could not join late');
    await waitFor(alicePhone, 'participant_joined', (e) => e.participant?.userId === carol, 'alice never saw carol join late');
  });

  scenario('calling someone who is in another call marks them busy and ends the 1:1 call busy', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const busyRoom = await room([bob, carol]);
    const roomId = await room([alice, bob]);
    const first = await client.initiate(carol, [bob], { room: busyRoom });
    await client.join(bob, first.id);
    const alicePhone = await client.connect(alice);
    const res = await client.api(alice, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [bob] });
    assert.ok([200, 201].includes(res.status), `alice's call to a busy bob failed: ${res.text}`);
    const callId = res.body.data.id;
    const call = await eventually(async () => {
      const c = await client.getCall(alice, callId);
      return c.status === 'ended' && c;
    }, "alice's call to a busy bob never ended");
    assert.equal(call.endReason, 'busy', 'alice should learn bob is busy');
    const bobRecord = call.participants.find((p) => p.userId === bob);
    assert.deepEqual([bobRecord.status, bobRecord.declineReason], ['declined', 'busy']);
    assert.equal((await client.getCall(bob, first.id)).status, 'active', "bob's own call was disturbed");
    const again = await client.api(alice, 'GET', `/calls/rooms/${roomId}/active`);
    assert.equal(again.body.data, null, 'the busy call still blocks the room');
    assert.ok(alicePhone.connected);

    // In a group call the busy invitee is declined and the others still ring.
    const dave = unique('dave');
    const groupRoom = await room([alice, bob, dave]);
    const group = await client.initiate(alice, [bob, dave], { room: groupRoom, group: true });
    const bobInGroup = group.participants.find((p) => p.userId === bob);
    assert.deepEqual([bobInGroup.status, bobInGroup.declineReason], ['declined', 'busy'], 'a busy invitee of a group call should be declined busy');
    assert.equal(group.participants.find((p) => p.userId === dave).status, 'invited', 'the free invitee should still ring');
    assert.equal(group.status, 'ringing', 'a group call must not end because one invitee is busy');
  });

  scenario('two people calling each other at once end up in one call (glare)', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const [a, b] = await Promise.all([
      client.api(alice, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'video', isGroupCall: false, inviteUserIds: [bob] }),
      client.api(bob, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'video', isGroupCall: false, inviteUserIds: [alice] }),
    ]);
    assert.deepEqual([a.status, b.status].sort(), [200, 201], `one call must be created and the other merged into it: ${a.text} / ${b.text}`);
    assert.equal(a.body.data.id, b.body.data.id, 'alice and bob ended up in two different calls');
    const active = await client.api(alice, 'GET', `/calls/rooms/${roomId}/active`);
    assert.equal(active.body.data.id, a.body.data.id, 'the room shows another call');
    const joined = await client.api(a.status === 200 ? alice : bob, 'POST', `/calls/${a.body.data.id}/join`);
    assert.equal(joined.status, 200, 'the second caller could not answer the merged call');
    assert.equal(joined.body.data.status, 'active');
  });

  scenario('a room member who may not see a 1:1 call cannot start another one in that room', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const call = await client.initiate(alice, [bob], { room: roomId });
    const res = await client.api(carol, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [alice] });
    assertError(res, 409, 'CALL_ALREADY_ACTIVE', 'carol started a second call in a busy room');
    assert.ok(!res.text.includes(call.id), 'carol learnt the id of a call she may not see');
    assert.equal(res.body.data, undefined);
  });

  scenario('however many room members join at once, a group call never exceeds maxParticipants', async (client, { room }) => {
    const host = unique('host');
    const members = Array.from({ length: 6 }, () => unique('member'));
    const roomId = await room([host, ...members]);
    const call = await client.initiate(host, [members[0]], { room: roomId, group: true, maxParticipants: 3 });
    const results = await Promise.all(members.map((m) => client.api(m, 'POST', `/calls/${call.id}/join`)));
    const ok = results.filter((r) => r.status === 200);
    const full = results.filter((r) => r.status === 409);
    assert.equal(ok.length, 2, `${ok.length} members got in besides the host; maxParticipants is 3: ${results.map((r) => r.status)}`);
    for (const r of full) assertError(r, 409, 'CALL_FULL', 'a member who did not fit');
    assert.equal(ok.length + full.length, members.length, `unexpected answers: ${results.map((r) => r.text)}`);
    const final = await client.getCall(host, call.id);
    assert.equal(final.participants.filter((p) => p.status === 'joined').length, 3, 'the call holds more people than it allows');
  });

  scenario('with several devices, answering on one stops the others ringing (answered_elsewhere) and every device follows the call', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const bobPhone = await client.connect(bob);
    const bobTablet = await client.connect(bob);
    const bobLaptop = await client.connect(bob, { transports: ['polling'] });
    const call = await client.initiate(alice, [bob], { room: roomId });
    for (const d of [bobPhone, bobTablet, bobLaptop]) await waitFor(d, 'incoming_call', (e) => e.callId === call.id, 'one of bob\'s devices never rang');
    await client.join(bob, call.id);
    await client.follow(bobPhone, call.id);
    for (const d of [bobTablet, bobLaptop]) {
      const cancelled = await waitFor(d, 'incoming_call_cancelled', (e) => e.callId === call.id, "bob's other device kept ringing after he answered on his phone");
      assert.equal(cancelled.reason, 'answered_elsewhere');
    }
    assert.equal(eventsOf(bobTablet, call.id, 'incoming_call_cancelled').length, 1, 'the tablet was told to stop ringing more than once');
    // Both devices follow the call: events reach each.
    await client.follow(bobTablet, call.id);
    await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true });
    for (const d of [bobPhone, bobTablet]) await waitFor(d, 'participant_media_changed', (e) => e.userId === alice && e.isMicMuted, 'one of bob\'s devices missed alice muting');
    // Closing one device does not disconnect bob: he still has another socket.
    bobTablet.close();
    await quietPeriod(300);
    const call2 = await client.getCall(alice, call.id);
    assert.equal(call2.participants.find((p) => p.userId === bob).isConnected, true, 'closing one of two devices marked bob disconnected');
  });

  scenario('a participant whose app drops is disconnected for the others, then left with connection_lost after the grace', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const alicePhone = await client.connect(alice);
    const bobPhone = await client.connect(bob);
    const call = await client.initiate(alice, [bob], { room: roomId, group: true });
    await client.join(bob, call.id);
    await client.follow(alicePhone, call.id);
    await client.follow(bobPhone, call.id);
    bobPhone.close();
    const disconnected = await waitFor(alicePhone, 'participant_disconnected', (e) => e.userId === bob, "alice never saw bob's connection drop");
    assert.equal(disconnected.graceSeconds, TIMERS.grace);
    const during = await client.getCall(alice, call.id);
    const bobDuring = during.participants.find((p) => p.userId === bob);
    assert.deepEqual([bobDuring.status, bobDuring.isConnected], ['joined', false], 'during the grace bob is still in the call, not connected');
    const left = await waitFor(alicePhone, 'participant_left', (e) => e.userId === bob, 'bob was never dropped after the grace', TIMERS.grace * 1000 + STEP_MS);
    assert.equal(left.reason, 'connection_lost');
    assert.ok(left.seq > disconnected.seq);
    assert.equal((await client.getCall(alice, call.id)).participants.find((p) => p.userId === bob).status, 'left');
  });

  scenario('a participant who reconnects within the grace stays in the call and gets a snapshot whose seq lets it drop stale events', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const alicePhone = await client.connect(alice);
    const call = await client.initiate(alice, [bob, carol], { room: roomId, group: true });
    await client.join(bob, call.id);
    await client.join(carol, call.id);
    await client.follow(alicePhone, call.id);
    // Carol's app reconnects by itself (socket.io-client's reconnection) and re-joins, as the guide says.
    const carolPhone = client.socket(carol, { reconnection: true });
    const snapshots = [];
    carolPhone.on('connect', () => {
      client.emit(carolPhone, 'join_call', { callId: call.id }).then((ack) => snapshots.push(ack)).catch(() => {});
    });
    await eventually(() => snapshots.length === 1, "carol's app never followed the call");
    const first = snapshots[0];
    assert.equal(first.ok, true, JSON.stringify(first));

    // The network drops under carol; bob mutes while she is away.
    carolPhone.io.engine.close();
    await waitFor(alicePhone, 'participant_disconnected', (e) => e.userId === carol, "alice never saw carol's connection drop");
    const mute = await client.api(bob, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true });
    assert.equal(mute.status, 200);
    await eventually(() => snapshots.length >= 2, "carol's app never re-joined after reconnecting");
    const second = snapshots[1];
    assert.equal(second.ok, true, `carol's re-join failed: ${JSON.stringify(second)}`);
    await waitFor(alicePhone, 'participant_reconnected', (e) => e.userId === carol, 'alice never saw carol come back');
    // Her app reconnects within 100-500 ms, so its re-join can reach calls-api before bob's mute
    // does: then the snapshot shows bob unmuted and the mute follows as an event above the
    // snapshot's seq. Either way her app ends up knowing bob is muted.
    if (!second.data.participants.find((p) => p.userId === bob).isMicMuted) {
      await waitFor(carolPhone, 'participant_media_changed', (e) => e.userId === bob && e.isMicMuted === true && e.seq > second.data.seq,
        "carol's app never learnt that bob muted while she was away");
    }
    assert.ok(second.data.seq > first.data.seq, 'the new snapshot must be ahead of the old one');
    // Her own presence may reach calls-api just after the snapshot: then the reconnection
    // follows it as an event, above the snapshot's seq, and her app converges either way.
    if (!second.data.participants.find((p) => p.userId === carol).isConnected) {
      const back = await waitFor(carolPhone, 'participant_reconnected', (e) => e.userId === carol, "carol's app still shows her disconnected after re-joining");
      assert.ok(back.seq > second.data.seq, "carol's app would drop the event that shows her back");
    }

    await client.api(bob, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: false });
    const unmuted = await waitFor(carolPhone, 'participant_media_changed', (e) => e.userId === bob && e.isMicMuted === false, 'carol missed bob unmuting after she came back');
    assert.ok(unmuted.seq > second.data.seq, 'an event after the snapshot must have a higher seq');
    const afterSnapshot = carolPhone.seen.slice(carolPhone.seen.findLastIndex((e) => e.event === 'call_participants'))
      // Only the call's own stream has a seq: the ring replay a reconnecting socket gets
      // (`incoming_call_cancelled`, a user event) may arrive before or after the snapshot.
      .filter((e) => e.data?.callId === call.id && typeof e.data.seq === 'number' && e.event !== 'call_participants');
    assert.ok(afterSnapshot.every((e) => e.data.seq > second.data.seq), 'carol got events at or below her snapshot after re-joining');
    await quietPeriod(TIMERS.grace * 1000 + 500);
    const final = await client.getCall(alice, call.id);
    assert.equal(final.participants.find((p) => p.userId === carol).status, 'joined', 'carol was dropped although she came back within the grace');
    assertInOrder(alicePhone, call.id);
  });

  scenario('a participant can leave and rejoin a live group call, and one who declined may still join', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomMembers = [alice, bob, unique('carol'), unique('dave')];
    const roomId = await room(roomMembers);
    const alicePhone = await client.connect(alice);
    const call = await client.initiate(alice, [bob, roomMembers[3]], { room: roomId, group: true });
    const dave = roomMembers[3];
    assert.equal((await client.api(dave, 'PATCH', `/calls/${call.id}/status`, { status: 'declined' })).status, 200, 'dave could not decline');
    const changedMind = await client.api(dave, 'POST', `/calls/${call.id}/join`);
    assert.equal(changedMind.status, 200, `dave could not join after declining: ${changedMind.text}`);
    await client.follow(alicePhone, call.id);
    await client.join(bob, call.id);
    assert.equal((await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'left' })).status, 200);
    await waitFor(alicePhone, 'participant_left', (e) => e.userId === bob, 'alice never saw bob leave');
    const back = await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'joined' });
    assert.equal(back.status, 200, `bob could not rejoin: ${back.text}`);
    const joins = await eventually(() => eventsOf(alicePhone, call.id, 'participant_joined').filter((e) => e.participant.userId === bob).length === 2 && true, 'alice never saw bob rejoin');
    assert.ok(joins);
    assertError(await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'ringing' }), 409, 'INVALID_TRANSITION', 'a joined participant went back to ringing');
    // Someone who declined may still change their mind while the call is live.
    const carol = roomMembers[2];
    const invited = await client.api(carol, 'POST', `/calls/${call.id}/join`);
    assert.equal(invited.status, 200, `a room member could not join: ${invited.text}`);
    assert.equal((await client.api(carol, 'PATCH', `/calls/${call.id}/status`, { status: 'left' })).status, 200);
    assertError(await client.api(carol, 'PATCH', `/calls/${call.id}/status`, { status: 'declined' }), 409, 'INVALID_TRANSITION', 'carol declined a call she had already left');
    assertError(await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'invited' }), 409, 'INVALID_TRANSITION', 'a participant made themselves invited');
    assertError(await client.api(alice, 'PATCH', `/calls/${call.id}/status`, { status: 'declined' }), 409, 'INVALID_TRANSITION', 'the host declined a call she is in');
  });

  scenario('media needs the call to be joined first (NOT_JOINED), and a renewed Agora session is a fresh valid token', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const call = await client.initiate(alice, [bob], { room: roomId });
    assertError(await client.api(bob, 'POST', `/calls/${call.id}/media/session`), 409, 'NOT_JOINED', 'bob got Agora credentials before answering');
    assertError(await client.api(bob, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true }), 409, 'NOT_JOINED', 'bob changed his mic before answering');
    await client.join(bob, call.id);
    const first = (await client.api(bob, 'POST', `/calls/${call.id}/media/session`)).body.data;
    const second = await client.api(bob, 'POST', `/calls/${call.id}/media/session`);
    assert.equal(second.status, 200);
    assertAgoraToken(first, call.id, bob);
    const renewed = assertAgoraToken(second.body.data, call.id, bob);
    assert.notEqual(second.body.data.rtcToken, first.rtcToken, 'renewing the session gave bob the same token');
    assert.ok(renewed.salt > 0);
  });

  scenario('a stranger can neither see nor touch a call, on REST or on the socket', async (client, { room }) => {
    const [alice, bob, mallory] = [unique('alice'), unique('bob'), unique('mallory')];
    const roomId = await room([alice, bob]);
    const malloryPhone = await client.connect(mallory);
    const call = await client.initiate(alice, [bob], { room: roomId, group: true });
    await client.join(bob, call.id);
    const attempts = [
      ['GET', `/calls/${call.id}`],
      ['POST', `/calls/${call.id}/join`, {}],
      ['POST', `/calls/${call.id}/media/session`],
      ['PATCH', `/calls/${call.id}/status`, { status: 'joined' }],
      ['PATCH', `/calls/${call.id}/media`, { isMicMuted: true }],
      ['POST', `/calls/${call.id}/end`],
    ];
    for (const [method, route, body] of attempts) {
      const res = await client.api(mallory, method, route, body);
      assertError(res, 404, 'CALL_NOT_FOUND', `a stranger's ${method} ${route}`);
      assert.ok(!res.text.includes(alice), `${method} ${route} told a stranger who is in the call`);
    }
    assertError(await client.api(mallory, 'GET', `/calls/rooms/${roomId}/active`), 403, 'FORBIDDEN', 'a stranger looked at the room\'s active call');
    assertError(await client.api(mallory, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [alice] }), 403, 'FORBIDDEN', 'a stranger started a call in a room they are not in');
    for (const [event, payload] of [
      ['join_call', { callId: call.id }],
      ['leave_call', { callId: call.id }],
      ['media_state_changed', { callId: call.id, isMicMuted: true }],
      ['call_status_changed', { callId: call.id, status: 'joined' }],
    ]) {
      const ack = await client.emit(malloryPhone, event, payload);
      assert.equal(ack.ok, false, `a stranger's ${event} succeeded`);
      assert.equal(ack.error.code, 'CALL_NOT_FOUND', `a stranger's ${event}: ${JSON.stringify(ack)}`);
    }
    await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true });
    const history = await client.api(mallory, 'GET', '/calls');
    assert.deepEqual(history.body.data.items, [], 'the call shows in a stranger\'s history');
    const unchanged = await client.getCall(alice, call.id);
    assert.equal(unchanged.status, 'active', 'a stranger changed the call');
    assert.equal(unchanged.participants.some((p) => p.userId === mallory), false, 'a stranger got into the call');
    await quietPeriod(300);
    assert.deepEqual(eventsOf(malloryPhone, call.id), [], 'a stranger received events of the call');
  });

  scenario('the chat backend decides room membership: a member not invited may join a group call, a removed one may not', async (client, { room, internal }) => {
    const [alice, bob, dave] = [unique('alice'), unique('bob'), unique('dave')];
    const roomId = await room([alice, bob]);
    const call = await client.initiate(alice, [bob], { room: roomId, group: true });
    assertError(await client.api(dave, 'POST', `/calls/${call.id}/join`), 404, 'CALL_NOT_FOUND', 'dave joined before being added to the room');
    const add = await internal('POST', `/internal/v1/rooms/${roomId}/members/${dave}`);
    assert.ok([200, 201, 204].includes(add.status), `the chat backend could not add dave: ${add.status} ${add.text}`);
    const seen = await client.api(dave, 'GET', `/calls/rooms/${roomId}/active`);
    assert.equal(seen.body?.data?.id, call.id, 'a new room member does not see the room\'s group call');
    const joined = await client.api(dave, 'POST', `/calls/${call.id}/join`);
    assert.equal(joined.status, 200, `a room member could not join the group call: ${joined.text}`);
    const remove = await internal('DELETE', `/internal/v1/rooms/${roomId}/members/${bob}`);
    assert.ok([200, 204].includes(remove.status), `the chat backend could not remove bob: ${remove.status}`);
    assertError(await client.api(bob, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [alice] }), 403, 'FORBIDDEN', 'a removed member started a call in the room');
    const unauth = await internal('PUT', `/internal/v1/rooms/${roomId}/members`, { userIds: [alice] }, 'wrong-token');
    assert.equal(unauth.status, 401, 'the membership API accepted a wrong credential');
    const noInternal = await client.api(null, 'PUT', `/../internal/v1/rooms/${roomId}/members`, { userIds: [alice] });
    assert.ok([401, 404].includes(noInternal.status), 'the internal API is reachable through the gateway');
  });

  scenario('a member removed from the room stops receiving the events of its group call on every device, and cannot follow it again', async (client, { room, internal }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const call = await client.initiate(alice, [bob], { room: roomId, group: true });
    // carol follows the group call as a room member, on two devices (so, in the scaled
    // topology, likely through both signaling nodes); bob is in it.
    const carolPhones = [await client.connect(carol), await client.connect(carol)];
    const bobPhone = await client.connect(bob);
    for (const phone of [...carolPhones, bobPhone]) await client.follow(phone, call.id);
    await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true });
    for (const phone of [...carolPhones, bobPhone]) {
      await waitFor(phone, 'participant_media_changed', (e) => e.callId === call.id && e.isMicMuted, `${phone.user} missed the mute before the removal`);
    }

    const removed = await internal('DELETE', `/internal/v1/rooms/${roomId}/members/${carol}`);
    assert.equal(removed.status, 200, `the chat backend could not remove carol: ${removed.status} ${removed.text}`);
    // The removal reaches the nodes through the outbox; give it the time an event takes.
    await quietPeriod(500);
    await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: false });
    await waitFor(bobPhone, 'participant_media_changed', (e) => e.callId === call.id && e.isMicMuted === false, 'bob, still in the room and the call, missed the unmute');
    await quietPeriod(300);
    for (const phone of carolPhones) {
      const leaked = eventsOf(phone, call.id, 'participant_media_changed').filter((e) => e.isMicMuted === false);
      assert.deepEqual(leaked, [], 'a member removed from the room still receives the call\'s events');
      assert.ok(phone.connected, 'the removal disconnected the socket instead of ending its subscription');
    }
    const again = await client.emit(carolPhones[0], 'join_call', { callId: call.id });
    assert.equal(again.error?.code, 'CALL_NOT_FOUND', `a removed member followed the call again: ${JSON.stringify(again)}`);
  });

  scenario('the room\'s active call and the call history are there for an app that restarts', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const none = await client.api(alice, 'GET', `/calls/rooms/${roomId}/active`);
    assert.equal(none.status, 200);
    assert.equal(none.body.data, null);
    const ids = [];
    for (let i = 0; i < 3; i += 1) {
      const call = await client.initiate(alice, [bob], { room: roomId });
      const active = await client.api(bob, 'GET', `/calls/rooms/${roomId}/active`);
      assert.equal(active.body.data?.id, call.id, "bob's restarted app cannot find the ringing call");
      assert.equal((await client.api(alice, 'POST', `/calls/${call.id}/end`)).status, 200);
      ids.push(call.id);
    }
    const page1 = await client.api(bob, 'GET', '/calls?limit=2');
    assert.equal(page1.status, 200);
    assert.deepEqual(page1.body.data.items.map((c) => c.id), [ids[2], ids[1]], 'history is not newest first');
    assert.ok(page1.body.data.nextCursor, 'a full page must point to the next one');
    const page2 = await client.api(bob, 'GET', `/calls?limit=2&before=${encodeURIComponent(page1.body.data.nextCursor)}`);
    assert.deepEqual(page2.body.data.items.map((c) => c.id), [ids[0]], 'the second page of history is wrong');
    assert.equal(page2.body.data.nextCursor, null, 'the last page must say so');
  });

  scenario('retrying an initiate with the same Idempotency-Key returns the first call instead of ringing twice', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const bobPhone = await client.connect(bob);
    const body = { type: 'audio', isGroupCall: false, inviteUserIds: [bob] };
    const key = { 'idempotency-key': unique('key') };
    const first = await client.api(alice, 'POST', `/calls/rooms/${roomId}/initiate`, body, key);
    const retry = await client.api(alice, 'POST', `/calls/rooms/${roomId}/initiate`, body, key);
    assert.equal(first.status, 201);
    assert.equal(retry.status, 201, 'the retry should get the first response');
    assert.equal(retry.body.data.id, first.body.data.id, 'the retry created a second call');
    await waitFor(bobPhone, 'incoming_call', (e) => e.callId === first.body.data.id, "bob's phone never rang");
    await quietPeriod(300);
    assert.equal(bobPhone.seen.filter((e) => e.event === 'incoming_call').length, 1, "bob's phone rang twice");
  });

  scenario('bad input on REST is refused with the envelope and a field, never a framework default', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    // One caller per attempt: refused initiates still count against the per-user initiate limit.
    const callers = Array.from({ length: 20 }, () => unique('caller'));
    const roomId = await room([alice, bob, ...callers]);
    let next = 0;
    const initiate = (body, headers) => client.api(callers[next++], 'POST', `/calls/rooms/${roomId}/initiate`, body, headers);
    const good = { type: 'audio', isGroupCall: false, inviteUserIds: [bob] };
    const cases = [
      ['malformed JSON', () => initiate('{"type": "audio",')],
      ['a wrong content type', () => initiate(JSON.stringify(good), { 'content-type': 'text/plain' })],
      ['an unknown call type', () => initiate({ ...good, type: 'hologram' })],
      ['a missing field', () => initiate({ type: 'audio', inviteUserIds: [bob] })],
      ['a wrong field type', () => initiate({ ...good, isGroupCall: 'yes' })],
      ['no invitees', () => initiate({ ...good, inviteUserIds: [] })],
      ['inviting oneself', () => initiate({ ...good, inviteUserIds: [callers[next]] })],
      ['the same invitee twice', () => initiate({ ...good, isGroupCall: true, inviteUserIds: [bob, bob] })],
      ['two invitees on a 1:1', () => initiate({ ...good, inviteUserIds: [bob, unique('x')] })],
      ['too many invitees', () => initiate({ ...good, isGroupCall: true, inviteUserIds: Array.from({ length: TIMERS.maxInvitees + 1 }, () => unique('x')) })],
      ['a ring timeout under 5 seconds', () => initiate({ ...good, ringTimeoutSeconds: 2 })],
      ['maxParticipants below 2', () => initiate({ ...good, isGroupCall: true, maxParticipants: 1 })],
      ['maxParticipants above the limit', () => initiate({ ...good, isGroupCall: true, maxParticipants: TIMERS.maxParticipants + 1 })],
      ['an empty invitee id', () => initiate({ ...good, inviteUserIds: [''] })],
      ['a JSON array body', () => initiate('[1,2]')],
      ['an over-long Idempotency-Key', () => initiate(good, { 'idempotency-key': 'k'.repeat(300) })],
      ['a call id that is not a UUID', () => client.api(alice, 'GET', '/calls/not-a-uuid')],
      ['an unknown status', () => client.api(alice, 'PATCH', `/calls/${NIL_UUID}/status`, { status: 'dancing' })],
      ['a status update without status', () => client.api(alice, 'PATCH', `/calls/${NIL_UUID}/status`, {})],
      ['a media update with no flag', () => client.api(alice, 'PATCH', `/calls/${NIL_UUID}/media`, {})],
      ['a media flag that is not a boolean', () => client.api(alice, 'PATCH', `/calls/${NIL_UUID}/media`, { isMicMuted: 'on' })],
      ['a join body with a wrong type', () => client.api(alice, 'POST', `/calls/${NIL_UUID}/join`, { isMicMuted: 3 })],
      ['a history limit of 0', () => client.api(alice, 'GET', '/calls?limit=0')],
      ['a history limit over 100', () => client.api(alice, 'GET', '/calls?limit=101')],
      ['a history limit that is not a number', () => client.api(alice, 'GET', '/calls?limit=ten')],
      ['a garbage history cursor', () => client.api(alice, 'GET', '/calls?before=%%%garbage')],
    ];
    for (const [what, send] of cases) {
      const res = await send();
      assertError(res, 400, 'VALIDATION_FAILED', what);
      if (res.body.details !== undefined) {
        assert.ok(Array.isArray(res.body.details) && res.body.details.every((d) => typeof d.field === 'string' && typeof d.message === 'string'),
          `${what}: details must be [{field, message}]: ${res.text}`);
      }
    }
    const fieldCase = await initiate({ ...good, type: 'hologram' });
    assert.ok(fieldCase.body.details?.some((d) => d.field === 'type'), `an unknown enum should name the field: ${fieldCase.text}`);
    const huge = await initiate(JSON.stringify({ ...good, pad: 'x'.repeat(70 * 1024) }));
    assertError(huge, 413, 'PAYLOAD_TOO_LARGE', 'a body over 64 KiB');
    assertError(await client.api(alice, 'GET', `/calls/${NIL_UUID}`), 404, 'CALL_NOT_FOUND', 'a call that does not exist');
    assert.equal((await client.api(alice, 'GET', `/calls/rooms/${roomId}/active`)).body.data, null, 'refused requests must not create a call');
  });

  scenario('requests without a valid access token are refused with 401 UNAUTHORIZED', async (client) => {
    const now = Math.floor(Date.now() / 1000);
    const { createHmac } = await import('node:crypto');
    const sign = (header, claims, secret = SECRET) => {
      const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
      const unsigned = `${b64(header)}.${b64(claims)}`;
      return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
    };
    const tokens = {
      'no token': null,
      'a malformed token': 'not.a.jwt',
      'an expired token': sign({ alg: 'HS256', typ: 'JWT' }, { sub: 'x', iat: now - 7200, exp: now - 3600 }),
      'a token signed with another secret': sign({ alg: 'HS256', typ: 'JWT' }, { sub: 'x', exp: now + 600 }, 'some-other-secret-0123456789abcdef'),
      'an alg:none token': `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'x', exp: now + 600 })).toString('base64url')}.`,
      'a token without exp': sign({ alg: 'HS256', typ: 'JWT' }, { sub: 'x' }),
    };
    for (const [what, token] of Object.entries(tokens)) {
      const res = await fetch(`${client.base}/api/v1/calls`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      const text = await res.text();
      assertError({ status: res.status, text, body: JSON.parse(text) }, 401, 'UNAUTHORIZED', what);
      if (what === 'no token') continue;
      const socket = client.socket(null, { auth: { token } });
      const err = await new Promise((resolve) => {
        socket.once('connect_error', resolve);
        socket.once('connect', () => resolve(null));
      });
      assert.ok(err, `a socket with ${what} was let in`);
      assert.equal(err.message, 'unauthorized', `a socket with ${what} got ${err.message}`);
    }
    const headerAuth = await client.connect(null, { auth: {}, extraHeaders: { authorization: `Bearer ${mint(unique('carl'))}` } });
    assert.ok(headerAuth.connected, 'a socket authenticated with an Authorization header was refused');
  });

  scenario('bad input on the socket is answered with an error code, by ack or by an error event, and the socket stays usable', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const call = await client.initiate(alice, [bob], { room: roomId, group: true });
    const phone = await client.connect(alice);
    const cases = [
      ['join_call', 'not an object', 'VALIDATION_FAILED'],
      ['join_call', {}, 'VALIDATION_FAILED'],
      ['join_call', { callId: 'not-a-uuid' }, 'VALIDATION_FAILED'],
      ['join_call', { callId: 42 }, 'VALIDATION_FAILED'],
      ['join_call', { callId: NIL_UUID }, 'CALL_NOT_FOUND'],
      ['leave_call', { callId: NIL_UUID }, 'CALL_NOT_FOUND'],
      ['media_state_changed', { callId: call.id }, 'VALIDATION_FAILED'],
      ['media_state_changed', { callId: call.id, isMicMuted: 'yes' }, 'VALIDATION_FAILED'],
      ['call_status_changed', { callId: call.id, status: 'dancing' }, 'VALIDATION_FAILED'],
      ['call_status_changed', { callId: call.id }, 'VALIDATION_FAILED'],
      ['call_status_changed', { callId: call.id, status: 'declined', reason: 'r'.repeat(500) }, 'VALIDATION_FAILED'],
      ['call_status_changed', { callId: call.id, status: 'ringing' }, 'INVALID_TRANSITION'],
      ['make_coffee', { callId: call.id }, 'VALIDATION_FAILED'],
      // Event names JSON must escape once closed the connection unanswered (socketioxide's parser).
      ['join"call', { callId: call.id }, 'VALIDATION_FAILED'],
      ['back\\slash\n\u0001', { callId: call.id }, 'VALIDATION_FAILED'],
      ['join_call', { callId: call.id, pad: 'x'.repeat(20 * 1024) }, 'PAYLOAD_TOO_LARGE'],
    ];
    for (const [event, payload, code] of cases) {
      const ack = await client.emit(phone, event, payload);
      assert.equal(ack.ok, false, `${event} ${JSON.stringify(payload).slice(0, 80)} was accepted`);
      assert.equal(ack.error?.code, code, `${event} ${JSON.stringify(payload).slice(0, 80)}: ${JSON.stringify(ack)}`);
      assert.equal(typeof ack.error.message, 'string');
    }
    // Without an ack, the failure arrives as an `error` event.
    phone.emit('media_state_changed', { callId: call.id, isMicMuted: 'loud' });
    const error = await waitFor(phone, 'error', (e) => e.event === 'media_state_changed', 'a failed event without an ack was silently dropped');
    assert.equal(error.code, 'VALIDATION_FAILED');
    assert.equal(error.callId, call.id);
    assert.equal(typeof error.message, 'string');
    // A flood is rate limited without disconnecting the app.
    const flood = await Promise.all(Array.from({ length: 80 }, () => client.emit(phone, 'make_coffee', {})));
    assert.ok(flood.some((a) => a.error?.code === 'RATE_LIMITED'), 'a flood of events was never rate limited');
    assert.ok(phone.connected, 'the socket was dropped for flooding instead of being rate limited');
    await eventually(async () => (await client.emit(phone, 'join_call', { callId: call.id })).ok, 'the socket never became usable again after the flood', STEP_MS);
  });

  scenario('a decline reason has one limit on REST and on the socket: 200 characters pass, 201 are refused', async (client, { room }) => {
    const [alice, bob, carol, dave] = [unique('alice'), unique('bob'), unique('carol'), unique('dave')];
    const roomId = await room([alice, bob, carol, dave]);
    const call = await client.initiate(alice, [bob, carol, dave], { room: roomId, group: true });
    const [ok, tooLong] = ['r'.repeat(200), 'r'.repeat(201)];
    assertError(await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'declined', declineReason: tooLong }),
      400, 'VALIDATION_FAILED', 'a 201-character declineReason on REST');
    assertError(await client.api(dave, 'PATCH', `/calls/${call.id}/status`, { status: 'declined', reason: tooLong }),
      400, 'VALIDATION_FAILED', 'a 201-character reason on REST');
    const carolPhone = await client.connect(carol);
    const refused = await client.emit(carolPhone, 'call_status_changed', { callId: call.id, status: 'declined', reason: tooLong });
    assert.equal(refused.error?.code, 'VALIDATION_FAILED', `a 201-character reason on the socket: ${JSON.stringify(refused)}`);

    const declined = await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'declined', declineReason: ok });
    assert.equal(declined.status, 200, `a 200-character declineReason on REST was refused: ${declined.text}`);
    const accepted = await client.emit(carolPhone, 'call_status_changed', { callId: call.id, status: 'declined', reason: ok });
    assert.equal(accepted.ok, true, `a 200-character reason on the socket was refused: ${JSON.stringify(accepted)}`);
    const seen = await client.getCall(alice, call.id);
    for (const user of [bob, carol]) {
      assert.equal(seen.participants.find((p) => p.userId === user).declineReason, ok, `${user}'s reason was not kept whole`);
    }
  });

  scenario('an app on HTTP long-polling rings, answers and follows the call like one on WebSocket', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const bobPhone = await client.connect(bob, { transports: ['polling'] });
    const alicePhone = await client.connect(alice);
    const call = await client.initiate(alice, [bob], { room: roomId });
    await client.follow(alicePhone, call.id);
    await waitFor(bobPhone, 'incoming_call', (e) => e.callId === call.id, "bob's polling app never rang");
    const answer = await client.emit(bobPhone, 'call_status_changed', { callId: call.id, status: 'joined' });
    assert.equal(answer.ok, true, `bob could not answer over polling: ${JSON.stringify(answer)}`);
    await client.follow(bobPhone, call.id);
    await waitFor(alicePhone, 'participant_joined', (e) => e.participant?.userId === bob, 'alice never saw bob answer over polling');
    for (let i = 0; i < 4; i += 1) {
      await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: i % 2 === 0 });
    }
    await eventually(() => eventsOf(bobPhone, call.id, 'participant_media_changed').length === 4, "bob's polling app missed media changes");
    assertInOrder(bobPhone, call.id);
    assert.equal(bobPhone.io.engine.transport.name, 'polling');
    await client.api(alice, 'POST', `/calls/${call.id}/end`);
    await waitFor(bobPhone, 'call_ended', (e) => e.callId === call.id, "bob's polling app never heard the call end");
  });

  scenario('starting calls too fast is rate limited with Retry-After', async (client, { room }) => {
    const alice = unique('alice');
    const others = Array.from({ length: 8 }, () => unique('bob'));
    const statuses = [];
    let limited;
    for (const bob of others) {
      const roomId = await room([alice, bob]);
      const res = await client.api(alice, 'POST', `/calls/rooms/${roomId}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [bob] });
      statuses.push(res.status);
      if (res.status === 429) { limited = res; break; }
    }
    assert.ok(limited, `eight calls in a row were never limited: ${statuses}`);
    assertError(limited, 429, 'RATE_LIMITED', 'the limited initiate');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1, 'Retry-After tells the app when to try again');
  });

  scenario('the API documentation and the health endpoints are served through the gateway', async (client) => {
    const doc = await fetch(`${client.base}/api/docs/openapi.json`);
    assert.equal(doc.status, 200, 'the OpenAPI document is not reachable');
    const openapi = await doc.json();
    for (const path of ['/api/v1/calls/rooms/{chatRoomId}/initiate', '/api/v1/calls/{id}/join', '/api/v1/calls/{id}/media/session']) {
      assert.ok(Object.keys(openapi.paths).some((p) => p.replace(/\{[^}]+\}/g, '{}') === path.replace(/\{[^}]+\}/g, '{}')), `the API docs miss ${path}`);
    }
    const ui = await fetch(`${client.base}/api/docs`, { redirect: 'follow' });
    assert.equal(ui.status, 200, 'Swagger UI is not reachable');
    assert.equal((await fetch(`${client.base}/healthz`)).status, 200);
  });

  // ----- a live call's roster (CONTRACT section 10) -----

  scenario('inviting someone into a live 1:1 rings their phone, makes it a group call, and everyone in it hears of the newcomer', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const [alicePhone, bobPhone, carolPhone] = [await client.connect(alice), await client.connect(bob), await client.connect(carol)];
    const call = await client.initiate(alice, [bob], { room: roomId, group: false });
    await client.join(bob, call.id);
    await client.follow(alicePhone, call.id);
    await client.follow(bobPhone, call.id);

    const res = await client.api(bob, 'POST', `/calls/${call.id}/invite`, { userIds: [carol] });
    assert.equal(res.status, 200, `bob could not invite carol: ${res.status} ${res.text}`);
    assert.equal(res.body.data.isGroupCall, true, 'a 1:1 that rings a third person is a group call');
    const ring = await waitFor(carolPhone, 'incoming_call', (e) => e.callId === call.id, "carol's phone never rang when bob invited her");
    assert.equal(ring.from.userId, bob, "carol's phone does not say bob is calling");
    assert.ok(Date.parse(ring.ringDeadline) > Date.now(), 'the ring deadline is already past');
    for (const phone of [alicePhone, bobPhone]) {
      const invited = await waitFor(phone, 'participant_invited', (e) => e.callId === call.id && e.participant?.userId === carol, `${phone.user} never heard carol was invited`);
      assert.equal(invited.participant.status, 'invited');
      const updated = await waitFor(phone, 'call_updated', (e) => e.callId === call.id, `${phone.user} never heard the call became a group call`);
      assert.equal(updated.call.isGroupCall, true);
    }
    await client.join(carol, call.id);
    await waitFor(alicePhone, 'participant_joined', (e) => e.participant?.userId === carol, 'alice never saw carol join');
    // Now a group call: bob hanging up leaves alice and carol talking.
    await client.emit(bobPhone, 'leave_call', { callId: call.id });
    await waitFor(alicePhone, 'participant_left', (e) => e.userId === bob, 'alice never saw bob leave');
    assert.equal((await client.getCall(alice, call.id)).status, 'active', 'the call ended with bob although it had become a group call');
    for (const phone of [alicePhone, bobPhone]) assertInOrder(phone, call.id);
    // Only room members can be rung (MEMBERSHIP_MODE=table).
    assertError(await client.api(alice, 'POST', `/calls/${call.id}/invite`, { userIds: [unique('stranger')] }), 400, 'VALIDATION_FAILED', 'alice rang someone outside the room');
  });

  scenario('a removed participant stops getting the call on every device, and can neither follow it, rejoin it nor get a media token', async (client, { room }) => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const roomId = await room([alice, bob, carol]);
    const call = await client.initiate(alice, [bob, carol], { room: roomId, group: true });
    // bob on two devices (in the scaled topology, likely on both signaling nodes).
    const bobPhones = [await client.connect(bob), await client.connect(bob)];
    const carolPhone = await client.connect(carol);
    await client.join(bob, call.id);
    await client.join(carol, call.id);
    for (const phone of [...bobPhones, carolPhone]) await client.follow(phone, call.id);
    const bobSession = await client.api(bob, 'POST', `/calls/${call.id}/media/session`);
    assert.equal(bobSession.status, 200, `bob got no media session before the removal: ${bobSession.text}`);

    assertError(await client.api(carol, 'POST', `/calls/${call.id}/participants/${bob}/remove`), 403, 'FORBIDDEN', 'carol, not the host, removed bob');
    const res = await client.api(alice, 'POST', `/calls/${call.id}/participants/${bob}/remove`);
    assert.equal(res.status, 200, `alice could not remove bob: ${res.status} ${res.text}`);
    assert.equal(res.body.data.participants.find((p) => p.userId === bob).status, 'left');
    for (const phone of [...bobPhones, carolPhone]) {
      await waitFor(phone, 'participant_left', (e) => e.callId === call.id && e.userId === bob && e.reason === 'removed', `${phone.user} never heard bob was removed`);
    }
    await quietPeriod(300);
    await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true });
    await waitFor(carolPhone, 'participant_media_changed', (e) => e.callId === call.id && e.userId === alice && e.isMicMuted, 'carol missed alice muting');
    await quietPeriod(300);
    for (const phone of bobPhones) {
      assert.deepEqual(eventsOf(phone, call.id, 'participant_media_changed'), [], "a removed participant's device still gets the call's events");
      assert.ok(phone.connected, 'the removal disconnected the socket instead of ending its subscription');
    }
    const again = await client.emit(bobPhones[0], 'join_call', { callId: call.id });
    assert.equal(again.error?.code, 'CALL_NOT_FOUND', `a removed participant followed the call again: ${JSON.stringify(again)}`);
    assertError(await client.api(bob, 'POST', `/calls/${call.id}/join`), 404, 'CALL_NOT_FOUND', 'a removed participant rejoined');
    assertError(await client.api(bob, 'POST', `/calls/${call.id}/media/session`), 404, 'CALL_NOT_FOUND', 'a removed participant got a media token');

    // Invited again, bob may come back.
    assert.equal((await client.api(carol, 'POST', `/calls/${call.id}/invite`, { userIds: [bob] })).status, 200);
    await waitFor(bobPhones[1], 'incoming_call', (e) => e.callId === call.id, "bob's phone never rang when invited back");
    await client.join(bob, call.id);
  });

  scenario("Agora's view of the media: a removed participant still in the channel and a stranger who joins it are kicked through Agora's kicking-rule API; a joined participant is not", async (client, { room, agora }) => {
    const [alice, bob, carol, mallory] = [unique('alice'), unique('bob'), unique('carol'), unique('mallory')];
    const roomId = await room([alice, bob, carol]);
    const call = await client.initiate(alice, [bob, carol], { room: roomId, group: true });
    await client.join(bob, call.id);
    await client.join(carol, call.id);
    const channel = `call_${call.id}`;
    // Agora's Notification Center, as it posts a communication-profile join (107).
    let notices = 0;
    const joinedChannel = async (account, uid) => {
      notices += 1;
      const body = JSON.stringify({
        noticeId: `${call.id}-${notices}`, productId: 1, eventType: 107, notifyMs: Date.now(), sid: 'C866467GVJJ54687',
        payload: { clientSeq: Date.now() * 10 + notices, channelName: channel, uid, platform: 1, ts: Math.floor(Date.now() / 1000), account },
      });
      const res = await fetch(`${client.base}/webhooks/agora`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'agora-signature-v2': createHmac('sha256', NCS_SECRET).update(body).digest('hex') },
        body,
      });
      const text = await res.text();
      assert.equal(res.status, 200, `Agora's notice was refused: ${res.status} ${text}`);
      return JSON.parse(text).data.outcome;
    };
    const kicksOf = (uid) => agora.rules.filter((r) => r.cname === channel && r.uid === uid);
    const [bobUid, carolUid, malloryUid] = [3_000_001, 3_000_002, 3_000_003];
    assert.equal(await joinedChannel(bob, bobUid), 'applied');
    assert.equal(await joinedChannel(carol, carolUid), 'applied');
    const inMedia = await client.getCall(alice, call.id);
    assert.equal(inMedia.participants.find((p) => p.userId === carol).inMedia, true);

    const res = await client.api(alice, 'POST', `/calls/${call.id}/participants/${carol}/remove`);
    assert.equal(res.status, 200, `alice could not remove carol: ${res.text}`);
    const [kick] = await eventually(() => kicksOf(carolUid).length > 0 && kicksOf(carolUid), 'carol, removed, was never kicked out of the channel');
    assert.deepEqual(kick, { appid: AGORA_APP_ID, cname: channel, uid: carolUid, time_in_seconds: 0, privileges: ['join_channel'] });

    assert.equal(await joinedChannel(mallory, malloryUid), 'applied', 'a stranger in the channel is something to act on');
    await eventually(() => kicksOf(malloryUid).length > 0, 'a stranger who joined the channel was never kicked');
    await quietPeriod(500);
    assert.deepEqual(kicksOf(bobUid), [], 'bob is a joined participant and was kicked');
    assert.deepEqual(agora.refused, [], 'Agora refused a kicking rule');
  });

  scenario('when the host leaves a group call the longest-joined participant becomes host, and can remove people and end it', async (client, { room }) => {
    const [alice, bob, carol, dave] = [unique('alice'), unique('bob'), unique('carol'), unique('dave')];
    const roomId = await room([alice, bob, carol, dave]);
    const call = await client.initiate(alice, [bob, carol, dave], { room: roomId, group: true });
    const phones = Object.fromEntries(await Promise.all([bob, carol, dave].map(async (u) => [u, await client.connect(u)])));
    for (const u of [carol, bob, dave]) {
      await client.join(u, call.id);
      await client.follow(phones[u], call.id);
    }
    assert.equal((await client.api(alice, 'PATCH', `/calls/${call.id}/status`, { status: 'left' })).status, 200);
    for (const u of [bob, carol, dave]) {
      const changed = await waitFor(phones[u], 'host_changed', (e) => e.callId === call.id, `${u} never heard who the new host is`);
      assert.equal(changed.userId, carol, 'carol joined first and should be the new host');
    }
    const now = await client.getCall(bob, call.id);
    assert.equal(now.participants.find((p) => p.userId === carol).role, 'host');
    assertError(await client.api(alice, 'POST', `/calls/${call.id}/end`), 403, 'FORBIDDEN', 'the former host still ended the call');
    const removed = await client.api(carol, 'POST', `/calls/${call.id}/participants/${dave}/remove`);
    assert.equal(removed.status, 200, `the new host could not remove dave: ${removed.text}`);
    await waitFor(phones[bob], 'participant_left', (e) => e.userId === dave && e.reason === 'removed', 'bob never saw dave removed');
    const end = await client.api(carol, 'POST', `/calls/${call.id}/end`);
    assert.equal(end.status, 200, `the new host could not end the call: ${end.text}`);
    const ended = await waitFor(phones[bob], 'call_ended', (e) => e.callId === call.id, "bob's call never ended");
    assert.equal(ended.endedBy, carol);
  });

  scenario('a room of 30 rings all 29 others with 16 seats: the 16th participant gets in, the 17th gets CALL_FULL', async (client, { room }) => {
    const host = unique('host');
    const others = Array.from({ length: 29 }, () => unique('m'));
    const roomId = await room([host, ...others]);
    const phones = await Promise.all(others.map((u) => client.connect(u)));
    const call = await client.initiate(host, others, { room: roomId, group: true, maxParticipants: 16 });
    assert.equal(call.participants.length, 30);
    await Promise.all(phones.map((phone) => waitFor(phone, 'incoming_call', (e) => e.callId === call.id, `${phone.user}'s phone never rang in the big room`)));
    // 14 answer at once, then the 15th answer fills the 16th seat.
    const first = await Promise.all(others.slice(0, 14).map((u) => client.api(u, 'POST', `/calls/${call.id}/join`)));
    assert.deepEqual(first.map((r) => r.status), Array(14).fill(200), 'answers within capacity were refused');
    const sixteenth = await client.api(others[14], 'POST', `/calls/${call.id}/join`);
    assert.equal(sixteenth.status, 200, `the 16th participant did not get in: ${sixteenth.text}`);
    assertError(await client.api(others[15], 'POST', `/calls/${call.id}/join`), 409, 'CALL_FULL', 'the 17th participant');
    const final = await client.getCall(host, call.id);
    assert.equal(final.participants.filter((p) => p.status === 'joined').length, 16);
  }, { timeout: 180_000 });

  scenario('a group call whose last other participant left ends completed after the alone timeout', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const alicePhone = await client.connect(alice);
    const call = await client.initiate(alice, [bob], { room: roomId, group: true });
    await client.follow(alicePhone, call.id);
    await client.join(bob, call.id);
    const started = Date.now();
    assert.equal((await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'left' })).status, 200);
    assert.equal((await client.getCall(alice, call.id)).status, 'active', 'the call ended at once instead of waiting for someone to come back');
    const ended = await waitFor(alicePhone, 'call_ended', (e) => e.callId === call.id, "alice's lonely call never ended", TIMERS.alone * 1000 + STEP_MS);
    assert.equal(ended.reason, 'completed');
    assert.equal(ended.endedBy, null);
    assert.ok(Date.now() - started >= TIMERS.alone * 1000 - 1000, 'the call ended before CALL_ALONE_TIMEOUT_SECONDS');
  });

  scenario('a call that runs past the maximum duration ends with reason timeout for everyone', async (client, { room }) => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const roomId = await room([alice, bob]);
    const alicePhone = await client.connect(alice);
    const bobPhone = await client.connect(bob);
    const call = await client.initiate(alice, [bob], { room: roomId });
    await client.join(bob, call.id);
    await client.follow(alicePhone, call.id);
    await client.follow(bobPhone, call.id);
    for (const phone of [alicePhone, bobPhone]) {
      const ended = await waitFor(phone, 'call_ended', (e) => e.callId === call.id, `${phone.user}'s call never hit the maximum duration`, TIMERS.maxDuration * 1000 + STEP_MS);
      assert.equal(ended.reason, 'timeout');
    }
    const final = await client.getCall(alice, call.id);
    assert.equal(final.endReason, 'timeout');
    assert.ok(Date.parse(final.endedAt) - Date.parse(final.createdAt) >= TIMERS.maxDuration * 1000 - 1000, 'the call was cut before its maximum duration');
  });
}

/** The one scenario of a deployment started without Agora credentials. */
export function defineWithoutAgora(ctx) {
  test('without Agora credentials, calls still work and media sessions answer 503 MEDIA_PROVIDER_NOT_CONFIGURED', { timeout: 60_000 }, async () => {
    const { client } = ctx();
    const [alice, bob] = [unique('alice'), unique('bob')];
    const bobPhone = await client.connect(bob);
    try {
      const call = await client.initiate(alice, [bob]);
      await waitFor(bobPhone, 'incoming_call', (e) => e.callId === call.id, "bob's phone never rang");
      await client.join(bob, call.id);
      const session = await client.api(bob, 'POST', `/calls/${call.id}/media/session`);
      assertError(session, 503, 'MEDIA_PROVIDER_NOT_CONFIGURED', 'a media session without Agora credentials');
      assert.doesNotMatch(session.text, /AGORA_APP_CERTIFICATE=|[0-9a-f]{32}/, 'the refusal leaks configuration');
      const end = await client.api(alice, 'POST', `/calls/${call.id}/end`);
      assert.equal(end.status, 200, 'the call could not be ended without Agora');
    } finally {
      client.closeAll();
    }
  });
}
