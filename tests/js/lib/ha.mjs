// Clustered engines for the high-availability drills (`make test-ha`): a 3-node NATS cluster with
// JetStream, and a pg_auto_failover formation (monitor, primary, synchronous standby). Everything
// runs on free loopback ports with its data in a temp directory; `destroy()` stops every process
// it started (also the ones a drill killed and restarted) and removes the directory. Nothing here
// touches the machine's shared Postgres or NATS.

import { spawn, spawnSync } from 'node:child_process';
import { chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { freePort } from './cluster.mjs';
import { waitListening } from './infra.mjs';
import { NatsClient } from './signaling-nats.mjs';

const NATS_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';
const PG_AUTOCTL = process.env.PG_AUTOCTL_BIN ?? 'pg_autoctl';
const PG_BINDIR = process.env.PG_BINDIR ?? '/usr/lib/postgresql/15/bin';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it answers something truthy; throws `why` after `ms`. */
async function until(check, why, ms) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${why} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(100);
  }
}

// The engines run in process groups of their own (so a drill can kill a node with everything it
// started); should this process die without its `after` hooks, they go with it anyway.
const spawned = new Set();
process.on('exit', () => {
  for (const child of spawned) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

function track(child) {
  spawned.add(child);
  child.once('exit', () => spawned.delete(child));
  return child;
}

/** Kills a process group (the child was spawned `detached`, so it leads one). */
function killGroup(child, signal) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

function exited(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', resolve));
}

// ----- NATS ----------------------------------------------------------------------------------

/**
 * A NATS cluster of `size` servers (`ha-nats-1`…), JetStream on each, routes between all.
 * Answers `{url, urls, names, jetstream(subject, body), streamInfo(name), kill(name),
 * start(name), destroy()}`; `url` is every client URL joined by commas, as NATS_URL takes it.
 */
export async function startNatsCluster(size = 3) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'calls-ha-nats-'));
  const nodes = [];
  for (let i = 1; i <= size; i += 1) {
    nodes.push({ name: `ha-nats-${i}`, port: await freePort(), clusterPort: await freePort(), store: path.join(dir, `n${i}`), child: null });
  }
  const routes = nodes.map((n) => `nats://127.0.0.1:${n.clusterPort}`).join(',');
  const byName = (name) => {
    const node = nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no NATS server named ${name}`);
    return node;
  };
  const launch = async (node) => {
    node.child = track(spawn(NATS_BIN, [
      '-a', '127.0.0.1', '-p', String(node.port), '-n', node.name, '-js', '-sd', node.store,
      '--cluster_name', 'calls-ha', '--cluster', `nats://127.0.0.1:${node.clusterPort}`, '--routes', routes,
    ], { stdio: 'ignore', detached: true }));
    await waitListening(node.port, node.name);
  };

  /** A JetStream API request through any live server; answers the parsed reply. */
  const jetstream = async (subject, body = '') => {
    let lastError;
    for (const node of nodes.filter((n) => n.child && n.child.exitCode === null && n.child.signalCode === null)) {
      let client;
      try {
        client = await NatsClient.connect(`nats://127.0.0.1:${node.port}`);
        const reply = await client.request(subject, typeof body === 'string' ? body : JSON.stringify(body), 3000);
        return reply.json();
      } catch (err) {
        lastError = err;
      } finally {
        client?.close();
      }
    }
    throw lastError ?? new Error('no NATS server is running');
  };

  const cluster = {
    url: nodes.map((n) => `nats://127.0.0.1:${n.port}`).join(','),
    urls: nodes.map((n) => `nats://127.0.0.1:${n.port}`),
    names: nodes.map((n) => n.name),
    jetstream,
    async streamInfo(stream) {
      const info = await jetstream(`$JS.API.STREAM.INFO.${stream}`);
      if (info.error) throw new Error(`stream info ${stream}: ${JSON.stringify(info.error)}`);
      return info;
    },
    /** SIGKILL: the server vanishes without telling its routes or clients. */
    async kill(name) {
      const node = byName(name);
      killGroup(node.child, 'SIGKILL');
      await exited(node.child);
      node.child = null;
    },
    /** Starts a killed server again on its store; resolves once it listens. */
    async start(name) {
      await launch(byName(name));
    },
    /** Waits until every replica of `stream` is current (caught up with its leader). */
    async waitStreamCurrent(stream, ms = 30_000) {
      return until(async () => {
        const info = await cluster.streamInfo(stream);
        const replicas = info.cluster?.replicas ?? [];
        return info.cluster?.leader && replicas.length === size - 1 && replicas.every((r) => r.current && !r.offline) && info;
      }, `the replicas of ${stream} never caught up`, ms);
    },
    async destroy() {
      for (const node of nodes) killGroup(node.child, 'SIGKILL');
      await Promise.all(nodes.map((n) => exited(n.child)));
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    for (const node of nodes) await launch(node);
    // JetStream is usable once the meta group has a leader and every server: prove it with a
    // replicated stream of our own.
    await until(async () => {
      const created = await jetstream('$JS.API.STREAM.CREATE.HA_PROBE', { name: 'HA_PROBE', subjects: ['ha.probe'], num_replicas: size, storage: 'memory' });
      if (created.error) throw new Error(created.error.description);
      return true;
    }, 'the NATS cluster never formed a JetStream meta group', 30_000);
    await jetstream('$JS.API.STREAM.DELETE.HA_PROBE');
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}

// ----- Postgres (pg_auto_failover) -------------------------------------------------------------

/**
 * Monitor tuning for a drill that should fail over in seconds, not the production defaults'
 * ~30 s: the monitor checks each node every second and declares it dead after 2 s, and it waits
 * 2 s for an unreachable primary to demote itself before promoting the standby.
 */
const MONITOR_SETTINGS = {
  'pgautofailover.health_check_period': '1000',
  'pgautofailover.health_check_timeout': '1000',
  'pgautofailover.health_check_max_retries': '1',
  'pgautofailover.health_check_retry_delay': '500',
  'pgautofailover.node_considered_unhealthy_timeout': '2000',
  'pgautofailover.primary_demote_timeout': '2000',
  'pgautofailover.startup_grace_period': '1000',
};

function postgresIds() {
  const out = spawnSync('id', ['postgres'], { encoding: 'utf8' });
  const uid = Number(/uid=(\d+)/.exec(out.stdout ?? '')?.[1]);
  const gid = Number(/gid=(\d+)/.exec(out.stdout ?? '')?.[1]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('running as root needs a `postgres` user to run Postgres as');
  return { uid, gid };
}

function psql(url, sql) {
  const out = spawnSync('psql', [url, '-XAtqc', sql], { encoding: 'utf8', timeout: 10_000 });
  if (out.status !== 0) throw new Error(`psql: ${(out.stderr || out.error?.message || '').trim()}`);
  return out.stdout.trim();
}

/**
 * A pg_auto_failover formation: a monitor and two Postgres nodes, the second a synchronous
 * standby of the first. Answers `{url(db), adminUrl, nodes, state(), primary(), kill(name),
 * destroy()}`; `url(db)` is the multi-host URL with `target_session_attrs=read-write` a service
 * connects with.
 */
export async function startPgFormation() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'calls-ha-pg-'));
  const ids = process.getuid?.() === 0 ? postgresIds() : null;
  const owned = (p) => {
    mkdirSync(p, { recursive: true });
    if (ids) chownSync(p, ids.uid, ids.gid);
    return p;
  };
  owned(dir);
  const env = {
    ...process.env,
    HOME: dir,
    // pg_autoctl keeps its state under the XDG directories, keyed by PGDATA: per formation.
    XDG_CONFIG_HOME: owned(path.join(dir, 'config')),
    XDG_DATA_HOME: owned(path.join(dir, 'data')),
    XDG_RUNTIME_DIR: owned(path.join(dir, 'run')),
    PG_REGRESS_SOCK_DIR: dir,
    PGHOST: dir,
    PATH: `${PG_BINDIR}:${process.env.PATH}`,
  };
  const processes = new Map();
  const logOf = (name) => path.join(dir, `${name}.log`);
  const run = (name, args) => {
    const log = openSync(logOf(name), 'a');
    const child = track(spawn(PG_AUTOCTL, args, {
      env, cwd: dir, stdio: ['ignore', log, log], detached: true, ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
    }));
    closeSync(log);
    processes.set(name, child);
    return child;
  };
  const common = ['--auth', 'trust', '--no-ssl', '--pgctl', path.join(PG_BINDIR, 'pg_ctl')];
  const monitorPort = await freePort();
  const monitorAdmin = `postgres://postgres@127.0.0.1:${monitorPort}/pg_auto_failover`;
  const nodes = [];
  for (let i = 1; i <= 2; i += 1) nodes.push({ name: `node${i}`, port: await freePort() });
  const state = () => {
    const rows = psql(monitorAdmin, 'SELECT nodename, reportedstate, goalstate FROM pgautofailover.node ORDER BY nodeid');
    return rows ? rows.split('\n').map((line) => {
      const [name, reported, goal] = line.split('|');
      return { name, reported, goal };
    }) : [];
  };
  const hosts = nodes.map((n) => `127.0.0.1:${n.port}`).join(',');
  const formation = {
    nodes: nodes.map((n) => n.name),
    /** The URL of database `db` as a service gets it: every host, primary required. */
    url: (db) => `postgres://postgres@${hosts}/${db}?target_session_attrs=read-write`,
    adminUrl: `postgres://postgres@${hosts}/postgres?target_session_attrs=read-write`,
    state,
    /** The last lines pg_autoctl logged for `name` (`monitor`, `node1`, …), for failure reports. */
    log(name, lines = 30) {
      try {
        return readFileSync(logOf(name), 'utf8').trim().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
    /** The node the monitor has as primary (or on its way to it). */
    primary() {
      return state().find((n) => ['primary', 'wait_primary', 'single'].includes(n.goal))?.name;
    },
    /** SIGKILL every process of a node (keeper and Postgres): the machine died. */
    async kill(name) {
      const child = processes.get(name);
      killGroup(child, 'SIGKILL');
      await exited(child);
      processes.delete(name);
    },
    /** Waits until the monitor reports `name` in `states` (reported and goal). */
    async waitState(name, states, ms = 60_000) {
      return until(() => state().some((n) => n.name === name && states.includes(n.reported) && n.reported === n.goal),
        `${name} never reached ${states.join('/')} (${JSON.stringify(state())})`, ms);
    },
    async destroy() {
      for (const child of processes.values()) killGroup(child, 'SIGTERM');
      const stopped = Promise.all([...processes.values()].map(exited));
      const timeout = sleep(15_000).then(() => { for (const child of processes.values()) killGroup(child, 'SIGKILL'); });
      await Promise.race([stopped, timeout]);
      for (const child of processes.values()) killGroup(child, 'SIGKILL');
      await Promise.all([...processes.values()].map(exited));
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    run('monitor', ['create', 'monitor', '--pgdata', path.join(dir, 'monitor'), '--pgport', String(monitorPort),
      '--hostname', '127.0.0.1', ...common, '--run']);
    await until(() => psql(monitorAdmin, "SELECT extversion FROM pg_extension WHERE extname = 'pgautofailover'"),
      'the pg_auto_failover monitor never came up', 60_000);
    for (const [key, value] of Object.entries(MONITOR_SETTINGS)) psql(monitorAdmin, `ALTER SYSTEM SET ${key} = '${value}'`);
    psql(monitorAdmin, 'SELECT pg_reload_conf()');
    const monitorUri = `postgres://autoctl_node@127.0.0.1:${monitorPort}/pg_auto_failover?sslmode=disable`;
    for (const node of nodes) {
      run(node.name, ['create', 'postgres', '--pgdata', path.join(dir, node.name), '--pgport', String(node.port),
        '--listen', '127.0.0.1', '--hostname', '127.0.0.1', '--name', node.name, ...common, '--monitor', monitorUri, '--run']);
      await formation.waitState(node.name, node === nodes[0] ? ['single', 'primary', 'wait_primary'] : ['secondary']);
    }
    await formation.waitState(nodes[0].name, ['primary']);
  } catch (err) {
    const logs = ['monitor', ...nodes.map((n) => n.name)].map((n) => `--- ${n}\n${formation.log(n)}`).join('\n');
    await formation.destroy();
    throw new Error(`${err.message}\n${logs}`);
  }
  return formation;
}
