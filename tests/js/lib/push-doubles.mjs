// Test doubles for Apple Push Notification service and Firebase Cloud Messaging, written from their
// public documentation (Apple: "Sending notification requests to APNs", "Establishing a token-based
// connection to APNs", "Handling notification responses from APNs"; Google: "Using OAuth 2.0 for
// Server to Server Applications", FCM HTTP v1 `projects.messages.send`, `ErrorCode`, "FCM error
// codes"). They refuse what the real services refuse, answer with the real error bodies, verify
// signatures with node's own crypto (an implementation independent of the Rust clients'), record
// every request and take injected faults.
//
// In-process use (the JS suites):
//   const doubles = await startPushDoubles({ bundleIds: ['com.example.app'] });
//   // doubles.env: APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID, APNS_BUNDLE_ID, APNS_ENVIRONMENT,
//   //              APNS_URL, FCM_SERVICE_ACCOUNT_FILE, FCM_URL — hand them to the notifier.
//   doubles.apns.failToken(token, APNS_FAULTS.unregistered);
//   await doubles.apns.waitForRequests(1);   doubles.apns.requests  -> [{ deviceToken, headers, payload, ... }]
//   await doubles.close();
//
// As a child process (the Rust tests): `node push-doubles.mjs --serve [--bundle-id ID]...` prints
// one JSON line on stdout — the ports, the credential files and the control URL — and runs until
// its stdin closes or it gets SIGTERM. The control endpoint (HTTP/1.1, JSON) mirrors the JS API:
//   GET  /apns/requests?min=N&timeoutMs=T   accepted requests (long-polls until there are N)
//   GET  /apns/log                          every request with the status it got
//   GET  /apns/stats                        { connections, accepted, refused }
//   POST /apns/faults  { token?, next?, times?, status?, reason?, delayMs?, retryAfter? }
//   POST /apns/reset                        forget requests and faults
//   GET  /fcm/requests?min=N&timeoutMs=T, GET /fcm/log, GET /fcm/stats, POST /fcm/faults
//        { token?, next?, times?, errorCode?, delayMs?, retryAfter? }, POST /fcm/expire-access-tokens,
//   POST /fcm/reset

import { randomBytes, randomUUID, createPublicKey, generateKeyPairSync, verify as verifySignature } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// --- credentials -------------------------------------------------------------------------------

/** A fresh APNs signing key (EC P-256, PKCS#8 PEM, the format of Apple's `.p8` files), written to `dir`. */
export function generateApnsKey({ dir = tempDir(), keyId = randomId(10), teamId = randomId(10) } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', {
    namedCurve: 'prime256v1',
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const keyFile = path.join(dir, `AuthKey_${keyId}.p8`);
  writeFileSync(keyFile, privateKey, { mode: 0o600 });
  return { keyId, teamId, privateKeyPem: privateKey, publicKeyPem: publicKey, keyFile };
}

/**
 * A fresh Google service-account key file (RSA 2048, the fields of the JSON the Cloud console
 * downloads), written to `dir`. `tokenUri` defaults to Google's; point it at an FCM double.
 */
