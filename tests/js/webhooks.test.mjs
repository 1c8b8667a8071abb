// Webhooks to the host application (CONTRACT section 9), through real calls in both
// topologies: a receiver written as the host's developers would write it verifies every
// delivery with the official `standardwebhooks` package. Event sequences, secret rotation,
// an endpoint that fails for a while or for good, 410, dead letters and replay, the address
// policy; and in the scaled topology on a private NATS, a notifier killed mid-delivery and
// NATS restarted.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Client, eventually, quietPeriod, topologyEnv, TIMERS, unique } from './acceptance/harness.mjs';
import { BIN_DIR, freePort, SECRET, startCluster, startStandalone, STANDALONE_BIN, waitHealthy } from './lib/cluster.mjs';
import { startNats } from './lib/infra.mjs';
import { newSecret, startReceiver, WebhooksApi } from './lib/webhook-receiver.mjs';

const TOKEN = 'webhook-suite-internal-token-0123456789';
// A ten-second retry window, retries from 100 ms: an outage of a second or two is ridden out,
// a longer one dead-letters within the test.
const WINDOW_MS = 10_000;

function webhookEnv(extra = {}) {
  return topologyEnv({
    INTERNAL_API_TOKEN: TOKEN,
    WEBHOOK_ALLOW_PRIVATE: 'true',
    WEBHOOK_RETRY_HOURS: String(WINDOW_MS / 3_600_000),
    WEBHOOK_RETRY_BASE_MS: '100',
    WEBHOOK_TIMEOUT_MS: '1500',
    ...extra,
  });
}

/** Checks every request the receiver got verified with the official package. */
function assertAllVerified(receiver, callId, secret) {
  const requests = receiver.requestsOf(callId);
  assert.ok(requests.length > 0);
  for (const r of requests) {
    assert.equal(r.verified[secret], true, `${r.payload?.type} (${r.id}) verifies with standardwebhooks`);
    assert.match(r.id, /^msg_[0-9a-f]{32}$/);
    assert.equal(r.contentType, 'application/json');
    assert.ok(Math.abs(Number(r.headers['webhook-timestamp']) - r.at / 1000) < 5, 'webhook-timestamp is now');
  }
}

const leave = (client, user, callId) => client.api(user, 'PATCH', `/calls/${callId}/status`, { status: 'left' });
const decline = (client, user, callId, reason) => client.api(user, 'PATCH', `/calls/${callId}/status`, { status: 'declined', reason });

