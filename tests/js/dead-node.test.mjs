// A signaling node killed mid-call, in the scaled topology with the real calls-api: the other
// participants see `participant_disconnected` for the users whose only socket was on the dead node,
// then `participant_left` (reason `connection_lost`) once the grace runs out, because calls-api
// counts a node that stopped heartbeating as having lost all its sockets.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';

import { mint, startCluster } from './lib/cluster.mjs';

const require = createRequire(import.meta.url);
const { io } = require('socket.io-client');

function connect(url, user) {
  const socket = io(`${url}/calls`, { auth: { token: mint(user) }, transports: ['websocket'], reconnection: false, forceNew: true });
  socket.seen = [];
  socket.onAny((event, data) => socket.seen.push({ event, data }));
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
    setTimeout(() => reject(new Error(`${user} could not connect to ${url}`)), 10_000);
  });
}

function waitFor(socket, event, pred, ms, why) {
  return new Promise((resolve, reject) => {
    const hit = socket.seen.find((e) => e.event === event && pred(e.data));
    if (hit) return resolve(hit.data);
    const timer = setTimeout(() => reject(new Error(`${why} (saw: ${socket.seen.map((e) => e.event).join(', ')})`)), ms);
    socket.onAny((name, data) => {
      if (name === event && pred(data)) { clearTimeout(timer); resolve(data); }
    });
  });
}

describe('a signaling node killed mid-call, with the real calls-api', () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ PRESENCE_HEARTBEAT_SECONDS: '1', CALL_DISCONNECT_GRACE_SECONDS: '2' });
  });
  after(async () => {
    await cluster?.stop();
  });

  test('the others see participant_disconnected, then participant_left after the grace', async () => {
    const [nodeA, nodeB] = await cluster.signalingUrls();
    assert.ok(nodeA && nodeB, `the cluster banner should list both signaling nodes:\n${cluster.log()}`);
    const tag = `${process.pid}-${Date.now()}`;
    const alice = `alice-${tag}`;
    const bob = `bob-${tag}`;
    const api = (user, method, route, body) => fetch(`${cluster.base}/api/v1${route}`, {
      method,
      headers: { authorization: `Bearer ${mint(user)}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, json: await r.json() }));

    const created = await api(alice, 'POST', `/calls/rooms/room-${tag}/initiate`, { type: 'audio', isGroupCall: true, inviteUserIds: [bob] });
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const callId = created.json.data.id;
    assert.equal((await api(bob, 'POST', `/calls/${callId}/join`, {})).status, 200);

    // Bob's only socket is on node A (the one that dies); Alice watches from node B.
    const bobSocket = await connect(nodeA, bob);
    const aliceSocket = await connect(nodeB, alice);
    try {
      assert.equal((await bobSocket.timeout(10_000).emitWithAck('join_call', { callId })).ok, true);
      assert.equal((await aliceSocket.timeout(10_000).emitWithAck('join_call', { callId })).ok, true);

      cluster.kill('signaling-1');
      const disconnected = await waitFor(aliceSocket, 'participant_disconnected', (d) => d.userId === bob, 15_000,
        'alice never saw bob disconnected after his signaling node died (calls-api must expire a node that stops heartbeating)');
      assert.equal(disconnected.callId, callId);
      assert.equal(disconnected.graceSeconds, 2);
      const left = await waitFor(aliceSocket, 'participant_left', (d) => d.userId === bob, 15_000,
        'alice never saw bob leave once the disconnect grace ran out');
      assert.equal(left.reason, 'connection_lost');
      assert.ok(left.seq > disconnected.seq, 'events must arrive in seq order');

      const call = await api(alice, 'GET', `/calls/${callId}`);
      const bobRecord = call.json.data.participants.find((p) => p.userId === bob);
      assert.equal(bobRecord.status, 'left');
      assert.equal(call.json.data.status, 'active', 'the host is still in the group call');
    } finally {
      bobSocket.close();
      aliceSocket.close();
    }
  });
});