export function generateServiceAccount({ dir = tempDir(), projectId = `calls-test-${randomId(6).toLowerCase()}`, tokenUri = 'https://oauth2.googleapis.com/token' } = {}) {
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const clientEmail = `firebase-adminsdk-${randomId(5).toLowerCase()}@${projectId}.iam.gserviceaccount.com`;
  const serviceAccount = {
    type: 'service_account',
    project_id: projectId,
    private_key_id: randomBytes(20).toString('hex'),
    private_key: privateKey,
    client_email: clientEmail,
    client_id: String(100000000000000000000n + BigInt(`0x${randomBytes(6).toString('hex')}`)),
    auth_uri: 'https://accounts.google.com/o/oauth2/auth',
    token_uri: tokenUri,
    auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
    client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(clientEmail)}`,
    universe_domain: 'googleapis.com',
  };
  const file = path.join(dir, 'service-account.json');
  writeServiceAccount(file, serviceAccount);
  return { serviceAccount, file };
}

/** (Re)writes a service-account file, e.g. after pointing its `token_uri` at a double. */
export function writeServiceAccount(file, serviceAccount) {
  writeFileSync(file, `${JSON.stringify(serviceAccount, null, 2)}\n`, { mode: 0o600 });
}

function tempDir() {
  return mkdtempSync(path.join(os.tmpdir(), 'calls-push-'));
}

function randomId(length) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  return Array.from(randomBytes(length), (b) => alphabet[b % alphabet.length]).join('');
}

// --- shared pieces -----------------------------------------------------------------------------

function decodeJwt(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3 || parts.some((p) => p.length === 0)) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (typeof header !== 'object' || header === null || typeof claims !== 'object' || claims === null) return null;
    return { header, claims, signingInput: Buffer.from(`${parts[0]}.${parts[1]}`), signature: Buffer.from(parts[2], 'base64url') };
  } catch {
    return null;
  }
}

const nowSeconds = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Fault queues shared by both doubles: per device/registration token (every matching request, or
 * `times` of them) and for the next N requests whatever their token. A fault applies to a request
 * that passed validation: an invalid request still gets the error the real service would give.
 */
class Faults {
  constructor() {
    this.byToken = new Map();
    this.next = [];
  }

  add({ token, next, times, ...fault }) {
    if (token !== undefined) {
      this.byToken.set(token, { fault, remaining: times ?? Infinity });
    } else {
      for (let i = 0; i < (next ?? 1); i += 1) this.next.push(fault);
    }
  }

  take(token) {
    const entry = this.byToken.get(token);
    if (entry) {
      entry.remaining -= 1;
      if (entry.remaining <= 0) this.byToken.delete(token);
      return entry.fault;
    }
    return this.next.shift() ?? null;
  }

  clear() {
    this.byToken.clear();
    this.next = [];
  }
}

/** What every double exposes for inspection: accepted requests, the full log, waiting. */
class Recorder extends EventEmitter {
  constructor() {
    super();
    this.log = [];
  }

  get requests() {
    return this.log.filter((entry) => entry.status === 200);
  }

  record(entry) {
    this.log.push(entry);
    this.emit('request', entry);
  }

  /** Resolves with the accepted requests once there are at least `count`; rejects after `timeoutMs`. */
  waitForRequests(count, { timeoutMs = 10_000 } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const accepted = this.requests;
        if (accepted.length >= count) {
          clearTimeout(timer);
          this.off('request', check);
          resolve(accepted);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        this.off('request', check);
        reject(new Error(`expected ${count} accepted push requests within ${timeoutMs} ms, got ${this.requests.length}`));
      }, timeoutMs);
      if (!check()) this.on('request', check);
    });
  }

  reset() {
    this.log = [];
  }
}

function readBody(stream, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    stream.on('data', (chunk) => {
      size += chunk.length;
      // Keep counting past the limit (the size check needs it) but stop buffering absurd bodies.
      if (size <= limit * 4) chunks.push(chunk);
    });
    stream.on('end', () => resolve({ body: Buffer.concat(chunks), size }));
    stream.on('error', reject);
  });
}

// --- APNs --------------------------------------------------------------------------------------

/** Faults by name, with the statuses and reasons Apple documents. */
export const APNS_FAULTS = Object.freeze({
  unregistered: { status: 410, reason: 'Unregistered' },
  expiredToken: { status: 410, reason: 'ExpiredToken' },
  badDeviceToken: { status: 400, reason: 'BadDeviceToken' },
  deviceTokenNotForTopic: { status: 400, reason: 'DeviceTokenNotForTopic' },
  tooManyRequests: { status: 429, reason: 'TooManyRequests' },
  internalServerError: { status: 500, reason: 'InternalServerError' },
  serviceUnavailable: { status: 503, reason: 'ServiceUnavailable' },
  shutdown: { status: 503, reason: 'Shutdown' },
  expiredProviderToken: { status: 403, reason: 'ExpiredProviderToken' },
  invalidProviderToken: { status: 403, reason: 'InvalidProviderToken' },
  /** Answers (normally) only after `ms`: longer than the client's timeout, it is a timeout. */
  delay: (ms) => ({ delayMs: ms }),
});

const APNS_PUSH_TYPES = new Set(['alert', 'background', 'location', 'voip', 'complication', 'fileprovider', 'mdm', 'liveactivity', 'pushtotalk', 'widgets']);
// Apple: 5 KB for VoIP notifications, 4 KB for every other remote notification.
const APNS_VOIP_PAYLOAD_LIMIT = 5120;
const APNS_PAYLOAD_LIMIT = 4096;
// Apple refuses provider tokens older than one hour; a token from the future cannot be valid either
// (a little slack for clocks).
const APNS_TOKEN_MAX_AGE_S = 3600;
const CLOCK_SLACK_S = 60;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * An APNs provider API double: cleartext HTTP/2 (h2c, prior knowledge) on 127.0.0.1.
 *
 * `publicKeyPem`, `keyId`, `teamId`: the signing key Apple knows for the team. `bundleIds`: the
 * team's apps; a topic is a bundle id, or a bundle id + `.voip` for VoIP pushes.
 */
export async function startApnsDouble({ publicKeyPem, keyId, teamId, bundleIds, port = 0 }) {
  if (!publicKeyPem || !keyId || !teamId || !Array.isArray(bundleIds) || bundleIds.length === 0) {
    throw new Error('startApnsDouble needs publicKeyPem, keyId, teamId and at least one bundle id');
  }
  const publicKey = createPublicKey(publicKeyPem);
  const bundles = new Set(bundleIds);
  const recorder = new Recorder();
  const faults = new Faults();
  const sessions = new Set();
  let connections = 0;

  // Apple: "when using an authentication token, APNs allows only one stream until you post a
  // request with a valid authentication token". Each session starts at one concurrent stream and
  // opens up after its first valid provider token.
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1 } });
  server.on('session', (session) => {
    connections += 1;
    session.connectionNumber = connections;
    session.trusted = false;
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', () => {});
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    handle(stream, headers).catch(() => {
      if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
  });

  async function handle(stream, headers) {
    const apnsId = typeof headers['apns-id'] === 'string' && UUID_RE.test(headers['apns-id']) ? headers['apns-id'].toLowerCase() : randomUUID();
    const { body, size } = await readBody(stream, APNS_VOIP_PAYLOAD_LIMIT);
    const entry = {
      at: Date.now(),
      connection: stream.session?.connectionNumber,
      method: headers[':method'],
      path: headers[':path'],
      deviceToken: null,
      headers: pickHeaders(headers, ['apns-topic', 'apns-push-type', 'apns-priority', 'apns-expiration', 'apns-collapse-id', 'apns-id', 'content-type']),
      jwt: null,
      payload: null,
      size,
      apnsId,
      status: 0,
      reason: null,
    };
    const refuse = (status, reason, extra = {}, retryAfter = undefined) => answer(stream, entry, status, reason, extra, retryAfter);

    if (headers[':method'] !== 'POST') return refuse(405, 'MethodNotAllowed');
    const match = /^\/3\/device\/([^/?]*)$/.exec(headers[':path'] ?? '');
    if (!match) return refuse(404, 'BadPath');
    entry.deviceToken = decodeURIComponent(match[1]);

    const authorization = headers.authorization;
    if (typeof authorization !== 'string' || authorization.length === 0) return refuse(403, 'MissingProviderToken');
    const bearer = /^bearer\s+(\S+)$/i.exec(authorization);
    const jwt = bearer ? decodeJwt(bearer[1]) : null;
    if (!jwt) return refuse(403, 'InvalidProviderToken');
    entry.jwt = { header: jwt.header, claims: jwt.claims };
    if (jwt.header.alg !== 'ES256' || jwt.header.kid !== keyId || jwt.claims.iss !== teamId) return refuse(403, 'InvalidProviderToken');
    let signed = false;
    try {
      signed = verifySignature('sha256', jwt.signingInput, { key: publicKey, dsaEncoding: 'ieee-p1363' }, jwt.signature);
    } catch {
      signed = false;
    }
    if (!signed) return refuse(403, 'InvalidProviderToken');
    const iat = jwt.claims.iat;
    if (!Number.isInteger(iat) || iat > nowSeconds() + CLOCK_SLACK_S) return refuse(403, 'InvalidProviderToken');
    if (nowSeconds() - iat > APNS_TOKEN_MAX_AGE_S) return refuse(403, 'ExpiredProviderToken');
    if (stream.session && !stream.session.trusted) {
      stream.session.trusted = true;
      stream.session.settings({ maxConcurrentStreams: 1000 });
    }

    if (entry.deviceToken.length === 0) return refuse(400, 'MissingDeviceToken');
    if (!/^[0-9a-fA-F]+$/.test(entry.deviceToken) || entry.deviceToken.length % 2 !== 0) return refuse(400, 'BadDeviceToken');

    const topic = headers['apns-topic'];
    if (typeof topic !== 'string' || topic.length === 0) return refuse(400, 'MissingTopic');
    const pushTypeHeader = headers['apns-push-type'];
    if (pushTypeHeader !== undefined && !APNS_PUSH_TYPES.has(pushTypeHeader)) return refuse(400, 'InvalidPushType');
    // Without the header APNs infers the type; for these topics that means VoIP or alert.
    const pushType = pushTypeHeader ?? (topic.endsWith('.voip') ? 'voip' : 'alert');
    const voipTopic = topic.endsWith('.voip');
    const bundle = voipTopic ? topic.slice(0, -'.voip'.length) : topic;
    if (!bundles.has(bundle)) return refuse(400, 'TopicDisallowed');
    // Apple: a VoIP push's topic is the bundle id with `.voip` appended; other types use the bundle id.
    if ((pushType === 'voip') !== voipTopic) return refuse(400, 'BadTopic');

    const priority = headers['apns-priority'];
    if (priority !== undefined && !['10', '5', '1'].includes(priority)) return refuse(400, 'BadPriority');
    const expiration = headers['apns-expiration'];
    if (expiration !== undefined && !/^\d{1,12}$/.test(expiration)) return refuse(400, 'BadExpirationDate');
    if (headers['apns-id'] !== undefined && !UUID_RE.test(headers['apns-id'])) return refuse(400, 'BadMessageId');
    const collapseId = headers['apns-collapse-id'];
    if (collapseId !== undefined && Buffer.byteLength(collapseId) > 64) return refuse(400, 'BadCollapseId');

    if (size === 0) return refuse(400, 'PayloadEmpty');
    if (size > (pushType === 'voip' ? APNS_VOIP_PAYLOAD_LIMIT : APNS_PAYLOAD_LIMIT)) return refuse(413, 'PayloadTooLarge');
    try {
      entry.payload = JSON.parse(body.toString('utf8'));
    } catch {
      entry.payload = null;
    }
    // Apple documents no reason for a body that is not a JSON dictionary; it never reaches a
    // device, and a double that accepted it would hide a broken client.
    if (typeof entry.payload !== 'object' || entry.payload === null || Array.isArray(entry.payload)) return refuse(400, 'BadPayload');

    const fault = faults.take(entry.deviceToken);
    if (fault?.delayMs) {
      await sleep(fault.delayMs);
      if (stream.destroyed || stream.closed) {
        entry.status = -1;
        entry.reason = 'AbandonedByClient';
        recorder.record(entry);
        return undefined;
      }
    }
    if (fault?.status) {
      const extra = {};
      if (fault.status === 410) extra.timestamp = fault.timestamp ?? Date.now();
      return refuse(fault.status, fault.reason ?? 'InternalServerError', extra, fault.retryAfter);
    }
    return answer(stream, entry, 200, null);
  }

  function answer(stream, entry, status, reason, extra = {}, retryAfter = undefined) {
    entry.status = status;
    entry.reason = reason;
    recorder.record(entry);
    if (stream.destroyed || stream.closed) return;
    const responseHeaders = { ':status': status, 'apns-id': entry.apnsId };
    if (retryAfter !== undefined) responseHeaders['retry-after'] = String(retryAfter);
    if (status === 200) {
      stream.respond(responseHeaders, { endStream: true });
      return;
    }
    responseHeaders['content-type'] = 'application/json';
    stream.respond(responseHeaders);
    stream.end(JSON.stringify({ reason, ...extra }));
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const address = server.address();
  return {
    url: `http://127.0.0.1:${address.port}`,
    port: address.port,
    get connections() { return connections; },
    /** Accepted (200) requests, oldest first. */
    get requests() { return recorder.requests; },
    /** Every request with the `status`/`reason` it got (-1: the client gave up while it waited). */
    get log() { return recorder.log; },
    waitForRequests: (count, options) => recorder.waitForRequests(count, options),
    on: (event, listener) => recorder.on(event, listener),
    /** Answers `fault` to requests for `token` (every one, or `times` of them). */
    failToken: (token, fault, { times } = {}) => faults.add({ token, times, ...fault }),
    /** Answers `fault` to the next `count` requests, whatever their device token. */
    failNext: (count, fault) => faults.add({ next: count, ...fault }),
    addFault: (spec) => faults.add(spec),
    clearFaults: () => faults.clear(),
    stats: () => ({ connections, accepted: recorder.requests.length, refused: recorder.log.length - recorder.requests.length }),
    reset: () => { recorder.reset(); faults.clear(); },
    /** Drops every open connection (as Apple does with GOAWAY), keeping the listener. */
    dropConnections: () => { for (const session of sessions) session.destroy(); },
    close: () => new Promise((resolve) => {
      for (const session of sessions) session.destroy();
      server.close(() => resolve());
    }),
  };
}

