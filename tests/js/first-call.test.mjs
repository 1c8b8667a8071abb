// The newcomer's path, in both topologies: `calls-backend` (what `make run` starts) and
// scripts/cluster.sh (what `make cluster` starts: gateway, 2 calls-api, 2 signaling, media-token on
// Postgres + NATS). Each runs examples/first-call.mjs, the guide's flow with socket.io-client and
// fetch, against the gateway and expects it to finish.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';

import { NatsClient } from './lib/signaling-nats.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN_DIR = process.env.BIN_DIR ?? path.join(ROOT, 'target', 'debug');
const STANDALONE_BIN = path.join(BIN_DIR, 'calls-backend');
const SECRET = 'first-call-test-secret';
const PG_ADMIN = process.env.CALLS_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitHealthy(base, child, deadlineMs = 60_000) {
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

function runExample(base) {
  const out = spawnSync(process.execPath, [path.join(ROOT, 'examples', 'first-call.mjs')], {
    env: { ...process.env, BASE_URL: base, JWT_SECRET: SECRET },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: out.status, output: `${out.stdout}${out.stderr}` };
}

function stop(child) {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

describe('a first call, as the README walks a newcomer through it', () => {
  const cleanups = [];
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });

  test('against make run (one process, SQLite): the example client completes the call and Ctrl-C stops it', { skip: !existsSync(STANDALONE_BIN) && `missing ${STANDALONE_BIN}` }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'calls-first-call-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const port = await freePort();
    const child = spawn(STANDALONE_BIN, ['serve'], {
      cwd: dir,
      env: { ...process.env, GATEWAY_LISTEN: `127.0.0.1:${port}`, JWT_SECRET: SECRET, RUST_LOG: 'warn', DATABASE_URL: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    child.stderr.on('data', (d) => { log += d; });
    cleanups.push(() => stop(child));
    const base = `http://127.0.0.1:${port}`;
    await waitHealthy(base, child);
    const { code, output } = runExample(base);
    assert.equal(code, 0, `the example client failed against make run:\n${output}\nserver log:\n${log}`);
    assert.match(output, /Done: the call flow works end to end/);
    assert.ok(existsSync(path.join(dir, 'data', 'calls.db')), 'the data file should live in ./data/calls.db');
    const exit = await stop(child);
    assert.equal(exit, 0, `calls-backend should exit cleanly on SIGTERM, exited ${exit}:\n${log}`);
  });

  test('against make cluster (2 calls-api, 2 signaling, Postgres, NATS): the same client completes the call', async () => {
    const db = `calls_first_call_${process.pid}_${Date.now()}`;
    const prefix = `t${process.pid}x${Date.now()}`;
    const port = await freePort();
    const logs = mkdtempSync(path.join(os.tmpdir(), 'calls-cluster-test-'));
    cleanups.push(async () => {
      spawnSync('psql', [PG_ADMIN, '-qc', `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`]);
      rmSync(logs, { recursive: true, force: true });
      const nats = await NatsClient.connect();
      await nats.request(`$JS.API.STREAM.DELETE.CALLS_EVENTS_${prefix.toUpperCase()}`, '').catch(() => {});
      nats.close();
    });
    const dbUrl = PG_ADMIN.replace(/\/[^/]*$/, `/${db}`);
    const child = spawn('bash', [path.join(ROOT, 'scripts', 'cluster.sh')], {
      env: {
        ...process.env, BIN_DIR, DATABASE_URL: dbUrl, NATS_SUBJECT_PREFIX: prefix, GATEWAY_LISTEN: `127.0.0.1:${port}`,
        JWT_SECRET: SECRET, RUST_LOG: 'warn', CLUSTER_LOG_DIR: logs,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    child.stderr.on('data', (d) => { log += d; });
    cleanups.push(() => stop(child));
    const base = `http://127.0.0.1:${port}`;
    await waitHealthy(base, child, 120_000);
    const { code, output } = runExample(base);
    assert.equal(code, 0, `the example client failed against make cluster:\n${output}\ncluster output:\n${log}`);
    assert.match(output, /Done: the call flow works end to end/);
    const exit = await stop(child);
    assert.equal(exit, 0, `cluster.sh should stop every child and exit 0 on SIGTERM, exited ${exit}:\n${log}`);
  });
});
