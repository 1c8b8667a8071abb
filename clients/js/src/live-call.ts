/**
 * A followed call, kept current: the state (a {@link Call}) starts from a REST answer or a
 * `join_call` snapshot, and call events are applied strictly in `seq` order, each exactly once.
 *
 * - An event at or below the current `seq` is a duplicate or stale: dropped.
 * - An event above `seq + 1` waits for the ones before it; if the gap is not filled within
 *   `gapTimeoutMs`, a fresh `join_call` snapshot replaces the state (a resync).
 * - After every reconnect the client re-emits `join_call` and the snapshot is applied the same
 *   way, so what happened while the socket was down is never missed.
 * - An event this version does not know still advances `seq` (so it is not taken for a gap) and
 *   triggers a resync, so the state stays right against a newer server.
 */
import { Emitter } from './emitter.js';
import { CallsApiError } from './errors.js';
import type { MediaSessionOptions, ManagedMediaSession } from './media.js';
import type { RestClient } from './rest.js';
import type {
  Call,
  CallEndedEvent,
  CallEvent,
  CallEventBase,
  CallEventPayloads,
  CallSnapshot,
  MediaStateBody,
  Participant,
} from './types.js';

/** Why the state was replaced by a snapshot. */
export type ResyncReason = 'follow' | 'reconnect' | 'gap' | 'unknown_event' | 'token_refresh';

export interface ResyncInfo {
  reason: ResyncReason;
  /** The `seq` before the snapshot. */
  fromSeq: number;
  /** The snapshot's `seq`; events in between were folded into it. */
  toSeq: number;
}

export type LiveCallEvents = {
  /** The state changed (any event, snapshot or REST answer). */
  change: (state: Call) => void;
  /** Every call event applied, in `seq` order, once each. */
  event: (event: CallEvent) => void;
  /** The state was replaced by a fresh snapshot. */
  resync: (info: ResyncInfo) => void;
  /** The call ended (from `call_ended`, a snapshot or a REST answer): once. */
  ended: (event: CallEndedEvent) => void;
  /** Following failed (for example the call is no longer visible) or a server `error` about this call. */
  error: (error: CallsApiError) => void;
} & { [N in keyof CallEventPayloads]: (event: CallEventPayloads[N]) => void };

/** What a LiveCall needs from the client that owns it. */
export interface CallLink {
  rest: RestClient;
  /** Emits `join_call` on the current socket (waiting for one) and answers the snapshot. */
  joinCall(callId: string): Promise<CallSnapshot>;
  /** Emits a command with an ack if a socket is connected; `undefined` when none is. */
  command(event: string, payload: Record<string, unknown>): Promise<unknown> | undefined;
  /** Stops routing events to this call. */
  release(call: LiveCall): void;
  startMedia(callId: string, options: MediaSessionOptions): ManagedMediaSession;
  userId(): string | null;
  /** Whether a socket is connected now. */
  connected(): boolean;
  gapTimeoutMs: number;
}

const KNOWN = new Set<string>([
  'participant_joined',
  'participant_left',
  'participant_disconnected',
  'participant_reconnected',
  'participant_media_changed',
  'participant_media_presence',
  'participant_status_changed',
  'participant_invited',
  'call_updated',
  'host_changed',
  'call_ended',
]);

/** Whether `name` is a call event this version applies itself. */
/**
 * The media time a `call_ended` reports, read from an ended Call (when the end is learnt from a
 * snapshot or a REST answer rather than the event): the call's `mediaSeconds` and each
 * participant's that has any. 0 from a server that does not count media time.
 */
export function mediaTimeOf(call: Call): Pick<CallEndedEvent, 'mediaSeconds' | 'participantMediaSeconds'> {
  return {
    mediaSeconds: call.mediaSeconds ?? 0,
    participantMediaSeconds: call.participants
      .filter((p) => (p.mediaSeconds ?? 0) > 0)
      .map((p) => ({ userId: p.userId, mediaSeconds: p.mediaSeconds })),
  };
}

