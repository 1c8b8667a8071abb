// What the push suites share: the environment of a deployment whose notifier talks to the
// doubles of Apple and Google (lib/push-doubles.mjs).

/** Long enough for a retried push to land before the deadline on a loaded machine. */
export const RING_SECONDS = 8;

/** The environment of a deployment whose notifier talks to the doubles. */
export function pushEnv(doubles, extra = {}) {
  return {
    ...doubles.env,
    CALL_RING_TIMEOUT_SECONDS: String(RING_SECONDS),
    // The suite sends everything from 127.0.0.1.
    RATE_LIMIT_PER_IP_PER_MINUTE: '0',
    // A push that hangs is retried quickly, and a dead replica's lease runs out quickly.
    PUSH_TIMEOUT_MS: '2000',
    ...extra,
  };
}

