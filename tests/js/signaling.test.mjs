// The official socket.io-client against real signaling nodes (SIGNALING_BIN) and real NATS
// (NATS_URL), with a fake calls-api answering on the test's own subject prefix.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  FakeCallsApi, JWT_SECRET, connectClient, emitAck, mintToken, nextEvent, onceConnected,
  signalingAvailable, SIGNALING_BIN, startProxy, startSignaling, uniquePrefix, waitFor,
} from './lib/signaling-harness.mjs';
import { NatsClient } from './lib/signaling-nats.mjs';

const skip = signalingAvailable() ? false : `signaling binary not found at ${SIGNALING_BIN} (set SIGNALING_BIN)`;

describe('signaling /calls', { skip }, () => {
  let prefix, fake, nodeA, nodeB;
  const sockets = [];
  const client = (url, opts) => {
    const s = connectClient(url, opts);
    sockets.push(s);
    return s;
  };

  before(async () => {
    prefix = uniquePrefix();
    fake = await FakeCallsApi.start(prefix);
    [nodeA, nodeB] = await Promise.all([startSignaling({ prefix }), startSignaling({ prefix })]);
  });

  after(async () => {
    for (const s of sockets) s.close();
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    fake?.close();
  });

  describe('handshake', () => {
    test('a missing token gets connect_error "unauthorized"', async () => {
      const s = client(nodeA.url, { auth: {} });
      await assert.rejects(onceConnected(s), (err) => err.message === 'unauthorized');
    });

    test('a token signed with another secret gets connect_error "unauthorized"', async () => {
      const s = client(nodeA.url, { token: mintToken('mallory', { secret: 'not-' + JWT_SECRET }) });
      await assert.rejects(onceConnected(s), (err) => err.message === 'unauthorized');
    });

    test('an expired token gets connect_error "unauthorized"', async () => {
      const s = client(nodeA.url, { token: mintToken('alice', { ttlSeconds: -120 }) });
      await assert.rejects(onceConnected(s), (err) => err.message === 'unauthorized');
    });

    test('garbage in auth.token gets connect_error "unauthorized"', async () => {
      for (const token of ['', 'abc', 'a.b.c', 42]) {
        const s = client(nodeA.url, { auth: { token } });
        await assert.rejects(onceConnected(s), (err) => err.message === 'unauthorized', String(token));
      }
    });

    test('a socket whose token expires is told so and disconnected, and a fresh token connects again', async () => {
      // Valid for about two more seconds: 28 s past exp, inside the 30 s leeway.
      const s = client(nodeA.url, { token: mintToken('alice-expiring', { ttlSeconds: -28 }) });
      await onceConnected(s);
      const notice = nextEvent(s, 'error', { timeoutMs: 10_000 });
      const closed = new Promise((resolve) => s.once('disconnect', resolve));
      const error = await notice;
      assert.equal(error.code, 'UNAUTHORIZED', 'the app is not told why its socket is closing');
      assert.equal(await closed, 'io server disconnect', 'a socket must not outlive its access token');
      s.auth = { token: mintToken('alice-expiring') };
      s.connect();
      await onceConnected(s);
    });

    test('a token in the Authorization header is accepted', async () => {
      const s = client(nodeA.url, { auth: {}, extraHeaders: { Authorization: `Bearer ${mintToken('alice')}` } });
      await onceConnected(s);
    });
  });

  test('clients on different nodes see each other\'s events', async () => {
    const callId = fake.createCall(['alice', 'bob']);
    const alice = await onceConnected(client(nodeA.url, { userId: 'alice' }));
    const bob = await onceConnected(client(nodeB.url, { userId: 'bob' }));
    const joined = await emitAck(alice, 'join_call', { callId });
    assert.equal(joined.ok, true);
    assert.deepEqual(await nextEvent(alice, 'call_participants'), joined.data);
    assert.equal((await emitAck(bob, 'join_call', { callId })).ok, true);
    const bobJoined = await nextEvent(alice, 'participant_joined');
    assert.equal(bobJoined.participant.userId, 'bob');

    assert.equal((await emitAck(bob, 'media_state_changed', { callId, isCameraOff: true })).ok, true);
    const change = await nextEvent(alice, 'participant_media_changed');
    assert.equal(change.userId, 'bob');
    assert.equal(change.isCameraOff, true);
    assert.ok(change.seq > bobJoined.seq);
    assert.equal(typeof change.at, 'string');
  });

  test('every device of a user gets that user\'s events', async () => {
    const phone = await onceConnected(client(nodeA.url, { userId: 'erin' }));
    const laptop = await onceConnected(client(nodeB.url, { userId: 'erin' }));
    const other = await onceConnected(client(nodeB.url, { userId: 'frank' }));
    fake.publishUserEvent('erin', 'incoming_call', { callId: 'c1', from: 'frank' });
    assert.equal((await nextEvent(phone, 'incoming_call')).from, 'frank');
    assert.equal((await nextEvent(laptop, 'incoming_call')).from, 'frank');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(other.received.length, 0);
  });

  test('200 alternating media toggles are applied in order and every peer ends in the last state', async () => {
    const callId = fake.createCall(['gina', 'hank', 'ivy']);
    const gina = await onceConnected(client(nodeA.url, { userId: 'gina' }));
    const hank = await onceConnected(client(nodeB.url, { userId: 'hank' }));
    const ivy = await onceConnected(client(nodeA.url, { userId: 'ivy' }));
    for (const s of [gina, hank, ivy]) assert.equal((await emitAck(s, 'join_call', { callId })).ok, true);
    const start = fake.calls.get(callId).seq;

    const acks = [];
    for (let i = 0; i < 200; i++) acks.push(emitAck(gina, 'media_state_changed', { callId, isMicMuted: i % 2 === 0 }));
    const answers = await Promise.all(acks);
    answers.forEach((a, i) => assert.equal(a.data.isMicMuted, i % 2 === 0, `ack ${i}`));

    const expected = Array.from({ length: 200 }, (_, i) => i % 2 === 0);
    for (const peer of [hank, ivy, gina]) {
      await waitFor(() => peer.received.filter((r) => r.event === 'participant_media_changed' && r.data.callId === callId).length >= 200,
        { what: 'all 200 changes' });
      const changes = peer.received.filter((r) => r.event === 'participant_media_changed' && r.data.callId === callId).map((r) => r.data);
      assert.deepEqual(changes.map((c) => c.isMicMuted), expected);
      assert.deepEqual(changes.map((c) => c.seq), Array.from({ length: 200 }, (_, i) => start + i + 1));
      assert.equal(changes.at(-1).isMicMuted, false);
    }
    assert.equal(fake.calls.get(callId).participants.get('gina').isMicMuted, false);
  });

  test('an event emitted inside on("connect") is never lost, over thousands of connects', async () => {
    const callId = fake.createCall(['load']);
    const total = 3000;
    const batch = 150;
    let answered = 0;
    for (let i = 0; i < total; i += batch) {
      await Promise.all(Array.from({ length: Math.min(batch, total - i) }, () => new Promise((resolve, reject) => {
        const s = connectClient(i % 300 < 150 ? nodeA.url : nodeB.url, { userId: 'load' });
        const timer = setTimeout(() => { s.close(); reject(new Error('ack lost')); }, 10000);
        s.on('connect', () => {
          s.emit('join_call', { callId }, (ack) => {
            clearTimeout(timer);
            if (ack?.ok) answered += 1;
            s.close();
            resolve();
          });
        });
        s.on('connect_error', (err) => { clearTimeout(timer); reject(err); });
      })));
    }
    assert.equal(answered, total);
  });

  describe('bad payloads are answered, never dropped, and never disconnect', () => {
    const cases = [
      ['no payload', 'join_call', [], 'VALIDATION_FAILED'],
      ['a string', 'join_call', ['x'], 'VALIDATION_FAILED'],
      ['a number', 'join_call', [42], 'VALIDATION_FAILED'],
      ['an array', 'join_call', [[1]], 'VALIDATION_FAILED'],
      ['null', 'join_call', [null], 'VALIDATION_FAILED'],
      ['binary', 'join_call', [Buffer.from([1, 2, 3])], 'VALIDATION_FAILED'],
      ['no callId', 'leave_call', [{}], 'VALIDATION_FAILED'],
      ['a callId that is not a UUID', 'leave_call', [{ callId: 'abc' }], 'VALIDATION_FAILED'],
      ['a callId of the wrong type', 'join_call', [{ callId: 12 }], 'VALIDATION_FAILED'],
      ['media flags of the wrong type', 'media_state_changed', [{ callId: '0193a2b4-0000-7000-8000-000000000001', isMicMuted: 'yes' }], 'VALIDATION_FAILED'],
      ['no media flag', 'media_state_changed', [{ callId: '0193a2b4-0000-7000-8000-000000000001' }], 'VALIDATION_FAILED'],
      ['an unknown status', 'call_status_changed', [{ callId: '0193a2b4-0000-7000-8000-000000000001', status: 'asleep' }], 'VALIDATION_FAILED'],
      ['an unknown event', 'hello', [{}], 'VALIDATION_FAILED'],
      // Names JSON must escape: socketioxide 0.18.9 closed the connection on these (see
      // vendor/socketioxide-parser-common).
      ['an event name with a quote', 'join"call', [{}], 'VALIDATION_FAILED'],
      ['an event name with a backslash and control characters', 'a\\b\n\t\u0001', [{}], 'VALIDATION_FAILED'],
      ['an oversized payload', 'join_call', [{ callId: '0193a2b4-0000-7000-8000-000000000001', pad: 'x'.repeat(20000) }], 'PAYLOAD_TOO_LARGE'],
      ['an unknown call', 'join_call', [{ callId: '0193a2b4-0000-7000-8000-000000000001' }], 'CALL_NOT_FOUND'],
    ];
    let socket;
    before(async () => { socket = await onceConnected(client(nodeA.url, { userId: 'judy' })); });

    for (const [name, event, args, code] of cases) {
      test(`${name}: ack {ok:false} with ${code}`, async () => {
        const ack = await emitAck(socket, event, ...args);
        assert.equal(ack.ok, false);
        assert.equal(ack.error.code, code);
        assert.ok(ack.error.message.length > 0);
        assert.ok(socket.connected);
      });

      test(`${name}: without an ack, an "error" event with ${code}`, async () => {
        const got = nextEvent(socket, 'error', { where: (e) => e.event === event && e.code === code });
        socket.emit(event, ...args);
        const error = await got;
        assert.equal(error.code, code);
        socket.received.length = 0;
        assert.ok(socket.connected);
      });
    }

    test('the socket is still served afterwards', async () => {
      const callId = fake.createCall(['judy']);
      assert.equal((await emitAck(socket, 'join_call', { callId })).ok, true);
    });
  });

  test('HTTP long-polling works as well as WebSocket', async () => {
    const callId = fake.createCall(['kim', 'lee']);
    const kim = await onceConnected(client(nodeA.url, { userId: 'kim', transports: ['polling'] }));
    const lee = await onceConnected(client(nodeB.url, { userId: 'lee', transports: ['polling', 'websocket'] }));
    assert.equal(kim.io.engine.transport.name, 'polling');
    assert.equal((await emitAck(kim, 'join_call', { callId })).ok, true);
    assert.equal((await emitAck(lee, 'join_call', { callId })).ok, true);
    assert.equal((await nextEvent(kim, 'participant_joined')).participant.userId, 'lee');
    assert.equal((await emitAck(kim, 'media_state_changed', { callId, isSharingScreen: true })).ok, true);
    assert.equal((await nextEvent(lee, 'participant_media_changed')).isSharingScreen, true);
  });

  test('presence reports connects and disconnects per node', async () => {
    const s = await onceConnected(client(nodeB.url, { userId: 'mia' }));
    const id = s.id;
    await waitFor(() => fake.presence.some((p) => p.type === 'connected' && p.userId === 'mia' && p.nodeId === nodeB.nodeId),
      { what: 'connected' });
    s.close();
    await waitFor(() => fake.presence.some((p) => p.type === 'disconnected' && p.userId === 'mia' && p.nodeId === nodeB.nodeId),
      { what: 'disconnected' });
    assert.ok(id);
    assert.ok(fake.presence.some((p) => p.type === 'heartbeat' && p.nodeId === nodeA.nodeId));
  });
});

