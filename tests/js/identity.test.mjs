// Identity providers and the edge, in both topologies, driven from outside like the apps:
// - `make cluster` verifying tokens with an identity provider's JWKS (JWT_JWKS_URL, JWT_ISSUER,
//   JWT_AUDIENCE, JWT_USER_CLAIM) served by a provider double on a local port, with no
//   JWT_SECRET at all; `make run` verifying them with a PEM public key (JWT_PUBLIC_KEY_FILE);
// - what a browser needs (CORS as `make run` configures it: preflights answered before the
//   token check, polling handshakes readable), 431 envelopes for oversized heads, `/metrics`
//   only on the admin listener, and what a refused socket really gets (`connect_error`).

import assert from 'node:assert/strict';
import { generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ROOT, mint, startCluster, startStandalone } from './lib/cluster.mjs';

const require = createRequire(import.meta.url);
const { io } = require('socket.io-client');

const STEP_MS = 10_000;
const ISSUER = 'https://securetoken.google.com/calls-js-test';
const AUDIENCE = 'calls-js-test';
let n = 0;
const unique = (what) => `${what}-${process.pid}-${Date.now().toString(36)}-${++n}`;

/** A signing key as an identity provider holds it: private half for tokens, public JWK to publish. */
function providerKey(kind, kid) {
  const { privateKey, publicKey } = kind === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { alg: kind, kid, privateKey, publicKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: kind, use: 'sig' } };
}

/** A JWT signed like the provider would (ES256 signatures in JOSE's r||s form). */
function token(key, claims, { kid = key.kid } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: key.alg, typ: 'JWT', ...(kid ? { kid } : {}) })}.${b64({ iat: now, exp: now + 600, ...claims })}`;
  const signature = cryptoSign('sha256', Buffer.from(unsigned), key.alg === 'ES256'
    ? { key: key.privateKey, dsaEncoding: 'ieee-p1363' }
    : key.privateKey);
  return `${unsigned}.${signature.toString('base64url')}`;
}

/** The provider's JWKS endpoint (what Firebase or Auth0 serve), counting fetches. */
async function startProvider(keys) {
  const state = { keys, fetches: 0 };
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/.well-known/jwks.json') {
      res.writeHead(404).end();
      return;
    }
    state.fetches += 1;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=300' });
    res.end(JSON.stringify({ keys: state.keys.map((k) => k.jwk) }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { state, url: `http://127.0.0.1:${server.address().port}/.well-known/jwks.json`, close: () => server.close() };
}

function connect(base, tokenValue, options = {}) {
  return io(`${base}/calls`, { auth: { token: tokenValue }, transports: ['websocket'], reconnection: false, forceNew: true, ...options });
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('socket did not connect')), STEP_MS);
    socket.once('connect', () => { clearTimeout(timer); resolve(socket); });
    socket.once('connect_error', (err) => { clearTimeout(timer); reject(err); });
  });
}

function refused(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the socket was neither accepted nor refused')), STEP_MS);
    socket.once('connect', () => { clearTimeout(timer); reject(new Error('a socket with a bad token was let in')); });
    socket.once('connect_error', (err) => { clearTimeout(timer); resolve(err); });
  });
}

