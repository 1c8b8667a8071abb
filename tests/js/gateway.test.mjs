// The gateway in front of the real services, two of each (scripts/cluster.sh: 2 calls-api,
// 2 signaling, media-token, Postgres, NATS), driven only from outside with fetch and the official
// socket.io-client, as the apps do.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';

import { mint, startCluster } from './lib/cluster.mjs';

const require = createRequire(import.meta.url);
const { io } = require('socket.io-client');

const STEP_MS = 10_000;
/** calls-api's AGORA_NCS_SECRET: the secret Agora's Notification Center signs notices with. */
const NCS_SECRET = 'gateway-test-ncs-secret-3f9a0c';

describe('the gateway in front of two calls-api and two signaling nodes', () => {
  let cluster;
  let base;
  let n = 0;
  const unique = (what) => `${what}-${process.pid}-${Date.now()}-${++n}`;
  const api = (user, method, route, body, headers = {}) => fetch(`${base}/api/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${mint(user)}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
  });

  before(async () => {
    // A tight initiate limit, so the test can reach it without hammering.
    cluster = await startCluster({ RATE_LIMIT_INITIATE_BURST: '3', RATE_LIMIT_INITIATE_PER_USER_PER_MINUTE: '1', AGORA_NCS_SECRET: NCS_SECRET });
    base = cluster.base;
  });
  after(async () => {
    await cluster?.stop();
  });

  test('REST goes through with the request id echoed in the header and in error bodies', async () => {
    const ok = await api(unique('u'), 'GET', '/calls', undefined, { 'x-request-id': 'req-from-the-app-1' });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('x-request-id'), 'req-from-the-app-1', 'the app\'s request id must come back');
    const missing = await api(unique('u'), 'GET', '/calls/0193a2b4-7c1d-7f00-8000-000000000001', undefined, { 'x-request-id': 'req-from-the-app-2' });
    const body = await missing.json();
    assert.equal(missing.status, 404);
    assert.equal(body.code, 'CALL_NOT_FOUND');
    assert.equal(body.requestId, 'req-from-the-app-2', 'support needs the request id in the error body');
    const generated = await api(unique('u'), 'GET', '/calls');
    assert.match(generated.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/, 'a request without an id gets one');
  });

  test('a missing or forged token is refused at the edge with the envelope', async () => {
    const res = await fetch(`${base}/api/v1/calls`);
    assert.equal(res.status, 401);
    assert.equal((await res.json()).code, 'UNAUTHORIZED');
    const forged = await fetch(`${base}/api/v1/calls`, { headers: { authorization: `Bearer ${mint('x').slice(0, -4)}AAAA` } });
    assert.equal(forged.status, 401);
  });

  test('internal routes are never reachable through the gateway', async () => {
    const res = await fetch(`${base}/internal/v1/rooms/r/members`, {
      method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"userIds":["mallory"]}',
    });
    assert.equal(res.status, 404);
    assert.equal((await res.json()).statusCode, 404, 'the refusal is in the envelope');
  });

  test('an oversized body gets 413 in the envelope', async () => {
    const res = await api(unique('u'), 'POST', `/calls/rooms/${unique('room')}/initiate`, JSON.stringify({ pad: 'x'.repeat(70 * 1024) }));
    assert.equal(res.status, 413);
    assert.equal((await res.json()).code, 'PAYLOAD_TOO_LARGE');
  });

  test('Agora\'s signed channel notices reach calls-api without a token; forged or oversized ones are refused', async () => {
    const alice = unique('alice');
    const bob = unique('bob');
    const created = await (await api(alice, 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [bob] })).json();
    const callId = created.data.id;
    assert.equal((await api(bob, 'POST', `/calls/${callId}/join`, {})).status, 200);

    // What Agora's Notification Center sends when bob's client joins the call's channel.
    const notice = JSON.stringify({
      noticeId: unique('notice'), productId: 1, eventType: 103, notifyMs: Date.now(),
      payload: { clientSeq: 1, channelName: `call_${callId}`, uid: 4242, platform: 1, ts: Math.floor(Date.now() / 1000), account: bob },
    });
    const post = (body, signature) => fetch(`${base}/webhooks/agora`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(signature ? { 'agora-signature-v2': signature } : {}) },
      body,
    });
    const sign = (secret, body) => createHmac('sha256', secret).update(body).digest('hex');

    const forged = await post(notice, sign('not-the-secret', notice));
    assert.equal(forged.status, 401);
    assert.equal((await forged.json()).code, 'UNAUTHORIZED', 'the refusal is in the envelope');
    const unsigned = await post(notice);
    assert.equal(unsigned.status, 401);
    const huge = await post(JSON.stringify({ pad: 'x'.repeat(70 * 1024) }), 'ab');
    assert.equal(huge.status, 413, 'the gateway caps the unauthenticated body');
    const before = await (await api(alice, 'GET', `/calls/${callId}`)).json();
    assert.equal(before.data.participants.find((p) => p.userId === bob).inMedia, false, 'nothing forged got through');

    const accepted = await post(notice, sign(NCS_SECRET, notice));
    assert.equal(accepted.status, 200);
    assert.equal((await accepted.json()).data.outcome, 'applied');
    const after = await (await api(alice, 'GET', `/calls/${callId}`)).json();
    assert.equal(after.data.participants.find((p) => p.userId === bob).inMedia, true);
    assert.equal(after.data.seq, before.data.seq + 1, 'subscribers got participant_media_presence');

    const again = await post(notice, sign(NCS_SECRET, notice));
    assert.equal((await again.json()).data.outcome, 'duplicate', 'a redelivery (to either replica) changes nothing');
  });

  test('initiating too fast is rate limited with Retry-After', async () => {
    const caller = unique('caller');
    const statuses = [];
    let limited;
    for (let i = 0; i < 6 && !limited; i += 1) {
      const res = await api(caller, 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [unique('callee')] });
      statuses.push(res.status);
      if (res.status === 429) limited = res;
    }
    assert.ok(limited, `six initiates in a row were never limited: ${statuses}`);
    assert.equal((await limited.json()).code, 'RATE_LIMITED');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1, 'Retry-After tells the app when to try again');
  });

  test('long-polling with the official client works through the gateway and stays on one node', async () => {
    const alice = unique('alice');
    const bob = unique('bob');
    const created = await (await api(alice, 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'video', isGroupCall: false, inviteUserIds: [bob] })).json();
    const callId = created.data.id;
    const socket = io(`${base}/calls`, { auth: { token: mint(bob) }, transports: ['polling'], reconnection: false, forceNew: true });
    try {
      await new Promise((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('connect_error', reject);
        setTimeout(() => reject(new Error('polling client did not connect')), STEP_MS);
      });
      // Several round trips: a polling session that hopped nodes would answer "Session ID unknown".
      for (let i = 0; i < 5; i += 1) {
        const ack = await socket.timeout(STEP_MS).emitWithAck('join_call', { callId });
        assert.equal(ack.ok, true, `join_call over polling failed: ${JSON.stringify(ack)}`);
        assert.equal(ack.data.callId, callId);
      }
      assert.equal(socket.io.engine.transport.name, 'polling');
    } finally {
      socket.close();
    }
  });

  test('when a calls-api replica dies mid-test, requests keep succeeding through the other one', async () => {
    const alice = unique('alice');
    const created = await (await api(alice, 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'audio', isGroupCall: true, inviteUserIds: [unique('bob'), unique('carol')] })).json();
    const callId = created.data.id;
    cluster.kill('calls-api-1');
    const failures = [];
    for (let i = 0; i < 20; i += 1) {
      const res = await api(alice, 'GET', `/calls/${callId}`);
      if (res.status !== 200) failures.push(`${res.status} ${(await res.json()).code}`);
    }
    assert.deepEqual(failures, [], 'an app would have seen errors while one replica was down');
    const history = await api(alice, 'GET', '/calls?limit=5');
    assert.equal(history.status, 200);
  });

  test('when a signaling node dies, its clients reconnect through the gateway and re-join', async () => {
    const alice = unique('alice');
    const bob = unique('bob');
    const created = await (await api(alice, 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [bob] })).json();
    const callId = created.data.id;
    assert.equal((await api(bob, 'POST', `/calls/${callId}/join`, {})).status, 200);
    // Enough sockets that both nodes hold some.
    const sockets = Array.from({ length: 6 }, () => io(`${base}/calls`, {
      auth: { token: mint(alice) }, transports: ['websocket'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 500,
    }));
    try {
      await Promise.all(sockets.map((s) => new Promise((resolve, reject) => {
        s.once('connect', resolve);
        setTimeout(() => reject(new Error('socket did not connect')), STEP_MS);
      })));
      await Promise.all(sockets.map((s) => s.timeout(STEP_MS).emitWithAck('join_call', { callId })));
      const dropped = sockets.map((s) => new Promise((resolve) => s.once('disconnect', () => resolve(s))));
      cluster.kill('signaling-1');
      // The sockets of the dead node drop together; wait for that, then for them to come back
      // through the gateway (to the survivor) and re-join.
      await Promise.race([
        Promise.any(dropped),
        new Promise((_, reject) => setTimeout(() => reject(new Error('no client noticed its node die')), STEP_MS)),
      ]);
      await new Promise((r) => setTimeout(r, 300));
      const deadline = Date.now() + 20_000;
      while (!sockets.every((s) => s.connected) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.ok(sockets.every((s) => s.connected), 'some clients never came back after their node died');
      const rejoined = await Promise.all(sockets.map((s) => s.timeout(STEP_MS).emitWithAck('join_call', { callId })));
      assert.ok(rejoined.every((ack) => ack.ok), `re-joining failed: ${JSON.stringify(rejoined)}`);
      // Events still reach everyone: bob mutes, every socket of alice hears it.
      const heard = sockets.map((s) => new Promise((resolve, reject) => {
        s.on('participant_media_changed', (e) => { if (e.userId === bob && e.isMicMuted) resolve(); });
        setTimeout(() => reject(new Error('a client never heard the mute after the failover')), STEP_MS);
      }));
      assert.equal((await api(bob, 'PATCH', `/calls/${callId}/media`, { isMicMuted: true })).status, 200);
      await Promise.all(heard);
    } finally {
      for (const s of sockets) s.close();
    }
  });
});
