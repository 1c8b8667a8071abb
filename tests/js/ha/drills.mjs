// High-availability drills (`make test-ha`): the scaled topology (gateway, 2 calls-api,
// 2 signaling, media-token; scripts/cluster.sh) on clustered engines — a 3-node NATS cluster with
// the event stream at replicas 3, and a pg_auto_failover formation (primary, synchronous standby,
// monitor) that calls-api reaches through a multi-host URL with target_session_attrs=read-write.
// Calls are driven only through the gateway, with the official socket.io-client, while engines
// and replicas are killed and restarted. Each drill prints its figures (`HA-FIGURES {...}`) and
// the run ends with a table of them (docs/reliability.md keeps a copy).
//
// Not matched by `node --test`'s default patterns: scripts/test-ha.sh runs it after installing
// what it needs (nats-server, pg_auto_failover).

import assert from 'node:assert/strict';
import os from 'node:os';
import { after, before, describe, test } from 'node:test';

import { Client, TIMERS, eventually, topologyEnv, unique, waitFor } from '../acceptance/harness.mjs';
import { startCluster } from '../lib/cluster.mjs';
import { startNatsCluster, startPgFormation } from '../lib/ha.mjs';

const HEARTBEAT_SECONDS = 3;
// Long enough that a socket moving to another signaling node is not dropped from its call (the
// production default is 30 s), short enough to keep the drills quick.
const GRACE_SECONDS = 10;
/** How often the simulated apps change their media state during a drill. */
const TRAFFIC_PERIOD_MS = 100;
/** The longest a failover may leave the API without a database before the drill fails. */
const MAX_DB_OUTAGE_MS = 30_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const load = () => os.loadavg().map((n) => n.toFixed(2)).join(' ');

const figures = [];
function report(drill, data) {
  const line = { drill, ...data, loadAverage: load() };
  figures.push(line);
  console.log(`HA-FIGURES ${JSON.stringify(line)}`);
}

function percentile(values, p) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

