// Ringing phones whose app is asleep (CONTRACT section 8), through the gateway, in both
// topologies: the device registry, APNs VoIP and alert pushes, FCM data and notification
// messages, against the doubles of Apple and Google in lib/push-doubles.mjs (which check the
// provider JWT, the OAuth2 grant, the headers and the payloads as the real services do).
//
// Nobody here has a socket unless a test says so: these are phones in a pocket.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { Client, eventsOf, eventually, quietPeriod, unique, waitFor } from './acceptance/harness.mjs';
import { mint, startCluster, startStandalone } from './lib/cluster.mjs';
import { APNS_FAULTS, FCM_FAULTS, startPushDoubles } from './lib/push-doubles.mjs';
import { RING_SECONDS, pushEnv } from './lib/push.mjs';

const BUNDLE = 'com.example.calls';
// The ringing push leaves within 100 ms of the commit (p99, `make bench-push`); a test on a busy
// CI machine only checks it is not held back behind anything.
const RING_LATENCY_BUDGET_MS = 2_000;

const hex = () => randomBytes(32).toString('hex');
const fcmToken = () => `${randomBytes(8).toString('hex')}:APA91b${randomBytes(30).toString('base64url')}`;

/** Registers an iPhone (with a PushKit token) and an Android phone for `user`. */
async function phones(client, user) {
  const iphone = { deviceId: `iphone-${randomBytes(3).toString('hex')}`, platform: 'ios', pushProvider: 'apns', pushToken: hex(), voipToken: hex(), bundleId: BUNDLE };
  const pixel = { deviceId: `pixel-${randomBytes(3).toString('hex')}`, platform: 'android', pushProvider: 'fcm', pushToken: fcmToken() };
  for (const { deviceId, ...body } of [iphone, pixel]) {
    const res = await client.api(user, 'PUT', `/devices/${deviceId}`, body);
    assert.equal(res.status, 200, `registering ${deviceId}: ${res.status} ${JSON.stringify(res.body)}`);
    assert.equal(res.body.data.deviceId, deviceId);
  }
  return { iphone, pixel };
}