function defineWebhookSuite(title, start) {
  describe(title, { concurrency: true }, () => {
    let deployment;
    let client;
    let api;
    let main;
    let mainSecret;

    before(async () => {
      deployment = await start(webhookEnv());
      client = new Client(deployment.base);
      api = new WebhooksApi(await deployment.notifierUrl(), TOKEN);
      mainSecret = newSecret();
      main = await startReceiver({ secrets: [mainSecret] });
      await api.create({ url: main.url, secrets: [mainSecret] });
    });

    after(async () => {
      client?.closeAll();
      await deployment?.stop();
      await main?.close();
    });

    test('a 1:1 call answered and hung up arrives as initiated, joined, started, left, ended, in order and signed', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const call = await client.initiate(alice, [bob], { type: 'audio' });
      await client.join(bob, call.id);
      await quietPeriod(1_100);
      assert.equal((await leave(client, bob, call.id)).status, 200);
      await eventually(() => main.eventsOf(call.id).length >= 5, 'five events arrive');
      await quietPeriod(300);
      assert.deepEqual(main.typesOf(call.id), ['call.initiated', 'participant.joined', 'call.started', 'participant.left', 'call.ended']);
      assertAllVerified(main, call.id, mainSecret);
      const [initiated, joined, started, left, ended] = main.eventsOf(call.id).map((r) => r.payload);
      assert.deepEqual(Object.keys(initiated).sort(), ['data', 'timestamp', 'type']);
      assert.equal(initiated.data.chatRoomId, call.chatRoomId);
      assert.equal(initiated.data.status, 'ringing');
      assert.equal(initiated.timestamp, call.createdAt);
      assert.equal(joined.data.participant.userId, bob);
      assert.equal(started.data.status, 'active');
      assert.equal(started.data.startedAt, joined.data.participant.joinedAt);
      assert.deepEqual([left.data.userId, left.data.reason], [bob, 'left']);
      const end = ended.data;
      assert.deepEqual([end.status, end.endReason, end.endedBy], ['ended', 'completed', bob]);
      const final = await client.getCall(alice, call.id);
      assert.equal(end.endedAt, final.endedAt, 'the call as calls-api ended it');
      assert.equal(end.durationSeconds, Math.floor((Date.parse(final.endedAt) - Date.parse(final.startedAt)) / 1000));
      assert.ok(end.durationSeconds >= 1);
      const seconds = Object.fromEntries(end.participants.map((p) => [p.userId, p.joinedSeconds]));
      assert.equal(seconds[bob], end.durationSeconds);
      assert.ok(seconds[alice] >= seconds[bob], 'the caller was in the call from the start');
      assert.ok(end.participants.every((p) => p.status === 'left'));
    });

    test('a missed call arrives as initiated, missed for the invitee, ended', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const call = await client.initiate(alice, [bob]);
      await eventually(() => main.eventsOf(call.id).length >= 3, 'the ring times out and three events arrive', (TIMERS.ring + 8) * 1000);
      assert.deepEqual(main.typesOf(call.id), ['call.initiated', 'call.missed', 'call.ended']);
      const [, missed, ended] = main.eventsOf(call.id).map((r) => r.payload);
      assert.deepEqual(missed.data, {
        callId: call.id, chatRoomId: call.chatRoomId, userId: bob, from: { userId: alice }, callType: 'video',
        isGroupCall: false, reason: 'ring_timeout',
      });
      assert.deepEqual([ended.data.endReason, ended.data.durationSeconds, ended.data.startedAt], ['missed', 0, null]);
      assertAllVerified(main, call.id, mainSecret);
    });

    test('a group invite declined by everyone arrives as initiated, one declined per invitee, ended', async () => {
      const [alice, bob, carol] = [unique('alice'), unique('bob'), unique('carol')];
      const call = await client.initiate(alice, [bob, carol], { group: true });
      assert.equal((await decline(client, bob, call.id, 'in a meeting')).status, 200);
      assert.equal((await decline(client, carol, call.id)).status, 200);
      await eventually(() => main.eventsOf(call.id).length >= 4, 'four events arrive');
      assert.deepEqual(main.typesOf(call.id), ['call.initiated', 'call.declined', 'call.declined', 'call.ended']);
      const [, byBob, byCarol, ended] = main.eventsOf(call.id).map((r) => r.payload.data);
      assert.deepEqual([byBob.userId, byBob.reason, byBob.isGroupCall], [bob, 'in a meeting', true]);
      assert.deepEqual([byCarol.userId, byCarol.reason], [carol, null]);
      assert.equal(ended.endReason, 'declined');
    });

    test('during a secret rotation deliveries verify with both secrets, and after it with the new one only', async () => {
      const [oldSecret, newOne] = [newSecret(), newSecret()];
      const receiver = await startReceiver({ secrets: [oldSecret, newOne] });
      try {
        const endpoint = await api.create({ url: receiver.url, secrets: [oldSecret], eventTypes: ['call.initiated'] });
        const ring = async () => {
          const call = await client.initiate(unique('alice'), [unique('bob')]);
          await eventually(() => receiver.eventsOf(call.id).length === 1, 'call.initiated arrives');
          return receiver.eventsOf(call.id)[0];
        };
        const before = await ring();
        assert.deepEqual(before.verified, { [oldSecret]: true, [newOne]: false });
        const rotating = await api.call('PATCH', `/${endpoint.id}`, { secrets: [oldSecret, newOne] });
        assert.equal(rotating.status, 200, rotating.text);
        assert.equal(rotating.body.data.secrets.length, 2);
        assert.ok(rotating.body.data.secrets.every((s) => s.endsWith('…') && s.length < 16), 'secrets are never shown again');
        const during = await ring();
        assert.deepEqual(during.verified, { [oldSecret]: true, [newOne]: true });
        assert.equal(during.headers['webhook-signature'].split(' ').length, 2);
        assert.equal((await api.call('PATCH', `/${endpoint.id}`, { secrets: [newOne] })).status, 200);
        const afterwards = await ring();
        assert.deepEqual(afterwards.verified, { [oldSecret]: false, [newOne]: true });
      } finally {
        await receiver.close();
      }
    });

    test('an endpoint that answers 500 for a while gets every event once it recovers, in order', async () => {
      const secret = newSecret();
      const receiver = await startReceiver({ secrets: [secret] });
      try {
        await api.create({ url: receiver.url, secrets: [secret] });
        // The first three attempts at this test's call fail (counted, not timed: a loaded
        // machine may take longer than any outage to send the first one). Other tests' calls
        // reach this endpoint too and are answered at once.
        const [alice, bob] = [unique('alice'), unique('bob')];
        let failed = 0;
        receiver.answer = (r) => (JSON.stringify(r.payload).includes(alice) && failed < 3 ? (failed += 1, 500) : 204);
        const call = await client.initiate(alice, [bob]);
        assert.equal((await decline(client, bob, call.id)).status, 200);
        await eventually(() => receiver.eventsOf(call.id).length >= 3, 'every event arrives after the recovery');
        assert.deepEqual(receiver.typesOf(call.id), ['call.initiated', 'call.declined', 'call.ended']);
        const requests = receiver.requestsOf(call.id);
        assert.ok(requests.length > 3, 'the first attempts failed and were retried');
        const retried = requests.filter((r) => r.payload.type === 'call.initiated');
        assert.equal(new Set(retried.map((r) => r.id)).size, 1, 'every retry carries the same webhook-id');
        const acceptedIds = receiver.accepted.filter((r) => r.payload.data.callId === call.id || r.payload.data.id === call.id).map((r) => r.id);
        assert.equal(acceptedIds.length, new Set(acceptedIds).size, 'nothing accepted twice');
        // Nothing of the call went before the failing first event was accepted (its fourth try).
        assert.deepEqual(requests.slice(0, 4).map((r) => r.payload.type), Array(4).fill('call.initiated'));
        assertAllVerified(receiver, call.id, secret);
      } finally {
        await receiver.close();
      }
    });

    test('an endpoint down for the whole window is disabled, lists its dead letters, and a replay delivers them in order', async () => {
      const secret = newSecret();
      const receiver = await startReceiver({ secrets: [secret] });
      try {
        const since = new Date().toISOString();
        const endpoint = await api.create({ url: receiver.url, secrets: [secret] });
        receiver.answer = () => 503;
        const [alice, bob] = [unique('alice'), unique('bob')];
        const call = await client.initiate(alice, [bob]);
        assert.equal((await decline(client, bob, call.id)).status, 200);
        const disabled = await eventually(async () => {
          const res = await api.call('GET', `/${endpoint.id}`);
          return res.body.data.enabled === false && res.body.data;
        }, 'the endpoint is disabled once a delivery has failed for the whole window', WINDOW_MS + 10_000);
        assert.match(disabled.disabledReason, /whole retry window/);
        const dead = await api.call('GET', `/${endpoint.id}/deliveries?status=failed&limit=200`);
        assert.equal(dead.status, 200);
        const ours = dead.body.data.items.filter((d) => d.callId === call.id);
        assert.deepEqual(ours.map((d) => d.eventType).reverse(), ['call.initiated', 'call.declined', 'call.ended']);
        assert.ok(ours.every((d) => d.status === 'failed' && d.payload.data));
        const first = ours.at(-1);
        assert.ok(first.attempts > 1 && first.lastStatus === 503, JSON.stringify(first));

        receiver.answer = () => 204;
        assert.equal((await api.call('PATCH', `/${endpoint.id}`, { enabled: true })).status, 200);
        const replay = await api.call('POST', `/${endpoint.id}/replay`, { since });
        assert.equal(replay.status, 200, replay.text);
        assert.ok(replay.body.data.replayed >= 3);
        await eventually(() => receiver.eventsOf(call.id).length >= 3, 'the replay delivers them');
        assert.deepEqual(receiver.typesOf(call.id), ['call.initiated', 'call.declined', 'call.ended']);
        assert.deepEqual(receiver.eventsOf(call.id).map((r) => r.id), ours.map((d) => d.webhookId).reverse(), 'with their original webhook-ids');
        assertAllVerified(receiver, call.id, secret);
      } finally {
        await receiver.close();
      }
    });

    test('an endpoint that answers 410 is disabled and gets nothing more', async () => {
      const secret = newSecret();
      const receiver = await startReceiver({ secrets: [secret] });
      try {
        const endpoint = await api.create({ url: receiver.url, secrets: [secret] });
        receiver.answer = () => 410;
        await client.initiate(unique('alice'), [unique('bob')]);
        const gone = await eventually(async () => {
          const res = await api.call('GET', `/${endpoint.id}`);
          return res.body.data.enabled === false && res.body.data;
        }, 'the endpoint is disabled');
        assert.match(gone.disabledReason, /410/);
        // Other tests' calls run alongside, and a delivery of theirs may have been in flight
        // when the 410 came: what must never arrive is an event that happened afterwards.
        const later = unique('alice');
        await client.initiate(later, [unique('bob')]);
        await quietPeriod(800);
        assert.deepEqual(receiver.requests.filter((r) => JSON.stringify(r.payload).includes(later)), [], 'nothing is sent to a disabled endpoint');
      } finally {
        await receiver.close();
      }
    });

    test('the internal API needs its token, shows secrets once, validates input, and is not behind the gateway', async () => {
      assert.equal((await api.call('GET', '', undefined, { token: null })).status, 401);
      assert.equal((await api.call('GET', '', undefined, { token: 'wrong' })).status, 401);
      const created = await api.create({ url: 'https://hooks.example.com/calls' });
      assert.match(created.secrets[0], /^whsec_[A-Za-z0-9+/]{43}=$/, 'a generated secret, shown once');
      assert.equal(created.enabled, true);
      const read = await api.call('GET', `/${created.id}`);
      assert.equal(read.body.data.secrets[0], `${created.secrets[0].slice(0, 10)}…`);
      assert.ok((await api.call('GET', '')).body.data.items.some((e) => e.id === created.id));
      const typed = await api.call('PATCH', `/${created.id}`, { eventTypes: ['call.ended', 'call.missed'] });
      assert.deepEqual(typed.body.data.eventTypes, ['call.ended', 'call.missed']);
      for (const [body, field] of [
        [{ url: 'ftp://hooks.example.com/' }, 'url'],
        [{ url: 'https://hooks.example.com/', eventTypes: ['call.exploded'] }, 'eventTypes[0]'],
        [{ url: 'https://hooks.example.com/', secrets: ['not-a-secret'] }, 'secrets'],
        [{ url: 'https://u:p@hooks.example.com/' }, 'url'],
      ]) {
        const res = await api.call('POST', '', body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(res.body.code, 'VALIDATION_FAILED');
        assert.ok(res.body.details.some((d) => d.field === field), `${field}: ${res.text}`);
      }
      assert.equal((await api.call('DELETE', `/${created.id}`)).status, 200);
      assert.equal((await api.call('GET', `/${created.id}`)).status, 404);
      const viaGateway = await fetch(`${deployment.base}/internal/v1/webhooks`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(viaGateway.status, 404, 'the gateway never routes /internal');
      const doc = await fetch(`${deployment.base}/api/docs/openapi.json`).then((r) => r.json());
      assert.ok(doc.paths['/internal/v1/webhooks/{id}/replay']?.post, 'the internal API is documented');
      assert.ok(doc.paths['/api/v1/devices'], 'beside the device API');
    });
  });
}