describe('when calls-api cannot answer', { skip }, () => {
  test('commands get DEPENDENCY_UNAVAILABLE, not silence', async () => {
    const prefix = uniquePrefix();
    const fake = await FakeCallsApi.start(prefix);
    const node = await startSignaling({ prefix, env: { SIGNALING_COMMAND_TIMEOUT_MS: '300' } });
    const callId = fake.createCall(['nina']);
    const s = await onceConnected(connectClient(node.url, { userId: 'nina' }));
    try {
      fake.respondToCommands = false;
      let ack = await emitAck(s, 'join_call', { callId });
      assert.equal(ack.error.code, 'DEPENDENCY_UNAVAILABLE');
      await fake.stop();
      ack = await emitAck(s, 'media_state_changed', { callId, isMicMuted: true });
      assert.equal(ack.error.code, 'DEPENDENCY_UNAVAILABLE');
      const err = nextEvent(s, 'error');
      s.emit('leave_call', { callId });
      assert.equal((await err).code, 'DEPENDENCY_UNAVAILABLE');
    } finally {
      s.close();
      await node.stop();
      fake.close();
    }
  });
});

describe('when a node dies', { skip }, () => {
  test('its clients reconnect to the other node and re-join, and its presence stops', async () => {
    const prefix = uniquePrefix();
    const fake = await FakeCallsApi.start(prefix);
    const doomed = await startSignaling({ prefix });
    const survivor = await startSignaling({ prefix });
    const proxy = await startProxy([doomed.port, survivor.port]);
    const watcher = await NatsClient.connect();
    const seen = [];
    watcher.subscribe(`${prefix}.presence.*`, (m) => seen.push({ at: Date.now(), ...m.json() }));
    await watcher.flush();
    const callId = fake.createCall(['olga', 'pete']);
    const olga = connectClient(proxy.url, { userId: 'olga', reconnection: true });
    const pete = connectClient(survivor.url, { userId: 'pete' });
    let rejoined = 0;
    olga.on('connect', async () => {
      const ack = await emitAck(olga, 'join_call', { callId });
      if (ack.ok) rejoined += 1;
    });
    try {
      await onceConnected(olga);
      await onceConnected(pete);
      await waitFor(() => rejoined === 1, { what: 'first join' });
      assert.equal((await emitAck(pete, 'join_call', { callId })).ok, true);
      const firstSid = olga.id;

      const disconnected = new Promise((resolve) => olga.once('disconnect', resolve));
      await doomed.stop('SIGKILL');
      const killedAt = Date.now();
      assert.equal(await disconnected, 'transport close');
      await waitFor(() => rejoined === 2, { what: 're-join on the survivor', timeoutMs: 10000 });
      assert.notEqual(olga.id, firstSid);
      await waitFor(() => fake.presence.some((p) => p.type === 'connected' && p.userId === 'olga' && p.nodeId === survivor.nodeId),
        { what: 'survivor reports the reconnected socket' });

      // The reconnected client hears the call again.
      assert.equal((await emitAck(pete, 'media_state_changed', { callId, isMicMuted: true })).ok, true);
      const change = await nextEvent(olga, 'participant_media_changed', { where: (d) => d.userId === 'pete' });
      assert.equal(change.isMicMuted, true);

      // The dead node sends nothing more: no node_down (it could not), no heartbeat.
      await new Promise((r) => setTimeout(r, 2500));
      const fromDead = seen.filter((p) => p.nodeId === doomed.nodeId && p.at > killedAt + 200);
      assert.deepEqual(fromDead, []);
      assert.ok(!seen.some((p) => p.type === 'node_down' && p.nodeId === doomed.nodeId));
      assert.ok(seen.some((p) => p.type === 'heartbeat' && p.nodeId === survivor.nodeId && p.at > killedAt + 1000));
    } finally {
      olga.close();
      pete.close();
      watcher.close();
      await proxy.close();
      await survivor.stop();
      fake.close();
    }
  });

  test('a node stopped gracefully sends clients elsewhere and reports node_down', async () => {
    const prefix = uniquePrefix();
    const fake = await FakeCallsApi.start(prefix);
    const leaving = await startSignaling({ prefix });
    const staying = await startSignaling({ prefix });
    const proxy = await startProxy([leaving.port, staying.port]);
    const callId = fake.createCall(['quinn']);
    const quinn = connectClient(proxy.url, { userId: 'quinn', reconnection: true });
    let joins = 0;
    quinn.on('connect', async () => { if ((await emitAck(quinn, 'join_call', { callId })).ok) joins += 1; });
    try {
      await onceConnected(quinn);
      await waitFor(() => joins === 1, { what: 'join' });
      const reason = new Promise((resolve) => quinn.once('disconnect', resolve));
      const exit = await leaving.stop('SIGTERM');
      assert.equal(exit.code, 0);
      assert.equal(await reason, 'transport close');
      await waitFor(() => joins === 2, { what: 're-join' });
      await waitFor(() => fake.presence.some((p) => p.type === 'node_down' && p.nodeId === leaving.nodeId), { what: 'node_down' });
      assert.ok(!fake.presence.some((p) => p.type === 'disconnected' && p.nodeId === leaving.nodeId),
        'node_down stands for every socket of the node');
    } finally {
      quinn.close();
      await proxy.close();
      await staying.stop();
      fake.close();
    }
  });
});
