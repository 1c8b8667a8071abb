// fcm.ts (Android): high-priority FCM data messages ring a phone whose app is in the background
// or killed. Register the background handler in index.js, before AppRegistry.registerComponent.
import { getMessaging, getToken, onMessage, onTokenRefresh, setBackgroundMessageHandler } from '@react-native-firebase/messaging';

import { calls } from './calls';

/** Call from index.js: Android runs it in a headless task when a message arrives in the background. */
export function registerBackgroundHandler(): void {
  setBackgroundMessageHandler(getMessaging(), async (message) => {
    // `incoming_call` → calls emits incoming_call → callkit.ts shows the ConnectionService UI;
    // `incoming_call_cancelled` → it stops; `missed_call` → calls emits missed_call.
    calls.receivePush(message);
  });
}

export async function setupFcm(onFcmToken: (token: string) => void): Promise<void> {
  onMessage(getMessaging(), async (message) => {
    calls.receivePush(message);
  });
  // The FCM registration token: register it with your device registry (`pushToken`).
  onFcmToken(await getToken(getMessaging()));
  onTokenRefresh(getMessaging(), onFcmToken);
  calls.on('missed_call', (missed) => console.info(`missed a call from ${missed.from.userId} in ${missed.chatRoomId}`));
}
