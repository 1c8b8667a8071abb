// media.ts: the call's audio and video through Agora (react-native-agora), with the token kept
// valid by the client.
import { ChannelProfileType, ClientRoleType, createAgoraRtcEngine } from 'react-native-agora';
import type { LiveCall } from '@calls-backend/client';

const engine = createAgoraRtcEngine();
let initializedFor: string | null = null;

export async function joinMedia(call: LiveCall): Promise<void> {
  // Renewed ahead of expiry; every new token goes straight to the engine.
  const media = call.startMedia({ onRenew: (session) => engine.renewToken(session.rtcToken) });
  const session = await media.ready;
  if (initializedFor !== session.appId) {
    engine.initialize({ appId: session.appId, channelProfile: ChannelProfileType.ChannelProfileCommunication });
    initializedFor = session.appId;
  }
  engine.registerEventHandler({
    // Agora's own warning, 30 s before expiry (after a device sleep, say): renew now.
    onTokenPrivilegeWillExpire: () => {
      media.renew().catch(() => {});
    },
  });
  const video = call.state.type === 'video';
  if (video) engine.enableVideo();
  engine.joinChannelWithUserAccount(session.rtcToken, session.channelName, session.userAccount, {
    clientRoleType: ClientRoleType.ClientRoleBroadcaster,
    publishMicrophoneTrack: !call.self?.isMicMuted,
    publishCameraTrack: video && !call.self?.isCameraOff,
    autoSubscribeAudio: true,
    autoSubscribeVideo: video,
  });
  call.on('ended', () => engine.leaveChannel());
}

/** The mute button: Agora stops sending, the backend tells everyone (participant_media_changed). */
export async function setMicMuted(call: LiveCall, muted: boolean): Promise<void> {
  engine.muteLocalAudioStream(muted);
  await call.setMedia({ isMicMuted: muted });
}