/** `make run` with the notifier's internal API exposed on NOTIFIER_LISTEN. */
async function standalone(env) {
  const port = await freePort();
  const d = await startStandalone({ ...env, NOTIFIER_LISTEN: `127.0.0.1:${port}` });
  return { ...d, notifierUrl: async () => `http://127.0.0.1:${port}` };
}

async function cluster(env) {
  const d = await startCluster(env);
  return { ...d, notifierUrl: async () => (await d.notifierUrls())[0] };
}

defineWebhookSuite('webhooks, standalone (make run)', standalone);
defineWebhookSuite('webhooks, scaled topology (make cluster)', cluster);

describe('webhooks, address policy (WEBHOOK_ALLOW_PRIVATE unset)', { concurrency: true }, () => {
  test('a loopback or private endpoint is refused through the API and as WEBHOOK_URL', async () => {
    const receiver = await startReceiver();
    const strict = webhookEnv();
    delete strict.WEBHOOK_ALLOW_PRIVATE;
    const d = await standalone(strict);
    try {
      const api = new WebhooksApi(await d.notifierUrl(), TOKEN);
      const port = new URL(receiver.url).port;
      for (const url of [receiver.url, `http://localhost:${port}/hooks`, 'http://10.0.0.7/hooks', 'http://169.254.169.254/latest']) {
        const res = await api.call('POST', '', { url });
        assert.equal(res.status, 400, `${url}: ${res.text}`);
        assert.deepEqual(res.body.details.map((x) => x.field), ['url']);
        assert.match(res.body.details[0].message, /WEBHOOK_ALLOW_PRIVATE/);
      }
      assert.equal((await api.call('POST', '', { url: 'https://hooks.example.com/calls' })).status, 201);
    } finally {
      await d.stop();
      await receiver.close();
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'calls-webhook-refused-'));
    try {
      const refused = spawnSync(STANDALONE_BIN, ['serve'], {
        env: {
          // Port 0 everywhere: a fixed default port may be taken on a busy machine, and the refusal
          // must come from the address check.
          ...process.env, JWT_SECRET: SECRET, DATABASE_URL: '', GATEWAY_LISTEN: '127.0.0.1:0', GATEWAY_ADMIN_LISTEN: '127.0.0.1:0', WEBHOOK_ALLOW_PRIVATE: 'false',
          WEBHOOK_URL: 'http://127.0.0.1:9/hooks', WEBHOOK_SECRET: newSecret(),
        },
        encoding: 'utf8',
        timeout: 20_000,
        cwd: dir,
      });
      assert.notEqual(refused.status, 0, 'the backend does not start');
      assert.match(refused.stderr, /WEBHOOK_URL .*WEBHOOK_ALLOW_PRIVATE/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('webhooks, scaled topology on a private NATS', () => {
  let nats;
  let deployment;
  let replacement;
  let receiver;

  before(async () => {
    nats = await startNats();
  });

  after(async () => {
    if (replacement && replacement.exitCode === null) {
      await new Promise((resolve) => { replacement.once('exit', resolve); replacement.kill('SIGTERM'); });
    }
    await deployment?.stop();
    await nats?.destroy();
    await receiver?.close();
  });

  test('a notifier killed mid-delivery and a NATS restart lose nothing: every event arrives, in order, the interrupted one with its webhook-id', async () => {
    const env = webhookEnv({ NATS_URL: nats.url, NOTIFIER_REPLICAS: '1' });
    deployment = await startCluster(env, { natsUrl: nats.url });
    const client = new Client(deployment.base);
    const secret = newSecret();
    receiver = await startReceiver({ secrets: [secret] });
    receiver.answer = () => 'hang';
    const api = new WebhooksApi((await deployment.notifierUrls())[0], TOKEN);
    await api.create({ url: receiver.url, secrets: [secret] });

    const [alice, bob] = [unique('alice'), unique('bob')];
    const first = await client.initiate(alice, [bob]);
    assert.equal((await decline(client, bob, first.id)).status, 200);
    const interrupted = await eventually(() => receiver.requestsOf(first.id)[0], 'the first delivery reaches the receiver');
    // By now the notifier has consumed the call's other events too (had it not, JetStream would
    // hand them to the next replica after the 30 s ack wait: slower, equally lossless).
    await quietPeriod(1_000);
    deployment.kill('notifier-1');
    await eventually(() => interrupted.closed, 'the killed notifier\'s connection goes');
    receiver.answer = () => 204;

    // A replica takes over (same database, same durable consumer).
    const port = await freePort();
    replacement = spawn(`${BIN_DIR}/notifier`, [], {
      env: { ...process.env, ...env, JWT_SECRET: SECRET, RUST_LOG: 'warn', DATABASE_URL: deployment.dbUrl, NATS_SUBJECT_PREFIX: deployment.prefix, NOTIFIER_LISTEN: `127.0.0.1:${port}` },
      stdio: 'ignore',
    });
    await waitHealthy(`http://127.0.0.1:${port}`, replacement);

    // NATS goes away while a second call happens, and comes back.
    await nats.stop();
    const [carol, dave] = [unique('carol'), unique('dave')];
    const second = await client.initiate(carol, [dave]);
    assert.equal((await decline(client, dave, second.id)).status, 200);
    await quietPeriod(500);
    await nats.start();

    for (const call of [first, second]) {
      await eventually(() => receiver.eventsOf(call.id).length >= 3, `every event of ${call.id} arrives`, 45_000);
      assert.deepEqual(receiver.typesOf(call.id), ['call.initiated', 'call.declined', 'call.ended']);
      assertAllVerified(receiver, call.id, secret);
    }
    assert.equal(receiver.eventsOf(first.id)[0].id, interrupted.id, 'the interrupted delivery came again with its webhook-id');
  });
});
