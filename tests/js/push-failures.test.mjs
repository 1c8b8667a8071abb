// Rings survive failures (CONTRACT section 8: "at least once, never twice to one device"), in the
// scaled topology on a NATS of the test's own: notifier replicas killed with rings consumed but
// not yet delivered, and NATS stopped while a call is started. Counted at the doubles of Apple
// and Google: every ring reaches every phone exactly once.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { Client, eventually, quietPeriod, unique } from './acceptance/harness.mjs';
import { startCluster } from './lib/cluster.mjs';
import { startNats } from './lib/infra.mjs';
import { APNS_FAULTS, FCM_FAULTS, startPushDoubles } from './lib/push-doubles.mjs';
import { pushEnv } from './lib/push.mjs';

const BUNDLE = 'com.example.calls';
// Long enough to outlive a killed replica's lease (2 × PUSH_TIMEOUT_MS + 5 s) and a NATS restart.
const RING_SECONDS = 30;

const hex = () => randomBytes(32).toString('hex');
const fcmToken = () => `${randomBytes(8).toString('hex')}:APA91b${randomBytes(30).toString('base64url')}`;

describe('pushes through failures, scaled topology (own NATS)', () => {
  let nats;
  let doubles;
  let cluster;
  let client;
  const accepted = (token) => [...doubles.apns.requests.filter((r) => r.deviceToken === token), ...doubles.fcm.requests.filter((r) => r.token === token)];
  const attempts = (token) => [...doubles.apns.log.filter((r) => r.deviceToken === token), ...doubles.fcm.log.filter((r) => r.token === token)];

  async function phones(user) {
    const iphone = { platform: 'ios', pushProvider: 'apns', pushToken: hex(), voipToken: hex(), bundleId: BUNDLE };
    const pixel = { platform: 'android', pushProvider: 'fcm', pushToken: fcmToken() };
    for (const [id, body] of [['iphone', iphone], ['pixel', pixel]]) {
      const res = await client.api(user, 'PUT', `/devices/${id}`, body);
      assert.equal(res.status, 200, JSON.stringify(res.body));
    }
    return { voip: iphone.voipToken, fcm: pixel.pushToken };
  }

  before(async () => {
    nats = await startNats();
    doubles = await startPushDoubles({ bundleIds: [BUNDLE] });
    cluster = await startCluster(pushEnv(doubles, {
      CALL_RING_TIMEOUT_SECONDS: String(RING_SECONDS),
      PUSH_TIMEOUT_MS: '1000',
      // Killed services come back, as Kubernetes restarts a pod.
      CLUSTER_RESTART: 'on-exit',
    }), { natsUrl: nats.url });
    client = new Client(cluster.base);
  });

  after(async () => {
    client?.closeAll();
    await cluster?.stop();
    await doubles?.close();
    await nats?.destroy();
  });

  test('every notifier killed after consuming a ring but before delivering it: each phone still rings exactly once', async () => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const { voip, fcm } = await phones(bob);
    // Apple and Google are down: the rings are consumed, queued and retried.
    doubles.apns.failToken(voip, APNS_FAULTS.serviceUnavailable);
    doubles.fcm.failToken(fcm, FCM_FAULTS.unavailable(1));
    await client.initiate(alice, [bob]);
    await eventually(() => attempts(voip).length && attempts(fcm).length, 'both rings were tried');
    assert.equal(accepted(voip).length + accepted(fcm).length, 0);

    cluster.kill('notifier-1');
    cluster.kill('notifier-2');
    // They are back up (CLUSTER_RESTART) with the rings still queued; the providers recover.
    doubles.apns.clearFaults();
    doubles.fcm.clearFaults();
    await eventually(() => accepted(voip).length && accepted(fcm).length, 'the restarted notifiers deliver both rings', 30_000);
    await quietPeriod(2_000);
    assert.equal(accepted(voip).length, 1, 'the iPhone rang once');
    assert.equal(accepted(fcm).length, 1, 'the Android phone rang once');
  });

  test('a call started while NATS is down rings every phone exactly once when NATS is back', async () => {
    const [alice, carol] = [unique('alice'), unique('carol')];
    const { voip, fcm } = await phones(carol);
    await nats.stop();
    // calls-api writes the call and its events (the outbox) without the bus.
    const call = await client.initiate(alice, [carol]);
    await quietPeriod(1_000);
    assert.equal(attempts(voip).length + attempts(fcm).length, 0, 'nothing can ring while the bus is down');
    await nats.start();
    await eventually(() => accepted(voip).length && accepted(fcm).length, 'both phones ring once NATS is back', 30_000);
    await quietPeriod(2_000);
    assert.deepEqual(accepted(voip).map((r) => r.payload.callId), [call.id], 'the iPhone rang once');
    assert.deepEqual(accepted(fcm).map((r) => r.message.data.callId), [call.id], 'the Android phone rang once');
  });
});