function nextEvent(socket, name, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${name} arrived`)), STEP_MS);
    const handler = (data) => {
      if (!pred(data)) return;
      clearTimeout(timer);
      socket.off(name, handler);
      resolve(data);
    };
    socket.on(name, handler);
  });
}

async function api(base, bearer, method, route, body, headers = {}) {
  const res = await fetch(`${base}/api/v1${route}`, {
    method,
    headers: { ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, body: json, text, headers: res.headers };
}

/**
 * The checks every deployment must pass whatever verifies its tokens: CORS for browsers,
 * oversized heads, metrics placement. `deployment()` answers {base, adminUrl}; `bearer()` a
 * valid token.
 */
function edgeChecks(deployment, bearer) {
  const origin = 'http://localhost:5173';

  test('a browser preflight is answered before the token check, and every answer is readable cross-origin', async () => {
    const { base } = deployment();
    const preflight = await fetch(`${base}/api/v1/calls/rooms/r/initiate`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,traceparent' },
    });
    assert.ok(preflight.status === 200 || preflight.status === 204, `the preflight got ${preflight.status} (a 401 here blocks every web app)`);
    assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
    const allowed = (preflight.headers.get('access-control-allow-headers') ?? '').toLowerCase();
    for (const h of ['authorization', 'content-type', 'traceparent']) assert.ok(allowed.includes(h), `${h} is not allowed: ${allowed}`);
    // The refusal a web app gets without a token is readable by it.
    const denied = await api(base, null, 'GET', '/calls', undefined, { origin });
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get('access-control-allow-origin'), '*', 'a browser could not read the 401 envelope');
    const ok = await api(base, bearer(), 'GET', '/calls', undefined, { origin });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.headers.get('access-control-allow-origin'), '*');
    assert.match(ok.headers.get('access-control-expose-headers') ?? '', /x-request-id/i);
    // socket.io-client's default transport in a browser: the long-polling handshake.
    const handshake = await fetch(`${base}/socket.io/?EIO=4&transport=polling`, { headers: { origin } });
    assert.equal(handshake.status, 200);
    assert.equal(handshake.headers.get('access-control-allow-origin'), '*', 'a browser could not read the polling handshake');
  });

  test('a browser app connects over the default transports (polling, then the upgrade) through the gateway', async () => {
    const { base } = deployment();
    const socket = io(`${base}/calls`, { auth: { token: bearer() }, reconnection: false, forceNew: true, extraHeaders: { origin } });
    try {
      await connected(socket);
      const ack = await socket.timeout(STEP_MS).emitWithAck('join_call', { callId: '0193a2b4-7c1d-7f00-8000-000000000001' });
      assert.equal(ack.error?.code, 'CALL_NOT_FOUND', JSON.stringify(ack));
    } finally {
      socket.close();
    }
  });

  test('request heads over the limits get the 431 envelope, not a bare status', async () => {
    const { base } = deployment();
    const big = await api(base, bearer(), 'GET', '/calls', undefined, { cookie: 'c'.repeat(20 * 1024) });
    assert.equal(big.status, 431, big.text);
    assert.equal(big.body?.code, 'HEADER_TOO_LARGE', `not the envelope: ${big.text}`);
    assert.equal(big.body.statusCode, 431);
    assert.ok(big.body.requestId, 'support needs a requestId');
    // 86 of the app's own plus fetch's (host, connection, accept, user-agent, ...): over the
    // gateway's 90, under hyper's 100, where the parser itself refuses without an envelope
    // (documented in docs/operations.md).
    const headers = Object.fromEntries(Array.from({ length: 86 }, (_, i) => [`x-app-${i}`, 'v']));
    const many = await api(base, bearer(), 'GET', '/calls', undefined, headers);
    assert.equal(many.status, 431, many.text);
    assert.equal(many.body?.code, 'HEADER_TOO_LARGE', `not the envelope: ${many.text}`);
  });

  test('metrics are on the admin listener only; the public port does not list internal addresses', async () => {
    const { base, adminUrl } = deployment();
    const publicMetrics = await fetch(`${base}/metrics`);
    assert.equal(publicMetrics.status, 404);
    assert.equal((await publicMetrics.json()).code, 'NOT_FOUND');
    const admin = await fetch(`${adminUrl}/metrics`);
    assert.equal(admin.status, 200);
    assert.match(await admin.text(), /gateway_upstream_healthy\{/);
    assert.equal((await fetch(`${base}/healthz`)).status, 200, 'load balancers still probe the public port');
  });
}

describe('make cluster verifying tokens with an identity provider\'s JWKS', () => {
  let provider;
  let cluster;
  const rsa = providerKey('RS256', 'rsa-2024-01');
  const ec = providerKey('ES256', 'ec-2024-01');
  // Firebase-style: the app's user id is `user_id`, the provider's subject something else.
  const claims = (user) => ({ iss: ISSUER, aud: AUDIENCE, sub: `provider|${user}`, user_id: user });

  before(async () => {
    provider = await startProvider([rsa, ec]);
    cluster = await startCluster({
      JWT_SECRET: undefined,
      JWT_JWKS_URL: provider.url,
      JWT_ISSUER: ISSUER,
      JWT_AUDIENCE: AUDIENCE,
      JWT_USER_CLAIM: 'user_id',
      JWT_JWKS_MIN_REFRESH_SECONDS: '1',
      CORS_ALLOWED_ORIGINS: '*',
      RATE_LIMIT_PER_IP_PER_MINUTE: '0',
    });
  });
  after(async () => {
    await cluster?.stop();
    provider?.close();
  });

  test('tokens signed with the provider\'s RS256 and ES256 keys work on REST and on the socket, for the user the claim names', async () => {
    const [alice, bob] = [unique('alice'), unique('bob')];
    const bobPhone = connect(cluster.base, token(ec, claims(bob)));
    try {
      await connected(bobPhone);
      const ringing = nextEvent(bobPhone, 'incoming_call');
      const created = await api(cluster.base, token(rsa, claims(alice)), 'POST', `/calls/rooms/${unique('room')}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [bob] });
      assert.equal(created.status, 201, created.text);
      assert.equal(created.body.data.initiatorId, alice, 'the user id must come from JWT_USER_CLAIM');
      const incoming = await ringing;
      assert.equal(incoming.from?.userId ?? incoming.from, alice);
      const joined = await bobPhone.timeout(STEP_MS).emitWithAck('call_status_changed', { callId: created.body.data.id, status: 'joined' });
      assert.equal(joined.ok, true, JSON.stringify(joined));
    } finally {
      bobPhone.close();
    }
  });

  test('a token from another project, another audience, an unknown key or alg none is refused at the edge and at the socket', async () => {
    const stranger = providerKey('RS256', 'rsa-2024-01');
    const user = unique('mallory');
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', kid: rsa.kid })).toString('base64url')}.${Buffer.from(JSON.stringify({ ...claims(user), exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url')}.`;
    const bad = {
      'another project': token(rsa, { ...claims(user), iss: 'https://securetoken.google.com/someone-else' }),
      'another audience': token(rsa, { ...claims(user), aud: 'another-api' }),
      'a key the provider never published': token(stranger, claims(user), { kid: 'not-published' }),
      'a forged signature under a published kid': token(stranger, claims(user)),
      'alg none': none,
      'the development HS256 secret': mint(user),
    };
    for (const [what, t] of Object.entries(bad)) {
      const res = await api(cluster.base, t, 'GET', '/calls');
      assert.equal(res.status, 401, `${what}: ${res.text}`);
      assert.equal(res.body?.code, 'UNAUTHORIZED', what);
      const err = await refused(connect(cluster.base, t));
      // What clients really get (docs/CONTRACT.md section 5): the message, no data.code.
      assert.equal(err.message, 'unauthorized', what);
      assert.equal(err.data, undefined, `${what}: socketioxide sends only the message`);
    }
  });

  test('a key rotation at the provider is picked up without restarting anything', async () => {
    const next = providerKey('ES256', 'ec-2024-02');
    provider.state.keys = [rsa, next];
    const fetchesBefore = provider.state.fetches;
    const user = unique('carol');
    // Every service refreshes on the unknown kid (at most once per JWT_JWKS_MIN_REFRESH_SECONDS).
    let res;
    const until = Date.now() + STEP_MS;
    do {
      res = await api(cluster.base, token(next, claims(user)), 'GET', '/calls');
      if (res.status !== 200) await new Promise((r) => setTimeout(r, 200));
    } while (res.status !== 200 && Date.now() < until);
    assert.equal(res.status, 200, `the new key was never accepted: ${res.text}`);
    // signaling refreshes on its own: it may have fetched the set less than
    // JWT_JWKS_MIN_REFRESH_SECONDS ago (for another test's unknown kid), so it may take a retry.
    for (const socketUntil = Date.now() + STEP_MS; ;) {
      const socket = connect(cluster.base, token(next, claims(user)));
      try {
        await connected(socket);
        break;
      } catch (err) {
        if (Date.now() > socketUntil) throw new Error(`signaling never accepted the new key: ${err.message}`);
        await new Promise((r) => setTimeout(r, 200));
      } finally {
        socket.close();
      }
    }
    // The retired key is gone once refreshed.
    const old = await api(cluster.base, token(ec, claims(unique('dave'))), 'GET', '/calls');
    assert.equal(old.status, 401, 'a key the provider retired still verifies');
    assert.ok(provider.state.fetches - fetchesBefore <= 20, `the rotation cost ${provider.state.fetches - fetchesBefore} fetches`);
    provider.state.keys = [rsa, ec, next];
  });

  edgeChecks(() => cluster, () => token(rsa, claims(unique('web'))));
});

describe('make run verifying tokens with a PEM public key', () => {
  let backend;
  let dir;
  const key = providerKey('RS256', undefined);

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'calls-jwt-key-'));
    const file = path.join(dir, 'public.pem');
    writeFileSync(file, key.publicKey.export({ format: 'pem', type: 'spki' }));
    backend = await startStandalone({ JWT_SECRET: undefined, JWT_PUBLIC_KEY_FILE: file, CORS_ALLOWED_ORIGINS: '*', RATE_LIMIT_PER_IP_PER_MINUTE: '0' });
  });
  after(async () => {
    await backend?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('RS256 tokens signed with the private half work; the HS256 development secret does not', async () => {
    const user = unique('erin');
    const res = await api(backend.base, token(key, { sub: user }), 'GET', '/calls');
    assert.equal(res.status, 200, res.text);
    const socket = connect(backend.base, token(key, { sub: user }));
    try {
      await connected(socket);
    } finally {
      socket.close();
    }
    assert.equal((await api(backend.base, mint(user), 'GET', '/calls')).status, 401);
  });

  edgeChecks(() => backend, () => token(key, { sub: unique('web') }));
});

describe('the development defaults', () => {
  test('make run and make cluster let browsers in from any origin unless CORS_ALLOWED_ORIGINS says otherwise', () => {
    for (const target of ['run', 'cluster']) {
      const dry = spawnSync('make', ['-s', '-n', target], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, CORS_ALLOWED_ORIGINS: undefined } });
      assert.equal(dry.status, 0, dry.stderr);
      assert.match(dry.stdout, /CORS_ALLOWED_ORIGINS="\$\{CORS_ALLOWED_ORIGINS-\*\}"/, `make ${target} does not default CORS to any origin:\n${dry.stdout}`);
    }
  });

  test('make run, make cluster and make token set the development JWT_SECRET only when no other key source is set', () => {
    const env = (extra) => ({ ...process.env, JWT_SECRET: undefined, ...extra });
    const printed = (extra) => spawnSync('make', ['-s', '--eval=print-jwt: ; @echo "[$$JWT_SECRET]"', 'print-jwt'], { cwd: ROOT, encoding: 'utf8', env: env(extra) }).stdout.trim();
    assert.notEqual(printed({}), '[]', 'make run would start without a way to verify tokens');
    assert.equal(printed({ JWT_JWKS_URL: 'https://example.invalid/jwks.json' }), '[]', 'make would set JWT_SECRET beside JWT_JWKS_URL (the services refuse both)');
    assert.equal(printed({ JWT_PUBLIC_KEY_FILE: '/tmp/key.pem' }), '[]', 'make would set JWT_SECRET beside JWT_PUBLIC_KEY_FILE');
  });
});
