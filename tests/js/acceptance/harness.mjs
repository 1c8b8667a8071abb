// What the acceptance scenarios use to act like the apps: fetch for REST and the official
// socket.io-client for the `/calls` namespace, both only through the gateway (`base`).

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

import { mint } from '../lib/cluster.mjs';

const require = createRequire(import.meta.url);
const { io } = require('socket.io-client');

/** How long one step (an event, an answer) may take before the test says what went wrong. */
export const STEP_MS = 10_000;

// Test values of the right shape (32 hex characters each); never a real Agora project.
export const AGORA_APP_ID = '0123456789abcdef0123456789abcdef';
export const AGORA_APP_CERTIFICATE = 'fedcba9876543210fedcba9876543210';
/** The secret Agora's Notification Center signs its notices with (`AGORA_NCS_SECRET`). */
export const NCS_SECRET = 'acceptance-ncs-secret-6d21f0';

/** Short timers, so the server-side rules can be watched in seconds. */
// 16 seats and up to 40 people rung: big enough for a room of 30 ringing 29 (CONTRACT section 10).
export const TIMERS = { ring: 4, grace: 2, maxDuration: 20, heartbeat: 1, maxParticipants: 16, maxInvitees: 40, alone: 5 };

/** The environment both topologies run with. */
export function topologyEnv(extra = {}) {
  return {
    AGORA_APP_ID,
    AGORA_APP_CERTIFICATE,
    AGORA_TOKEN_TTL_SECONDS: '900',
    CALL_RING_TIMEOUT_SECONDS: String(TIMERS.ring),
    CALL_DISCONNECT_GRACE_SECONDS: String(TIMERS.grace),
    CALL_MAX_DURATION_SECONDS: String(TIMERS.maxDuration),
    CALL_MAX_PARTICIPANTS: String(TIMERS.maxParticipants),
    CALL_MAX_INVITEES: String(TIMERS.maxInvitees),
    CALL_ALONE_TIMEOUT_SECONDS: String(TIMERS.alone),
    PRESENCE_HEARTBEAT_SECONDS: String(TIMERS.heartbeat),
    // Every request of the suite comes from 127.0.0.1: the per-IP limit would only measure the
    // suite. The per-user initiate limit stays at its default and is tested.
    RATE_LIMIT_PER_IP_PER_MINUTE: '0',
    ...extra,
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns something truthy; fails with `why` after `ms`. */
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
    await sleep(100);
  }
}

let counter = 0;
const runTag = `${process.pid.toString(36)}${Date.now().toString(36)}`;
/** A name nobody else in this run uses (users, rooms). */
export const unique = (what) => `${what}-${runTag}-${++counter}`;

/** A client of one deployment: REST and sockets through the gateway at `base`. */
export class Client {
  constructor(base) {
    this.base = base;
    this.sockets = new Set();
  }