export function isKnownCallEvent(name: string): name is keyof CallEventPayloads {
  return KNOWN.has(name);
}

/** Deep equality of JSON values, whatever the key order (the server's maps may be sorted or not). */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    return a.length === other.length && a.every((v, i) => sameJson(v, other[i]));
  }
  const ka = Object.keys(a);
  const bo = b as Record<string, unknown>;
  return ka.length === Object.keys(bo).length && ka.every((k) => Object.prototype.hasOwnProperty.call(bo, k) && sameJson((a as Record<string, unknown>)[k], bo[k]));
}

function updateParticipant(call: Call, userId: string, patch: (p: Participant) => Participant): Call {
  return { ...call, participants: call.participants.map((p) => (p.userId === userId ? patch(p) : p)) };
}

/**
 * The state after one event, exactly as the server's state machine changes it
 * (services/calls-api/src/domain); `null` for an event this version does not know.
 */
export function applyCallEvent(call: Call, name: string, event: CallEventBase & Record<string, unknown>): Call | null {
  const next: Call = { ...call, seq: event.seq };
  switch (name) {
    case 'participant_joined': {
      const p = (event as unknown as CallEventPayloads['participant_joined']).participant;
      const exists = next.participants.some((x) => x.userId === p.userId);
      next.participants = exists ? next.participants.map((x) => (x.userId === p.userId ? p : x)) : [...next.participants, p];
      if (next.status === 'ringing' && p.userId !== next.initiatorId) {
        next.status = 'active';
        next.startedAt = event.at;
      }
      return next;
    }
    case 'participant_left': {
      const e = event as unknown as CallEventPayloads['participant_left'];
      return updateParticipant(next, e.userId, (p) => ({ ...p, status: 'left', leftAt: e.at, isConnected: true }));
    }
    case 'participant_disconnected': {
      const e = event as unknown as CallEventPayloads['participant_disconnected'];
      return updateParticipant(next, e.userId, (p) => ({ ...p, isConnected: false }));
    }
    case 'participant_reconnected': {
      const e = event as unknown as CallEventPayloads['participant_reconnected'];
      return updateParticipant(next, e.userId, (p) => ({ ...p, isConnected: true }));
    }
    case 'participant_media_changed': {
      const e = event as unknown as CallEventPayloads['participant_media_changed'];
      return updateParticipant(next, e.userId, (p) => ({
        ...p,
        isMicMuted: e.isMicMuted,
        isCameraOff: e.isCameraOff,
        isSharingScreen: e.isSharingScreen,
      }));
    }
    case 'participant_media_presence': {
      const e = event as unknown as CallEventPayloads['participant_media_presence'];
      return updateParticipant(next, e.userId, (p) => ({ ...p, inMedia: e.inMedia }));
    }
    case 'participant_status_changed': {
      const e = event as unknown as CallEventPayloads['participant_status_changed'];
      return updateParticipant(next, e.userId, (p) => ({
        ...p,
        status: e.status,
        declineReason: e.status === 'declined' ? e.reason : p.declineReason,
      }));
    }
    case 'participant_invited': {
      const p = (event as unknown as CallEventPayloads['participant_invited']).participant;
      const exists = next.participants.some((x) => x.userId === p.userId);
      next.participants = exists ? next.participants.map((x) => (x.userId === p.userId ? p : x)) : [...next.participants, p];
      return next;
    }
    case 'call_updated': {
      const e = event as unknown as CallEventPayloads['call_updated'];
      return { ...e.call, seq: event.seq };
    }
    case 'host_changed': {
      const e = event as unknown as CallEventPayloads['host_changed'];
      next.participants = next.participants.map((p) => {
        if (p.userId === e.userId) return { ...p, role: 'host' };
        if (p.role === 'host') return { ...p, role: 'participant' };
        return p;
      });
      return next;
    }
    case 'call_ended': {
      const e = event as unknown as CallEventPayloads['call_ended'];
      next.status = 'ended';
      next.endedAt = e.at;
      next.endReason = e.reason;
      next.endedBy = e.endedBy;
      // An ended call has nobody in the media, and its media time is final (CONTRACT
      // section 11); a server that does not report it leaves what the state had.
      const media = new Map((e.participantMediaSeconds ?? []).map((m) => [m.userId, m.mediaSeconds]));
      if (e.mediaSeconds !== undefined) next.mediaSeconds = e.mediaSeconds;
      next.participants = next.participants.map((p) => {
        const q = e.mediaSeconds !== undefined ? { ...p, inMedia: false, mediaSeconds: media.get(p.userId) ?? 0 } : { ...p, inMedia: false };
        if (p.status === 'joined') return { ...q, status: 'left', leftAt: e.at, isConnected: true };
        if (p.status === 'invited' || p.status === 'ringing') return { ...q, status: 'missed' };
        return q;
      });
      return next;
    }
    default:
      return null;
  }
}