function pickHeaders(headers, names) {
  const picked = {};
  for (const name of names) {
    if (headers[name] !== undefined) picked[name] = headers[name];
  }
  return picked;
}

// --- FCM ---------------------------------------------------------------------------------------

/** FCM `ErrorCode`s with the HTTP status and google.rpc status Google answers them with. */
const FCM_ERRORS = Object.freeze({
  UNREGISTERED: { code: 404, status: 'NOT_FOUND', message: 'Requested entity was not found.' },
  INVALID_ARGUMENT: { code: 400, status: 'INVALID_ARGUMENT', message: 'The registration token is not a valid FCM registration token' },
  SENDER_ID_MISMATCH: { code: 403, status: 'PERMISSION_DENIED', message: 'SenderId mismatch' },
  QUOTA_EXCEEDED: { code: 429, status: 'RESOURCE_EXHAUSTED', message: 'Quota exceeded for quota metric \'Send requests\'.' },
  UNAVAILABLE: { code: 503, status: 'UNAVAILABLE', message: 'The service is currently unavailable.' },
  INTERNAL: { code: 500, status: 'INTERNAL', message: 'Internal error encountered.' },
  THIRD_PARTY_AUTH_ERROR: { code: 401, status: 'UNAUTHENTICATED', message: 'Auth error from APNS or Web Push Service' },
});