export function definePushSuite(title, start) {
  // The tests use users of their own, so they run side by side: the ring-timeout waits overlap.
  describe(title, { concurrency: true }, () => {
    let doubles;
    let deployment;
    let client;
    const apnsTo = (token) => doubles.apns.requests.filter((r) => r.deviceToken === token);
    const apnsLogTo = (token) => doubles.apns.log.filter((r) => r.deviceToken === token);
    const fcmTo = (token) => doubles.fcm.requests.filter((r) => r.token === token);
    const fcmLogTo = (token) => doubles.fcm.log.filter((r) => r.token === token);

    before(async () => {
      doubles = await startPushDoubles({ bundleIds: [BUNDLE] });
      deployment = await start(pushEnv(doubles));
      client = new Client(deployment.base);
    });

    after(async () => {
      client?.closeAll();
      await deployment?.stop();
      await doubles?.close();
    });

    test('an invitee with an iPhone and an Android phone and no socket is rung on both; answering on the iPhone cancels the Android and tells the iPhone nothing', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const { iphone, pixel } = await phones(client, bob);
      const call = await client.initiate(alice, [bob], { type: 'video' });
      const createdAt = Date.parse(call.createdAt);

      const [voip] = await eventually(() => apnsTo(iphone.voipToken).length && apnsTo(iphone.voipToken), 'the iPhone gets a VoIP push');
      assert.equal(voip.headers['apns-push-type'], 'voip');
      assert.equal(voip.headers['apns-topic'], `${BUNDLE}.voip`);
      assert.equal(voip.headers['apns-priority'], '10');
      assert.equal(voip.headers['apns-collapse-id'], call.id);
      const deadline = Date.parse(voip.payload.ringDeadline);
      assert.equal(deadline - createdAt, RING_SECONDS * 1000, 'the ring deadline is the ring timeout after the call started');
      assert.equal(Number(voip.headers['apns-expiration']), Math.floor(deadline / 1000));
      assert.deepEqual(
        { ...voip.payload, ringDeadline: undefined },
        { type: 'incoming_call', callId: call.id, chatRoomId: call.chatRoomId, callType: 'video', isGroupCall: false, from: { userId: alice }, ringDeadline: undefined },
      );
      assert.ok(voip.at - createdAt < RING_LATENCY_BUDGET_MS, `the VoIP push left ${voip.at - createdAt} ms after the call started`);

      const [ring] = await eventually(() => fcmTo(pixel.pushToken).length && fcmTo(pixel.pushToken), 'the Android phone gets a data message');
      assert.equal(ring.message.android.priority, 'HIGH');
      assert.equal(ring.message.notification, undefined, 'a ring is data-only: the app shows its own full-screen call UI');
      assert.deepEqual(ring.message.data, {
        type: 'incoming_call', callId: call.id, chatRoomId: call.chatRoomId, callType: 'video', isGroupCall: 'false', fromUserId: alice, ringDeadline: voip.payload.ringDeadline,
      });
      const ttl = Number(ring.message.android.ttl.replace(/s$/, ''));
      assert.ok(ttl >= 1 && ttl <= RING_SECONDS, `the message lives until the ring deadline, not longer (ttl ${ring.message.android.ttl})`);
      assert.ok(ring.at - createdAt < RING_LATENCY_BUDGET_MS, `the FCM message left ${ring.at - createdAt} ms after the call started`);

      // Bob picks up on the iPhone: the app answers over REST naming the device.
      const answered = await client.api(bob, 'POST', `/calls/${call.id}/join`, {}, { 'x-device-id': iphone.deviceId });
      assert.equal(answered.status, 200, JSON.stringify(answered.body));
      const cancels = await eventually(() => {
        const got = fcmTo(pixel.pushToken).filter((r) => r.message.data.type === 'incoming_call_cancelled');
        return got.length && got;
      }, 'the Android phone stops ringing');
      assert.deepEqual(cancels[0].message.data, { type: 'incoming_call_cancelled', callId: call.id, reason: 'answered_elsewhere' });
      await quietPeriod(500);
      assert.equal(apnsTo(iphone.voipToken).length, 1, 'the iPhone gets no second VoIP push');
      assert.equal(apnsTo(iphone.pushToken).length, 0, 'nor an alert');
      assert.equal(fcmTo(pixel.pushToken).length, 2, 'the Android phone got exactly the ring and its cancel');
    });

    test('answering on the Android phone sends it no cancel, and the iPhone learns it from the socket replay when it connects', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const { iphone, pixel } = await phones(client, bob);
      const call = await client.initiate(alice, [bob]);
      await eventually(() => apnsTo(iphone.voipToken).length && fcmTo(pixel.pushToken).length, 'both phones ring');

      const answered = await client.api(bob, 'PATCH', `/calls/${call.id}/status`, { status: 'joined' }, { 'x-device-id': pixel.deviceId });
      assert.equal(answered.status, 200, JSON.stringify(answered.body));
      await quietPeriod(700);
      assert.equal(fcmTo(pixel.pushToken).length, 1, 'the phone that answered is not told it was answered elsewhere');

      // The iPhone's app, woken by the VoIP push, connects and is told the truth at once.
      const socket = client.socket(bob, { auth: { token: mint(bob), deviceId: iphone.deviceId } });
      const cancelled = await waitFor(socket, 'incoming_call_cancelled', (e) => e.callId === call.id, 'the iPhone hears the call was answered elsewhere');
      assert.equal(cancelled.reason, 'answered_elsewhere');

      // The answering phone connecting is not told "answered elsewhere" about its own answer.
      const own = await client.connect(bob, { auth: { token: mint(bob), deviceId: pixel.deviceId } });
      await quietPeriod(1000);
      assert.deepEqual(eventsOf(own, call.id, 'incoming_call_cancelled'), []);
    });

    test('someone invited into a live call is rung on both phones like a first invitee, named after who invited them; removed, their Android stops ringing', async () => {
      const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
      const { iphone, pixel } = await phones(client, carol);
      const call = await client.initiate(alice, [bob], { type: 'audio' });
      await client.join(bob, call.id);
      const invited = await client.api(bob, 'POST', `/calls/${call.id}/invite`, { userIds: [carol] });
      assert.equal(invited.status, 200, `bob could not invite carol: ${invited.text}`);
      const invitedAt = Date.parse(invited.body.data.participants.find((p) => p.userId === carol).invitedAt);

      const [voip] = await eventually(() => apnsTo(iphone.voipToken).length && apnsTo(iphone.voipToken), "carol's iPhone gets a VoIP push");
      assert.equal(voip.headers['apns-push-type'], 'voip');
      assert.equal(voip.headers['apns-collapse-id'], call.id);
      const deadline = Date.parse(voip.payload.ringDeadline);
      assert.equal(deadline - invitedAt, RING_SECONDS * 1000, 'a late invitee rings the full ring timeout from their invitation');
      assert.deepEqual(
        { ...voip.payload, ringDeadline: undefined },
        { type: 'incoming_call', callId: call.id, chatRoomId: call.chatRoomId, callType: 'audio', isGroupCall: true, from: { userId: bob }, ringDeadline: undefined },
      );
      assert.ok(voip.at - invitedAt < RING_LATENCY_BUDGET_MS, `the VoIP push left ${voip.at - invitedAt} ms after the invitation`);
      const [ring] = await eventually(() => fcmTo(pixel.pushToken).length && fcmTo(pixel.pushToken), "carol's Android phone gets a data message");
      assert.equal(ring.message.data.type, 'incoming_call');
      assert.equal(ring.message.data.fromUserId, bob);
      assert.equal(ring.message.data.isGroupCall, 'true');

      const removed = await client.api(alice, 'POST', `/calls/${call.id}/participants/${carol}/remove`);
      assert.equal(removed.status, 200, `alice could not remove carol: ${removed.text}`);
      const cancels = await eventually(() => {
        const got = fcmTo(pixel.pushToken).filter((r) => r.message.data.type === 'incoming_call_cancelled');
        return got.length && got;
      }, "carol's Android phone stops ringing");
      assert.deepEqual(cancels[0].message.data, { type: 'incoming_call_cancelled', callId: call.id, reason: 'cancelled' });

      // Invited again, carol's phones ring again: a new ring of the same call is not a duplicate.
      assert.equal((await client.api(alice, 'POST', `/calls/${call.id}/invite`, { userIds: [carol] })).status, 200);
      await eventually(() => apnsTo(iphone.voipToken).length === 2, "carol's iPhone is not rung again when she is invited back");
      await eventually(() => fcmTo(pixel.pushToken).filter((r) => r.message.data.type === 'incoming_call').length === 2, "carol's Android phone is not rung again");
    });

    test('a socket that connects while a call rings for its user gets incoming_call', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const call = await client.initiate(alice, [bob]);
      const socket = client.socket(bob);
      const ring = await waitFor(socket, 'incoming_call', (e) => e.callId === call.id, 'the late socket hears the ringing call');
      assert.equal(ring.from.userId, alice);
      assert.equal(ring.call.id, call.id);
    });

    test('a missed call leaves a missed-call alert on the iPhone and the Android phone', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const { iphone, pixel } = await phones(client, bob);
      const call = await client.initiate(alice, [bob]);
      const alerts = await eventually(() => {
        const a = apnsTo(iphone.pushToken);
        const f = fcmTo(pixel.pushToken).filter((r) => r.message.data.type === 'missed_call');
        return a.length && f.length && { apns: a[0], fcm: f[0] };
      }, 'both phones show a missed call', (RING_SECONDS + 10) * 1000);
      assert.equal(alerts.apns.headers['apns-push-type'], 'alert');
      assert.equal(alerts.apns.headers['apns-topic'], BUNDLE, 'alerts go to the app topic, not .voip');
      assert.equal(alerts.apns.payload.aps['thread-id'], call.chatRoomId);
      assert.equal(alerts.apns.payload.aps.alert.body, `Missed call from ${alice}`);
      assert.ok(alerts.apns.payload.aps.alert['loc-key'], 'apps can localise it');
      assert.deepEqual(alerts.apns.payload.aps.alert['loc-args'], [alice]);
      assert.equal(alerts.apns.payload.callId, call.id);
      assert.deepEqual(alerts.fcm.message.data, { type: 'missed_call', callId: call.id, chatRoomId: call.chatRoomId, fromUserId: alice });
      assert.equal(alerts.fcm.message.notification.title, 'Missed call');
      // The Android phone also stopped ringing (that message travels in the ringing lane, so it
      // may arrive before or after the alert).
      const cancel = await eventually(() => fcmTo(pixel.pushToken).find((r) => r.message.data.type === 'incoming_call_cancelled'), 'the Android phone stops ringing');
      assert.equal(cancel.message.data.reason, 'missed');
    });

    test('a token Apple or Google call dead removes the device from GET /devices', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const { iphone, pixel } = await phones(client, bob);
      doubles.apns.failToken(iphone.voipToken, APNS_FAULTS.unregistered);
      doubles.fcm.failToken(pixel.pushToken, FCM_FAULTS.unregistered);
      await client.initiate(alice, [bob]);
      await eventually(async () => {
        const res = await client.api(bob, 'GET', '/devices');
        return res.status === 200 && res.body.data.items.length === 0;
      }, 'both devices are gone');
    });

    test('a 503 is retried and the push delivered once', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const { iphone, pixel } = await phones(client, bob);
      doubles.apns.failToken(iphone.voipToken, APNS_FAULTS.serviceUnavailable, { times: 1 });
      doubles.fcm.failToken(pixel.pushToken, FCM_FAULTS.unavailable(0), { times: 1 });
      await client.initiate(alice, [bob]);
      await eventually(() => apnsTo(iphone.voipToken).length && fcmTo(pixel.pushToken).length, 'both pushes get through after a retry');
      await quietPeriod(500);
      assert.equal(apnsLogTo(iphone.voipToken).length, 2, 'one refused attempt and one accepted');
      assert.equal(apnsTo(iphone.voipToken).length, 1);
      assert.equal(fcmLogTo(pixel.pushToken).length, 2);
      assert.equal(fcmTo(pixel.pushToken).length, 1);
    });

    test('a push that cannot go before the ring deadline is never sent', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const { pixel } = await phones(client, bob);
      // Google asks to come back after the call has stopped ringing.
      doubles.fcm.failToken(pixel.pushToken, FCM_FAULTS.unavailable(RING_SECONDS * 3), { times: 1 });
      await client.initiate(alice, [bob]);
      await eventually(() => fcmLogTo(pixel.pushToken).length, 'the first attempt is made');
      await quietPeriod((RING_SECONDS + 3) * 1000);
      const rings = fcmTo(pixel.pushToken).filter((r) => r.message.data.type === 'incoming_call');
      assert.deepEqual(rings, [], 'no late ring');
    });

    test('a token registered by another user rings only that user', async () => {
      const [alice, carol, dave] = [unique('alice'), unique('carol'), unique('dave')];
      const token = fcmToken();
      const body = { platform: 'android', pushProvider: 'fcm', pushToken: token };
      assert.equal((await client.api(carol, 'PUT', '/devices/phone', body)).status, 200);
      // The phone is handed to Dave, who signs in on it.
      assert.equal((await client.api(dave, 'PUT', '/devices/same-phone', body)).status, 200);
      assert.deepEqual((await client.api(carol, 'GET', '/devices')).body.data.items, []);
      await client.initiate(alice, [carol]);
      const call = await client.initiate(alice, [dave]);
      const rings = await eventually(() => fcmTo(token).length && fcmTo(token), 'the phone rings for Dave');
      await quietPeriod(700);
      assert.deepEqual(fcmTo(token).map((r) => r.message.data.callId), [call.id], 'and never for Carol');
      assert.equal(rings[0].message.data.callId, call.id);
    });

    test('bad registrations are refused with the field that is wrong, and nobody can touch someone else\'s device', async () => {
      const user = unique('erin');
      const ok = { platform: 'android', pushProvider: 'fcm', pushToken: fcmToken() };
      const cases = [
        ['unknown platform', 'phone', { ...ok, platform: 'windows' }, 'platform'],
        ['an APNs token that is not hex', 'phone', { platform: 'ios', pushProvider: 'apns', pushToken: 'zz'.repeat(32) }, 'pushToken'],
        ['a VoIP token on Android', 'phone', { ...ok, voipToken: hex() }, 'voipToken'],
        ['an FCM token with spaces', 'phone', { ...ok, pushToken: 'not a token' }, 'pushToken'],
        ['Android through APNs', 'phone', { platform: 'android', pushProvider: 'apns', pushToken: hex() }, 'pushProvider'],
        ['a missing token', 'phone', { platform: 'android', pushProvider: 'fcm' }, 'pushToken'],
        ['a device id over 128 characters', 'x'.repeat(129), ok, 'deviceId'],
        ['a device id with a slash-free but illegal character', 'my%20phone', ok, 'deviceId'],
      ];
      for (const [what, deviceId, body, field] of cases) {
        const res = await client.api(user, 'PUT', `/devices/${deviceId}`, body);
        assert.equal(res.status, 400, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
        assert.equal(res.body.code, 'VALIDATION_FAILED', what);
        assert.ok(res.body.details.some((d) => d.field === field), `${what}: details name ${field}: ${JSON.stringify(res.body.details)}`);
      }
      const notJson = await client.api(user, 'PUT', '/devices/phone', '{oops', { 'content-type': 'application/json' });
      assert.equal(notJson.status, 400);
      assert.equal(notJson.body.code, 'VALIDATION_FAILED');
      assert.equal((await client.api(null, 'GET', '/devices')).status, 401);

      assert.equal((await client.api(user, 'PUT', '/devices/mine', ok)).status, 200);
      const stranger = unique('mallory');
      assert.deepEqual((await client.api(stranger, 'GET', '/devices')).body.data.items, []);
      const theirs = await client.api(stranger, 'DELETE', '/devices/mine');
      assert.equal(theirs.status, 404);
      assert.equal(theirs.body.code, 'NOT_FOUND');
      assert.equal((await client.api(user, 'GET', '/devices')).body.data.items.length, 1, 'still there');
      assert.equal((await client.api(user, 'DELETE', '/devices/mine')).status, 200);
      assert.equal((await client.api(user, 'GET', '/devices')).body.data.items.length, 0);
    });

    test('the device endpoints are in the one API document', async () => {
      const doc = await fetch(`${deployment.base}/api/docs/openapi.json`).then((r) => r.json());
      assert.ok(doc.paths['/api/v1/devices'], 'GET /devices');
      assert.ok(doc.paths['/api/v1/devices/{deviceId}'].put, 'PUT /devices/:deviceId');
      assert.ok(doc.paths['/api/v1/calls/{id}/join'], 'the calls API is still there');
      assert.ok(doc.components.schemas.Device);
    });
  });
}

definePushSuite('pushes, standalone (make run)', (env) => startStandalone(env));
definePushSuite('pushes, scaled topology (make cluster)', (env) => startCluster(env));
