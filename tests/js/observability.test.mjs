// Observability of the scaled topology (scripts/cluster.sh: gateway, 2 calls-api, 2 signaling,
// media-token, Postgres, NATS): an OTLP collector inside the test receives the services' spans
// (OTLP/HTTP JSON, set up only through the standard OTEL_* variables) and checks that one request
// and one relayed socket event each make one connected trace across every hop; then each
// service's /metrics carries the documented names with plausible values, and the logs carry
// request ids, trace ids and user ids but never a token or a secret.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { mint, startCluster } from './lib/cluster.mjs';
import { connectClient, nextEvent } from './lib/signaling-harness.mjs';

const STEP_MS = 10_000;
const AGORA_APP_ID = '970ca35de60c44645bbae8a215061b33';
const AGORA_APP_CERTIFICATE = '5cfd2fd1755d40ecb72977518be15d3b';
const INTERNAL_API_TOKEN = `internal-${randomBytes(12).toString('hex')}`;

/** An OTLP/HTTP JSON trace receiver: every span it was sent, flattened. */
async function startCollector() {
  const spans = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/traces') {
        const parsed = JSON.parse(body);
        for (const rs of parsed.resourceSpans ?? []) {
          const attrs = Object.fromEntries((rs.resource?.attributes ?? []).map((a) => [a.key, Object.values(a.value ?? {})[0]]));
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({
                service: attrs['service.name'], instance: attrs['service.instance.id'],
                traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId || '', name: s.name,
              });
            }
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, spans, close: () => new Promise((r) => server.close(r)) };
}

/** Polls `check` until it returns a truthy value, or fails with `what` after `ms`. */
async function eventually(what, check, ms = STEP_MS) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > until) assert.fail(`${what} (waited ${ms} ms)`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every span of the trace hangs off the trace's root (or the client's span that started it). */
function assertConnected(trace, rootParent, what) {
  const ids = new Set(trace.map((s) => s.spanId));
  const orphans = trace.filter((s) => s.parentSpanId !== rootParent && !ids.has(s.parentSpanId));
  assert.deepEqual(orphans.map((s) => `${s.service}: ${s.name}`), [], `${what}: these spans are cut off from the trace`);
}

