import { CallsClient } from '@calls-backend/client';

declare const auth: { token(forceRefresh: boolean): Promise<string> }; // your app's
declare const engine: { renewToken(token: string): number }; // react-native-agora
// @readme-start
const calls = new CallsClient({ baseUrl: 'http://localhost:8080', getToken: ({ forceRefresh }) => auth.token(forceRefresh) });
calls.connect();

// Alice rings Bob; the LiveCall keeps the call's state current, in order, across reconnects.
const call = await calls.startCall('room-42', { type: 'video', isGroupCall: false, inviteUserIds: ['bob'] });
call.on('change', (state) => console.log(state.status, state.participants));

// Bob's phone rings (socket or push, once); he answers and joins the media.
calls.on('incoming_call', async ({ callId, from }) => {
  const answered = await calls.answer(callId);
  const media = answered.startMedia({ onRenew: (s) => engine.renewToken(s.rtcToken) });
  const { appId, channelName, userAccount, rtcToken } = await media.ready; // join Agora with these
  console.log(`in a call with ${from.userId}`, appId, channelName, userAccount, rtcToken);
});