/** Faults by name (`errorCode` is one of FCM's `ErrorCode`s, or UNAUTHENTICATED for a bad access token). */
export const FCM_FAULTS = Object.freeze({
  unregistered: { errorCode: 'UNREGISTERED' },
  invalidToken: { errorCode: 'INVALID_ARGUMENT' },
  senderIdMismatch: { errorCode: 'SENDER_ID_MISMATCH' },
  quotaExceeded: (retryAfter = 1) => ({ errorCode: 'QUOTA_EXCEEDED', retryAfter }),
  unavailable: (retryAfter = 1) => ({ errorCode: 'UNAVAILABLE', retryAfter }),
  internal: { errorCode: 'INTERNAL' },
  thirdPartyAuthError: { errorCode: 'THIRD_PARTY_AUTH_ERROR' },
  unauthenticated: { errorCode: 'UNAUTHENTICATED' },
  delay: (ms) => ({ delayMs: ms }),
});

const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TTL_RE = /^\d+(\.\d{1,9})?s$/;
const MAX_TTL_S = 4 * 7 * 24 * 3600;
const FCM_DATA_LIMIT = 4096;
const REGISTRATION_TOKEN_RE = /^[A-Za-z0-9_:.-]+$/;

// The v1 `Message` schema, as field name -> kind. Google's JSON parser takes the proto field name
// or its lowerCamelCase form and refuses any other name.
const SCHEMA = {
  request: { validate_only: 'bool', message: 'message' },
  message: { name: 'string', data: 'stringmap', notification: 'notification', android: 'android', webpush: 'object', apns: 'object', fcm_options: 'fcmOptions', token: 'string', topic: 'string', condition: 'string' },
  notification: { title: 'string', body: 'string', image: 'string' },
  fcmOptions: { analytics_label: 'string' },
  android: { collapse_key: 'string', priority: 'priority', ttl: 'ttl', restricted_package_name: 'string', data: 'stringmap', notification: 'androidNotification', fcm_options: 'fcmOptions', direct_boot_ok: 'bool', bandwidth_constrained_ok: 'bool', restricted_satellite_ok: 'bool' },
  androidNotification: Object.fromEntries([
    'title', 'body', 'icon', 'color', 'sound', 'tag', 'click_action', 'body_loc_key', 'title_loc_key', 'channel_id', 'ticker', 'event_time', 'notification_priority', 'visibility', 'image',
    'proxy',
  ].map((k) => [k, 'string']).concat([
    ['body_loc_args', 'any'], ['title_loc_args', 'any'], ['sticky', 'bool'], ['local_only', 'bool'], ['default_sound', 'bool'], ['default_vibrate_timings', 'bool'], ['default_light_settings', 'bool'],
    ['vibrate_timings', 'any'], ['notification_count', 'any'], ['light_settings', 'any'], ['bypass_proxy_notification', 'bool'],
  ])),
};

