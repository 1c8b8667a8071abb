// Starts the backend the way a newcomer or an SRE does, for tests that drive it only from outside:
// `calls-backend serve` (make run) or scripts/cluster.sh (make cluster: gateway, 2 calls-api,
// 2 signaling, media-token on Postgres + NATS). Each start gets its own database, NATS subject prefix,
// port and temp directory, removed by stop().

import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { NatsClient } from './signaling-nats.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN_DIR = process.env.BIN_DIR ?? path.join(ROOT, 'target', 'debug');
export const STANDALONE_BIN = path.join(BIN_DIR, 'calls-backend');
export const SECRET = 'cluster-test-secret-0123456789abcdef';
const PG_ADMIN = process.env.CALLS_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A development HS256 access token for `sub`, signed with the secret the test backends use. */
export function mint(sub, ttlSeconds = 600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttlSeconds })}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function waitHealthy(base, child, deadlineMs = 60_000) {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`the backend exited with ${child.exitCode} before answering /healthz`);
    try {
      const res = await fetch(`${base}/healthz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${base}/healthz did not answer within ${deadlineMs} ms`);
}

function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

/** `make run`: one process, SQLite in a temp directory. */
export async function startStandalone(extraEnv = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'calls-standalone-'));
  const [port, adminPort] = [await freePort(), await freePort()];
  const child = spawn(STANDALONE_BIN, ['serve'], {
    cwd: dir,
    env: {
      ...process.env, GATEWAY_LISTEN: `127.0.0.1:${port}`, GATEWAY_ADMIN_LISTEN: `127.0.0.1:${adminPort}`, JWT_SECRET: SECRET, RUST_LOG: 'warn', DATABASE_URL: '', ...extraEnv,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const base = `http://127.0.0.1:${port}`;
  await waitHealthy(base, child);
  return {
    base, dir, log: () => log,
    /** The gateway's admin listener (`/metrics` of the whole process). */
    adminUrl: `http://127.0.0.1:${adminPort}`,
    async stop() {
      const code = await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

/**
 * `make cluster`: separate processes on Postgres + NATS.
 *
 * By default the machine's Postgres (`CALLS_TEST_POSTGRES_URL`) and NATS (`NATS_URL`) are used;
 * `postgresAdminUrl` / `natsUrl` point the cluster (and its clean-up) at other servers, such as
 * the ones the failure tests start and stop (lib/infra.mjs). `NATS_URL` in `extraEnv` is honoured
 * for the clean-up too.
 */
export async function startCluster(extraEnv = {}, { postgresAdminUrl = PG_ADMIN, natsUrl = extraEnv.NATS_URL ?? process.env.NATS_URL } = {}) {
  const db = `calls_js_${process.pid}_${Date.now()}`;
  const prefix = `t${process.pid}x${Date.now()}`;
  const [port, adminPort] = [await freePort(), await freePort()];
  const logs = mkdtempSync(path.join(os.tmpdir(), 'calls-cluster-test-'));
  // Keeps the query (`target_session_attrs=read-write` on a replicated Postgres).
  const dbUrl = postgresAdminUrl.replace(/\/[^/?]*(\?[^/]*)?$/, `/${db}$1`);
  const child = spawn('bash', [path.join(ROOT, 'scripts', 'cluster.sh')], {
    env: {
      ...process.env, BIN_DIR, DATABASE_URL: dbUrl, NATS_SUBJECT_PREFIX: prefix, GATEWAY_LISTEN: `127.0.0.1:${port}`, GATEWAY_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
      JWT_SECRET: SECRET, RUST_LOG: 'warn', CLUSTER_LOG_DIR: logs, ...(natsUrl ? { NATS_URL: natsUrl } : {}), ...extraEnv,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const base = `http://127.0.0.1:${port}`;
  const cleanup = async () => {
    spawnSync('psql', [postgresAdminUrl, '-qc', `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`], { timeout: 30_000 });
    rmSync(logs, { recursive: true, force: true });
    // The stream goes with the prefix; a NATS that is gone takes its streams with it.
    try {
      const nats = await NatsClient.connect(natsUrl);
      await nats.request(`$JS.API.STREAM.DELETE.CALLS_EVENTS_${prefix.toUpperCase()}`, '').catch(() => {});
      nats.close();
    } catch {
      // NATS is not reachable: nothing to delete there.
    }
  };
  try {
    await waitHealthy(base, child, 120_000);
  } catch (err) {
    await stopChild(child);
    await cleanup();
    throw new Error(`${err.message}\ncluster output:\n${log}`);
  }
  const bannerUrls = async (service) => {
    const until = Date.now() + 10_000;
    for (;;) {
      const line = log.split('\n').find((l) => l.trim().startsWith(`${service} `));
      if (line || Date.now() > until) return line ? line.trim().split(/\s+/).slice(1) : [];
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return {
    base, logs, db, prefix, log: () => log,
    /** The gateway's admin listener (its `/metrics`). */
    adminUrl: `http://127.0.0.1:${adminPort}`,
    /** Process ids by service name (`calls-api-1`, `signaling-2`, ...). */
    pids() {
      return Object.fromEntries(readFileSync(path.join(logs, 'pids'), 'utf8').trim().split('\n')
        .map((line) => line.split(' ')).map(([name, pid]) => [name, Number(pid)]));
    },
    /** The signaling nodes' own URLs, in start order (`signaling-1` first), from the banner
     * (printed right after the gateway turns healthy). */
    async signalingUrls() {
      return bannerUrls('signaling');
    },
    /** The calls-api replicas' own URLs (for the internal membership API), from the banner. */
    async apiUrls() {
      return bannerUrls('calls-api');
    },
    /** The notifier replicas' own URLs (for the internal webhooks API), from the banner. */
    async notifierUrls() {
      return bannerUrls('notifier');
    },
    /** The cluster's database, for a process a test starts beside the cluster's own. */
    dbUrl,
    kill(name, signal = 'SIGKILL') {
      process.kill(this.pids()[name], signal);
    },
    async stop() {
      const code = await stopChild(child);
      await cleanup();
      return code;
    },
  };
}

/** Runs examples/first-call.mjs against `base`. */
export function runExample(base) {
  const out = spawnSync(process.execPath, [path.join(ROOT, 'examples', 'first-call.mjs')], {
    env: { ...process.env, BASE_URL: base, JWT_SECRET: SECRET },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: out.status, output: `${out.stdout}${out.stderr}` };
}
