// use-call.ts: a LiveCall as React state. The client does not depend on React; LiveCall offers
// `subscribe` and `getState` in the shape useSyncExternalStore expects (the state object is
// replaced on every change, never mutated).
import { useSyncExternalStore } from 'react';
import type { Call, LiveCall, Participant } from '@calls-backend/client';

export function useCall(call: LiveCall): Call {
  return useSyncExternalStore(call.subscribe, call.getState);
}

/** Who to show as tiles: everyone joined, with a "reconnecting" badge while their socket is gone. */
export function useJoinedParticipants(call: LiveCall): Participant[] {
  const state = useCall(call);
  return state.participants.filter((p) => p.status === 'joined');
}
