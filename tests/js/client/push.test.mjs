// @calls-backend/client and the notifier: devices registered through the client, and the
// pushes the notifier really sends (captured by the doubles of Apple and Google) parsed by the
// client's push helpers, as a CallKit / FCM handler would. Against `make run`.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { STANDALONE_BIN, startStandalone } from '../lib/cluster.mjs';
import { startPushDoubles } from '../lib/push-doubles.mjs';
import { pushEnv } from '../lib/push.mjs';
import { clientFor, closeAll, sdk, unique } from './lib.mjs';

const BUNDLE = 'com.example.calls';
const hex = () => randomBytes(32).toString('hex');

async function eventually(check, why, ms = 15_000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > until) assert.fail(why);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('@calls-backend/client with the notifier (make run)', { skip: !existsSync(STANDALONE_BIN) && `missing ${STANDALONE_BIN}` }, () => {
  let doubles;
  let backend;
  before(async () => {
    doubles = await startPushDoubles({ bundleIds: [BUNDLE] });
    backend = await startStandalone(pushEnv(doubles));
  });
  after(async () => {
    closeAll();
    await backend?.stop();
    await doubles?.close();
  });

  test('phones registered through the client ring, and the client parses the pushes the notifier sends', async () => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const iphone = { pushToken: hex(), voipToken: hex() };
    const pixel = { pushToken: `${randomBytes(8).toString('hex')}:APA91b${randomBytes(20).toString('base64url')}` };
    const bobPhone = clientFor(backend.base, bob, { deviceId: 'bob-iphone' });
    const registered = await bobPhone.registerDevice('bob-iphone', { platform: 'ios', pushProvider: 'apns', bundleId: BUNDLE, ...iphone });
    assert.equal(registered.deviceId, 'bob-iphone');
    await bobPhone.registerDevice('bob-pixel', { platform: 'android', pushProvider: 'fcm', ...pixel });
    assert.deepEqual((await bobPhone.listDevices()).map((d) => d.deviceId).sort(), ['bob-iphone', 'bob-pixel']);

    const caller = clientFor(backend.base, alice);
    const { call } = await caller.initiateCall(unique('room'), { type: 'audio', isGroupCall: false, inviteUserIds: [bob] });

    const voip = await eventually(() => doubles.apns.requests.find((r) => r.deviceToken === iphone.voipToken), 'the iPhone gets its VoIP push');
    const ring = sdk.parseVoipPush(voip.payload);
    assert.ok(ring, `parseVoipPush understands ${JSON.stringify(voip.payload)}`);
    assert.equal(ring.callId, call.id);
    assert.equal(ring.callType, 'audio');
    assert.equal(ring.from.userId, alice);
    assert.ok(sdk.ringTimeLeftMs(ring) > 0);

    const data = await eventually(() => doubles.fcm.requests.find((r) => r.token === pixel.pushToken), 'the Android phone gets its data message');
    const androidRing = sdk.parseFcmMessage({ data: data.message.data });
    assert.equal(androidRing?.type, 'incoming_call');
    assert.equal(androidRing.callId, call.id);
    assert.equal(androidRing.isGroupCall, false);

    // Bob answers on the iPhone through the client (X-Device-Id): the Android phone is told, the
    // iPhone is not.
    await bobPhone.joinCall(call.id);
    const stop = await eventually(() => doubles.fcm.requests.find((r) => r.token === pixel.pushToken && r.message.data.type === 'incoming_call_cancelled'), 'the Android phone stops ringing');
    assert.deepEqual(sdk.parseFcmMessage({ data: stop.message.data }), { type: 'incoming_call_cancelled', callId: call.id, reason: 'answered_elsewhere', transport: 'fcm' });

    await bobPhone.removeDevice('bob-pixel');
    assert.deepEqual((await bobPhone.listDevices()).map((d) => d.deviceId), ['bob-iphone']);
  });
});
