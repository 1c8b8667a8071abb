/**
 * The wire types. REST resources and bodies come from the generated OpenAPI types
 * (src/generated/openapi.ts); the Socket.IO events, which OpenAPI cannot describe, are written
 * here from docs/CONTRACT.md section 5.
 */
import type { components } from './generated/openapi.js';

type Schemas = components['schemas'];

/**
 * The server always sends every field of a resource (`null` when empty); the document marks
 * nullable fields optional, so resources are read with every key present.
 */
type Present<T> = { [K in keyof T]-?: Exclude<T[K], undefined> };

export type CallType = Schemas['CallType'];
export type CallStatus = Schemas['CallStatus'];
export type ParticipantStatus = Schemas['ParticipantStatus'];
export type ParticipantRole = Schemas['Role'];
export type EndReason = Schemas['EndReason'];

/** A participant of a call (CONTRACT section 3). */
export type Participant = Present<Schemas['Participant']>;

/** A call (CONTRACT section 3); `seq` is the call's event counter. */
export type Call = Omit<Present<Schemas['Call']>, 'participants'> & { participants: Participant[] };

/** Agora credentials: join the channel with `appId + channelName + userAccount + rtcToken`. */
export type MediaSession = Present<Schemas['MediaSession']>;

/** One page of the caller's call history, newest first. */
export interface CallHistoryPage {
  items: Call[];
  /** Pass as `before` for the next page; `null` on the last page. */
  nextCursor: string | null;
}

/** `POST /calls/rooms/:chatRoomId/initiate` body. */
export type InitiateCallBody = Schemas['InitiateBody'];
/** `POST /calls/:id/join` body: the initial media state. */
export type JoinCallBody = Schemas['JoinBody'];
/** `POST /calls/:id/invite` body: who to ring into the live call. */
export type InviteBody = Schemas['InviteBody'];
/** `PATCH /calls/:id/status` body. */
export type UpdateStatusBody = Schemas['StatusBody'];
/** `PATCH /calls/:id/media` body: at least one flag. */
export type MediaStateBody = Schemas['MediaBody'];
/** A phone registered for pushes (`/devices`). */
export type Device = Present<Schemas['Device']>;
/** `PUT /devices/:deviceId` body. */
export type RegisterDeviceBody = Schemas['RegisterDevice'];

/** What `join_call` answers and `call_participants` carries. */
export interface CallSnapshot {
  callId: string;
  seq: number;
  status: CallStatus;
  participants: Participant[];
}

/** Fields every call event carries: `seq` is strictly increasing and gap-free per call. */
export interface CallEventBase {
  callId: string;
  seq: number;
  /** RFC 3339 UTC. */
  at: string;
}

export interface ParticipantJoinedEvent extends CallEventBase {
  participant: Participant;
}
export interface ParticipantLeftEvent extends CallEventBase {
  userId: string;
  reason: 'left' | 'connection_lost' | 'removed' | (string & {});
}
export interface ParticipantDisconnectedEvent extends CallEventBase {
  userId: string;
  /** They become `left` unless a socket of theirs comes back within this many seconds. */
  graceSeconds: number;
}
export interface ParticipantReconnectedEvent extends CallEventBase {
  userId: string;
}
export interface ParticipantMediaChangedEvent extends CallEventBase {
  userId: string;
  isMicMuted: boolean;
  isCameraOff: boolean;
  isSharingScreen: boolean;
}
/**
 * Agora reported the participant's client joining (`inMedia: true`) or leaving the call's
 * channel; `reason` is Agora's leave reason code, on leaves only (CONTRACT section 11).
 */
export interface ParticipantMediaPresenceEvent extends CallEventBase {
  userId: string;
  inMedia: boolean;
  reason?: number;
}
export interface ParticipantStatusChangedEvent extends CallEventBase {
  userId: string;
  status: ParticipantStatus;
  /** The decline reason, `"ring_timeout"` for a server-side miss, else `null`. */
  reason: string | null;
}
/** Someone was rung into the live call (CONTRACT section 10). */
export interface ParticipantInvitedEvent extends CallEventBase {
  /** As after the invitation: `invited`, or `declined` with reason `busy`. */
  participant: Participant;
}
/** The call itself changed (a 1:1 became a group call); `call.seq` is the event's `seq`. */
export interface CallUpdatedEvent extends CallEventBase {
  call: Call;
}
/** The host left a live group call; `userId` is the new host. */
export interface HostChangedEvent extends CallEventBase {
  userId: string;
}
export interface CallEndedEvent extends CallEventBase {
  reason: EndReason;
  endedBy: string | null;
  /** The call's final `mediaSeconds`: its participants' sum (CONTRACT section 11). */
  mediaSeconds: number;
  /** Each participant's final `mediaSeconds`, for those with any. */
  participantMediaSeconds: { userId: string; mediaSeconds: number }[];
}

/** The call events, by Socket.IO event name. */
export interface CallEventPayloads {
  participant_joined: ParticipantJoinedEvent;
  participant_left: ParticipantLeftEvent;
  participant_disconnected: ParticipantDisconnectedEvent;
  participant_reconnected: ParticipantReconnectedEvent;
  participant_media_changed: ParticipantMediaChangedEvent;
  participant_media_presence: ParticipantMediaPresenceEvent;
  participant_status_changed: ParticipantStatusChangedEvent;
  participant_invited: ParticipantInvitedEvent;
  call_updated: CallUpdatedEvent;
  host_changed: HostChangedEvent;
  call_ended: CallEndedEvent;
}
export type CallEventName = keyof CallEventPayloads;

/**
 * One applied call event, tagged with its name. Events the client does not know yet (a newer
 * server) arrive as `{type: <name>, ...}` with `known: false`; the client resyncs after one.
 */
export type CallEvent =
  | { [N in CallEventName]: { type: N; known: true } & CallEventPayloads[N] }[CallEventName]
  | ({ type: string; known: false } & CallEventBase & Record<string, unknown>);

/** Who is calling. `displayName`/`avatarUrl` come from the caller's token claims when present. */
export interface Caller {
  userId: string;
  displayName?: string;
  avatarUrl?: string;
}

/** `incoming_call` on the socket. */
export interface IncomingCallEvent {
  callId: string;
  at: string;
  call: Call;
  /** The caller (for an invitation into a live call, whoever invited): a user id, or `{userId, displayName?, avatarUrl?}`. */
  from: string | Caller;
}

export type RingStopReason = 'answered_elsewhere' | 'declined_elsewhere' | 'cancelled' | 'missed' | (string & {});

/** `incoming_call_cancelled` on the socket: stop ringing. */
export interface IncomingCallCancelledEvent {
  callId: string;
  at: string;
  reason: RingStopReason;
}

/** `error` on the socket: an event without an ack failed, or the connection is being refused. */
export interface ServerErrorEvent {
  event: string;
  code: string;
  message: string;
  callId?: string;
}
