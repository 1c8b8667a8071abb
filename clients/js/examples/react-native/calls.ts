// calls.ts: one client for the whole app, created once (it also runs in the headless JS task
// that Android starts for a background FCM message).
import { CallsClient } from '@calls-backend/client';

// Your auth: answers the user's access token, a fresh one when `forceRefresh` is true.
declare function getAccessToken(options: { forceRefresh: boolean }): Promise<string>;

export const calls = new CallsClient({
  baseUrl: 'https://calls.example.com',
  getToken: ({ forceRefresh }) => getAccessToken({ forceRefresh }),
});

calls.on('error', (err) => {
  // `UNAUTHORIZED` again and again: the user's session is gone; sign them out.
  console.warn(`calls: ${err.code} ${err.message}`);
});