class InvalidArgument extends Error {
  constructor(field, description) {
    super(description);
    this.field = field;
  }
}

const snake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function checkObject(value, kind, at) {
  const fields = SCHEMA[kind];
  const where = at ? ` at '${at}'` : '';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgument(at, `Invalid JSON payload received. Expected an object${where}.`);
  }
  const normalized = {};
  for (const [key, fieldValue] of Object.entries(value)) {
    const name = snake(key);
    if (!(name in fields)) {
      throw new InvalidArgument(at, `Invalid JSON payload received. Unknown name "${key}"${where}: Cannot find field.`);
    }
    normalized[name] = checkField(fieldValue, fields[name], at ? `${at}.${name}` : name);
  }
  return normalized;
}

function checkField(value, kind, at) {
  switch (kind) {
    case 'string':
      if (typeof value !== 'string') throw new InvalidArgument(at, `Invalid value at '${at}' (TYPE_STRING), ${JSON.stringify(value)}`);
      return value;
    case 'bool':
      if (typeof value !== 'boolean') throw new InvalidArgument(at, `Invalid value at '${at}' (TYPE_BOOL), ${JSON.stringify(value)}`);
      return value;
    case 'stringmap': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new InvalidArgument(at, `Invalid value at '${at}' (type.googleapis.com/google.protobuf.Map), ${JSON.stringify(value)}`);
      }
      Object.values(value).forEach((entry, index) => {
        if (typeof entry !== 'string') {
          throw new InvalidArgument(`${at}[${index}].value`, `Invalid value at '${at}[${index}].value' (TYPE_STRING), ${JSON.stringify(entry)}`);
        }
      });
      return value;
    }
    case 'priority':
      if (value !== 'HIGH' && value !== 'NORMAL') {
        throw new InvalidArgument(at, `Invalid value at '${at}' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), ${JSON.stringify(value)}`);
      }
      return value;
    case 'ttl':
      if (typeof value !== 'string' || !TTL_RE.test(value)) {
        throw new InvalidArgument(at, `Invalid value at '${at}' (type.googleapis.com/google.protobuf.Duration), ${JSON.stringify(value)}`);
      }
      if (Number.parseFloat(value) > MAX_TTL_S) throw new InvalidArgument(at, 'TTL must be at most 4 weeks.');
      return value;
    case 'object':
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new InvalidArgument(at, `Invalid JSON payload received. Expected an object at '${at}'.`);
      }
      return value;
    case 'any':
      return value;
    default:
      return checkObject(value, kind, at);
  }
}

