// Test harness for signaling: spawn real signaling nodes, a fake calls-api on the test's NATS
// subject prefix, access tokens, a failover TCP proxy, and promise helpers.

import { spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';

import { NatsClient } from './signaling-nats.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SIGNALING_BIN = process.env.SIGNALING_BIN ?? path.resolve(here, '../../../target/debug/signaling');
export const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
export const JWT_SECRET = 'signaling-js-tests-secret-0123456789abcdef';

export function signalingAvailable() {
  return existsSync(SIGNALING_BIN);
}

export function uniquePrefix() {
  return `jstest.${randomUUID().replaceAll('-', '')}`;
}

export function userKey(userId) {
  return Buffer.from(userId, 'utf8').toString('base64url');
}

export function mintToken(sub, { secret = JWT_SECRET, ttlSeconds = 3600 } = {}) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ sub, iat: now, exp: now + ttlSeconds })}`;
  const signature = createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

export async function waitFor(predicate, { timeoutMs = 10000, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Starts a signaling node and waits until /readyz answers 200. */
export async function startSignaling({ prefix, nodeId = `node-${randomUUID().slice(0, 8)}`, env = {} } = {}) {
  const port = await freePort();
  const proc = spawn(SIGNALING_BIN, [], {
    env: {
      PATH: process.env.PATH,
      RUST_LOG: process.env.SIGNALING_RUST_LOG ?? 'warn',
      SIGNALING_LISTEN: `127.0.0.1:${port}`,
      NATS_URL,
      NATS_SUBJECT_PREFIX: prefix,
      SIGNALING_NODE_ID: nodeId,
      JWT_SECRET,
      PRESENCE_HEARTBEAT_SECONDS: '1',
      SIGNALING_COMMAND_TIMEOUT_MS: '1500',
      SIGNALING_EVENTS_PER_SECOND: '1000',
      SIGNALING_EVENTS_BURST: '1000',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  let dead = false;
  exited.then(() => { dead = true; });
  await waitFor(async () => {
    if (dead) throw new Error(`signaling exited at start-up: ${stderr}`);
    try {
      const res = await fetch(`${url}/readyz`);
      return res.status === 200;
    } catch {
      return false;
    }
  }, { timeoutMs: 20000, what: 'signaling /readyz' });
  return {
    url, port, nodeId, proc, exited,
    stderr: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (!dead) proc.kill(signal);
      return exited;
    },
  };
}

/** A TCP proxy that sends each new connection to the first backend that accepts it: a
 * stand-in for the load balancer in front of signaling nodes, and a network that can fail
 * (`cut()` drops every open connection, `refuse(true)` drops new ones until `refuse(false)`). */
export async function startProxy(backendPorts) {
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) { client.destroy(); return; }
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    client.pause();
    const tryBackend = (i) => {
      if (i >= backendPorts.length) { client.destroy(); return; }
      const upstream = net.connect({ host: '127.0.0.1', port: backendPorts[i] });
      upstream.once('error', () => { upstream.destroy(); tryBackend(i + 1); });
      upstream.once('connect', () => {
        upstream.removeAllListeners('error');
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        upstream.setNoDelay(true);
        client.setNoDelay(true);
        client.pipe(upstream);
        upstream.pipe(client);
        upstream.on('close', () => client.destroy());
        client.on('close', () => upstream.destroy());
        client.resume();
      });
    };
    tryBackend(0);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => { for (const s of sockets) s.destroy(); },
    refuse: (on) => { refusing = on; },
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(resolve); }),
  };
}

/** Connects a socket.io-client to /calls and records every event it receives. */
export function connectClient(baseUrl, { token, userId, transports = ['websocket'], auth, extraHeaders, reconnection = false } = {}) {
  const socket = io(`${baseUrl}/calls`, {
    auth: auth !== undefined ? auth : (token || userId) ? { token: token ?? mintToken(userId) } : {},
    transports,
    forceNew: true,
    reconnection,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    extraHeaders,
  });
  socket.received = [];
  socket.onAny((event, data) => socket.received.push({ event, data }));
  return socket;
}

/** How long one step may take before a test fails: generous, for CI machines loaded by builds. */
const STEP_MS = 10_000;

export function onceConnected(socket, timeoutMs = STEP_MS) {
  return new Promise((resolve, reject) => {
    if (socket.connected) return resolve(socket);
    const timer = setTimeout(() => reject(new Error('connect timeout')), timeoutMs);
    socket.once('connect', () => { clearTimeout(timer); resolve(socket); });
    socket.once('connect_error', (err) => { clearTimeout(timer); reject(err); });
  });
}

export function emitAck(socket, event, ...args) {
  return socket.timeout(STEP_MS).emitWithAck(event, ...args);
}

export function nextEvent(socket, event, { timeoutMs = STEP_MS, where = () => true } = {}) {
  const seen = socket.received.find((r) => r.event === event && where(r.data));
  if (seen) return Promise.resolve(seen.data);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.off(event, handler); reject(new Error(`no ${event} event`)); }, timeoutMs);
    const handler = (data) => {
      if (!where(data)) return;
      clearTimeout(timer);
      socket.off(event, handler);
      resolve(data);
    };
    socket.on(event, handler);
  });
}

/** Plays calls-api on one subject prefix: answers commands and presence like the contract says,
 * keeps calls in memory, and publishes the events a real calls-api would. */
export class FakeCallsApi {
  static async start(prefix) {
    const nats = await NatsClient.connect(NATS_URL);
    const fake = new FakeCallsApi(nats, prefix);
    fake.#subs.push(nats.subscribe(`${prefix}.cmd.*`, (m) => fake.#onCommand(m), 'calls-api'));
    fake.#subs.push(nats.subscribe(`${prefix}.presence.*`, (m) => fake.#onPresence(m), 'calls-api'));
    await nats.flush();
    return fake;
  }

  #subs = [];
  calls = new Map();
  presence = [];
  commands = [];
  respondToCommands = true;

  constructor(nats, prefix) {
    this.nats = nats;
    this.prefix = prefix;
  }

  createCall(userIds) {
    const callId = randomUUID();
    const participants = new Map(userIds.map((userId, i) => [userId, {
      userId, role: i === 0 ? 'host' : 'participant', status: i === 0 ? 'joined' : 'invited',
      isMicMuted: false, isCameraOff: false, isSharingScreen: false, isConnected: true,
    }]));
    this.calls.set(callId, { callId, seq: 0, status: 'ringing', participants });
    return callId;
  }

  snapshot(call) {
    return { callId: call.callId, seq: call.seq, status: call.status, participants: [...call.participants.values()] };
  }

  publishCallEvent(callId, event, fields) {
    const call = this.calls.get(callId);
    call.seq += 1;
    const data = { callId, seq: call.seq, at: new Date().toISOString(), ...fields };
    this.publish(`${this.prefix}.evt.call.${callId}`, event, data);
    return data;
  }

  publishUserEvent(userId, event, data) {
    this.publish(`${this.prefix}.evt.user.${userKey(userId)}`, event, data);
  }

  publish(subject, event, data) {
    this.nats.publish(subject, { event, data }, {
      headers: { 'Nats-Msg-Id': randomUUID(), 'X-Created-At': String(Date.now()) },
    });
  }

  #reply(m, body) {
    if (m.reply) this.nats.publish(m.reply, body);
  }

  #onPresence(m) {
    const message = m.json();
    this.presence.push(message);
    if (m.reply) this.#reply(m, { ok: true });
  }

  #onCommand(m) {
    const name = m.subject.slice(`${this.prefix}.cmd.`.length);
    const request = m.json();
    if (name === 'ring_state') {
      // Asked by signaling for every socket that connects (the rings to replay); this fake
      // knows of none. Not a socket command, so not recorded with them.
      if (this.respondToCommands) this.#reply(m, { ok: true, data: { events: [] } });
      return;
    }
    this.commands.push({ name, ...request });
    if (!this.respondToCommands) return;
    const { userId, payload } = request;
    const call = this.calls.get(payload.callId);
    if (!call) return this.#reply(m, { ok: false, error: { code: 'CALL_NOT_FOUND', message: 'Call not found' } });
    let participant = call.participants.get(userId);
    switch (name) {
      case 'join_call': {
        if (!participant || participant.status !== 'joined') {
          participant = { ...(participant ?? { userId, role: 'participant', isMicMuted: false, isCameraOff: false, isSharingScreen: false }), status: 'joined', isConnected: true };
          call.participants.set(userId, participant);
          call.status = 'active';
          this.publishCallEvent(call.callId, 'participant_joined', { participant });
        }
        return this.#reply(m, { ok: true, data: this.snapshot(call) });
      }
      case 'leave_call': {
        if (participant) {
          participant.status = 'left';
          this.publishCallEvent(call.callId, 'participant_left', { userId, reason: 'left' });
        }
        return this.#reply(m, { ok: true, data: null });
      }
      case 'media_state_changed': {
        if (!participant || participant.status !== 'joined') {
          return this.#reply(m, { ok: false, error: { code: 'NOT_JOINED', message: 'You have not joined this call' } });
        }
        for (const k of ['isMicMuted', 'isCameraOff', 'isSharingScreen']) if (typeof payload[k] === 'boolean') participant[k] = payload[k];
        const { isMicMuted, isCameraOff, isSharingScreen } = participant;
        this.publishCallEvent(call.callId, 'participant_media_changed', { userId, isMicMuted, isCameraOff, isSharingScreen });
        return this.#reply(m, { ok: true, data: participant });
      }
      case 'call_status_changed': {
        if (participant) participant.status = payload.status;
        this.publishCallEvent(call.callId, 'participant_status_changed', { userId, status: payload.status, reason: payload.reason ?? null });
        return this.#reply(m, { ok: true, data: participant ?? null });
      }
      default:
        return this.#reply(m, { ok: false, error: { code: 'VALIDATION_FAILED', message: 'unknown command' } });
    }
  }

  /** Stops answering: from now on requests get "no responders". */
  async stop() {
    for (const s of this.#subs.splice(0)) s.unsubscribe();
    await this.nats.flush();
  }

  close() {
    this.nats.close();
  }
}
