//! Jittered exponential backoff, for every loop that retries something shared.
//!
//! After an outage (NATS, the database, calls-api restarting) every replica's retries start at
//! the same moment; with a fixed schedule they stay in lock-step and hit the recovering service
//! in waves. Each wait is therefore drawn at random from the upper half of its step ("equal
//! jitter"): replicas spread out within a round or two, no wait is ever longer than the
//! un-jittered schedule (so how quickly a loop notices a recovery is still bounded by it), and
//! none is shorter than half of it (so a retry never spins).
//!
//! ```
//! use std::time::Duration;
//! use common::backoff::Backoff;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! let first = backoff.next_delay(); // 50..=100 ms
//! let second = backoff.next_delay(); // 100..=200 ms
//! assert!(first <= Duration::from_millis(100) && second >= Duration::from_millis(100));
//! backoff.reset(); // after a success: the next failure starts small again
//! ```

use std::time::Duration;

use rand::Rng as _;

/// A retry schedule: `first`, doubling up to `max`, each wait jittered by [`jitter`].
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A schedule whose first wait is at most `first` and whose waits grow to at most `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let max = max.max(first);
        Self {
            first,
            max,
            step: first,
        }
    }

    /// The wait before the next attempt; each call doubles the step, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jitter(self.step);
        self.step = self.step.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts the schedule over (call after a success).
    pub fn reset(&mut self) {
        self.step = self.first;
    }
}

/// A random duration in `[step / 2, step]`: how long to wait for a step of the schedule. Also
/// what a fixed period (a health check's) is drawn from, so replicas do not probe in step.
pub fn jitter(step: Duration) -> Duration {
    let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
}

/// The step of attempt `attempt` (1-based) of a schedule that starts at `first` and doubles up
/// to `max`: for retries whose count is stored with the work (a queue row) rather than held by
/// a loop's [`Backoff`].
pub fn step(first: Duration, max: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    first.saturating_mul(1u32 << doublings).min(max.max(first))
}

/// A random duration in `[0, step]` ("full jitter"): the widest spread, for queues that retry
/// many independent items (pushes, webhooks), where an early retry costs one request and
/// retries bunching up after an outage cost the recovering service.
pub fn full_jitter(step: Duration) -> Duration {
    let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn each_wait_stays_within_the_upper_half_of_its_step_and_steps_double_to_the_max() {
        let mut backoff = Backoff::new(FIRST, MAX);
        let mut step = FIRST;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            step = (step * 2).min(MAX);
        }
    }

    #[test]
    fn replicas_retrying_together_do_not_wait_the_same_time() {
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), MAX).next_delay())
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn a_reset_starts_the_schedule_over() {
        let mut backoff = Backoff::new(FIRST, MAX);
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }

    #[test]
    fn a_zero_step_waits_nothing_rather_than_failing() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).next_delay(),
            Duration::ZERO
        );
    }

    #[test]
    fn stored_attempts_follow_the_same_doubling_schedule_and_full_jitter_spreads_from_zero() {
        assert_eq!(step(FIRST, MAX, 0), FIRST);
        assert_eq!(step(FIRST, MAX, 1), FIRST);
        assert_eq!(step(FIRST, MAX, 3), FIRST * 4);
        assert_eq!(step(FIRST, MAX, 40), MAX);
        let samples: Vec<Duration> = (0..200).map(|_| full_jitter(FIRST)).collect();
        assert!(samples.iter().all(|d| *d <= FIRST));
        assert!(
            samples.iter().any(|d| *d < FIRST / 4),
            "reaches well below the step"
        );
    }
}
