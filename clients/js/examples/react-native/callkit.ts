// callkit.ts: ring and answer through the system call UI (CallKit on iOS, ConnectionService on
// Android) with react-native-callkeep. The backend's call id is a UUID: use it as the CallKit UUID.
import RNCallKeep, { CONSTANTS } from 'react-native-callkeep';
import type { LiveCall } from '@calls-backend/client';

import { calls } from './calls';
import { joinMedia } from './media';

export async function setupCallKit(): Promise<void> {
  await RNCallKeep.setup({
    ios: { appName: 'Chat', supportsVideo: true },
    android: {
      alertTitle: 'Calls',
      alertDescription: 'Chat needs to use your phone accounts to show calls',
      cancelButton: 'Cancel',
      okButton: 'OK',
      additionalPermissions: [],
      selfManaged: true,
    },
  });
  RNCallKeep.setAvailable(true);

  // A ring from the socket (app in the foreground) or from a push passed to calls.receivePush:
  // once per call, whichever came first.
  calls.on('incoming_call', (ring) => {
    const name = ring.from.displayName ?? ring.from.userId;
    RNCallKeep.displayIncomingCall(ring.callId, ring.from.userId, name, 'generic', ring.callType === 'video');
  });

  // Shown by the native side (a VoIP push on iOS) or by displayIncomingCall above: tell the caller
  // it rings, and drop it at once if it stopped ringing meanwhile.
  RNCallKeep.addEventListener('didDisplayIncomingCall', ({ callUUID, payload }) => {
    calls.receivePush(payload);
    calls.connect();
    calls.reportRinging(callUUID).then(
      (ringing) => {
        if (!ringing) RNCallKeep.reportEndCallWithUUID(callUUID, CONSTANTS.END_CALL_REASONS.REMOTE_ENDED);
      },
      () => {},
    );
  });

  // Answered on another device, declined there, cancelled by the caller, or missed.
  calls.on('incoming_call_cancelled', ({ callId, reason }) => {
    const { END_CALL_REASONS } = CONSTANTS;
    const why = reason === 'answered_elsewhere' ? END_CALL_REASONS.ANSWERED_ELSEWHERE
      : reason === 'declined_elsewhere' ? END_CALL_REASONS.DECLINED_ELSEWHERE
      : reason === 'missed' ? END_CALL_REASONS.MISSED
      : END_CALL_REASONS.REMOTE_ENDED;
    RNCallKeep.reportEndCallWithUUID(callId, why);
  });

  RNCallKeep.addEventListener('answerCall', ({ callUUID }) => {
    calls.answer(callUUID, { isMicMuted: false, isCameraOff: false }).then(
      async (call) => {
        RNCallKeep.setCurrentCallActive(callUUID);
        endWithTheCall(call);
        await joinMedia(call);
      },
      () => RNCallKeep.reportEndCallWithUUID(callUUID, CONSTANTS.END_CALL_REASONS.FAILED),
    );
  });

  // The user hung up (or declined) in the system UI.
  RNCallKeep.addEventListener('endCall', ({ callUUID }) => {
    const live = calls.followedCalls.find((c) => c.id === callUUID);
    const done = live ? live.leave() : calls.decline(callUUID);
    done.catch(() => {});
  });

  RNCallKeep.addEventListener('didPerformSetMutedCallAction', ({ muted, callUUID }) => {
    calls.followedCalls.find((c) => c.id === callUUID)?.setMedia({ isMicMuted: muted }).catch(() => {});
  });
}

/** Outgoing: ring `userId` from a chat room, shown in the system UI too. */
export async function startCall(chatRoomId: string, userId: string, video: boolean): Promise<LiveCall> {
  const call = await calls.startCall(chatRoomId, { type: video ? 'video' : 'audio', isGroupCall: false, inviteUserIds: [userId] });
  RNCallKeep.startCall(call.id, userId, userId, 'generic', video);
  call.on('participant_joined', ({ participant }) => {
    if (participant.userId === userId) RNCallKeep.reportConnectedOutgoingCallWithUUID(call.id);
  });
  endWithTheCall(call);
  await joinMedia(call);
  return call;
}

/** However the call ends (hang-up, the other side, a timer), the system UI ends with it. */
function endWithTheCall(call: LiveCall): void {
  call.on('ended', ({ reason }) => {
    const why = reason === 'missed' ? CONSTANTS.END_CALL_REASONS.UNANSWERED : CONSTANTS.END_CALL_REASONS.REMOTE_ENDED;
    RNCallKeep.reportEndCallWithUUID(call.id, why);
  });
}