/** Prometheus text → [{name, labels, value}]. */
function parseMetrics(text) {
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((line) => {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/);
    if (!m) return null;
    const labels = Object.fromEntries([...(m[3] ?? '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    return { name: m[1], labels, value: Number(m[4]) };
  }).filter(Boolean);
}

function sum(samples, name, labels = {}) {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((acc, s) => acc + s.value, 0);
}

describe('one trace across every hop, metrics and logs in the scaled topology', () => {
  let collector;
  let cluster;
  let base;
  let urls;
  const run = `${process.pid}-${Date.now()}`;
  const alice = `alice-${run}`;
  const bob = `bob-${run}`;
  const tokens = { alice: mint(alice), bob: mint(bob) };
  const sockets = [];
  const secrets = [];
  const api = (token, method, route, body, headers = {}) => fetch(`${base}/api/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let callId;

  before(async () => {
    collector = await startCollector();
    cluster = await startCluster({
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '100',
      RUST_LOG: 'info',
      AGORA_APP_ID,
      AGORA_APP_CERTIFICATE,
      INTERNAL_API_TOKEN,
      CALL_RING_TIMEOUT_SECONDS: '2',
    });
    base = cluster.base;
    const banner = (name) => cluster.log().split('\n').find((l) => l.trim().startsWith(`${name} `))?.trim().split(/\s+/).slice(1) ?? [];
    urls = {
      signaling: await cluster.signalingUrls(),
      callsApi: banner('calls-api'),
      mediaToken: `http://${banner('media-token')[0]}`,
    };
    secrets.push(tokens.alice, tokens.bob, AGORA_APP_CERTIFICATE, INTERNAL_API_TOKEN);
  });

  after(async () => {
    for (const s of sockets) s.disconnect();
    await cluster?.stop();
    await collector?.close();
  });

  test('a media-session request is one trace from the gateway through calls-api and its queries to media-token', async () => {
    const started = await api(tokens.alice, 'POST', `/calls/rooms/room-${run}/initiate`, { type: 'video', isGroupCall: false, inviteUserIds: [bob] });
    assert.equal(started.status, 201, 'alice could not start a call');
    callId = (await started.json()).data.id;
    assert.equal((await api(tokens.bob, 'POST', `/calls/${callId}/join`)).status, 200, 'bob could not answer');

    // The app's own span: the gateway continues its trace.
    const traceId = randomBytes(16).toString('hex');
    const clientSpan = randomBytes(8).toString('hex');
    const res = await api(tokens.alice, 'POST', `/calls/${callId}/media/session`, undefined, { traceparent: `00-${traceId}-${clientSpan}-01` });
    const body = await res.json();
    assert.equal(res.status, 200, `alice got no media credentials: ${JSON.stringify(body)}`);
    secrets.push(body.data.rtcToken);

    const trace = await eventually('the collector never received the media-session trace from all four hops', () => {
      const spans = collector.spans.filter((s) => s.traceId === traceId);
      // Each service exports on its own schedule: wait for every hop.
      const names = new Set(spans.map((s) => `${s.service}: ${s.name}`));
      const done = [
        'gateway: POST api', 'calls-api: POST /api/v1/calls/{id}/media/session',
        'calls-api: calls.mediatoken.v1.MediaTokenService/IssueRtcToken', 'media-token: calls.mediatoken.v1.MediaTokenService/IssueRtcToken',
      ].every((n) => names.has(n)) && spans.some((s) => s.name.startsWith('db.'));
      return done && spans;
    });
    const names = trace.map((s) => `${s.service}: ${s.name}`);
    assert.ok(names.includes('gateway: POST api'), `no gateway span: ${names}`);
    assert.ok(names.includes('calls-api: POST /api/v1/calls/{id}/media/session'), `no calls-api request span: ${names}`);
    assert.ok(names.some((n) => n.startsWith('calls-api: db.')), `no database span: ${names}`);
    assert.ok(names.includes('calls-api: calls.mediatoken.v1.MediaTokenService/IssueRtcToken'), `no gRPC client span: ${names}`);
    assert.ok(names.includes('media-token: calls.mediatoken.v1.MediaTokenService/IssueRtcToken'), `no media-token span: ${names}`);
    assertConnected(trace, clientSpan, 'the media-session trace');
    const gatewaySpan = trace.find((s) => s.service === 'gateway');
    assert.equal(gatewaySpan.parentSpanId, clientSpan, 'the gateway did not continue the app\'s trace');
  });

  test('a socket event on one signaling node is one trace through calls-api, the outbox and NATS to the emit on the other node', async () => {
    assert.ok(callId, 'needs the call of the previous test');
    assert.equal(urls.signaling.length, 2, 'the cluster should have two signaling nodes');
    const connect = (url, token) => {
      const socket = connectClient(url, { token });
      sockets.push(socket);
      return socket;
    };
    const a = connect(urls.signaling[0], tokens.alice);
    const b = connect(urls.signaling[1], tokens.bob);
    for (const s of [a, b]) {
      const joined = await s.timeout(STEP_MS).emitWithAck('join_call', { callId });
      assert.equal(joined.ok, true, `join_call was refused: ${JSON.stringify(joined)}`);
    }
    const seen = nextEvent(b, 'participant_media_changed', { timeoutMs: STEP_MS, where: (e) => e.userId === alice && e.isMicMuted === true });
    const ack = await a.timeout(STEP_MS).emitWithAck('media_state_changed', { callId, isMicMuted: true });
    assert.equal(ack.ok, true, `the mute was refused: ${JSON.stringify(ack)}`);
    await seen;

    const trace = await eventually('the collector never received the relayed socket event\'s trace', () => {
      const root = collector.spans.find((s) => s.name === 'socket media_state_changed' && s.service === 'signaling');
      if (!root) return null;
      const spans = collector.spans.filter((s) => s.traceId === root.traceId);
      const emits = spans.filter((s) => s.name === 'emit participant_media_changed');
      // Each service exports on its own schedule: wait for every hop, not just the last.
      const hops = ['command media_state_changed', 'publish participant_media_changed'].every((n) => spans.some((s) => s.name === n));
      return hops && new Set(emits.map((s) => s.instance)).size >= 2 && spans;
    });
    const names = trace.map((s) => `${s.service}: ${s.name}`);
    const root = trace.find((s) => s.name === 'socket media_state_changed');
    assert.equal(root.parentSpanId, '', 'the socket event should start the trace');
    assert.ok(names.includes('calls-api: command media_state_changed'), `no calls-api command span: ${names}`);
    assert.ok(names.some((n) => n.startsWith('calls-api: db.')), `no database span: ${names}`);
    assert.ok(names.includes('calls-api: publish participant_media_changed'), `no outbox publish span: ${names}`);
    const emits = trace.filter((s) => s.name === 'emit participant_media_changed');
    assert.ok(emits.some((s) => s.instance !== root.instance), 'the emit on the other signaling node is not in the trace');
    assertConnected(trace, '', 'the socket event trace');
  });

  test('after a call, every service exposes the documented metrics with plausible values', async () => {
    assert.ok(callId, 'needs the call of the previous tests');
    // One call that rings out, so the ring timer fires; then end the first call.
    const missed = await api(tokens.alice, 'POST', `/calls/rooms/room2-${run}/initiate`, { type: 'audio', isGroupCall: false, inviteUserIds: [`carol-${run}`] });
    assert.equal(missed.status, 201);
    const missedId = (await missed.json()).data.id;
    assert.equal((await api(tokens.alice, 'POST', `/calls/${callId}/end`)).status, 200, 'alice could not hang up');
    await eventually('the unanswered call never timed out', async () => {
      const res = await api(tokens.alice, 'GET', `/calls/${missedId}`);
      const { data } = await res.json();
      return data?.status === 'ended' && data.endReason === 'missed';
    });

    const scrape = async (url) => parseMetrics(await (await fetch(`${url}/metrics`)).text());
    const apis = await Promise.all(urls.callsApi.map(scrape));
    const callsApi = apis.flat();
    // The gateway's metrics are on its admin listener only; its public port has none.
    assert.equal((await fetch(`${base}/metrics`)).status, 404, 'the gateway\'s public port serves /metrics');
    const gateway = await scrape(cluster.adminUrl);
    const media = await scrape(urls.mediaToken);
    const signaling = (await Promise.all(urls.signaling.map(scrape))).flat();

    await eventually('calls-api never counted the ended call', async () => {
      const fresh = (await Promise.all(urls.callsApi.map(scrape))).flat();
      return sum(fresh, 'calls_ended_total') >= 1 && sum(fresh, 'calls_participants_per_call_count') >= 1;
    });
    const expectations = [
      ['calls-api', callsApi, 'http_requests_total', { service: 'calls-api', route: '/api/v1/calls/{id}/media/session', status: '200' }, 1],
      ['calls-api', callsApi, 'http_request_duration_seconds_count', { service: 'calls-api', route: '/api/v1/calls/{id}/join' }, 1],
      ['calls-api', callsApi, 'calls_started_total', { type: 'video' }, 1],
      ['calls-api', callsApi, 'calls_time_to_answer_seconds_count', { type: 'video' }, 1],
      ['calls-api', callsApi, 'calls_join_duration_seconds_count', { outcome: 'joined' }, 1],
      ['calls-api', callsApi, 'calls_commands_total', { command: 'media_state_changed', code: 'OK' }, 1],
      ['calls-api', callsApi, 'calls_timers_fired_total', { kind: 'ring_timeout' }, 1],
      ['calls-api', callsApi, 'calls_timer_lag_seconds_count', {}, 1],
      ['calls-api', callsApi, 'calls_outbox_published_total', {}, 3],
      ['calls-api', callsApi, 'grpc_client_requests_total', { method: 'IssueRtcToken', code: 'ok' }, 1],
      ['gateway', gateway, 'gateway_requests_total', { route: 'api', status: '200' }, 2],
      ['media-token', media, 'media_token_tokens_issued_total', { role: 'publisher' }, 1],
      ['media-token', media, 'grpc_server_requests_total', { method: 'IssueRtcToken', code: 'ok' }, 1],
      ['signaling', signaling, 'signaling_events_in_total', { event: 'media_state_changed' }, 1],
      ['signaling', signaling, 'signaling_event_duration_seconds_count', { event: 'join_call', outcome: 'ok' }, 2],
      ['signaling', signaling, 'signaling_events_out_total', { event: 'participant_media_changed' }, 2],
      ['signaling', signaling, 'signaling_relay_latency_seconds_count', {}, 2],
      ['signaling', signaling, 'signaling_sockets_connected', {}, 2],
    ];
    for (const [service, samples, name, labels, atLeast] of expectations) {
      const value = sum(samples, name, labels);
      assert.ok(value >= atLeast, `${service} /metrics: ${name}${JSON.stringify(labels)} is ${value}, expected at least ${atLeast}`);
    }
    for (const name of ['calls_active', 'calls_outbox_lag_seconds']) {
      assert.ok(callsApi.some((s) => s.name === name), `calls-api /metrics lacks ${name}`);
    }
    const lag = callsApi.filter((s) => s.name === 'calls_outbox_lag_seconds').map((s) => s.value);
    assert.ok(lag.every((v) => v >= 0 && v < 60), `an outbox lag of ${lag} s is not plausible on an idle cluster`);
    const answer = sum(callsApi, 'calls_time_to_answer_seconds_sum', { type: 'video' });
    assert.ok(answer >= 0 && answer < 60, `a time to answer of ${answer} s is not plausible`);
  });

  test('the logs have a line per request with request id, trace id and user id, and never a token or secret', async () => {
    const logs = readdirSync(cluster.logs).filter((f) => f.endsWith('.log'))
      .map((f) => readFileSync(path.join(cluster.logs, f), 'utf8')).join('\n');
    for (const secret of secrets) {
      assert.ok(!logs.includes(secret), `a secret or token (${secret.slice(0, 8)}…) was written to the logs`);
    }
    const lines = logs.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const mediaLine = lines.find((l) => l.fields?.message === 'request' && l.span?.['http.route'] === '/api/v1/calls/{id}/media/session');
    assert.ok(mediaLine, 'calls-api wrote no line for the media-session request');
    assert.equal(mediaLine.span.user_id, alice, 'the request line does not say who made the request');
    assert.match(mediaLine.span.request_id ?? '', /^[0-9a-f-]{36}$/, 'the request line has no request id');
    assert.match(mediaLine.span.trace_id ?? '', /^[0-9a-f]{32}$/, 'the request line has no trace id');
    const socketLine = lines.find((l) => l.fields?.message === 'socket event' && l.span?.event === 'media_state_changed');
    assert.ok(socketLine, 'signaling wrote no line for the socket event');
    assert.equal(socketLine.span.user_id, alice);
    assert.match(socketLine.span.trace_id ?? '', /^[0-9a-f]{32}$/);
  });
});
