/**
 * Typed REST over `fetch`: one method per endpoint of `/api/v1`, the contract's envelope
 * unwrapped, errors as {@link CallsApiError}, and one retry with a fresh token on 401.
 */
import { CallsApiError, type FieldError } from './errors.js';
import type { TokenSource } from './tokens.js';
import type {
  Call,
  CallHistoryPage,
  Device,
  RegisterDeviceBody,
  InitiateCallBody,
  InviteBody,
  JoinCallBody,
  MediaSession,
  MediaStateBody,
  Participant,
  UpdateStatusBody,
} from './types.js';

export type FetchLike = (input: string, init: {
  method: string;
  headers: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}) => Promise<{
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}>;

export interface RestOptions {
  baseUrl: string;
  tokens: TokenSource;
  fetch: FetchLike;
  timeoutMs: number;
  /** This install's device id (as registered in `/devices`): sent as `X-Device-Id` on answers and declines. */
  deviceId?: string;
}

export interface RequestOptions {
  /** Makes a retried initiate return the first response (`Idempotency-Key`). */
  idempotencyKey?: string;
  /** Cancels the request. */
  signal?: AbortSignal;
}

export interface InitiateResult {
  call: Call;
  /** `true` for a new call (201); `false` when the room already had a live call you may see (200). */
  created: boolean;
}

interface Envelope<T> {
  status: number;
  data: T;
}

const enc = encodeURIComponent;

export class RestClient {
  constructor(private readonly options: RestOptions) {}

  /** `POST /calls/rooms/:chatRoomId/initiate`: ring `inviteUserIds`. */
  async initiateCall(chatRoomId: string, body: InitiateCallBody, options: RequestOptions = {}): Promise<InitiateResult> {
    const headers: Record<string, string> = {};
    if (options.idempotencyKey) headers['idempotency-key'] = options.idempotencyKey;
    const res = await this.request<Call>('POST', `/calls/rooms/${enc(chatRoomId)}/initiate`, body, { ...options, headers });
    return { call: res.data, created: res.status === 201 };
  }

  /** `POST /calls/:id/join`: answer (or join a group call) with an initial media state. */
  async joinCall(callId: string, body: JoinCallBody = {}, options: RequestOptions = {}): Promise<Call> {
    return (await this.request<Call>('POST', `/calls/${enc(callId)}/join`, body, this.fromDevice(options))).data;
  }

  /** `POST /calls/:id/media/session`: Agora credentials; calling again renews the token. */
  async getMediaSession(callId: string, options: RequestOptions = {}): Promise<MediaSession> {
    return (await this.request<MediaSession>('POST', `/calls/${enc(callId)}/media/session`, undefined, options)).data;
  }

  /** `PATCH /calls/:id/status`: your own status (`ringing`, `joined`, `left`, `declined`, `missed`). */
  async updateStatus(callId: string, body: UpdateStatusBody, options: RequestOptions = {}): Promise<Call> {
    return (await this.request<Call>('PATCH', `/calls/${enc(callId)}/status`, body, this.fromDevice(options))).data;
  }

  /** `PATCH /calls/:id/media`: your mic, camera and screen-share flags. */
  async updateMedia(callId: string, body: MediaStateBody, options: RequestOptions = {}): Promise<Participant> {
    return (await this.request<Participant>('PATCH', `/calls/${enc(callId)}/media`, body, options)).data;
  }

  /** `POST /calls/:id/end`: the host, or either side of a 1:1, ends the call. */
  async endCall(callId: string, options: RequestOptions = {}): Promise<Call> {
    return (await this.request<Call>('POST', `/calls/${enc(callId)}/end`, undefined, this.fromDevice(options))).data;
  }

  /**
   * `POST /calls/:id/invite`: the host or a joined participant rings `userIds` into the live
   * call (a 1:1 becomes a group call). Those already ringing or in the call are left as they are.
   */
  async invite(callId: string, userIds: string[], options: RequestOptions = {}): Promise<Call> {
    const body: InviteBody = { userIds };
    return (await this.request<Call>('POST', `/calls/${enc(callId)}/invite`, body, options)).data;
  }

  /**
   * `POST /calls/:id/participants/:userId/remove`: the host removes someone; they stop getting
   * the call and cannot rejoin unless invited again.
   */
  async removeParticipant(callId: string, userId: string, options: RequestOptions = {}): Promise<Call> {
    return (await this.request<Call>('POST', `/calls/${enc(callId)}/participants/${enc(userId)}/remove`, undefined, options)).data;
  }

  /** `GET /calls/:id`. */
  async getCall(callId: string, options: RequestOptions = {}): Promise<Call> {
    return (await this.request<Call>('GET', `/calls/${enc(callId)}`, undefined, options)).data;
  }

