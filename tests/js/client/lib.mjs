// What the @calls-backend/client suites share: the built package (clients/js/dist, made by
// `make client`), deployments of both topologies, and helpers that watch a LiveCall the way an
// app's UI would.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { ROOT, mint } from '../lib/cluster.mjs';

export const CLIENT_DIR = path.join(ROOT, 'clients', 'js');
export const ESM_ENTRY = path.join(CLIENT_DIR, 'dist', 'esm', 'index.js');
export const CJS_ENTRY = path.join(CLIENT_DIR, 'dist', 'cjs', 'index.js');

if (!existsSync(ESM_ENTRY)) {
  throw new Error(`${ESM_ENTRY} is missing: build the client first (make client)`);
}

/** The package as an app imports it (ESM). */
export const sdk = await import(ESM_ENTRY);
/** The same package through `require` (CommonJS). */
export const sdkCjs = createRequire(import.meta.url)(CJS_ENTRY);

/** How long one step may take before a test says what went wrong. */
export const STEP_MS = 10_000;

let counter = 0;
const runTag = `${process.pid.toString(36)}${Date.now().toString(36)}`;
/** A name nobody else in this run uses. */
export const unique = (what) => `${what}-${runTag}-${++counter}`;

/**
 * A client for `user` against `base`, with a getToken that counts its calls and mints what
 * `tokens` says (default: a fresh 10-minute token each time). Closed by `closeAll`.
 */
const open = new Set();
export function clientFor(base, user, { tokens, ...options } = {}) {
  const calls = [];
  const client = new sdk.CallsClient({
    baseUrl: base,
    getToken: ({ forceRefresh }) => {
      calls.push({ forceRefresh });
      return tokens ? tokens(calls.length, forceRefresh) : mint(user);
    },
    ackTimeoutMs: STEP_MS,
    gapTimeoutMs: 500,
    socketOptions: { reconnectionDelay: 100, reconnectionDelayMax: 500 },
    ...options,
  });
  client.tokenRequests = calls;
  client.user = user;
  open.add(client);
  return client;
}

export function closeAll() {
  for (const c of open) c.close();
  open.clear();
}

/** Resolves with the first `event` of `emitter` matching `pred`; fails with `why` after `ms`. */
export function next(emitter, event, why, pred = () => true, ms = STEP_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(why)); }, ms);
    const off = emitter.on(event, (value) => {
      if (!pred(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** Polls `check` until it answers something truthy; fails with `why` after `ms`. */
export async function eventually(check, why, ms = STEP_MS) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) assert.fail(`${why} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Records what a LiveCall did, in order: every applied event and every resync. `assertAccounted`
 * then checks that each `seq` from the start to the end was covered exactly once — by an event
 * applied once, or folded into a snapshot — which is what "no event lost or applied twice" means
 * to an app.
 */
export function watch(live) {
  const log = [{ kind: 'start', seq: live.state.seq }];
  live.on('event', (e) => log.push({ kind: 'event', seq: e.seq, type: e.type }));
  live.on('resync', (r) => log.push({ kind: 'resync', seq: r.toSeq, from: r.fromSeq, reason: r.reason }));
  return {
    log,
    events: () => log.filter((l) => l.kind === 'event'),
    resyncs: () => log.filter((l) => l.kind === 'resync'),
    assertAccounted(what) {
      let seq = log[0].seq;
      for (const entry of log.slice(1)) {
        if (entry.kind === 'event') {
          assert.equal(entry.seq, seq + 1, `${what}: after seq ${seq} the app got event seq ${entry.seq} (${entry.type}); log: ${JSON.stringify(log)}`);
        } else {
          assert.equal(entry.from, seq, `${what}: a resync started from seq ${entry.from}, not ${seq}; log: ${JSON.stringify(log)}`);
          assert.ok(entry.seq > seq, `${what}: a resync went back to seq ${entry.seq}; log: ${JSON.stringify(log)}`);
        }
        seq = entry.seq;
      }
      assert.equal(seq, live.state.seq, `${what}: the log ends at seq ${seq} but the state is at ${live.state.seq}`);
    },
  };
}

/** The app's view of the call equals the server's (GET /calls/:id as the same user). */
export async function assertMatchesServer(client, live, what) {
  const truth = await client.rest.getCall(live.id);
  assert.equal(live.state.seq, truth.seq, `${what}: the app's call is at seq ${live.state.seq}, the server's at ${truth.seq}`);
  assert.deepEqual(live.state, truth, `${what}: the app's call differs from GET /calls/:id`);
}
