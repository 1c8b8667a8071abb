/**
 * Agora credentials kept valid: fetches a media session and fetches it again ahead of
 * `expiresAt`, handing each new token to the app (`engine.renewToken(session.rtcToken)`).
 * `renew()` is the hook for Agora's `onTokenPrivilegeWillExpire`.
 */
import { Emitter } from './emitter.js';
import { CallsApiError } from './errors.js';
import type { RestClient } from './rest.js';
import type { MediaSession } from './types.js';

export interface MediaSessionOptions {
  /**
   * Called with every renewed session (not the first one, which `ready` answers): pass
   * `session.rtcToken` to `engine.renewToken`.
   */
  onRenew?: (session: MediaSession) => void;
  /** Renew this many seconds before `expiresAt` (default 60; at most half the token's lifetime). */
  renewBeforeSeconds?: number;
}

export type ManagedMediaSessionEvents = {
  /** A new session (the first one and every renewal). */
  session: (session: MediaSession) => void;
  /** A renewal failed; `willRetry` says whether it is tried again before the token expires. */
  error: (error: CallsApiError, willRetry: boolean) => void;
};

/** Codes after which asking again cannot help: stop renewing. */
const TERMINAL = new Set(['NOT_JOINED', 'CALL_ENDED', 'CALL_NOT_FOUND', 'FORBIDDEN', 'MEDIA_PROVIDER_NOT_CONFIGURED', 'UNAUTHORIZED']);
const MAX_RETRY_MS = 30_000;

export class ManagedMediaSession extends Emitter<ManagedMediaSessionEvents> {
  readonly callId: string;
  /** The first session: join Agora with it. Rejects with a {@link CallsApiError} (and the session stops). */
  readonly ready: Promise<MediaSession>;
  private latest: MediaSession | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private inflight: Promise<MediaSession> | null = null;
  private failures = 0;
  private isStopped = false;
  private readonly renewBeforeMs: number;

  /** @internal Use {@link CallsClient.startMedia} or {@link LiveCall.startMedia}. */
  constructor(
    private readonly rest: RestClient,
    callId: string,
    private readonly options: MediaSessionOptions = {},
    private readonly onStop?: () => void,
  ) {
    super();
    this.callId = callId;
    this.renewBeforeMs = Math.max(0, options.renewBeforeSeconds ?? 60) * 1000;
    this.ready = this.fetch(false);
    // The app awaits `ready`; a failure there must not also surface as an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** The newest session, once there is one. */
  get session(): MediaSession | null {
    return this.latest;
  }

  get stopped(): boolean {
    return this.isStopped;
  }

  /**
   * Fetches a new session now: wire it to Agora's `onTokenPrivilegeWillExpire`. Concurrent calls
   * share one request.
   */
  renew(): Promise<MediaSession> {
    return this.fetch(true);
  }

  /** Stops renewing (the call ended, or you left). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.isStopped) return;
    this.isStopped = true;
    this.onStop?.();
  }

  private fetch(isRenewal: boolean): Promise<MediaSession> {
    if (this.isStopped) {
      return Promise.reject(new CallsApiError({ status: 0, code: 'CLIENT_CLOSED', message: 'the media session was stopped' }));
    }
    if (this.inflight) return this.inflight;
    const request = this.rest
      .getMediaSession(this.callId)
      .then((session) => {
        this.failures = 0;
        this.latest = session;
        if (!this.isStopped) {
          this.schedule(this.renewDelay(session));
          this.emit('session', session);
          if (isRenewal) this.options.onRenew?.(session);
        }
        return session;
      })
      .catch((err: unknown) => {
        const error = err instanceof CallsApiError ? err : new CallsApiError({ status: 0, code: 'NETWORK_ERROR', message: String(err), cause: err });
        const expiresAt = this.latest ? Date.parse(this.latest.expiresAt) : NaN;
        const retryIn = Math.min(MAX_RETRY_MS, 1000 * 2 ** this.failures);
        // Retry transient failures while the current token is still good for the wait.
        const willRetry = isRenewal && !this.isStopped && !TERMINAL.has(error.code) && Date.now() + retryIn < expiresAt;
        this.failures += 1;
        if (willRetry) this.schedule(retryIn);
        // Without a first session there is nothing to keep valid: `ready` rejects and the app
        // starts again when it wants to.
        else if (TERMINAL.has(error.code) || !isRenewal) this.stop();
        if (isRenewal) this.emit('error', error, willRetry);
        throw error;
      })
      .finally(() => {
        this.inflight = null;
      });
    this.inflight = request;
    return request;
  }

  private renewDelay(session: MediaSession): number {
    const lifetime = Date.parse(session.expiresAt) - Date.now();
    if (!Number.isFinite(lifetime)) return MAX_RETRY_MS;
    // `renewBeforeSeconds` early; a token shorter than twice that is renewed half-way through.
    return Math.max(1000, lifetime - this.renewBeforeMs, lifetime / 2);
  }

  private schedule(delayMs: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.fetch(true).catch(() => {
        // reported through the `error` event
      });
    }, delayMs);
  }
}