  /** `GET /calls/rooms/:chatRoomId/active`: the room's live call, or `null` (recovery after an app restart). */
  async getActiveCall(chatRoomId: string, options: RequestOptions = {}): Promise<Call | null> {
    return (await this.request<Call | null>('GET', `/calls/rooms/${enc(chatRoomId)}/active`, undefined, options)).data ?? null;
  }

  /** `GET /calls?limit=&before=`: your call history, newest first. */
  async listCalls(query: { limit?: number; before?: string } = {}, options: RequestOptions = {}): Promise<CallHistoryPage> {
    const params: string[] = [];
    if (query.limit !== undefined) params.push(`limit=${enc(String(query.limit))}`);
    if (query.before !== undefined) params.push(`before=${enc(query.before)}`);
    const path = params.length ? `/calls?${params.join('&')}` : '/calls';
    const page = (await this.request<CallHistoryPage>('GET', path, undefined, options)).data;
    return { items: page.items, nextCursor: page.nextCursor ?? null };
  }

  /**
   * `PUT /devices/:deviceId`: register this phone for pushes (again whenever a token changes);
   * a token another user registered moves to you.
   */
  async registerDevice(deviceId: string, body: RegisterDeviceBody, options: RequestOptions = {}): Promise<Device> {
    return (await this.request<Device>('PUT', `/devices/${enc(deviceId)}`, body, options)).data;
  }

  /** `GET /devices`: your registered phones, most recently updated first. */
  async listDevices(options: RequestOptions = {}): Promise<Device[]> {
    return (await this.request<{ items: Device[] }>('GET', '/devices', undefined, options)).data.items;
  }

  /** `DELETE /devices/:deviceId` (at sign-out): its pushes stop. */
  async removeDevice(deviceId: string, options: RequestOptions = {}): Promise<void> {
    await this.request<null>('DELETE', `/devices/${enc(deviceId)}`, undefined, options);
  }

  /** Names this install's device on an answer or decline, so it is not told "answered elsewhere". */
  private fromDevice(options: RequestOptions): RequestOptions & { headers?: Record<string, string> } {
    return this.options.deviceId ? { ...options, headers: { 'x-device-id': this.options.deviceId } } : options;
  }

  /**
   * One request under `/api/v1`, with the access token. Exposed so endpoints newer than this
   * package can be called with the same auth and error handling.
   */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    options: RequestOptions & { headers?: Record<string, string> } = {},
  ): Promise<Envelope<T>> {
    let token = await this.options.tokens.get();
    let res = await this.send(method, path, body, token, options);
    if (res.status === 401) {
      // The gateway checks the token before forwarding: the request was not applied, so it is
      // safe to repeat it once with a fresh token.
      this.options.tokens.invalidate(token);
      token = await this.options.tokens.get(true);
      res = await this.send(method, path, body, token, options);
    }
    const text = await res.text().catch(() => '');
    let json: Record<string, unknown> | undefined;
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === 'object') json = parsed as Record<string, unknown>;
    } catch {
      json = undefined;
    }
    const requestId = res.headers.get('x-request-id');
    if (res.status >= 200 && res.status < 300 && json && 'data' in json) {
      return { status: res.status, data: json.data as T };
    }
    if (json && typeof json.code === 'string') {
      const retryAfter = Number(res.headers.get('retry-after'));
      throw new CallsApiError({
        status: res.status,
        code: json.code,
        message: typeof json.message === 'string' ? json.message : `HTTP ${res.status}`,
        requestId: typeof json.requestId === 'string' ? json.requestId : requestId,
        details: Array.isArray(json.details) ? (json.details as FieldError[]) : [],
        retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
      });
    }
    throw new CallsApiError({
      status: res.status,
      code: 'INVALID_RESPONSE',
      message: `${method} ${path} answered ${res.status} without the API's JSON envelope`,
      requestId,
    });
  }

  private async send(method: string, path: string, body: unknown, token: string, options: RequestOptions & { headers?: Record<string, string> }) {
    const headers: Record<string, string> = { accept: 'application/json', authorization: `Bearer ${token}`, ...options.headers };
    let payload: string | undefined;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller?.abort();
    }, this.options.timeoutMs);
    const onAbort = () => controller?.abort();
    options.signal?.addEventListener('abort', onAbort);
    try {
      return await this.options.fetch(`${this.options.baseUrl}/api/v1${path}`, {
        method,
        headers,
        body: payload,
        signal: controller?.signal,
      });
    } catch (err) {
      throw new CallsApiError({
        status: 0,
        code: timedOut ? 'TIMEOUT' : 'NETWORK_ERROR',
        message: timedOut ? `${method} ${path} got no answer within ${this.options.timeoutMs} ms` : `${method} ${path} failed: ${(err as Error)?.message ?? err}`,
        cause: err,
      });
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    }
  }
}
