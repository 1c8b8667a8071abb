/**
 * The push payloads of docs/CONTRACT.md section 8, parsed into typed objects:
 * - iOS PushKit (VoIP) body: `{type: "incoming_call", callId, chatRoomId, callType, isGroupCall,
 *   from: {userId, displayName?, avatarUrl?}, ringDeadline}`;
 * - Android FCM data messages (every value a string): `incoming_call` (with `fromUserId`,
 *   `fromDisplayName?`, `fromAvatarUrl?`), `incoming_call_cancelled {callId, reason}` and
 *   `missed_call {callId, chatRoomId, fromUserId}`.
 *
 * Parsers answer `null` for anything that is not a well-formed calls-backend payload (other
 * pushes your app receives, or a malformed one), never throw.
 */
import type { CallType, Caller, RingStopReason } from './types.js';

/** Where a push came from. */
export type PushTransport = 'apns-voip' | 'fcm';

/** Ring this device: report it to CallKit / show the full-screen notification. */
export interface IncomingCallPush {
  type: 'incoming_call';
  callId: string;
  chatRoomId: string;
  callType: CallType;
  isGroupCall: boolean;
  from: Caller;
  /** RFC 3339: after this the server has marked the call missed for you. */
  ringDeadline: string;
  transport: PushTransport;
}

/** Stop ringing (Android only; iOS learns it from the socket on connect). */
export interface IncomingCallCancelledPush {
  type: 'incoming_call_cancelled';
  callId: string;
  reason: RingStopReason;
  transport: PushTransport;
}

/** The data part of the missed-call notification (the notification itself is shown by the OS). */
export interface MissedCallPush {
  type: 'missed_call';
  callId: string;
  chatRoomId: string;
  from: Caller;
  transport: PushTransport;
}

export type CallPush = IncomingCallPush | IncomingCallCancelledPush | MissedCallPush;

type Bag = Record<string, unknown>;

function isBag(v: unknown): v is Bag {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v.length > 0 ? v : null;
}

function optStr(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

function callType(v: unknown): CallType | null {
  return v === 'audio' || v === 'video' ? v : null;
}

function instant(v: unknown): string | null {
  const s = str(v);
  return s !== null && Number.isFinite(Date.parse(s)) ? s : null;
}

function caller(userId: unknown, displayName: unknown, avatarUrl: unknown): Caller | null {
  const id = str(userId);
  if (id === null) return null;
  const from: Caller = { userId: id };
  const name = optStr(displayName);
  const avatar = optStr(avatarUrl);
  if (name !== undefined) from.displayName = name;
  if (avatar !== undefined) from.avatarUrl = avatar;
  return from;
}

/**
 * A PushKit VoIP payload (what react-native-voip-push-notification's `notification` event gives
 * you), or `null`.
 */
export function parseVoipPush(payload: unknown): IncomingCallPush | null {
  if (!isBag(payload) || payload.type !== 'incoming_call') return null;
  const callId = str(payload.callId);
  const chatRoomId = str(payload.chatRoomId);
  const type = callType(payload.callType);
  const ringDeadline = instant(payload.ringDeadline);
  const fromBag = isBag(payload.from) ? payload.from : null;
  const from = fromBag ? caller(fromBag.userId, fromBag.displayName, fromBag.avatarUrl) : null;
  if (!callId || !chatRoomId || !type || !ringDeadline || !from || typeof payload.isGroupCall !== 'boolean') return null;
  return { type: 'incoming_call', callId, chatRoomId, callType: type, isGroupCall: payload.isGroupCall, from, ringDeadline, transport: 'apns-voip' };
}

/**
 * An FCM message (what @react-native-firebase/messaging's `onMessage` /
 * `setBackgroundMessageHandler` give you: a `RemoteMessage`, or just its `data`), or `null`.
 */
export function parseFcmMessage(message: unknown): CallPush | null {
  if (!isBag(message)) return null;
  const data = isBag(message.data) ? message.data : message;
  const callId = str(data.callId);
  if (!callId) return null;
  switch (data.type) {
    case 'incoming_call': {
      const chatRoomId = str(data.chatRoomId);
      const type = callType(data.callType);
      const ringDeadline = instant(data.ringDeadline);
      const from = caller(data.fromUserId, data.fromDisplayName, data.fromAvatarUrl);
      const group = data.isGroupCall === 'true' ? true : data.isGroupCall === 'false' ? false : null;
      if (!chatRoomId || !type || !ringDeadline || !from || group === null) return null;
      return { type: 'incoming_call', callId, chatRoomId, callType: type, isGroupCall: group, from, ringDeadline, transport: 'fcm' };
    }
    case 'incoming_call_cancelled': {
      const reason = str(data.reason);
      if (!reason) return null;
      return { type: 'incoming_call_cancelled', callId, reason, transport: 'fcm' };
    }
    case 'missed_call': {
      const chatRoomId = str(data.chatRoomId);
      const from = caller(data.fromUserId, data.fromDisplayName, data.fromAvatarUrl);
      if (!chatRoomId || !from) return null;
      return { type: 'missed_call', callId, chatRoomId, from, transport: 'fcm' };
    }
    default:
      return null;
  }
}

/** Either kind of payload: tries the VoIP shape, then FCM's. */
export function parseCallPush(payload: unknown): CallPush | null {
  return parseVoipPush(payload) ?? parseFcmMessage(payload);
}

/**
 * Milliseconds of ringing left (0 when past the deadline). Apple requires every VoIP push to be
 * reported to CallKit; report one that is already past its deadline and end it right away.
 */
export function ringTimeLeftMs(push: Pick<IncomingCallPush, 'ringDeadline'>, now: number = Date.now()): number {
  return Math.max(0, Date.parse(push.ringDeadline) - now);
}