interface Pending {
  name: string;
  event: CallEventBase & Record<string, unknown>;
  /** The resync generation when it arrived. */
  gen: number;
}

export class LiveCall extends Emitter<LiveCallEvents> {
  readonly id: string;
  private current: Call;
  private readonly pending = new Map<number, Pending>();
  private gen = 0;
  private gapTimer: ReturnType<typeof setTimeout> | null = null;
  private resyncing: Promise<void> | null = null;
  private resyncAgain: ResyncReason | null = null;
  private endedEmitted: boolean;
  private fetchingFields = false;
  private lastResyncReason: ResyncReason = 'follow';
  private released = false;
  private media: ManagedMediaSession | null = null;
  /** Counters, for tests and diagnostics. */
  readonly stats = { applied: 0, dropped: 0, resyncs: 0 };

  /** @internal Created by {@link CallsClient.follow}. */
  constructor(call: Call, private readonly link: CallLink) {
    super();
    this.id = call.id;
    this.current = call;
    this.endedEmitted = call.status === 'ended';
  }

  /** The call as it is now. Replaced (never mutated) on every change. */
  get state(): Call {
    return this.current;
  }

  /** For React's `useSyncExternalStore(call.subscribe, call.getState)`. */
  readonly getState = (): Call => this.current;

  /** For React's `useSyncExternalStore`: calls `listener` on every change; answers the unsubscribe. */
  readonly subscribe = (listener: () => void): (() => void) => this.on('change', () => listener());

  get participants(): Participant[] {
    return this.current.participants;
  }

  /** Your own participant record, when the client knows your user id. */
  get self(): Participant | undefined {
    const me = this.link.userId();
    return me === null ? undefined : this.current.participants.find((p) => p.userId === me);
  }

  /** Whether the client still follows this call (until it ends, you leave, or {@link unfollow}). */
  get following(): boolean {
    return !this.released;
  }

  // ----- actions -----

  /** Mic, camera and screen-share flags: over the socket when connected, else REST. */
  async setMedia(patch: MediaStateBody): Promise<Participant> {
    const viaSocket = this.link.command('media_state_changed', { callId: this.id, ...patch });
    if (viaSocket) return (await viaSocket) as Participant;
    return this.link.rest.updateMedia(this.id, patch);
  }

  /** Leaves the call (`leave_call`, or REST when no socket is connected) and stops following it. */
  async leave(): Promise<Call> {
    const viaSocket = this.link.command('leave_call', { callId: this.id });
    const call = viaSocket ? ((await viaSocket) as Call) : await this.link.rest.updateStatus(this.id, { status: 'left' });
    this.applyCall(call);
    this.unfollow();
    return call;
  }

  /** Ends the call for everyone (the host; either side of a 1:1). */
  async end(): Promise<Call> {
    const call = await this.link.rest.endCall(this.id);
    this.applyCall(call);
    return call;
  }

