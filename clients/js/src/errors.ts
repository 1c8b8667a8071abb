/**
 * Every failure the client reports is a {@link CallsApiError}: REST error envelopes, refused
 * socket acks, network failures and timeouts alike, so an app has one thing to catch.
 */

/** The server's stable error codes (docs/CONTRACT.md section 1). */
export type ServerErrorCode =
  | 'VALIDATION_FAILED'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'CALL_NOT_FOUND'
  | 'CALL_FULL'
  | 'CALL_ENDED'
  | 'INVALID_TRANSITION'
  | 'CALL_ALREADY_ACTIVE'
  | 'NOT_JOINED'
  | 'PAYLOAD_TOO_LARGE'
  | 'RATE_LIMITED'
  | 'MEDIA_PROVIDER_NOT_CONFIGURED'
  | 'DEPENDENCY_UNAVAILABLE'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'INTERNAL';

/**
 * Codes the client itself produces (`status` 0): the request never got an answer
 * (`NETWORK_ERROR`), got none in time (`TIMEOUT`), or got one that is not the contract's JSON
 * (`INVALID_RESPONSE`); `CLIENT_CLOSED` when the client was closed while waiting.
 */
export type ClientErrorCode = 'NETWORK_ERROR' | 'TIMEOUT' | 'INVALID_RESPONSE' | 'CLIENT_CLOSED';

/** Any code; unknown future server codes still type-check as strings. */
export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

/** One invalid field of a `VALIDATION_FAILED` error. */
export interface FieldError {
  field: string;
  message: string;
}

/** The HTTP status the REST API uses for each code; socket acks carry no status. */
const STATUS_OF: Record<string, number> = {
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  CALL_NOT_FOUND: 404,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  CALL_FULL: 409,
  CALL_ENDED: 409,
  INVALID_TRANSITION: 409,
  CALL_ALREADY_ACTIVE: 409,
  NOT_JOINED: 409,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  MEDIA_PROVIDER_NOT_CONFIGURED: 503,
  DEPENDENCY_UNAVAILABLE: 503,
};

/** Codes worth retrying later with the same request. */
const RETRYABLE = new Set(['DEPENDENCY_UNAVAILABLE', 'RATE_LIMITED', 'NETWORK_ERROR', 'TIMEOUT']);

export interface CallsApiErrorInit {
  status: number;
  code: ErrorCode;
  message: string;
  requestId?: string | null;
  details?: FieldError[];
  retryAfterSeconds?: number | null;
  cause?: unknown;
}

export class CallsApiError extends Error {
  /** The HTTP status (for socket acks: the status REST uses for the same code; 0 for client-side codes). */
  readonly status: number;
  /** A stable machine-readable code. */
  readonly code: ErrorCode;
  /** The request id the gateway assigned (REST only): quote it when reporting a problem. */
  readonly requestId: string | null;
  /** Field errors of `VALIDATION_FAILED`; empty otherwise. */
  readonly details: FieldError[];
  /** From `Retry-After` on `RATE_LIMITED`. */
  readonly retryAfterSeconds: number | null;

  constructor(init: CallsApiErrorInit) {
    super(init.message);
    this.name = 'CallsApiError';
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId ?? null;
    this.details = init.details ?? [];
    this.retryAfterSeconds = init.retryAfterSeconds ?? null;
    if (init.cause !== undefined) (this as { cause?: unknown }).cause = init.cause;
  }

  /** Whether the same request may succeed later (a dependency down, rate limited, no network). */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }

  /** A refused socket ack (`{ok: false, error: {code, message}}`) as an error. */
  static fromAck(error: { code?: unknown; message?: unknown } | undefined): CallsApiError {
    const code = typeof error?.code === 'string' ? error.code : 'INVALID_RESPONSE';
    const message = typeof error?.message === 'string' ? error.message : 'The server refused the request';
    return new CallsApiError({ status: STATUS_OF[code] ?? 0, code, message });
  }
}

/** Whether `err` is a {@link CallsApiError}, optionally with one of `codes`. */
export function isCallsApiError(err: unknown, ...codes: ErrorCode[]): err is CallsApiError {
  return err instanceof CallsApiError && (codes.length === 0 || codes.includes(err.code));
}