/** Validates a `messages:send` request body the way Google's API does; returns the normalized message. */
function checkSendRequest(request) {
  const normalized = checkObject(request, 'request', '');
  const message = normalized.message;
  if (!message) throw new InvalidArgument('message', 'Recipient of the message is not set.');
  const targets = ['token', 'topic', 'condition'].filter((t) => message[t] !== undefined);
  if (targets.length === 0) throw new InvalidArgument('message', 'Recipient of the message is not set.');
  if (targets.length > 1) {
    throw new InvalidArgument('message', `Invalid value at 'message' (oneof), oneof field 'target' is already set. Cannot set '${targets[1]}'`);
  }
  for (const data of [message.data, message.android?.data]) {
    if (!data) continue;
    for (const key of Object.keys(data)) {
      const lower = key.toLowerCase();
      if (lower === 'from' || lower === 'message_type' || lower.startsWith('google') || lower.startsWith('gcm')) {
        throw new InvalidArgument('message.data', `Invalid data payload key: ${key}`);
      }
    }
    const size = Object.entries(data).reduce((sum, [k, v]) => sum + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
    if (size > FCM_DATA_LIMIT) throw new InvalidArgument('message', 'Android message is too big');
  }
  return normalized;
}

function googleError(code, status, message, details = []) {
  return { error: { code, message, status, ...(details.length ? { details } : {}) } };
}

function fcmError(errorCode) {
  const known = FCM_ERRORS[errorCode];
  if (!known) throw new Error(`unknown FCM error code ${errorCode}`);
  return {
    httpStatus: known.code,
    body: googleError(known.code, known.status, known.message, [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }]),
  };
}

function badRequest(err) {
  return {
    httpStatus: 400,
    body: googleError(400, 'INVALID_ARGUMENT', err.message, [{
      '@type': 'type.googleapis.com/google.rpc.BadRequest',
      fieldViolations: [{ field: err.field, description: err.message }],
    }]),
  };
}

