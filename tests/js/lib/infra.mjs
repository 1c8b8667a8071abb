// Private NATS and Postgres servers for the failure tests, which stop and restart them mid-call.
// Each runs on a free port with its data in a temp directory, so stopping it disturbs nobody else;
// `destroy()` stops it for good and removes the directory.

import { spawn, spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { freePort } from './cluster.mjs';

const NATS_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';

/** Resolves once something accepts TCP connections on `port`, polling until `deadlineMs`. */
export async function waitListening(port, what, deadlineMs = 20_000) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A nats-server with JetStream on a free port; its store survives `stop()`/`start()`. */
export async function startNats() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'calls-nats-'));
  const port = await freePort();
  let child = null;
  const server = {
    url: `nats://127.0.0.1:${port}`,
    port,
    async start() {
      if (child) return;
      child = spawn(NATS_BIN, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], { stdio: 'ignore' });
      const started = child;
      started.once('exit', () => { if (child === started) child = null; });
      await waitListening(port, 'nats-server');
    },
    /** Graceful stop (SIGTERM), resolved once the process is gone. */
    async stop() {
      const running = child;
      if (!running) return;
      child = null;
      if (running.exitCode !== null || running.signalCode !== null) return;
      await new Promise((resolve) => {
        running.once('exit', resolve);
        running.kill('SIGTERM');
      });
    },
    async destroy() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await server.start();
  } catch (err) {
    await server.destroy();
    throw err;
  }
  return server;
}

/**
 * A throwaway Postgres cluster (initdb, trust auth, user `postgres`) on a free port. Postgres
 * refuses to run as root, so when the tests run as root it runs as the `postgres` user.
 */
export async function startPostgres() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'calls-pg-'));
  const data = path.join(dir, 'data');
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { uid, gid } = postgresIds();
    chownSync(dir, uid, gid);
  }
  const run = (cmd, args) => {
    const out = asRoot
      ? spawnSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { encoding: 'utf8', timeout: 60_000 })
      : spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
    if (out.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${out.stderr || out.stdout || out.error}`);
    return out;
  };
  let running = false;
  const server = {
    adminUrl: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    async start() {
      if (running) return;
      run('pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-w', '-t', '30', '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`, 'start']);
      running = true;
      await waitListening(port, 'postgres');
    },
    /** Fast shutdown: open connections are closed, as in a database failover. */
    async stop() {
      if (!running) return;
      running = false;
      run('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '30', 'stop']);
    },
    async destroy() {
      try {
        await server.stop();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  try {
    run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
    await server.start();
  } catch (err) {
    await server.destroy().catch(() => {});
    throw err;
  }
  return server;
}

function postgresIds() {
  const out = spawnSync('id', ['postgres'], { encoding: 'utf8' });
  const uid = Number(/uid=(\d+)/.exec(out.stdout ?? '')?.[1]);
  const gid = Number(/gid=(\d+)/.exec(out.stdout ?? '')?.[1]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('running as root needs a `postgres` user to run Postgres as');
  return { uid, gid };
}
