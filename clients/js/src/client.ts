/**
 * The client: REST (typed, one method per endpoint), one Socket.IO connection that heals itself
 * (token refresh, re-join after every reconnect), the followed calls ({@link LiveCall}), media
 * sessions kept valid, and ringing from the socket and from pushes deduplicated into one stream.
 */
import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';

import { Emitter } from './emitter.js';
import { CallsApiError, isCallsApiError } from './errors.js';
import { LiveCall, mediaTimeOf, type CallLink, type ResyncReason } from './live-call.js';
import { ManagedMediaSession, type MediaSessionOptions } from './media.js';
import { parseCallPush, type CallPush, type MissedCallPush, type PushTransport } from './push.js';
import { RestClient, type FetchLike, type InitiateResult, type RequestOptions } from './rest.js';
import { decodeJwtClaims, tokenExpiry, TokenSource, type GetToken } from './tokens.js';
import type {
  Call,
  CallEndedEvent,
  CallHistoryPage,
  CallSnapshot,
  CallType,
  Caller,
  Device,
  IncomingCallEvent,
  InitiateCallBody,
  JoinCallBody,
  MediaSession,
  MediaStateBody,
  Participant,
  RegisterDeviceBody,
  RingStopReason,
  ServerErrorEvent,
  UpdateStatusBody,
} from './types.js';

export interface CallsClientOptions {
  /** The gateway, e.g. `https://calls.example.com` (REST under `/api/v1`, Socket.IO at `/calls`). */
  baseUrl: string;
  /** Supplies the access token; called again with `forceRefresh: true` when it was refused or is about to expire. */
  getToken: GetToken;
  /** `fetch` to use (default: the global one). */
  fetch?: FetchLike;
  /** REST request timeout (default 15 000 ms). */
  requestTimeoutMs?: number;
  /** Socket ack timeout, and how long {@link CallsClient.follow} waits for a connection (default 10 000 ms). */
  ackTimeoutMs?: number;
  /**
   * Replace the socket this many seconds before the token's `exp` (default 60; `false`: only
   * when the server asks). The new socket connects and re-joins before the old one closes, so
   * nobody sees you disconnect.
   */
  refreshBeforeExpirySeconds?: number | false;
  /** How long a gap in a call's `seq` may stay open before a fresh snapshot is fetched (default 2000 ms). */
  gapTimeoutMs?: number;
  /** Your user id, for {@link LiveCall.self}; default: the token's `userIdClaim` claim. */
  userId?: string;
  /** The claim that holds the user id, as the server's `JWT_USER_CLAIM` (default `sub`). */
  userIdClaim?: string;
  /**
   * This install's id, as registered with {@link CallsClient.registerDevice}: sent in the socket
   * handshake and as `X-Device-Id` when answering or declining, so this phone is not told the
   * call was answered "elsewhere" and gets no push to stop ringing.
   */
  deviceId?: string;
  /** Extra socket.io-client options (e.g. `reconnectionDelayMax`). `auth` and `forceNew` are the client's. */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
}

export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'reconnecting';

/** Where a ring came from. */
export type RingSource = 'socket' | PushTransport;

/** A call ringing for you, from the socket or a push, whichever came first (once per ring). */
export interface IncomingCall {
  callId: string;
  chatRoomId: string;
  callType: CallType;
  isGroupCall: boolean;
  from: Caller;
  /** RFC 3339, from pushes; `null` from the socket. */
  ringDeadline: string | null;
  /** The whole call, from the socket; `null` from pushes. */
  call: Call | null;
  source: RingSource;
}

/** Ringing stopped: answered or declined on another device, cancelled, missed. */
export interface RingStopped {
  callId: string;
  reason: RingStopReason;
  source: RingSource;
}

export type CallsClientEvents = {
  connection: (state: ConnectionState) => void;
  incoming_call: (call: IncomingCall) => void;
  incoming_call_cancelled: (stopped: RingStopped) => void;
  /** A call you were in or invited to ended (followed or not); once per call. */
  call_ended: (event: CallEndedEvent) => void;
  /** From an FCM `missed_call` data message passed to {@link CallsClient.receivePush}. */
  missed_call: (push: MissedCallPush) => void;
  /** Connection trouble (refused token, `getToken` failing) and server `error` events not about a followed call. */
  error: (error: CallsApiError) => void;
};