const UNAUTHENTICATED = {
  httpStatus: 401,
  body: googleError(401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.'),
};

/**
 * An FCM HTTP v1 double on 127.0.0.1 (HTTP/1.1): Google's OAuth2 token endpoint at `/token` and
 * `POST /v1/projects/{project}/messages:send`.
 *
 * `serviceAccount`: the parsed service-account JSON whose key the token endpoint trusts.
 * `accessTokenTtlSeconds`: `expires_in` of the access tokens it issues (Google: 3599).
 */
export async function startFcmDouble({ serviceAccount, accessTokenTtlSeconds = 3599, port = 0 }) {
  if (!serviceAccount?.private_key || !serviceAccount.client_email || !serviceAccount.project_id) {
    throw new Error('startFcmDouble needs a service account with private_key, client_email and project_id');
  }
  const publicKey = createPublicKey(serviceAccount.private_key);
  const recorder = new Recorder();
  const tokenRecorder = new Recorder();
  const faults = new Faults();
  const accessTokens = new Map();
  let baseUrl = '';

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) sendJson(res, 500, googleError(500, 'INTERNAL', `double failure: ${err.message}`));
    });
  });
  server.keepAliveTimeout = 30_000;

  async function handle(req, res) {
    const { body } = await readBody(req, 64 * 1024);
    const url = new URL(req.url, baseUrl);
    if (url.pathname === '/token') return tokenEndpoint(req, res, body);
    const send = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(url.pathname);
    if (send) return sendEndpoint(req, res, body, decodeURIComponent(send[1]));
    return sendJson(res, 404, googleError(404, 'NOT_FOUND', `The requested URL ${url.pathname} was not found on this server.`));
  }

  function tokenEndpoint(req, res, body) {
    const entry = { at: Date.now(), status: 0, error: null, header: null, claims: null };
    const oauthError = (status, error, description) => {
      entry.status = status;
      entry.error = error;
      tokenRecorder.record(entry);
      sendJson(res, status, { error, error_description: description });
    };
    if (req.method !== 'POST') return oauthError(405, 'invalid_request', 'Only POST is supported.');
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      return oauthError(400, 'invalid_request', 'Request must be application/x-www-form-urlencoded.');
    }
    const form = new URLSearchParams(body.toString('utf8'));
    const grantType = form.get('grant_type');
    if (grantType !== JWT_BEARER_GRANT) return oauthError(400, 'unsupported_grant_type', `Invalid grant_type: ${grantType ?? ''}`);
    const jwt = decodeJwt(form.get('assertion'));
    if (!jwt) return oauthError(400, 'invalid_grant', 'Invalid JWT: could not be parsed.');
    entry.header = jwt.header;
    entry.claims = jwt.claims;
    let signed = false;
    try {
      signed = jwt.header.alg === 'RS256' && verifySignature('sha256', jwt.signingInput, publicKey, jwt.signature);
    } catch {
      signed = false;
    }
    if (!signed || (jwt.header.kid !== undefined && jwt.header.kid !== serviceAccount.private_key_id)) {
      return oauthError(400, 'invalid_grant', 'Invalid JWT Signature.');
    }
    const { iss, aud, scope, iat, exp } = jwt.claims;
    if (iss !== serviceAccount.client_email) return oauthError(400, 'invalid_grant', 'Invalid grant: account not found');
    if (aud !== `${baseUrl}/token`) return oauthError(400, 'invalid_grant', `Invalid JWT: Failed audience check. The expected audience is ${baseUrl}/token.`);
    const now = nowSeconds();
    if (!Number.isInteger(iat) || !Number.isInteger(exp) || exp - iat > 3600 || exp <= iat || exp < now || iat > now + CLOCK_SLACK_S) {
      return oauthError(400, 'invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
    }
    if (typeof scope !== 'string' || scope.trim().length === 0) {
      return oauthError(400, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
    }
    const accessToken = `ya29.double-${randomBytes(24).toString('base64url')}`;
    accessTokens.set(accessToken, { expiresAt: Date.now() + accessTokenTtlSeconds * 1000, scopes: scope.split(/\s+/) });
    entry.status = 200;
    tokenRecorder.record(entry);
    return sendJson(res, 200, { access_token: accessToken, expires_in: accessTokenTtlSeconds, token_type: 'Bearer' });
  }

  async function sendEndpoint(req, res, body, project) {
    const entry = { at: Date.now(), project, token: null, message: null, accessToken: null, status: 0, errorCode: null, validateOnly: false };
    const fail = ({ httpStatus, body: errorBody }, headers = {}) => {
      entry.status = httpStatus;
      entry.errorCode = errorBody.error.details?.find((d) => d.errorCode)?.errorCode ?? errorBody.error.status;
      recorder.record(entry);
      sendJson(res, httpStatus, errorBody, headers);
    };
    if (req.method !== 'POST') return fail({ httpStatus: 405, body: googleError(405, 'METHOD_NOT_ALLOWED', 'Method not allowed.') });
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    const grant = bearer ? accessTokens.get(bearer[1]) : undefined;
    if (!grant || grant.expiresAt <= Date.now()) return fail(UNAUTHENTICATED);
    entry.accessToken = bearer[1];
    if (!grant.scopes.includes(FCM_SCOPE) && !grant.scopes.includes(CLOUD_PLATFORM_SCOPE)) {
      return fail({
        httpStatus: 403,
        body: googleError(403, 'PERMISSION_DENIED', 'Request had insufficient authentication scopes.', [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'ACCESS_TOKEN_SCOPE_INSUFFICIENT', domain: 'googleapis.com' }]),
      });
    }
    if (project !== serviceAccount.project_id) {
      return fail({ httpStatus: 403, body: googleError(403, 'PERMISSION_DENIED', `Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/${project}' (or it may not exist).`) });
    }
    let request;
    try {
      request = JSON.parse(body.toString('utf8'));
    } catch (err) {
      return fail(badRequest(new InvalidArgument('', `Invalid JSON payload received. ${err.message}`)));
    }
    let normalized;
    try {
      normalized = checkSendRequest(request);
    } catch (err) {
      if (err instanceof InvalidArgument) return fail(badRequest(err));
      throw err;
    }
    entry.message = normalized.message;
    entry.token = normalized.message.token ?? null;
    entry.validateOnly = normalized.validate_only === true;
    if (entry.token !== null && !REGISTRATION_TOKEN_RE.test(entry.token)) return fail(fcmError('INVALID_ARGUMENT'));

    const fault = faults.take(entry.token);
    if (fault?.delayMs) {
      await sleep(fault.delayMs);
      if (res.destroyed || req.socket.destroyed) {
        entry.status = -1;
        entry.errorCode = 'AbandonedByClient';
        recorder.record(entry);
        return undefined;
      }
    }
    if (fault?.errorCode === 'UNAUTHENTICATED') return fail(UNAUTHENTICATED);
    if (fault?.errorCode) {
      return fail(fcmError(fault.errorCode), fault.retryAfter !== undefined ? { 'retry-after': String(fault.retryAfter) } : {});
    }
    entry.status = 200;
    recorder.record(entry);
    const id = entry.validateOnly ? 'fake_message_id' : `0:${Date.now()}%${randomBytes(8).toString('hex')}`;
    return sendJson(res, 200, { name: `projects/${project}/messages/${id}` });
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const address = server.address();
  baseUrl = `http://127.0.0.1:${address.port}`;
  return {
    url: baseUrl,
    port: address.port,
    tokenUri: `${baseUrl}/token`,
    /** Accepted `messages:send` requests, oldest first: { token, message, accessToken, ... }. */
    get requests() { return recorder.requests; },
    get log() { return recorder.log; },
    /** Every call of the token endpoint: { status, error, header, claims }. */
    get tokenRequests() { return tokenRecorder.log; },
    waitForRequests: (count, options) => recorder.waitForRequests(count, options),
    on: (event, listener) => recorder.on(event, listener),
    failToken: (token, fault, { times } = {}) => faults.add({ token, times, ...fault }),
    failNext: (count, fault) => faults.add({ next: count, ...fault }),
    addFault: (spec) => faults.add(spec),
    clearFaults: () => faults.clear(),
    /** Every access token issued so far stops working (FCM answers 401 UNAUTHENTICATED). */
    expireAccessTokens: () => { for (const grant of accessTokens.values()) grant.expiresAt = 0; },
    stats: () => ({ accepted: recorder.requests.length, refused: recorder.log.length - recorder.requests.length, tokensIssued: tokenRecorder.requests.length, tokenRequests: tokenRecorder.log.length }),
    reset: () => { recorder.reset(); tokenRecorder.reset(); faults.clear(); },
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

// --- both at once ------------------------------------------------------------------------------

/**
 * Generates credentials in a temp dir, starts both doubles and returns them with `env`, the
 * notifier's configuration (CONTRACT section 8) pointing at them. `close()` stops both and removes
 * the directory.
 */
export async function startPushDoubles({ bundleIds = ['com.example.calls'], accessTokenTtlSeconds } = {}) {
  const dir = tempDir();
  const apnsKey = generateApnsKey({ dir });
  const { serviceAccount, file: serviceAccountFile } = generateServiceAccount({ dir });
  const apns = await startApnsDouble({ publicKeyPem: apnsKey.publicKeyPem, keyId: apnsKey.keyId, teamId: apnsKey.teamId, bundleIds });
  const fcm = await startFcmDouble({ serviceAccount, accessTokenTtlSeconds });
  serviceAccount.token_uri = fcm.tokenUri;
  writeServiceAccount(serviceAccountFile, serviceAccount);
  return {
    dir,
    apns,
    fcm,
    apnsKey,
    serviceAccount,
    serviceAccountFile,
    env: {
      APNS_KEY_FILE: apnsKey.keyFile,
      APNS_KEY_ID: apnsKey.keyId,
      APNS_TEAM_ID: apnsKey.teamId,
      APNS_BUNDLE_ID: bundleIds[0],
      APNS_ENVIRONMENT: 'sandbox',
      APNS_URL: apns.url,
      FCM_SERVICE_ACCOUNT_FILE: serviceAccountFile,
      FCM_URL: fcm.url,
    },
    async close() {
      await Promise.all([apns.close(), fcm.close()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// --- child-process mode --------------------------------------------------------------------------

async function serve(argv) {
  const bundleIds = [];
  let accessTokenTtlSeconds;
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--bundle-id') bundleIds.push(argv[++i]);
    else if (argv[i] === '--access-token-ttl') accessTokenTtlSeconds = Number(argv[++i]);
  }
  const doubles = await startPushDoubles({ bundleIds: bundleIds.length ? bundleIds : undefined, accessTokenTtlSeconds });
  const control = http.createServer((req, res) => {
    controlRequest(doubles, req, res).catch((err) => sendJson(res, 500, { error: err.message }));
  });
  await new Promise((resolve) => control.listen(0, '127.0.0.1', resolve));
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    control.close();
    await doubles.close();
    process.exit(0);
  };
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.stdout.write(`${JSON.stringify({
    control: `http://127.0.0.1:${control.address().port}`,
    apns: { url: doubles.apns.url, keyFile: doubles.apnsKey.keyFile, keyId: doubles.apnsKey.keyId, teamId: doubles.apnsKey.teamId, bundleIds: bundleIds.length ? bundleIds : ['com.example.calls'] },
    fcm: { url: doubles.fcm.url, tokenUri: doubles.fcm.tokenUri, serviceAccountFile: doubles.serviceAccountFile, projectId: doubles.serviceAccount.project_id },
    env: doubles.env,
  })}\n`);
}

async function controlRequest(doubles, req, res) {
  const url = new URL(req.url, 'http://control');
  const [, provider, action] = url.pathname.split('/');
  const double = provider === 'apns' ? doubles.apns : provider === 'fcm' ? doubles.fcm : null;
  if (!double) return sendJson(res, 404, { error: 'unknown double' });
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
  if (req.method === 'GET' && action === 'requests') {
    const min = Number(url.searchParams.get('min') ?? 0);
    const timeoutMs = Number(url.searchParams.get('timeoutMs') ?? 10_000);
    if (min > 0) {
      try {
        await double.waitForRequests(min, { timeoutMs });
      } catch {
        // Answer what there is; the caller asserts.
      }
    }
    return sendJson(res, 200, double.requests);
  }
  if (req.method === 'GET' && action === 'log') return sendJson(res, 200, double.log);
  if (req.method === 'GET' && action === 'stats') return sendJson(res, 200, double.stats());
  if (req.method === 'GET' && action === 'token-requests' && provider === 'fcm') return sendJson(res, 200, double.tokenRequests);
  if (req.method === 'POST' && action === 'faults') {
    double.addFault(body);
    return sendJson(res, 200, {});
  }
  if (req.method === 'DELETE' && action === 'faults') {
    double.clearFaults();
    return sendJson(res, 200, {});
  }
  if (req.method === 'POST' && action === 'reset') {
    double.reset();
    return sendJson(res, 200, {});
  }
  if (req.method === 'POST' && action === 'expire-access-tokens' && provider === 'fcm') {
    double.expireAccessTokens();
    return sendJson(res, 200, {});
  }
  if (req.method === 'POST' && action === 'drop-connections' && provider === 'apns') {
    double.dropConnections();
    return sendJson(res, 200, {});
  }
  return sendJson(res, 404, { error: `unknown control action ${req.method} /${provider}/${action}` });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url) && process.argv.includes('--serve')) {
  serve(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`push doubles failed to start: ${err.stack ?? err}\n`);
    process.exit(1);
  });
}
