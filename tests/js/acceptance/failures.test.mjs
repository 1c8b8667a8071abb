// Failures in the scaled topology, seen only from the apps' side of the gateway: NATS and
// Postgres stopped and restarted, a calls-api replica and a signaling node killed mid-call.
// The cluster runs on its own nats-server and Postgres (lib/infra.mjs), so stopping them
// disturbs nothing else; everything is removed in `after`, whatever happened.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startCluster } from '../lib/cluster.mjs';
import { startNats, startPostgres } from '../lib/infra.mjs';
import { Client, STEP_MS, TIMERS, assertInOrder, eventsOf, eventually, quietPeriod, topologyEnv, unique, waitFor } from './harness.mjs';

// Three missed heartbeats declare a signaling node dead: long enough to ride out the short
// NATS outage below, short enough to see a killed node's users dropped within seconds.
const HEARTBEAT_SECONDS = 3;
const OUTAGE_MS = 3_000;

describe('acceptance, failures in the scaled topology (own NATS and Postgres)', () => {
  let nats;
  let pg;
  let cluster;
  let client;

  before(async () => {
    nats = await startNats();
    pg = await startPostgres();
    cluster = await startCluster(topologyEnv({
      PRESENCE_HEARTBEAT_SECONDS: String(HEARTBEAT_SECONDS),
      // A database outage is answered 503 after this long (default 5 s).
      DATABASE_ACQUIRE_TIMEOUT_MS: '1000',
      // These calls outlive outages and node deaths: no maximum duration to cut them short.
      CALL_MAX_DURATION_SECONDS: '0',
    }), {
      postgresAdminUrl: pg.adminUrl, natsUrl: nats.url,
    });
    client = new Client(cluster.base);
  });

  after(async () => {
    client?.closeAll();
    await cluster?.stop().catch(() => {});
    // The cluster's clean-up drops its database and stream; the servers go with their data.
    await nats?.destroy().catch(() => {});
    await pg?.destroy().catch(() => {});
  });

  /** A group call of `users[0]` with everyone joined and each following it on `phones`. */
  async function groupCall(users, phones) {
    const call = await client.initiate(users[0], users.slice(1), { group: true });
    for (const u of users.slice(1)) await client.join(u, call.id);
    for (const phone of phones) await client.follow(phone, call.id);
    return call;
  }

  test('when NATS stops and comes back mid-call, REST keeps working and the events written meanwhile reach every app afterwards, none lost, in order', async () => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    // Two sockets each, so both signaling nodes host every user and the call.
    const phones = [];
    for (const u of [alice, bob, carol]) for (let i = 0; i < 2; i += 1) phones.push(await client.connect(u));
    const call = await groupCall([alice, bob, carol], phones);
    await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true });
    for (const phone of phones) await waitFor(phone, 'participant_media_changed', (e) => e.callId === call.id && e.userId === alice, `${phone.user} missed alice muting before the outage`);
    const before = Math.max(...phones.map((p) => Math.max(...eventsOf(p, call.id).map((e) => e.seq ?? 0))));

    await nats.stop();
    try {
      const changes = [
        [bob, { isMicMuted: true }], [carol, { isCameraOff: true }], [alice, { isSharingScreen: true }], [bob, { isMicMuted: false }],
      ];
      for (const [user, patch] of changes) {
        const res = await client.api(user, 'PATCH', `/calls/${call.id}/media`, patch);
        assert.equal(res.status, 200, `${user} could not change their media while NATS was down: ${res.status} ${res.text}`);
      }
      // A few seconds down, so the services' reconnection backoffs drift apart and calls-api
      // may publish the backlog before a signaling node has re-subscribed.
      await quietPeriod(OUTAGE_MS);
    } finally {
      await nats.start();
    }

    for (const phone of phones) {
      await eventually(() => eventsOf(phone, call.id).filter((e) => e.seq > before).length >= 4,
        `${phone.user}'s app never got the changes made while NATS was down (got seq ${eventsOf(phone, call.id).map((e) => e.seq)})`, 30_000);
      const after = eventsOf(phone, call.id).filter((e) => e.seq > before && e.event === 'participant_media_changed');
      assert.deepEqual(after.map((e) => e.seq), [before + 1, before + 2, before + 3, before + 4], `${phone.user}'s app lost or reordered events of the outage`);
      assert.deepEqual(after.map((e) => e.userId), [bob, carol, alice, bob], `${phone.user}'s app got the outage's changes wrong`);
      assertInOrder(phone, call.id);
    }
    assert.equal(phones.flatMap((p) => eventsOf(p, call.id, 'participant_disconnected')).length, 0, 'someone was shown as disconnected because NATS restarted');
    // The socket path works again too.
    await eventually(async () => (await client.emit(phones[0], 'media_state_changed', { callId: call.id, isMicMuted: false })).ok,
      "alice's app could not use the socket after NATS came back", 30_000);
    await client.api(alice, 'POST', `/calls/${call.id}/end`);
  });

  test('when Postgres stops, the API answers 503 DEPENDENCY_UNAVAILABLE, and once it is back the service is whole and no call is left half-done', async () => {
    const [alice, bob, carol, dave] = [unique('alice'), unique('bob'), unique('carol'), unique('dave')];
    const alicePhone = await client.connect(alice);
    const bobPhone = await client.connect(bob);
    const live = await client.initiate(alice, [bob]);
    await client.join(bob, live.id);
    await client.follow(alicePhone, live.id);
    await client.follow(bobPhone, live.id);
    const ringing = await client.initiate(carol, [dave]);

    await pg.stop();
    let outage;
    try {
      const started = Date.now();
      const get = await client.api(alice, 'GET', `/calls/${live.id}`);
      outage = Date.now() - started;
      assert.equal(get.status, 503, `with the database down alice's app got ${get.status} ${get.text}`);
      assert.equal(get.body.code, 'DEPENDENCY_UNAVAILABLE', 'the app cannot tell the failure is temporary');
      assert.doesNotMatch(get.text, /postgres|sqlx|connection refused|SELECT/i, 'the 503 leaks internals');
      const init = await client.api(dave, 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [alice] });
      assert.equal(init.status, 503, `starting a call with the database down answered ${init.status}`);
      assert.equal(init.body.code, 'DEPENDENCY_UNAVAILABLE');
      const ack = await client.emit(bobPhone, 'media_state_changed', { callId: live.id, isMicMuted: true });
      assert.equal(ack.ok, false, 'a socket command succeeded without a database');
      assert.equal(ack.error.code, 'DEPENDENCY_UNAVAILABLE', `the socket command failed with ${JSON.stringify(ack)}`);
      // The ring timeout of the ringing call comes due during the outage.
      const due = Date.parse(ringing.createdAt) + TIMERS.ring * 1000 + 500;
      if (Date.now() < due) await quietPeriod(due - Date.now());
    } finally {
      await pg.start();
    }
    assert.ok(outage < 3_000, `an app waited ${outage} ms for its 503`);

    // Full service again: reads, writes, events.
    await eventually(async () => (await client.api(alice, 'GET', `/calls/${live.id}`)).status === 200, 'the API never recovered after Postgres came back', 30_000);
    const mute = await client.api(bob, 'PATCH', `/calls/${live.id}/media`, { isMicMuted: true });
    assert.equal(mute.status, 200, `bob could not mute after the outage: ${mute.text}`);
    await waitFor(alicePhone, 'participant_media_changed', (e) => e.userId === bob && e.isMicMuted, 'alice never saw bob mute after the outage');
    const missed = await eventually(async () => {
      const c = await client.getCall(carol, ringing.id);
      return c.status === 'ended' && c;
    }, 'the call that rang out during the outage never ended', 30_000);
    assert.equal(missed.endReason, 'missed');
    assert.equal(missed.participants.find((p) => p.userId === dave).status, 'missed');
    const still = await client.getCall(alice, live.id);
    assert.equal(still.status, 'active', 'the live call did not survive the database outage');
    assert.deepEqual(still.participants.map((p) => [p.userId, p.status]).sort(), [[alice, 'joined'], [bob, 'joined']].sort(), 'the outage changed who is in the call');
    await quietPeriod(TIMERS.grace * 1000 + HEARTBEAT_SECONDS * 1000);
    const later = await client.getCall(alice, live.id);
    assert.deepEqual(later.participants.map((p) => p.status), ['joined', 'joined'], 'alice and bob were dropped from their call after the outage although their apps never left');
    assert.equal(eventsOf(alicePhone, live.id, 'participant_left').length, 0, 'alice saw bob leave because of the outage');
    const fresh = await client.initiate(dave, [unique('erin')]);
    assert.equal(fresh.status, 'ringing', 'a new call could not start after the outage');
    for (const c of [missed, later]) {
      for (const p of c.participants) {
        if (c.status === 'ended') assert.ok(!['invited', 'ringing'].includes(p.status), `an ended call still rings ${p.userId}`);
      }
    }
    await client.api(dave, 'POST', `/calls/${fresh.id}/end`);
    await client.api(alice, 'POST', `/calls/${live.id}/end`);
  });

  test('when a calls-api replica dies mid-call, every request still succeeds through the other one and the ring timer fires exactly once', async () => {
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    const alicePhone = await client.connect(alice);
    const carolPhone = await client.connect(carol);
    const call = await client.initiate(alice, [bob, carol], { group: true });
    await client.join(bob, call.id);
    const snapshot = await client.follow(alicePhone, call.id);
    cluster.kill('calls-api-1');
    const failures = [];
    for (let i = 0; i < 10; i += 1) {
      const read = await client.api(alice, 'GET', `/calls/${call.id}`);
      if (read.status !== 200) failures.push(`GET ${read.status} ${read.body?.code}`);
      const write = await client.api(bob, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: i % 2 === 0 });
      if (write.status !== 200) failures.push(`PATCH ${write.status} ${write.body?.code}`);
    }
    assert.deepEqual(failures, [], 'the apps saw errors while one calls-api replica was down');
    const ack = await client.emit(alicePhone, 'media_state_changed', { callId: call.id, isCameraOff: true });
    assert.equal(ack.ok, true, `a socket command failed with one replica down: ${JSON.stringify(ack)}`);

    await waitFor(alicePhone, 'participant_status_changed', (e) => e.userId === carol && e.status === 'missed', 'carol was never marked missed with one replica down', TIMERS.ring * 1000 + STEP_MS);
    await waitFor(carolPhone, 'incoming_call_cancelled', (e) => e.callId === call.id, "carol's phone kept ringing with one replica down");
    await quietPeriod(1_000);
    assert.equal(eventsOf(alicePhone, call.id, 'participant_status_changed').filter((e) => e.userId === carol && e.status === 'missed').length, 1, 'the ring timeout fired more than once');
    assert.equal(eventsOf(carolPhone, call.id, 'incoming_call_cancelled').length, 1, "carol's phone was told to stop ringing more than once");
    const seqs = eventsOf(alicePhone, call.id).filter((e) => e.event !== 'call_participants').map((e) => e.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => snapshot.seq + 1 + i), `alice's events are not gap-free after the replica died: ${seqs}`);
    assert.equal((await client.getCall(alice, call.id)).status, 'active');
    await client.api(alice, 'POST', `/calls/${call.id}/end`);
  });

  test('when a signaling node dies mid-call, its apps reconnect through the gateway and re-join, and a user who does not come back is dropped after the grace', async () => {
    const nodes = await cluster.signalingUrls();
    assert.equal(nodes.length, 2, `the cluster banner should list both signaling nodes:\n${cluster.log()}`);
    const gauge = async (url) => {
      const text = await (await fetch(`${url}/metrics`)).text();
      return Number(/^signaling_sockets_connected\s+(\S+)/m.exec(text)?.[1] ?? 0);
    };
    /** A socket through the gateway that lands on node `index` (the operator's metrics tell). */
    const connectOn = async (user, index, options) => {
      for (let attempt = 0; attempt < 8; attempt += 1) {
        const before = await Promise.all(nodes.map(gauge));
        const socket = await client.connect(user, options);
        const after = await Promise.all(nodes.map(gauge));
        if (after[index] > before[index] && after[1 - index] === before[1 - index]) return socket;
        socket.close();
        await eventually(async () => (await gauge(nodes[1 - index])) <= before[1 - index] || (await gauge(nodes[index])) <= before[index], 'a closed socket stayed connected');
      }
      throw new Error(`the gateway never placed ${user}'s socket on ${nodes[index]}`);
    };
    const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
    // Alice watches from the node that survives; bob's and carol's only sockets are on the one
    // that dies. Carol's app reconnects and re-joins; bob's does not come back.
    const alicePhone = await connectOn(alice, 1);
    const bobPhone = await connectOn(bob, 0);
    const carolPhone = await connectOn(carol, 0, { reconnection: true });
    const call = await groupCall([alice, bob, carol], [alicePhone, bobPhone, carolPhone]);
    const carolRejoins = [];
    carolPhone.on('connect', () => {
      client.emit(carolPhone, 'join_call', { callId: call.id }).then((ack) => carolRejoins.push(ack)).catch((err) => carolRejoins.push({ ok: false, err: err.message }));
    });

    cluster.kill('signaling-1');
    await eventually(() => !bobPhone.connected, "bob's socket did not notice its node die");
    await eventually(() => carolRejoins.some((a) => a.ok), `carol's app never re-joined through the gateway: ${JSON.stringify(carolRejoins)}`, 20_000);
    assert.ok(carolPhone.connected);

    const disconnected = await waitFor(alicePhone, 'participant_disconnected', (e) => e.userId === bob, 'alice never saw bob disconnected after his signaling node died',
      HEARTBEAT_SECONDS * 4000 + STEP_MS);
    assert.equal(disconnected.graceSeconds, TIMERS.grace);
    const left = await waitFor(alicePhone, 'participant_left', (e) => e.userId === bob, 'bob was never dropped after the grace', TIMERS.grace * 1000 + STEP_MS);
    assert.equal(left.reason, 'connection_lost');
    assert.ok(left.seq > disconnected.seq);

    // Carol, who came back, is still in the call and hears what happens.
    const carolNow = (await client.getCall(alice, call.id)).participants.find((p) => p.userId === carol);
    assert.deepEqual([carolNow.status, carolNow.isConnected], ['joined', true], 'carol was dropped although her app came back');
    await client.api(alice, 'PATCH', `/calls/${call.id}/media`, { isMicMuted: true });
    await waitFor(carolPhone, 'participant_media_changed', (e) => e.userId === alice && e.isMicMuted, 'carol missed alice muting after the failover');
    await waitFor(carolPhone, 'participant_left', (e) => e.userId === bob, "carol's re-joined app missed bob being dropped");
    assertInOrder(alicePhone, call.id);
    assert.equal((await client.getCall(alice, call.id)).status, 'active');
  });
});