describe('high availability on clustered engines (3-node NATS, pg_auto_failover)', () => {
  let nats;
  let pg;
  let cluster;
  let client;
  let stream;

  before(async () => {
    [nats, pg] = await Promise.all([startNatsCluster(3), startPgFormation()]);
    cluster = await startCluster(topologyEnv({
      PRESENCE_HEARTBEAT_SECONDS: String(HEARTBEAT_SECONDS),
      CALL_DISCONNECT_GRACE_SECONDS: String(GRACE_SECONDS),
      CALL_MAX_DURATION_SECONDS: '0',
      NATS_STREAM_REPLICAS: '3',
      // With no primary, a request waits this long for a connection, then answers 503.
      DATABASE_ACQUIRE_TIMEOUT_MS: '1000',
      // A replica that exits is started again, as Kubernetes restarts a pod.
      CLUSTER_RESTART: 'on-exit',
      GATEWAY_HEALTH_CHECK_INTERVAL_MS: '500',
    }), { postgresAdminUrl: pg.adminUrl, natsUrl: nats.url });
    client = new Client(cluster.base);
    stream = `CALLS_EVENTS_${cluster.prefix.toUpperCase()}`;
  });

  after(async () => {
    client?.closeAll();
    await cluster?.stop().catch(() => {});
    await Promise.all([nats?.destroy(), pg?.destroy()].map((p) => p?.catch(() => {})));
    if (figures.length) {
      console.log(`\nHA drill figures (load average at the end: ${load()}):`);
      for (const f of figures) console.log(`  ${JSON.stringify(f)}`);
    }
  });

  // ----- what the simulated apps do ----------------------------------------------------------

  /** A socket that timestamps what it receives and keeps a client's view of each call's `seq`. */
  async function phone(user, options = {}) {
    const socket = await client.connect(user, options);
    socket.timeline = [];
    socket.disconnects = 0;
    socket.onAny((event, data) => socket.timeline.push({ event, data, t: Date.now() }));
    socket.on('disconnect', () => { socket.disconnects += 1; });
    return socket;
  }

  /**
   * Follows `callId` now and again after every reconnection, as the contract asks apps to;
   * a re-join refused with a retryable DEPENDENCY_UNAVAILABLE is tried again shortly.
   */
  async function follow(socket, callId) {
    socket.rejoins = [];
    socket.refusals = [];
    const rejoin = (t, attempt) => {
      socket.timeout(10_000).emit('join_call', { callId }, (err, ack) => {
        const ok = !err && ack?.ok === true;
        if (!ok) socket.refusals.push(err ? err.message : ack?.error?.code);
        if (!ok && attempt < 10 && socket.connected && ack?.error?.code === 'DEPENDENCY_UNAVAILABLE') {
          setTimeout(() => rejoin(t, attempt + 1), 200);
          return;
        }
        socket.rejoins.push({ t, ms: Date.now() - t, ok, attempts: attempt });
      });
    };
    socket.on('connect', () => rejoin(Date.now(), 1));
    return client.follow(socket, callId);
  }

  /**
   * Replays a socket's events of `callId` the way an app applies them: a snapshot
   * (`call_participants`) resets the seq; any other event must be exactly the next seq.
   */
  function replay(socket, callId) {
    let last = null;
    const out = { applied: 0, gaps: [], stale: 0, lastSeq: null };
    for (const { event, data } of socket.timeline) {
      if (data?.callId !== callId || typeof data.seq !== 'number') continue;
      if (event === 'call_participants') {
        last = data.seq;
        continue;
      }
      if (last === null) continue;
      if (data.seq <= last) out.stale += 1;
      else {
        if (data.seq !== last + 1) out.gaps.push(`${last}→${data.seq}`);
        last = data.seq;
        out.applied += 1;
      }
    }
    out.lastSeq = last;
    return out;
  }

  /** Event delays (receipt − the event's `at`) of the events of `callId` that happened in [from, to]. */
  function delays(sockets, callId, from, to = Infinity) {
    return sockets.flatMap((s) => s.timeline
      .filter((e) => e.data?.callId === callId && e.data.at && Date.parse(e.data.at) >= from && Date.parse(e.data.at) <= to)
      .map((e) => e.t - Date.parse(e.data.at)));
  }

  /** Media toggles through REST every TRAFFIC_PERIOD_MS, round-robin over `users`. */
  function traffic(callId, users) {
    const results = [];
    let stopped = false;
    const loop = (async () => {
      for (let i = 0; !stopped; i += 1) {
        const user = users[i % users.length];
        const value = i % (2 * users.length) < users.length;
        const at = Date.now();
        let res;
        try {
          res = await client.api(user, 'PATCH', `/calls/${callId}/media`, { isMicMuted: value });
        } catch (err) {
          res = { status: 0, body: { code: err.message } };
        }
        results.push({ at, done: Date.now(), user, value, status: res.status, code: res.body?.code });
        await sleep(TRAFFIC_PERIOD_MS);
      }
    })();
    return {
      results,
      failed: (from = 0, to = Infinity) => results.filter((r) => r.status !== 200 && r.at >= from && r.at <= to),
      async stop() {
        stopped = true;
        await loop;
      },
    };
  }

  /** Socket commands (`media_state_changed`) every `periodMs`; answers the acks. */
  function socketTraffic(socket, callId, periodMs = 300) {
    const acks = [];
    let stopped = false;
    const loop = (async () => {
      for (let i = 0; !stopped; i += 1) {
        const at = Date.now();
        try {
          const ack = await client.emit(socket, 'media_state_changed', { callId, isCameraOff: i % 2 === 0 });
          acks.push({ at, ms: Date.now() - at, ok: ack.ok, code: ack.error?.code });
        } catch (err) {
          acks.push({ at, ms: Date.now() - at, ok: false, code: err.message });
        }
        await sleep(periodMs);
      }
    })();
    return { acks, async stop() { stopped = true; await loop; } };
  }

  /** Checks every phone applied every event of the call, none twice, none missing. */
  async function assertAllDelivered(phones, callId, what) {
    const { seq } = await client.getCall(phones[0].user, callId);
    for (const p of phones) {
      await eventually(() => replay(p, callId).lastSeq === seq,
        `${p.user}'s app never caught up with the call after ${what} (at seq ${replay(p, callId).lastSeq}, the call is at ${seq})`, 20_000);
      const r = replay(p, callId);
      assert.deepEqual(r.gaps, [], `${p.user}'s app missed events during ${what}`);
    }
    return seq;
  }

  // ----- the drills ---------------------------------------------------------------------------

  test('the event stream is stored on all three NATS servers', async () => {
    const info = await nats.waitStreamCurrent(stream);
    assert.equal(info.config.num_replicas, 3, `the stream has ${info.config.num_replicas} replicas`);
    assert.ok(info.cluster.leader, 'the stream has no leader');
  });

  test('when a NATS server dies, and then the stream leader, no event is lost, reordered or applied twice, REST never fails and a socket command at most fails retryably', async () => {
    const [alice, bob, carol, dave, erin] = ['alice', 'bob', 'carol', 'dave', 'erin'].map(unique);
    // Two sockets for alice and bob, so both signaling nodes host the call.
    const phones = [await phone(alice), await phone(alice), await phone(bob), await phone(bob), await phone(carol)];
    const call = await client.initiate(alice, [bob, carol], { group: true });
    await client.join(bob, call.id);
    await client.join(carol, call.id);
    for (const p of phones) await follow(p, call.id);
    const erinPhone = await phone(erin);
    const rest = traffic(call.id, [alice, bob]);
    const commands = socketTraffic(phones[4], call.id);
    await sleep(1000);
    const baseline = { from: Date.now() - 1000, to: Date.now() };

    // 1. A server that does not lead the stream.
    const leader = (await nats.streamInfo(stream)).cluster.leader;
    const follower = nats.names.find((n) => n !== leader);
    // The ring of a call started now comes due while the drill runs.
    const ringing = await client.initiate(dave, [erin]);
    const killFollower = Date.now();
    await nats.kill(follower);
    await sleep(3000);
    await nats.start(follower);
    await nats.waitStreamCurrent(stream);
    const followerBack = Date.now();

    // 2. The stream leader: the others elect a new one.
    const oldLeader = (await nats.streamInfo(stream)).cluster.leader;
    const killLeader = Date.now();
    await nats.kill(oldLeader);
    const newLeader = await eventually(async () => {
      const l = (await nats.streamInfo(stream)).cluster?.leader;
      return l && l !== oldLeader && l;
    }, 'the stream never elected a new leader', 30_000);
    const elected = Date.now() - killLeader;
    await sleep(2000);
    await nats.start(oldLeader);
    await nats.waitStreamCurrent(stream);
    const leaderBack = Date.now();
    await sleep(500);
    await rest.stop();
    await commands.stop();

    const finalSeq = await assertAllDelivered(phones, call.id, 'the NATS failures');
    for (const p of phones) {
      const r = replay(p, call.id);
      assert.equal(r.stale, 0, `${p.user}'s app got ${r.stale} events twice or out of order`);
      assert.equal(p.disconnects, 0, `${p.user}'s socket was disconnected by a NATS failure`);
    }
    const restFailures = rest.failed();
    assert.deepEqual(restFailures.map((r) => `${r.status} ${r.code}`), [], 'REST calls failed while NATS servers died');
    // The ring timer fired once: erin's phone stopped ringing once, dave's call ended missed.
    await waitFor(erinPhone, 'incoming_call_cancelled', (e) => e.callId === ringing.id, "erin's phone kept ringing through the NATS failures", TIMERS.ring * 1000 + 15_000);
    const missed = await client.getCall(dave, ringing.id);
    assert.equal(missed.status, 'ended');
    assert.equal(erinPhone.timeline.filter((e) => e.event === 'incoming_call_cancelled' && e.data.callId === ringing.id).length, 1, "erin's phone was told twice to stop ringing");

    const commandFailures = commands.acks.filter((a) => !a.ok);
    const during1 = delays(phones, call.id, killFollower, followerBack);
    const during2 = delays(phones, call.id, killLeader, leaderBack);
    // A socket command in flight through a server that dies is lost (core NATS request/reply is
    // at most once): the app gets DEPENDENCY_UNAVAILABLE after the command timeout and retries,
    // as the contract asks. Anything else, or a failure outside the kills, is a bug.
    const windows = [[killFollower, followerBack], [killLeader, leaderBack]];
    const unexpectedCommands = commandFailures.filter((a) => a.code !== 'DEPENDENCY_UNAVAILABLE' || !windows.some(([from, to]) => a.at >= from && a.at <= to));
    report('nats: kill a server, then the stream leader', {
      requests: rest.results.length,
      requestsFailed: restFailures.length,
      socketCommands: commands.acks.length,
      socketCommandsFailed: commandFailures.length,
      socketCommandMaxMs: Math.max(...commands.acks.map((a) => a.ms)),
      eventsPerApp: finalSeq - (phones[0].timeline.find((e) => e.event === 'call_participants')?.data.seq ?? 0),
      eventsLost: 0,
      eventsDuplicated: 0,
      baselineDelayP50Ms: percentile(delays(phones, call.id, baseline.from, baseline.to), 50),
      serverKilledDelayP50Ms: percentile(during1, 50),
      serverKilledDelayMaxMs: Math.max(0, ...during1),
      leaderKilledDelayP50Ms: percentile(during2, 50),
      leaderKilledDelayMaxMs: Math.max(0, ...during2),
      newStreamLeaderAfterMs: elected,
      newLeader,
    });
    assert.deepEqual(unexpectedCommands, [], 'socket commands failed otherwise than with a retryable DEPENDENCY_UNAVAILABLE during a kill');
    await client.api(alice, 'POST', `/calls/${call.id}/end`);
  });

  test('when the Postgres primary dies, the API answers 503 DEPENDENCY_UNAVAILABLE for a bounded time, then everything continues on the promoted standby with nothing committed lost', async () => {
    const [alice, bob, carol, dave] = ['alice', 'bob', 'carol', 'dave'].map(unique);
    const phones = [await phone(alice), await phone(bob)];
    const call = await client.initiate(alice, [bob]);
    await client.join(bob, call.id);
    for (const p of phones) await follow(p, call.id);
    const carolPhone = await phone(carol);
    const davePhone = await phone(dave);
    const rest = traffic(call.id, [alice, bob]);
    await sleep(1000);

    const primary = pg.primary();
    const standby = pg.nodes.find((n) => n !== primary);
    // A call whose ring timeout comes due during the failover.
    const ringing = await client.initiate(carol, [dave]);
    await follow(carolPhone, ringing.id);
    const killed = Date.now();
    await pg.kill(primary);
    await pg.waitState(standby, ['wait_primary', 'primary'], MAX_DB_OUTAGE_MS);
    const promoted = Date.now() - killed;
    // Until the API answers again, then a few seconds of normal service.
    await eventually(() => rest.results.some((r) => r.at > killed && r.status !== 200) && rest.results.at(-1).status === 200 && rest.results.at(-1).at > killed + promoted,
      'the API never answered again after the failover', MAX_DB_OUTAGE_MS);
    await sleep(2000);
    await rest.stop();

    const after = rest.results.filter((r) => r.at >= killed);
    const failed = rest.failed(killed);
    const unexpected = failed.filter((r) => !(r.status === 503 && r.code === 'DEPENDENCY_UNAVAILABLE'));
    assert.deepEqual(unexpected.map((r) => `${r.status} ${r.code}`), [], 'during the failover the API answered something else than 503 DEPENDENCY_UNAVAILABLE');
    const lastFailure = failed.at(-1);
    const firstOk = after.find((r) => r.status === 200 && r.at > (lastFailure?.done ?? killed));
    const recovered = (firstOk?.done ?? Date.now()) - killed;
    assert.ok(recovered < MAX_DB_OUTAGE_MS, `the API was without a database for ${recovered} ms`);

    // Nothing committed is lost, and every app applied every event exactly once.
    const finalSeq = await assertAllDelivered(phones, call.id, 'the database failover');
    const now = await client.getCall(alice, call.id);
    assert.equal(now.status, 'active', 'the call did not survive the failover');
    for (const user of [alice, bob]) {
      const mine = rest.results.filter((r) => r.user === user);
      const lastOk = mine.findLastIndex((r) => r.status === 200);
      const participant = now.participants.find((p) => p.userId === user);
      assert.equal(participant.status, 'joined', `${user} was dropped from the call by the failover`);
      // A request that failed after the last success may or may not have committed; only a
      // success followed by nothing else is certain.
      if (lastOk === mine.length - 1) assert.equal(participant.isMicMuted, mine[lastOk].value, `${user}'s last acknowledged change was lost in the failover`);
      const lastEvent = phones[0].timeline.filter((e) => e.event === 'participant_media_changed' && e.data.callId === call.id && e.data.userId === user).at(-1);
      assert.equal(lastEvent?.data.isMicMuted, participant.isMicMuted, `the apps show ${user}'s microphone differently from the server`);
    }
    // The ring timer that came due during the failover fired exactly once.
    await waitFor(davePhone, 'incoming_call_cancelled', (e) => e.callId === ringing.id, "dave's phone kept ringing after the failover", 20_000);
    await eventually(async () => (await client.getCall(carol, ringing.id)).status === 'ended', 'the call that rang out during the failover never ended', 20_000);
    await sleep(500);
    assert.equal(davePhone.timeline.filter((e) => e.event === 'incoming_call_cancelled' && e.data.callId === ringing.id).length, 1, "dave's phone was told twice to stop ringing");
    assert.equal(carolPhone.timeline.filter((e) => e.event === 'participant_status_changed' && e.data.callId === ringing.id && e.data.status === 'missed').length, 1, 'the ring timeout fired more than once');
    const ended = await client.getCall(carol, ringing.id);
    assert.ok(ended.participants.every((p) => !['invited', 'ringing'].includes(p.status)), `an ended call still rings someone: ${JSON.stringify(ended.participants)}`);
    // New calls start on the promoted standby.
    const fresh = await client.initiate(dave, [unique('frank')]);
    assert.equal(fresh.status, 'ringing');

    report('postgres: kill the primary', {
      standbyPromotedAfterMs: promoted,
      apiRecoveredAfterMs: recovered,
      requests: after.length,
      requestsFailed: failed.length,
      failedAs503: failed.length - unexpected.length,
      slowest503Ms: Math.max(0, ...failed.map((r) => r.done - r.at)),
      eventsDelayedMaxMs: Math.max(0, ...delays(phones, call.id, killed)),
      eventsLost: 0,
      callSeq: finalSeq,
    });
    await client.api(alice, 'POST', `/calls/${call.id}/end`);
    await client.api(dave, 'POST', `/calls/${fresh.id}/end`);
  });

  test('a rolling restart of every calls-api and signaling replica during calls loses no call, fails no request but a rare keep-alive race, and every app resyncs without a gap', async () => {
    const [alice, bob, carol, dave] = ['alice', 'bob', 'carol', 'dave'].map(unique);
    const apps = { reconnection: true };
    const phones = [await phone(alice, apps), await phone(alice, apps), await phone(bob, apps), await phone(bob, apps), await phone(carol, apps)];
    const call = await client.initiate(alice, [bob, carol, dave], { group: true });
    await client.join(bob, call.id);
    await client.join(carol, call.id);
    for (const p of phones) await follow(p, call.id);
    const rest = traffic(call.id, [alice, bob, carol]);
    const apiUrls = await cluster.apiUrls();
    const signalingUrls = await cluster.signalingUrls();
    const healthy = async (url) => (await fetch(`${url}/healthz`).catch(() => null))?.ok === true;
    const restarts = [];
    // dave never answers: his ring comes due as the first calls-api replica stops.
    const due = Date.parse(call.createdAt) + TIMERS.ring * 1000;
    await sleep(Math.max(0, due - 300 - Date.now()));
    const started = Date.now();

    for (const [name, url] of [['calls-api-1', apiUrls[0]], ['calls-api-2', apiUrls[1]], ['signaling-1', signalingUrls[0]], ['signaling-2', signalingUrls[1]]]) {
      const before = cluster.pids()[name];
      const t = Date.now();
      cluster.kill(name, 'SIGTERM');
      await eventually(async () => cluster.pids()[name] !== before && healthy(url), `${name} did not come back after its restart`, 30_000);
      restarts.push({ name, ms: Date.now() - t });
      // The next replica goes once this one serves again and every app is connected.
      await eventually(() => phones.every((p) => p.connected), 'an app did not reconnect after a restart', 20_000);
    }
    await sleep(1000);
    await rest.stop();

    const finalSeq = await assertAllDelivered(phones, call.id, 'the rolling restart');
    const now = await client.getCall(alice, call.id);
    assert.equal(now.status, 'active', 'the call was lost in the rolling restart');
    for (const user of [alice, bob, carol]) {
      assert.equal(now.participants.find((p) => p.userId === user).status, 'joined', `${user} was dropped from the call by the rolling restart`);
    }
    // dave never answered: his ring timed out exactly once, whichever replica held the timer.
    await eventually(async () => (await client.getCall(alice, call.id)).participants.find((p) => p.userId === dave).status === 'missed',
      'the ring timeout that came due during the restarts never fired', 15_000);
    // An app that re-joined after the timer fired has it in its snapshot instead of an event;
    // between them, the apps saw the event of at most one firing.
    const firings = new Set(phones.flatMap((p) => p.timeline)
      .filter((e) => e.event === 'participant_status_changed' && e.data.callId === call.id && e.data.userId === dave && e.data.status === 'missed')
      .map((e) => e.data.seq));
    assert.ok(firings.size <= 1, `the ring timeout fired more than once (seq ${[...firings]})`);
    const rejoins = phones.flatMap((p) => p.rejoins);
    assert.ok(rejoins.every((r) => r.ok), `an app could not re-join after reconnecting: ${JSON.stringify(rejoins)}`);
    const failed = rest.failed();

    report('rolling restart: 2 calls-api, then 2 signaling', {
      restartsMs: Object.fromEntries(restarts.map((r) => [r.name, r.ms])),
      totalMs: Date.now() - started,
      requests: rest.results.length,
      requestsFailed: failed.length,
      failures: [...new Set(failed.map((r) => `${r.status} ${r.code}`))],
      socketsMoved: phones.reduce((n, p) => n + p.disconnects, 0),
      rejoinMaxMs: Math.max(0, ...rejoins.map((r) => r.ms)),
      rejoinsRefused: phones.flatMap((p) => p.refusals),
      seqGaps: phones.reduce((n, p) => n + replay(p, call.id).gaps.length, 0),
      eventsDelayedMaxMs: Math.max(0, ...delays(phones, call.id, started)),
      callSeq: finalSeq,
    });
    // A calls-api replica that stops closes its idle keep-alive connections; a PATCH the gateway
    // sent on one at that instant is answered 502 BAD_GATEWAY (the gateway replays only
    // idempotent requests, as nginx does). Seen once in nine runs: at most one per calls-api
    // restart, and nothing else.
    const unexpected = failed.filter((r) => !(r.status === 502 && r.code === 'BAD_GATEWAY'));
    assert.deepEqual(unexpected.map((r) => `${r.status} ${r.code}`), [], 'REST calls failed during the rolling restart');
    assert.ok(failed.length <= 2, `${failed.length} REST calls failed with 502 during the rolling restart`);
    await client.api(alice, 'POST', `/calls/${call.id}/end`);
  });
});
