// voip-push.ts (iOS): PushKit VoIP pushes ring a phone whose app is in the background or killed.
// iOS requires every VoIP push to be reported to CallKit before the native handler returns, so
// the report happens in AppDelegate (see the README); JavaScript learns about it here.
import VoipPushNotification from 'react-native-voip-push-notification';
import { parseVoipPush, ringTimeLeftMs } from '@calls-backend/client';

import { calls } from './calls';

export function setupVoipPush(onVoipToken: (token: string) => void): void {
  // The PushKit token: register it with your device registry (`voipToken`).
  VoipPushNotification.addEventListener('register', (token) => onVoipToken(token));

  VoipPushNotification.addEventListener('notification', (payload) => {
    const push = parseVoipPush(payload);
    if (!push) return;
    calls.receivePush(payload);
    // Connect now: the socket tells whether the call still rings (an `incoming_call_cancelled`
    // arrives at once if it stopped), and answering needs it anyway.
    calls.connect();
    if (ringTimeLeftMs(push) === 0) console.info(`call ${push.callId} rang out before the push arrived`);
    VoipPushNotification.onVoipNotificationCompleted(push.callId);
  });

  // Pushes that arrived before the JavaScript bundle loaded.
  VoipPushNotification.addEventListener('didLoadWithEvents', (events) => {
    for (const event of events) {
      if (event.name === VoipPushNotification.RNVoipPushRemoteNotificationsRegisteredEvent) onVoipToken(event.data);
      if (event.name === VoipPushNotification.RNVoipPushRemoteNotificationReceivedEvent) calls.receivePush(event.data);
    }
  });

  VoipPushNotification.registerVoipToken();
}