  /**
   * Agora credentials for this call, renewed ahead of `expiresAt`; stopped when the call ends,
   * you leave, or you unfollow. Calling it again answers the same session.
   */
  startMedia(options: MediaSessionOptions = {}): ManagedMediaSession {
    if (!this.media || this.media.stopped) this.media = this.link.startMedia(this.id, options);
    return this.media;
  }

  /** Stops following: no more events, no re-join after reconnects. The state stays readable. */
  unfollow(): void {
    if (this.released) return;
    this.released = true;
    this.clearGapTimer();
    this.pending.clear();
    this.media?.stop();
    this.link.release(this);
  }

  // ----- input from the client -----

  /** @internal A call event from a socket. */
  receive(name: string, event: CallEventBase & Record<string, unknown>): void {
    if (this.released) return;
    if (event.seq <= this.current.seq || this.pending.has(event.seq)) {
      this.stats.dropped += 1;
      return;
    }
    this.pending.set(event.seq, { name, event, gen: this.gen });
    this.drain();
  }

  /**
   * @internal A `join_call` answer (`resync` says which request it answers) or a
   * `call_participants` event (the same snapshot, pushed by the server on each `join_call`).
   */
  applySnapshot(snapshot: CallSnapshot, resync?: { reason: ResyncReason; requestGen: number }): void {
    if (this.released && !resync) return;
    if (snapshot.seq < this.current.seq) return;
    const before = this.current;
    const moved = snapshot.seq > before.seq || snapshot.status !== before.status
      || !sameJson(snapshot.participants, before.participants);
    if (moved) {
      this.current = { ...before, seq: snapshot.seq, status: snapshot.status, participants: snapshot.participants };
    }
    for (const [seq, p] of this.pending) {
      // Anything at or below the snapshot is in it. Anything above it that arrived before the
      // resync was asked for cannot be real: the server had committed it before answering, so
      // the snapshot would include it.
      if (seq <= snapshot.seq || (resync && p.gen < resync.requestGen)) this.pending.delete(seq);
    }
    if (moved) this.emit('change', this.current);
    if (snapshot.seq > before.seq) {
      // Events between the two were folded into the snapshot, not applied one by one.
      this.stats.resyncs += 1;
      this.emit('resync', { reason: resync?.reason ?? this.lastResyncReason, fromSeq: before.seq, toSeq: snapshot.seq });
    }
    this.afterChange();
    this.drain();
  }

  /** @internal A Call from a REST answer (carries its `seq`, like a snapshot). */
  applyCall(call: Call): void {
    if (call.id !== this.id) return;
    if (call.seq < this.current.seq) {
      this.fillCallFields(call);
      return;
    }
    const before = this.current;
    if (sameJson(call, before)) return;
    this.current = call;
    for (const seq of [...this.pending.keys()]) if (seq <= call.seq) this.pending.delete(seq);
    this.emit('change', this.current);
    this.afterChange();
    this.drain();
  }

  /** @internal A server `error` event about this call. */
  fail(error: CallsApiError): void {
    this.emit('error', error);
  }

  /**
   * @internal Fetches a fresh snapshot with `join_call` and applies it. Without `join`, on the
   * client's current socket and coalesced (one in flight; a request made meanwhile runs once
   * after it); with `join`, through that function (the client's replacement socket). Rejects
   * with the failure, which is also emitted as `error`.
   */
  resync(reason: ResyncReason, join?: () => Promise<CallSnapshot>): Promise<void> {
    if (this.released) return Promise.resolve();
    if (!join && this.resyncing) {
      this.resyncAgain = reason;
      return this.resyncing;
    }
    const requestGen = ++this.gen;
    this.lastResyncReason = reason;
    this.clearGapTimer();
    const run = (join ?? (() => this.link.joinCall(this.id)))()
      .then((snapshot) => this.applySnapshot(snapshot, { reason, requestGen }))
      .catch((err: unknown) => {
        const error = err instanceof CallsApiError ? err : new CallsApiError({ status: 0, code: 'NETWORK_ERROR', message: String(err), cause: err });
        if (this.released) throw error;
        this.emit('error', error);
        if (error.code === 'CALL_NOT_FOUND' || error.code === 'FORBIDDEN') {
          // Not visible any more (removed from the room, say): nothing left to follow.
          this.unfollow();
        } else {
          // Transient (timeout, dependency down): try again after the gap timeout while
          // connected; a reconnect re-joins anyway.
          if (this.link.connected()) this.armGapTimer(true);
        }
        throw error;
      });
    if (join) return run;
    const tracked = run.finally(() => {
      this.resyncing = null;
      const again = this.resyncAgain;
      this.resyncAgain = null;
      if (again && !this.released) this.resync(again).catch(() => {});
    });
    this.resyncing = tracked;
    return tracked;
  }

