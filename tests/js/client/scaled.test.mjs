// @calls-backend/client against `make cluster` (gateway, 2 calls-api, 2 signaling nodes,
// media-token on Postgres and NATS), through the gateway: every scenario, then a signaling node
// killed under a followed call (last: the cluster is down a node afterwards).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startCluster } from '../lib/cluster.mjs';
import { clientFor, eventually, next, unique, watch } from './lib.mjs';
import { CLIENT_ENV, defineClientScenarios, settled } from './scenarios.mjs';

describe('@calls-backend/client against make cluster', () => {
  let cluster;
  before(async () => {
    cluster = await startCluster(CLIENT_ENV);
  });
  after(async () => {
    await cluster?.stop();
  });
  defineClientScenarios(() => cluster);

  test('a signaling node killed under a followed call: the client reconnects through the gateway to the other node, re-joins, and no event is lost or applied twice', async () => {
    const nodes = await cluster.signalingUrls();
    assert.equal(nodes.length, 2, `the cluster banner should list both signaling nodes:\n${cluster.log()}`);
    const gauge = async (url) => Number(/^signaling_sockets_connected\s+(\S+)/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 0);

    const [aliceId, bobId] = [unique('alice'), unique('bob')];
    const alice = clientFor(cluster.base, aliceId);
    // Bob's socket: whichever node the gateway picks, found from the nodes' own gauges.
    const before = await Promise.all(nodes.map(gauge));
    const bob = clientFor(cluster.base, bobId);
    bob.connect();
    await bob.waitUntilConnected();
    const bobNode = await eventually(async () => {
      const now = await Promise.all(nodes.map(gauge));
      const grew = now.findIndex((n, i) => n > before[i]);
      return grew >= 0 ? grew + 1 : null;
    }, "bob's socket never showed up on a signaling node");

    const ringing = next(bob, 'incoming_call', "bob's phone never rang");
    const aliceCall = await alice.startCall(unique('room'), { type: 'video', isGroupCall: false, inviteUserIds: [bobId] });
    const bobCall = await bob.answer((await ringing).callId);
    await settled(bob, bobCall, "bob's call before the node died");
    const log = watch(bobCall);

    const reconnecting = next(bob, 'connection', "bob's client never noticed its node die", (s) => s === 'reconnecting');
    cluster.kill(`signaling-${bobNode}`);
    await reconnecting;
    for (const patch of [{ isMicMuted: true }, { isCameraOff: true }]) await alice.updateMedia(aliceCall.id, patch);
    if (bob.connectionState !== 'connected') await next(bob, 'connection', 'bob never reconnected through the gateway', (s) => s === 'connected', 20_000);
    await settled(bob, bobCall, "bob's call after his signaling node died");
    await alice.updateMedia(aliceCall.id, { isSharingScreen: true });
    await settled(bob, bobCall, "bob's call on the surviving node");
    const alicePart = bobCall.participants.find((p) => p.userId === aliceId);
    assert.deepEqual([alicePart.isMicMuted, alicePart.isCameraOff, alicePart.isSharingScreen], [true, true, true]);
    assert.ok(log.resyncs().some((r) => r.reason === 'reconnect') || log.events().length >= 3, `bob's call neither resynced nor got the changes: ${JSON.stringify(log.log)}`);
    log.assertAccounted("bob's call across the node's death");
    assert.equal(bobCall.state.status, 'active');
  });
});
