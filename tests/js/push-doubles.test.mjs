// The APNs and FCM doubles refuse what Apple and Google refuse: a double that accepts anything
// proves nothing about the client talking to it. These tests drive them with node's own HTTP/2
// client and crypto, independent of the Rust clients.

import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import http2 from 'node:http2';
import { after, before, describe, test } from 'node:test';

import { APNS_FAULTS, FCM_FAULTS, startPushDoubles } from './lib/push-doubles.mjs';

const BUNDLE = 'com.example.calls';
const DEVICE = 'a1b2c3d4'.repeat(8);
const now = () => Math.floor(Date.now() / 1000);
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

function es256(header, claims, privateKeyPem) {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key: privateKeyPem, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

function rs256(header, claims, privateKeyPem) {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKeyPem).toString('base64url')}`;
}

/** One HTTP/2 session to the APNs double; `post` resolves with { status, headers, body }. */
function apnsSession(url) {
  const session = http2.connect(url);
  session.on('error', () => {});
  return {
    post(path, headers, payload) {
      return new Promise((resolve, reject) => {
        const stream = session.request({ ':method': 'POST', ':path': path, ...headers });
        let responseHeaders;
        const chunks = [];
        stream.on('response', (h) => { responseHeaders = h; });
        stream.on('data', (c) => chunks.push(c));
        stream.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: responseHeaders[':status'], headers: responseHeaders, body: text ? JSON.parse(text) : null });
        });
        stream.on('error', reject);
        stream.end(typeof payload === 'string' ? payload : JSON.stringify(payload));
      });
    },
    close: () => session.close(),
  };
}

describe('the APNs double', () => {
  let doubles;
  let session;
  let key;
  const token = (overrides = {}, claims = {}) => es256({ alg: 'ES256', kid: key.keyId, ...overrides }, { iss: key.teamId, iat: now(), ...claims }, key.privateKeyPem);
  const voip = (headers = {}, payload = { type: 'incoming_call', callId: 'c1' }, device = DEVICE) => session.post(`/3/device/${device}`, {
    authorization: `bearer ${token()}`, 'apns-topic': `${BUNDLE}.voip`, 'apns-push-type': 'voip', 'apns-priority': '10', ...headers,
  }, payload);

  before(async () => {
    doubles = await startPushDoubles({ bundleIds: [BUNDLE] });
    key = doubles.apnsKey;
    session = apnsSession(doubles.apns.url);
  });
  after(async () => {
    session?.close();
    await doubles?.close();
  });

  test('accepts a VoIP push signed with the team key and records its headers and payload', async () => {
    doubles.apns.reset();
    const res = await voip({ 'apns-expiration': String(now() + 30), 'apns-collapse-id': 'call-1', 'apns-id': '123e4567-e89b-12d3-a456-426655440000' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['apns-id'], '123e4567-e89b-12d3-a456-426655440000');
    const [recorded] = doubles.apns.requests;
    assert.equal(recorded.deviceToken, DEVICE);
    assert.equal(recorded.headers['apns-topic'], `${BUNDLE}.voip`);
    assert.equal(recorded.headers['apns-collapse-id'], 'call-1');
    assert.deepEqual(recorded.payload, { type: 'incoming_call', callId: 'c1' });
    assert.equal(recorded.jwt.header.kid, key.keyId);
  });

  test('refuses a provider token signed by another key', async () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1', privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    const forged = es256({ alg: 'ES256', kid: key.keyId }, { iss: key.teamId, iat: now() }, other.privateKey);
    const res = await session.post(`/3/device/${DEVICE}`, { authorization: `bearer ${forged}`, 'apns-topic': `${BUNDLE}.voip`, 'apns-push-type': 'voip' }, {});
    assert.equal(res.status, 403);
    assert.deepEqual(res.body, { reason: 'InvalidProviderToken' });
  });

  test('refuses a provider token with the wrong key id or team id', async () => {
    for (const bad of [token({ kid: 'WRONGKEY00' }), token({}, { iss: 'WRONGTEAM0' })]) {
      const res = await session.post(`/3/device/${DEVICE}`, { authorization: `bearer ${bad}`, 'apns-topic': `${BUNDLE}.voip`, 'apns-push-type': 'voip' }, {});
      assert.equal(res.status, 403);
      assert.equal(res.body.reason, 'InvalidProviderToken');
    }
  });

  test('refuses a provider token issued more than an hour ago, or in the future', async () => {
    const stale = await session.post(`/3/device/${DEVICE}`, { authorization: `bearer ${token({}, { iat: now() - 3700 })}`, 'apns-topic': `${BUNDLE}.voip`, 'apns-push-type': 'voip' }, {});
    assert.equal(stale.status, 403);
    assert.equal(stale.body.reason, 'ExpiredProviderToken');
    const future = await session.post(`/3/device/${DEVICE}`, { authorization: `bearer ${token({}, { iat: now() + 600 })}`, 'apns-topic': `${BUNDLE}.voip`, 'apns-push-type': 'voip' }, {});
    assert.equal(future.status, 403);
    assert.equal(future.body.reason, 'InvalidProviderToken');
  });

  test('refuses a request without a provider token', async () => {
    const res = await session.post(`/3/device/${DEVICE}`, { 'apns-topic': `${BUNDLE}.voip`, 'apns-push-type': 'voip' }, {});
    assert.equal(res.status, 403);
    assert.equal(res.body.reason, 'MissingProviderToken');
  });

  test('refuses a VoIP push to the app topic, an alert to the VoIP topic and an unknown bundle', async () => {
    assert.equal((await voip({ 'apns-topic': BUNDLE })).body.reason, 'BadTopic');
    assert.equal((await voip({ 'apns-push-type': 'alert' })).body.reason, 'BadTopic');
    assert.equal((await voip({ 'apns-topic': 'com.other.app.voip' })).body.reason, 'TopicDisallowed');
    assert.equal((await voip({ 'apns-push-type': 'ringing' })).body.reason, 'InvalidPushType');
  });

  test('refuses a VoIP payload over 5 KB and an alert payload over 4 KB', async () => {
    const sized = (bytes) => JSON.stringify({ pad: 'x'.repeat(bytes - '{"pad":""}'.length) });
    assert.equal((await voip({}, sized(5120))).status, 200, 'exactly 5120 bytes is allowed for VoIP');
    const big = await voip({}, sized(5121));
    assert.equal(big.status, 413);
    assert.equal(big.body.reason, 'PayloadTooLarge');
    const alert = await voip({ 'apns-topic': BUNDLE, 'apns-push-type': 'alert' }, sized(4097));
    assert.equal(alert.status, 413);
  });

  test('refuses a device token that is not hex, and bad priority, expiration, apns-id or collapse id', async () => {
    assert.equal((await voip({}, {}, 'not-a-hex-token')).body.reason, 'BadDeviceToken');
    assert.equal((await voip({ 'apns-priority': '7' })).body.reason, 'BadPriority');
    assert.equal((await voip({ 'apns-expiration': 'tomorrow' })).body.reason, 'BadExpirationDate');
    assert.equal((await voip({ 'apns-id': 'not-a-uuid' })).body.reason, 'BadMessageId');
    assert.equal((await voip({ 'apns-collapse-id': 'c'.repeat(65) })).body.reason, 'BadCollapseId');
    assert.equal((await voip({}, '')).body.reason, 'PayloadEmpty');
  });

  test('answers injected faults for one device token and for the next requests', async () => {
    doubles.apns.reset();
    const gone = 'ff'.repeat(32);
    doubles.apns.failToken(gone, APNS_FAULTS.unregistered);
    const res = await voip({}, {}, gone);
    assert.equal(res.status, 410);
    assert.equal(res.body.reason, 'Unregistered');
    assert.ok(Number.isInteger(res.body.timestamp), '410 carries the time the token became invalid');
    doubles.apns.failNext(2, APNS_FAULTS.serviceUnavailable);
    assert.equal((await voip()).status, 503);
    assert.equal((await voip()).status, 503);
    assert.equal((await voip()).status, 200);
    assert.equal(doubles.apns.requests.length, 1, 'only the accepted request counts as delivered');
  });

  test('allows one stream per connection until a valid provider token, then many on that one connection', async () => {
    const before = doubles.apns.connections;
    const raw = http2.connect(doubles.apns.url);
    raw.on('error', () => {});
    try {
      const initial = await new Promise((resolve) => raw.once('remoteSettings', resolve));
      assert.equal(initial.maxConcurrentStreams, 1, 'Apple allows one stream until a request carries a valid token');
      const post = (headers) => new Promise((resolve, reject) => {
        const stream = raw.request({ ':method': 'POST', ':path': `/3/device/${DEVICE}`, ...headers });
        stream.on('response', (h) => resolve(h[':status']));
        stream.on('error', reject);
        stream.resume();
        stream.end('{}');
      });
      const headers = () => ({ authorization: `bearer ${token()}`, 'apns-topic': `${BUNDLE}.voip`, 'apns-push-type': 'voip' });
      assert.equal(await post(headers()), 200);
      if (raw.remoteSettings.maxConcurrentStreams === 1) await new Promise((resolve) => raw.once('remoteSettings', resolve));
      assert.ok(raw.remoteSettings.maxConcurrentStreams > 1, 'a valid token opens the connection up');
      assert.deepEqual(await Promise.all([1, 2, 3].map(() => post(headers()))), [200, 200, 200]);
    } finally {
      raw.close();
    }
    assert.equal(doubles.apns.connections, before + 1, 'four requests, one connection');
  });
});

describe('the FCM double', () => {
  let doubles;
  let sa;
  const tokenUri = () => doubles.fcm.tokenUri;
  const grant = (claims = {}, header = {}, key = sa.private_key) => rs256(
    { alg: 'RS256', typ: 'JWT', kid: sa.private_key_id, ...header },
    { iss: sa.client_email, scope: 'https://www.googleapis.com/auth/firebase.messaging', aud: tokenUri(), iat: now(), exp: now() + 3600, ...claims },
    key,
  );
  const requestToken = (assertion, grantType = 'urn:ietf:params:oauth:grant-type:jwt-bearer') => fetch(tokenUri(), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: grantType, assertion }).toString(),
  });
  let accessToken;
  const send = (message, extra = {}, bearer = accessToken) => fetch(`${doubles.fcm.url}/v1/projects/${sa.project_id}/messages:send`, {
    method: 'POST',
    headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
    body: JSON.stringify({ message, ...extra }),
  });
  const ring = (overrides = {}) => ({ token: 'fcm-token-1', data: { type: 'incoming_call', callId: 'c1' }, android: { priority: 'HIGH', ttl: '30s' }, ...overrides });

  before(async () => {
    doubles = await startPushDoubles({ bundleIds: [BUNDLE] });
    sa = doubles.serviceAccount;
    const res = await requestToken(grant());
    assert.equal(res.status, 200);
    accessToken = (await res.json()).access_token;
  });
  after(async () => {
    await doubles?.close();
  });

  test('issues an access token for a grant signed with the service account key', async () => {
    const res = await requestToken(grant());
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.expires_in, 3599);
    assert.match(body.access_token, /^ya29\./);
  });

  test('refuses a grant signed by another key, for another account or audience, or too long-lived', async () => {
    const { privateKey: other } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    const cases = [
      [grant({}, {}, other), 'Invalid JWT Signature.'],
      [grant({ iss: 'someone@else.iam.gserviceaccount.com' }), 'Invalid grant: account not found'],
      [grant({ aud: 'https://oauth2.googleapis.com/token' }), /Failed audience check/],
      [grant({ exp: now() + 7200 }), /short-lived token/],
      [grant({ iat: now() - 7200, exp: now() - 3600 }), /short-lived token/],
    ];
    for (const [assertion, description] of cases) {
      const res = await requestToken(assertion);
      assert.equal(res.status, 400);
      const body = await res.json();
      assert.equal(body.error, 'invalid_grant');
      if (description instanceof RegExp) assert.match(body.error_description, description);
      else assert.equal(body.error_description, description);
    }
    const wrongGrant = await requestToken(grant(), 'client_credentials');
    assert.equal((await wrongGrant.json()).error, 'unsupported_grant_type');
    const noScope = await requestToken(grant({ scope: '' }));
    assert.equal((await noScope.json()).error, 'invalid_scope');
  });

  test('accepts a data message with string values and records it', async () => {
    doubles.fcm.reset();
    const res = await send(ring());
    assert.equal(res.status, 200);
    assert.match((await res.json()).name, new RegExp(`^projects/${sa.project_id}/messages/`));
    assert.deepEqual(doubles.fcm.requests[0].message.data, { type: 'incoming_call', callId: 'c1' });
  });

  test('refuses a send without a valid access token, and one whose token expired', async () => {
    const res = await send(ring(), {}, 'ya29.made-up');
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.status, 'UNAUTHENTICATED');
    const fresh = (await (await requestToken(grant())).json()).access_token;
    doubles.fcm.expireAccessTokens();
    assert.equal((await send(ring(), {}, fresh)).status, 401);
    accessToken = (await (await requestToken(grant())).json()).access_token;
  });

  test('refuses a data value that is not a string with Google\'s BadRequest body', async () => {
    const res = await send(ring({ data: { type: 'incoming_call', isGroupCall: false } }));
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.status, 'INVALID_ARGUMENT');
    assert.equal(error.details[0]['@type'], 'type.googleapis.com/google.rpc.BadRequest');
    assert.equal(error.details[0].fieldViolations[0].field, 'message.data[1].value');
  });

  test('refuses a bad ttl, an unknown priority, an unknown field, two targets and no target', async () => {
    for (const [message, pattern] of [
      [ring({ android: { priority: 'HIGH', ttl: '30' } }), /message\.android\.ttl/],
      [ring({ android: { priority: 'HIGH', ttl: '1.5m' } }), /message\.android\.ttl/],
      [ring({ android: { priority: 'URGENT', ttl: '30s' } }), /message\.android\.priority/],
      [ring({ android: { priority: 'HIGH', ttl: '30s', ringtone: 'loud' } }), /Unknown name "ringtone" at 'message\.android'/],
      [ring({ topic: 'news' }), /oneof field 'target'/],
      [ring({ token: undefined }), /Recipient of the message is not set/],
      [ring({ data: { from: 'me' } }), /Invalid data payload key/],
    ]) {
      const res = await send(message);
      assert.equal(res.status, 400, JSON.stringify(message));
      assert.match((await res.json()).error.message, pattern);
    }
    assert.equal((await send(ring({ android: { priority: 'NORMAL', ttl: '2.000000001s' } }))).status, 200, 'fractional seconds are a valid duration');
    assert.equal((await send(ring(), { validateOnly: false })).status, 200, 'camelCase names are accepted as Google\'s parser does');
  });

  test('refuses a registration token that cannot be one with FCM\'s INVALID_ARGUMENT', async () => {
    const res = await send(ring({ token: 'not a token' }));
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.deepEqual(error.details, [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: 'INVALID_ARGUMENT' }]);
  });

  test('answers injected faults with FcmError details and Retry-After', async () => {
    doubles.fcm.failToken('gone-token', FCM_FAULTS.unregistered);
    const gone = await send(ring({ token: 'gone-token' }));
    assert.equal(gone.status, 404);
    assert.equal((await gone.json()).error.details[0].errorCode, 'UNREGISTERED');
    doubles.fcm.failNext(1, FCM_FAULTS.unavailable(7));
    const busy = await send(ring());
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get('retry-after'), '7');
    doubles.fcm.failNext(1, FCM_FAULTS.quotaExceeded(3));
    const quota = await send(ring());
    assert.equal(quota.status, 429);
    assert.equal((await quota.json()).error.details[0].errorCode, 'QUOTA_EXCEEDED');
    assert.equal((await send(ring())).status, 200);
  });
});
