// One deployment per `describe`: started once in `before`, stopped in `after`, and every
// scenario of scenarios.mjs run against it through its gateway.

import { after, before, describe } from 'node:test';

import { AGORA_CUSTOMER_ID, AGORA_CUSTOMER_SECRET, startAgoraRest } from '../lib/agora-rest.mjs';
import { AGORA_APP_ID, Client, NCS_SECRET, TIMERS, topologyEnv } from './harness.mjs';
import { INTERNAL_API_TOKEN, defineScenarios, defineWithoutAgora } from './scenarios.mjs';

/**
 * `start(env)` starts the deployment and answers `{base, internalUrl, stop, log}`; the scenarios
 * get a client of its gateway, `room(members)` (the chat backend writing a room's members) and
 * `internal(method, path, body, token)` (the chat backend's internal API).
 */
export function describeTopology(title, start) {
  describe(title, () => {
    let deployment;
    let context;
    let agora;
    before(async () => {
      // Agora's side of the media: its Notification Center posts to the gateway (signed with
      // NCS_SECRET), and its kicking-rule API is a double.
      agora = await startAgoraRest(AGORA_APP_ID);
      deployment = await start(topologyEnv({
        MEMBERSHIP_MODE: 'table',
        INTERNAL_API_TOKEN,
        AGORA_NCS_SECRET: NCS_SECRET,
        AGORA_CUSTOMER_ID,
        AGORA_CUSTOMER_SECRET,
        AGORA_REST_URL: agora.url,
      }));
      const internal = async (method, path, body, token = INTERNAL_API_TOKEN) => {
        const res = await fetch(`${deployment.internalUrl}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
          body: body ? JSON.stringify(body) : undefined,
        });
        return { status: res.status, text: await res.text() };
      };
      let rooms = 0;
      const room = async (members) => {
        const id = `room-${process.pid}-${Date.now().toString(36)}-${++rooms}`;
        const res = await internal('PUT', `/internal/v1/rooms/${id}/members`, { userIds: members });
        if (res.status >= 300) throw new Error(`the chat backend could not write the members of ${id}: ${res.status} ${res.text}`);
        return id;
      };
      context = { client: new Client(deployment.base), room, internal, agora };
    });
    after(async () => {
      await deployment?.stop();
      await agora?.close();
    });
    defineScenarios(() => context);
  });
}

/** The same deployment without `AGORA_*` (open membership, default timers but the ring). */
export function describeWithoutAgora(title, start) {
  describe(title, () => {
    let deployment;
    let context;
    before(async () => {
      deployment = await start({ CALL_RING_TIMEOUT_SECONDS: String(TIMERS.ring * 10), RATE_LIMIT_PER_IP_PER_MINUTE: '0' });
      context = { client: new Client(deployment.base) };
    });
    after(async () => {
      await deployment?.stop();
    });
    defineWithoutAgora(() => context);
  });
}