const DEFAULTS = { requestTimeoutMs: 15_000, ackTimeoutMs: 10_000, refreshBeforeExpirySeconds: 60, gapTimeoutMs: 2_000 };
/** How long ring and end records are kept for de-duplication. */
const MEMORY_MS = 60 * 60 * 1000;

function isBag(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function toError(err: unknown): CallsApiError {
  if (err instanceof CallsApiError) return err;
  return new CallsApiError({ status: 0, code: 'NETWORK_ERROR', message: err instanceof Error ? err.message : String(err), cause: err });
}

/** Swallows a rejection whose error is reported elsewhere. */
function quiet(p: Promise<unknown>): void {
  p.catch(() => {});
}

export class CallsClient extends Emitter<CallsClientEvents> {
  /** The REST client, also for endpoints newer than this package (`client.rest.request(...)`). */
  readonly rest: RestClient;
  private readonly base: string;
  private readonly tokens: TokenSource;
  private readonly opts: Required<Pick<CallsClientOptions, 'requestTimeoutMs' | 'ackTimeoutMs' | 'gapTimeoutMs'>> & CallsClientOptions;
  private socket: Socket | null = null;
  /** The replacement socket while the token is being rotated. */
  private next: Socket | null = null;
  private readonly tokenOf = new WeakMap<Socket, string>();
  private wanted = false;
  private closed = false;
  private connection: ConnectionState = 'disconnected';
  /** Set when the server refused or dropped us over the token: the next handshake asks for a fresh one. */
  private authStale = false;
  private refusals = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private rotateTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly calls = new Map<string, LiveCall>();
  private readonly rings = new Map<string, { ringing: boolean; at: number }>();
  private readonly ended = new Map<string, number>();
  private readonly mediaSessions = new Set<ManagedMediaSession>();
  private readonly waiters = new Set<() => void>();
  private readonly link: CallLink;

  constructor(options: CallsClientOptions) {
    super();
    if (!options?.baseUrl) throw new TypeError('CallsClient needs a baseUrl');
    if (typeof options.getToken !== 'function') throw new TypeError('CallsClient needs a getToken function');
    this.opts = { ...DEFAULTS, ...options };
    this.base = options.baseUrl.replace(/\/+$/, '');
    this.tokens = new TokenSource(options.getToken);
    const fetchImpl = options.fetch ?? (globalThis.fetch?.bind(globalThis) as FetchLike | undefined);
    if (!fetchImpl) throw new TypeError('no global fetch: pass `fetch` in the options');
    this.rest = new RestClient({ baseUrl: this.base, tokens: this.tokens, fetch: fetchImpl, timeoutMs: this.opts.requestTimeoutMs, deviceId: options.deviceId });
    this.link = {
      rest: this.rest,
      joinCall: (callId) => this.socketJoin(callId),
      command: (event, payload) => (this.socket?.connected ? this.ack(this.socket, event, payload) : undefined),
      release: (call) => {
        if (this.calls.get(call.id) === call) this.calls.delete(call.id);
      },
      startMedia: (callId, opts) => this.startMedia(callId, opts),
      userId: () => this.userId,
      connected: () => this.socket?.connected === true,
      gapTimeoutMs: this.opts.gapTimeoutMs,
    };
  }

  // ----- REST -----

  /** `POST /calls/rooms/:chatRoomId/initiate`: rings `inviteUserIds`; `created: false` when the room already had a live call (glare). */
  initiateCall(chatRoomId: string, body: InitiateCallBody, options?: RequestOptions): Promise<InitiateResult> {
    return this.rest.initiateCall(chatRoomId, body, options).then((r) => ({ ...r, call: this.observe(r.call) }));
  }

  /** `POST /calls/:id/join`. Prefer {@link answer}, which also follows the call. */
  joinCall(callId: string, body?: JoinCallBody, options?: RequestOptions): Promise<Call> {
    return this.rest.joinCall(callId, body, options).then((c) => this.observe(c));
  }

  /** `POST /calls/:id/media/session`: Agora credentials once. {@link startMedia} keeps them renewed. */
  getMediaSession(callId: string, options?: RequestOptions): Promise<MediaSession> {
    return this.rest.getMediaSession(callId, options);
  }

  /** `PATCH /calls/:id/status`. */
  updateStatus(callId: string, body: UpdateStatusBody, options?: RequestOptions): Promise<Call> {
    return this.rest.updateStatus(callId, body, options).then((c) => this.observe(c));
  }

  /** `PATCH /calls/:id/media`. */
  updateMedia(callId: string, body: MediaStateBody, options?: RequestOptions): Promise<Participant> {
    return this.rest.updateMedia(callId, body, options);
  }

  /** `POST /calls/:id/end`. */
  endCall(callId: string, options?: RequestOptions): Promise<Call> {
    return this.rest.endCall(callId, options).then((c) => this.observe(c));
  }

  /** `POST /calls/:id/invite`: ring more people into the live call (host or joined participant). */
  invite(callId: string, userIds: string[], options?: RequestOptions): Promise<Call> {
    return this.rest.invite(callId, userIds, options).then((c) => this.observe(c));
  }

  /** `POST /calls/:id/participants/:userId/remove`: the host removes someone from the call. */
  removeParticipant(callId: string, userId: string, options?: RequestOptions): Promise<Call> {
    return this.rest.removeParticipant(callId, userId, options).then((c) => this.observe(c));
  }

  /** `GET /calls/:id`. */
  getCall(callId: string, options?: RequestOptions): Promise<Call> {
    return this.rest.getCall(callId, options).then((c) => this.observe(c));
  }

  /** `GET /calls/rooms/:chatRoomId/active`: the room's live call or `null` (recovery after an app restart). */
  getActiveCall(chatRoomId: string, options?: RequestOptions): Promise<Call | null> {
    return this.rest.getActiveCall(chatRoomId, options).then((c) => (c ? this.observe(c) : null));
  }

  /** `GET /calls`: your history, newest first; pass `nextCursor` as `before` for the next page. */
  /** Registers this phone for pushes (see {@link RestClient.registerDevice}). */
  registerDevice(deviceId: string, body: RegisterDeviceBody, options?: RequestOptions): Promise<Device> {
    return this.rest.registerDevice(deviceId, body, options);
  }

  /** Your registered phones. */
  listDevices(options?: RequestOptions): Promise<Device[]> {
    return this.rest.listDevices(options);
  }

  /** Forgets a phone (at sign-out). */
  removeDevice(deviceId: string, options?: RequestOptions): Promise<void> {
    return this.rest.removeDevice(deviceId, options);
  }

  listCalls(query?: { limit?: number; before?: string }, options?: RequestOptions): Promise<CallHistoryPage> {
    return this.rest.listCalls(query, options);
  }

  // ----- ringing helpers (CallKit / ConnectionService handlers) -----

  /**
   * Tells the caller your device is ringing (`PATCH status ringing`). Answers `false` when the
   * call no longer rings for you (ended, answered or declined on another device, missed): end
   * the CallKit/ConnectionService call then.
   */
  async reportRinging(callId: string): Promise<boolean> {
    try {
      await this.updateStatus(callId, { status: 'ringing' });
      return true;
    } catch (err) {
      if (isCallsApiError(err, 'CALL_ENDED', 'INVALID_TRANSITION', 'CALL_NOT_FOUND')) {
        this.ringStopped(callId);
        return false;
      }
      throw err;
    }
  }

  /** Answers: joins over REST with your initial media state and follows the call. */
  async answer(callId: string, media: JoinCallBody = {}): Promise<LiveCall> {
    const call = await this.joinCall(callId, media);
    this.ringStopped(callId);
    return this.follow(call);
  }

  /**
   * Declines (`declineReason`, e.g. `busy`). Answers `false` when there was nothing left to
   * decline (the call ended, or you answered/declined it elsewhere).
   */
  async decline(callId: string, reason?: string): Promise<boolean> {
    try {
      await this.updateStatus(callId, reason ? { status: 'declined', declineReason: reason } : { status: 'declined' });
      this.ringStopped(callId);
      return true;
    } catch (err) {
      if (isCallsApiError(err, 'CALL_ENDED', 'INVALID_TRANSITION', 'CALL_NOT_FOUND')) {
        this.ringStopped(callId);
        return false;
      }
      throw err;
    }
  }

  /**
   * Feeds a push payload (VoIP body, FCM `RemoteMessage` or its `data`) into the client: it
   * answers the parsed push (or `null` when it is not ours) and emits `incoming_call`,
   * `incoming_call_cancelled` or `missed_call`, de-duplicated with what the socket says.
   */
  receivePush(payload: unknown): CallPush | null {
    const push = parseCallPush(payload);
    if (!push) return null;
    if (push.type === 'incoming_call') {
      const { callId, chatRoomId, callType, isGroupCall, from, ringDeadline, transport } = push;
      this.ring({ callId, chatRoomId, callType, isGroupCall, from, ringDeadline, call: null, source: transport });
    } else if (push.type === 'incoming_call_cancelled') {
      this.stopRing({ callId: push.callId, reason: push.reason, source: push.transport });
    } else {
      this.emit('missed_call', push);
    }
    return push;
  }

  // ----- realtime -----

  /** The socket's state. */
  get connectionState(): ConnectionState {
    return this.connection;
  }

  /** Your user id: the `userId` option, else the token's claim (once a token was fetched). */
  get userId(): string | null {
    if (this.opts.userId) return this.opts.userId;
    const token = this.tokens.peek();
    const claim = token ? decodeJwtClaims(token)?.[this.opts.userIdClaim ?? 'sub'] : undefined;
    return typeof claim === 'string' ? claim : null;
  }

  /** The calls being followed. */
  get followedCalls(): LiveCall[] {
    return [...this.calls.values()];
  }

  /** The underlying socket.io-client socket (for diagnostics; the client owns its lifecycle). */
  get rawSocket(): Socket | null {
    return this.socket;
  }

  /** Opens the socket (idempotent) and keeps it open until {@link disconnect} or {@link close}. */
  connect(): void {
    if (this.closed) throw new CallsApiError({ status: 0, code: 'CLIENT_CLOSED', message: 'the client was closed' });
    this.wanted = true;
    if (!this.socket) {
      this.socket = this.openSocket();
      this.setConnection('connecting');
    } else if (!this.socket.connected && !this.socket.active) {
      this.socket.connect();
    }
  }

  /** Resolves once the socket is connected; rejects with `TIMEOUT` after `timeoutMs`. */
  async waitUntilConnected(timeoutMs = this.opts.ackTimeoutMs): Promise<void> {
    await this.connectedSocket(timeoutMs);
  }

  /** Closes the socket; followed calls stay followed and re-join on the next {@link connect}. */
  disconnect(): void {
    this.wanted = false;
    this.clearTimers();
    for (const s of [this.socket, this.next]) this.dropSocket(s);
    this.socket = null;
    this.next = null;
    this.setConnection('disconnected');
  }

  /** Disconnects, stops following every call and renewing every media session. The client cannot be reused. */
  close(): void {
    this.disconnect();
    this.closed = true;
    for (const call of [...this.calls.values()]) call.unfollow();
    for (const media of this.mediaSessions) media.stop();
    this.mediaSessions.clear();
    for (const wake of this.waiters) wake();
    this.waiters.clear();
    this.removeAllListeners();
  }

  /**
   * Follows a call: subscribes with `join_call`, keeps its state current (see {@link LiveCall}),
   * and re-joins after every reconnect until it ends, you leave, or you unfollow. Resolves once
   * subscribed; offline, after `ackTimeoutMs` (it subscribes as soon as the socket connects).
   * Rejects when the call is not yours to see (`CALL_NOT_FOUND`).
   */
  async follow(callOrId: string | Call): Promise<LiveCall> {
    if (this.closed) throw new CallsApiError({ status: 0, code: 'CLIENT_CLOSED', message: 'the client was closed' });
    const id = typeof callOrId === 'string' ? callOrId : callOrId.id;
    const existing = this.calls.get(id);
    if (existing) {
      if (typeof callOrId !== 'string') existing.applyCall(callOrId);
      return existing;
    }
    const call = typeof callOrId === 'string' ? await this.rest.getCall(id) : callOrId;
    const raced = this.calls.get(id);
    if (raced) {
      raced.applyCall(call);
      return raced;
    }
    const live = new LiveCall(call, this.link);
    if (call.status === 'ended') {
      live.unfollow();
      return live;
    }
    this.calls.set(id, live);
    this.connect();
    try {
      await live.resync('follow');
    } catch (err) {
      if (isCallsApiError(err, 'CALL_NOT_FOUND', 'FORBIDDEN', 'UNAUTHORIZED', 'CLIENT_CLOSED')) {
        live.unfollow();
        throw err;
      }
      // Offline or slow: the LiveCall re-joins when the socket (re)connects.
    }
    return live;
  }

  /** Starts a call and follows it: `initiateCall` then `follow`. */
  async startCall(chatRoomId: string, body: InitiateCallBody, options?: RequestOptions): Promise<LiveCall> {
    const { call } = await this.initiateCall(chatRoomId, body, options);
    return this.follow(call);
  }

  /**
   * Agora credentials for `callId`, renewed ahead of `expiresAt` until stopped: await `ready`
   * for the first session, pass `onRenew`'s to `engine.renewToken`, and call `renew()` from
   * `onTokenPrivilegeWillExpire`.
   */
  startMedia(callId: string, options: MediaSessionOptions = {}): ManagedMediaSession {
    const media = new ManagedMediaSession(this.rest, callId, options, () => this.mediaSessions.delete(media));
    if (!media.stopped) this.mediaSessions.add(media);
    return media;
  }

  // ----- sockets -----

  private openSocket(): Socket {
    const socket: Socket = io(`${this.base}/calls`, {
      transports: ['websocket'],
      reconnectionDelay: 500,
      reconnectionDelayMax: 5_000,
      ...this.opts.socketOptions,
      forceNew: true,
      // Called before every handshake, reconnects included, so each uses the newest token.
      auth: (cb: (data: object) => void) => {
        const force = this.authStale;
        this.authStale = false;
        this.tokens.get(force).then(
          (token) => {
            this.tokenOf.set(socket, token);
            cb(this.opts.deviceId ? { token, deviceId: this.opts.deviceId } : { token });
          },
          (err: unknown) => {
            this.emit('error', new CallsApiError({ status: 0, code: 'UNAUTHORIZED', message: `getToken failed: ${toError(err).message}`, cause: err }));
            this.authStale = true;
            // An empty handshake is refused, which schedules the next attempt with backoff.
            cb({});
          },
        );
      },
    });
    socket.on('connect', () => this.onConnect(socket));
    socket.on('disconnect', (reason) => this.onDisconnect(socket, reason));
    socket.on('connect_error', (err) => this.onConnectError(socket, err));
    socket.onAny((event: string, payload: unknown) => this.onServerEvent(socket, event, payload));
    return socket;
  }

  private onConnect(socket: Socket): void {
    if (socket === this.next) {
      this.promote(socket);
      return;
    }
    if (socket !== this.socket) return;
    this.refusals = 0;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const first = this.connection === 'connecting';
    this.setConnection('connected');
    for (const wake of [...this.waiters]) wake();
    // Events sent while this socket was away were not delivered: a fresh snapshot covers them.
    for (const call of this.calls.values()) quiet(call.resync(first ? 'follow' : 'reconnect'));
    this.scheduleRotation(socket);
  }

  private onDisconnect(socket: Socket, reason: Socket.DisconnectReason): void {
    if (socket === this.next) {
      this.next = null;
      this.dropSocket(socket);
      this.retryRotation();
      return;
    }
    if (socket !== this.socket || !this.wanted) return;
    this.setConnection('reconnecting');
    if (this.rotateTimer) clearTimeout(this.rotateTimer);
    if (reason === 'io server disconnect') {
      // The server closed the socket (its access token expired): socket.io-client does not
      // reconnect by itself after that. Reconnect with a fresh token.
      this.authStale = true;
      this.scheduleReconnect(socket);
    }
    // Any other reason: socket.io-client's manager reconnects with backoff; `connect` re-joins.
  }

  private onConnectError(socket: Socket, err: Error): void {
    if (socket === this.next) {
      this.next = null;
      this.dropSocket(socket);
      this.retryRotation();
      return;
    }
    if (socket !== this.socket || !this.wanted) return;
    if (err.message === 'unauthorized') {
      // Expected once when a token expired while the app slept; again and again means the app
      // keeps handing out tokens the server refuses.
      this.refusals += 1;
      this.tokens.invalidate(this.tokenOf.get(socket));
      this.authStale = true;
      if (this.refusals > 1) {
        this.emit('error', new CallsApiError({ status: 401, code: 'UNAUTHORIZED', message: 'the server refused the access token from getToken' }));
      }
    }
    // A refused handshake is not retried by socket.io-client; transport failures are.
    if (!socket.active) this.scheduleReconnect(socket);
    if (this.connection === 'connected') this.setConnection('reconnecting');
  }

  private scheduleReconnect(socket: Socket): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const base = this.opts.socketOptions?.reconnectionDelay ?? 500;
    const max = this.opts.socketOptions?.reconnectionDelayMax ?? 5_000;
    const delay = Math.min(max, base * 2 ** Math.min(this.refusals, 10)) * (0.5 + Math.random() / 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (socket === this.socket && this.wanted && !socket.connected) socket.connect();
    }, delay);
  }

  // Token rotation: a new socket with a fresh token connects and re-joins every followed call
  // before the old one closes, so the user never has zero sockets (nobody sees them drop) and
  // no event falls between the two.

  private scheduleRotation(socket: Socket): void {
    if (this.rotateTimer) clearTimeout(this.rotateTimer);
    this.rotateTimer = null;
    const before = this.opts.refreshBeforeExpirySeconds ?? DEFAULTS.refreshBeforeExpirySeconds;
    if (before === false) return;
    const token = this.tokenOf.get(socket);
    const exp = token ? tokenExpiry(token) : null;
    if (exp === null) return;
    const lifetime = exp - Date.now();
    // `before` seconds ahead; a token shorter than twice that is replaced half-way through.
    const delay = Math.max(1000, lifetime - before * 1000, lifetime / 2);
    this.rotateTimer = setTimeout(() => {
      this.rotateTimer = null;
      quiet(this.rotate());
    }, delay);
  }

  private retryRotation(): void {
    if (this.rotateTimer || !this.wanted) return;
    this.rotateTimer = setTimeout(() => {
      this.rotateTimer = null;
      quiet(this.rotate());
    }, 5_000);
  }

  private async rotate(): Promise<void> {
    const current = this.socket;
    if (!this.wanted || this.next || !current?.connected) return;
    let token: string;
    try {
      token = await this.tokens.get(true);
    } catch (err) {
      this.emit('error', new CallsApiError({ status: 0, code: 'UNAUTHORIZED', message: `getToken failed: ${toError(err).message}`, cause: err }));
      this.retryRotation();
      return;
    }
    // No fresher token to be had: keep the socket; the server will say when it must go.
    if (token === this.tokenOf.get(current) || current !== this.socket || !this.wanted || this.next) return;
    this.next = this.openSocket();
  }

  private promote(next: Socket): void {
    const joins = [...this.calls.values()].map((call) => call.resync('token_refresh', () => this.ack(next, 'join_call', { callId: call.id }) as Promise<CallSnapshot>));
    void Promise.allSettled(joins).then(() => {
      if (next !== this.next) return;
      const old = this.socket;
      this.socket = next;
      this.next = null;
      this.dropSocket(old);
      if (this.connection !== 'connected') this.setConnection('connected');
      this.scheduleRotation(next);
    });
  }

  private dropSocket(socket: Socket | null): void {
    if (!socket) return;
    socket.offAny();
    socket.removeAllListeners();
    socket.disconnect();
  }

  private onServerEvent(socket: Socket, name: string, payload: unknown): void {
    if ((socket !== this.socket && socket !== this.next) || !isBag(payload)) return;
    const callId = typeof payload.callId === 'string' ? payload.callId : null;
    switch (name) {
      case 'call_participants':
        if (callId && typeof payload.seq === 'number') this.calls.get(callId)?.applySnapshot(payload as unknown as CallSnapshot);
        return;
      case 'incoming_call': {
        const e = payload as unknown as IncomingCallEvent;
        if (!callId || !isBag(e.call)) return;
        const from: Caller = typeof e.from === 'string' ? { userId: e.from } : isBag(e.from) ? e.from : { userId: e.call.initiatorId };
        this.ring({
          callId,
          chatRoomId: e.call.chatRoomId,
          callType: e.call.type,
          isGroupCall: e.call.isGroupCall,
          from,
          ringDeadline: typeof (payload as { ringDeadline?: unknown }).ringDeadline === 'string' ? (payload.ringDeadline as string) : null,
          call: e.call,
          source: 'socket',
        });
        return;
      }
      case 'incoming_call_cancelled':
        if (callId) this.stopRing({ callId, reason: typeof payload.reason === 'string' ? payload.reason : 'cancelled', source: 'socket' });
        return;
      case 'error': {
        const e = payload as unknown as ServerErrorEvent;
        const error = CallsApiError.fromAck(e);
        if (e.event === 'connection' && e.code === 'UNAUTHORIZED') {
          // The socket's token expired; the disconnect that follows reconnects with a fresh one.
          this.authStale = true;
          return;
        }
        const call = callId ? this.calls.get(callId) : undefined;
        if (call) call.fail(error);
        else this.emit('error', error);
        return;
      }
      default:
        if (!callId || typeof payload.seq !== 'number') return;
        this.calls.get(callId)?.receive(name, payload as never);
        if (name === 'call_ended') this.noteEnded(payload as unknown as CallEndedEvent);
    }
  }

  private noteEnded(event: CallEndedEvent): void {
    this.prune();
    if (this.ended.has(event.callId)) return;
    this.ended.set(event.callId, Date.now());
    this.emit('call_ended', event);
  }

  private ring(call: IncomingCall): void {
    this.prune();
    const known = this.rings.get(call.callId);
    // Already ringing: the other socket during a token rotation, a replay on connect, or the
    // push that woke the app.
    if (known?.ringing || this.ended.has(call.callId)) return;
    this.rings.set(call.callId, { ringing: true, at: Date.now() });
    this.emit('incoming_call', call);
  }

  private stopRing(stopped: RingStopped): void {
    this.prune();
    const known = this.rings.get(stopped.callId);
    if (known && !known.ringing) return;
    this.rings.set(stopped.callId, { ringing: false, at: Date.now() });
    this.emit('incoming_call_cancelled', stopped);
  }

  /** This device acted on the ring itself: no `incoming_call_cancelled` for it. */
  private ringStopped(callId: string): void {
    this.rings.set(callId, { ringing: false, at: Date.now() });
  }

  private prune(): void {
    const cutoff = Date.now() - MEMORY_MS;
    for (const [id, r] of this.rings) if (r.at < cutoff) this.rings.delete(id);
    for (const [id, at] of this.ended) if (at < cutoff) this.ended.delete(id);
  }

  /** REST answers carry `seq` too: a followed call takes them like a snapshot. */
  private observe(call: Call): Call {
    this.calls.get(call.id)?.applyCall(call);
    if (call.status === 'ended' && call.endReason) {
      this.noteEnded({ callId: call.id, seq: call.seq, at: call.endedAt ?? new Date().toISOString(), reason: call.endReason, endedBy: call.endedBy, ...mediaTimeOf(call) });
    }
    return call;
  }

  private async socketJoin(callId: string): Promise<CallSnapshot> {
    const socket = await this.connectedSocket(this.opts.ackTimeoutMs);
    return (await this.ack(socket, 'join_call', { callId })) as CallSnapshot;
  }

  private async ack(socket: Socket, event: string, payload: Record<string, unknown>): Promise<unknown> {
    let reply: unknown;
    try {
      reply = await socket.timeout(this.opts.ackTimeoutMs).emitWithAck(event, payload);
    } catch (err) {
      throw new CallsApiError({ status: 0, code: 'TIMEOUT', message: `${event} got no answer within ${this.opts.ackTimeoutMs} ms`, cause: err });
    }
    if (isBag(reply) && reply.ok === true) return reply.data;
    throw CallsApiError.fromAck(isBag(reply) && isBag(reply.error) ? reply.error : undefined);
  }

  private connectedSocket(timeoutMs: number): Promise<Socket> {
    if (this.socket?.connected) return Promise.resolve(this.socket);
    if (this.closed) return Promise.reject(new CallsApiError({ status: 0, code: 'CLIENT_CLOSED', message: 'the client was closed' }));
    this.connect();
    return new Promise((resolve, reject) => {
      const wake = () => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        if (this.socket?.connected) resolve(this.socket);
        else reject(new CallsApiError({ status: 0, code: 'CLIENT_CLOSED', message: 'the client was closed' }));
      };
      const timer = setTimeout(() => {
        this.waiters.delete(wake);
        reject(new CallsApiError({ status: 0, code: 'TIMEOUT', message: `not connected within ${timeoutMs} ms` }));
      }, timeoutMs);
      this.waiters.add(wake);
    });
  }

  private setConnection(state: ConnectionState): void {
    if (this.connection === state) return;
    this.connection = state;
    this.emit('connection', state);
  }

  private clearTimers(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.rotateTimer) clearTimeout(this.rotateTimer);
    this.reconnectTimer = null;
    this.rotateTimer = null;
  }
}

export type { ResyncReason };