  /** One REST call as `user` (a user id, or `null` for no token); answers {status, body, headers}. */
  async api(user, method, route, body, headers = {}) {
    const h = { ...headers };
    if (user) h.authorization = `Bearer ${mint(user)}`;
    let payload;
    if (body !== undefined) {
      payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
      if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
    }
    const res = await fetch(`${this.base}/api/v1${route}`, { method, headers: h, body: payload });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, body: json, text, headers: res.headers };
  }

  /** Starts a call and checks it was created; answers the Call. */
  async initiate(caller, invitees, { room = unique('room'), type = 'video', group = invitees.length > 1, ...rest } = {}) {
    const res = await this.api(caller, 'POST', `/calls/rooms/${room}/initiate`, { type, isGroupCall: group, inviteUserIds: invitees, ...rest });
    assert.equal(res.status, 201, `${caller} could not start a call: ${res.status} ${res.text}`);
    return res.body.data;
  }

  async join(user, callId, body = {}) {
    const res = await this.api(user, 'POST', `/calls/${callId}/join`, body);
    assert.equal(res.status, 200, `${user} could not answer the call: ${res.status} ${res.text}`);
    return res.body.data;
  }

  async getCall(user, callId) {
    const res = await this.api(user, 'GET', `/calls/${callId}`);
    assert.equal(res.status, 200, `${user} could not see the call: ${res.status} ${res.text}`);
    return res.body.data;
  }

  /** A socket of `user` on `/calls`, connected; every event it gets is kept in `socket.seen`. */
  async connect(user, { transports = ['websocket'], reconnection = false, auth, extraHeaders } = {}) {
    const socket = this.socket(user, { transports, reconnection, auth, extraHeaders });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${user}'s app could not connect its socket`)), STEP_MS);
      socket.once('connect', () => { clearTimeout(timer); resolve(); });
      socket.once('connect_error', (err) => { clearTimeout(timer); reject(new Error(`${user}'s socket was refused: ${err.message}`)); });
    });
    return socket;
  }

  /** A socket, not yet connected (for handshake failures). */
  socket(user, { transports = ['websocket'], reconnection = false, auth, extraHeaders, ...options } = {}) {
    const socket = io(`${this.base}/calls`, {
      auth: auth ?? (user ? { token: mint(user) } : {}),
      transports,
      reconnection,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      forceNew: true,
      extraHeaders,
      ...options,
    });
    socket.user = user;
    socket.seen = [];
    socket.onAny((event, data) => socket.seen.push({ event, data }));
    this.sockets.add(socket);
    return socket;
  }

  /** Emits with an ack; answers the ack (`{ok, data}` or `{ok: false, error}`). */
  async emit(socket, event, payload) {
    return socket.timeout(STEP_MS).emitWithAck(event, payload);
  }

  /** `join_call` through the socket; checks it worked and answers the snapshot. */
  async follow(socket, callId) {
    const ack = await this.emit(socket, 'join_call', { callId });
    assert.equal(ack.ok, true, `${socket.user}'s app could not follow the call: ${JSON.stringify(ack)}`);
    return ack.data;
  }

  closeAll() {
    for (const s of this.sockets) s.close();
    this.sockets.clear();
  }
}

/**
 * Waits for `event` matching `pred` on `socket` (already received, or coming); fails with
 * `why` and what the socket did see.
 */
export function waitFor(socket, event, pred, why, ms = STEP_MS) {
  const hit = socket.seen.find((e) => e.event === event && pred(e.data));
  if (hit) return Promise.resolve(hit.data);
  return new Promise((resolve, reject) => {
    const listener = (name, data) => {
      if (name === event && pred(data)) {
        clearTimeout(timer);
        socket.offAny(listener);
        resolve(data);
      }
    };
    const timer = setTimeout(() => {
      socket.offAny(listener);
      reject(new Error(`${why} (${socket.user}'s socket saw: ${socket.seen.map((e) => e.event).join(', ') || 'nothing'})`));
    }, ms);
    socket.onAny(listener);
  });
}

/** Events of `callId` a socket received, by name (all names when `name` is omitted). */
export function eventsOf(socket, callId, name) {
  return socket.seen.filter((e) => e.data?.callId === callId && (!name || e.event === name)).map((e) => ({ event: e.event, ...e.data }));
}

/** Checks the call events a socket got have strictly increasing `seq`. */
export function assertInOrder(socket, callId, what = 'events') {
  const seqs = eventsOf(socket, callId).filter((e) => typeof e.seq === 'number' && e.event !== 'call_participants').map((e) => e.seq);
  for (let i = 1; i < seqs.length; i += 1) {
    assert.ok(seqs[i] > seqs[i - 1], `${socket.user}'s app got ${what} out of order or twice: seq ${seqs.join(', ')}`);
  }
}

/** Gives the server a moment to do something it must not do; bounded and short. */
export function quietPeriod(ms = 500) {
  return sleep(ms);
}
