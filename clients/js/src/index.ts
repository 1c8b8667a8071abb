/**
 * `@calls-backend/client`: the TypeScript client of calls-backend for React Native apps and
 * browsers. Start with {@link CallsClient}.
 */
export { CallsClient } from './client.js';
export type { CallsClientEvents, CallsClientOptions, ConnectionState, IncomingCall, RingSource, RingStopped } from './client.js';
export { LiveCall, applyCallEvent, isKnownCallEvent } from './live-call.js';
export type { LiveCallEvents, ResyncInfo, ResyncReason } from './live-call.js';
export { ManagedMediaSession } from './media.js';
export type { ManagedMediaSessionEvents, MediaSessionOptions } from './media.js';
export { parseCallPush, parseFcmMessage, parseVoipPush, ringTimeLeftMs } from './push.js';
export type { CallPush, IncomingCallCancelledPush, IncomingCallPush, MissedCallPush, PushTransport } from './push.js';
export { RestClient } from './rest.js';
export type { FetchLike, InitiateResult, RequestOptions } from './rest.js';
export { CallsApiError, isCallsApiError } from './errors.js';
export type { ClientErrorCode, ErrorCode, FieldError, ServerErrorCode } from './errors.js';
export { decodeJwtClaims, tokenExpiry } from './tokens.js';
export type { GetToken, TokenRequest } from './tokens.js';
export type * from './types.js';
export type { components as OpenApiComponents, paths as OpenApiPaths } from './generated/openapi.js';