  // ----- internals -----

  private drain(): void {
    for (;;) {
      const next = this.pending.get(this.current.seq + 1);
      if (!next) break;
      this.pending.delete(next.event.seq);
      this.apply(next.name, next.event);
      if (this.released) return;
    }
    if (this.pending.size === 0) this.clearGapTimer();
    else this.armGapTimer(false);
  }

  private apply(name: string, event: CallEventBase & Record<string, unknown>): void {
    const before = this.current;
    const reduced = applyCallEvent(before, name, event);
    this.current = reduced ?? { ...before, seq: event.seq };
    this.stats.applied += 1;
    const known = reduced !== null;
    this.emit('event', { ...event, type: name, known } as CallEvent);
    if (known) (this.emit as (n: string, e: unknown) => void)(name, event);
    this.emit('change', this.current);
    this.afterChange();
    if (!known) this.resync('unknown_event').catch(() => {});
  }

  /** Emits `ended` once, whatever told us, and stops following an ended call. */
  private afterChange(): void {
    const now = this.current;
    if (this.lacksCallFields()) {
      // A snapshot moved the call on (answered, ended) but carries only status and participants:
      // `startedAt`, `endedAt`, `endReason` and `endedBy` come from the REST call.
      if (!this.fetchingFields) {
        this.fetchingFields = true;
        this.link.rest
          .getCall(this.id)
          .then((call) => this.applyCall(call))
          .catch(() => {})
          .finally(() => {
            this.fetchingFields = false;
            if (this.current.status === 'ended') this.finishEnded();
          });
      }
      return;
    }
    if (now.status === 'ended') this.finishEnded();
  }

  private lacksCallFields(): boolean {
    const now = this.current;
    return (now.status !== 'ringing' && now.startedAt === null && now.participants.some((p) => p.userId !== now.initiatorId && p.joinedAt !== null))
      || (now.status === 'ended' && now.endReason === null);
  }

  /** An older REST answer can still fill fields that, once set, never change. */
  private fillCallFields(call: Call): void {
    const now = this.current;
    const patch: Partial<Call> = {};
    if (now.startedAt === null && call.startedAt !== null) patch.startedAt = call.startedAt;
    if (now.status === 'ended' && now.endReason === null && call.status === 'ended') {
      Object.assign(patch, { endedAt: call.endedAt, endReason: call.endReason, endedBy: call.endedBy });
    }
    if (Object.keys(patch).length === 0) return;
    this.current = { ...now, ...patch };
    this.emit('change', this.current);
    this.afterChange();
  }

  private finishEnded(): void {
    if (this.endedEmitted) return;
    this.endedEmitted = true;
    const now = this.current;
    this.emit('ended', {
      callId: this.id,
      seq: now.seq,
      at: now.endedAt ?? new Date().toISOString(),
      reason: now.endReason ?? 'failed',
      endedBy: now.endedBy,
      ...mediaTimeOf(now),
    });
    this.unfollow();
  }

  private armGapTimer(restart: boolean): void {
    if (this.gapTimer && !restart) return;
    this.clearGapTimer();
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      this.resync('gap').catch(() => {});
    }, this.link.gapTimeoutMs);
  }

  private clearGapTimer(): void {
    if (this.gapTimer) clearTimeout(this.gapTimer);
    this.gapTimer = null;
  }
}
