//! The delivery workers: one loop per lane claims due deliveries and sends them, up to the
//! lane's concurrency, and records what the provider answered.
//!
//! - Ringing pushes (incoming call, ringing stopped) have their own lane, so they never queue
//!   behind missed-call alerts (or, later, webhooks).
//! - A push is never sent after its deadline: a late ring is useless (CONTRACT section 8).
//! - Retries (provider 429/5xx, timeouts) back off exponentially with full jitter, honouring
//!   the provider's `Retry-After`, until the deadline.
//! - A token the provider calls dead removes the device (unless it was registered again after
//!   the provider saw it dead).
//! - Deliveries this replica just queued wake its workers at once; otherwise workers poll.

use std::sync::Arc;
use std::time::Duration;

use calls_push::PushOutcome;
use common::shutdown::CancellationToken;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::plan::Lane;
use crate::sender::{Pushers, Sent};
use crate::store::{Claimed, Finish, Store, now_ms};

/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A delay before the next attempt of a delivery tried `attempts` times: exponential, with full
/// jitter, so replicas that failed together do not retry in lock-step.
pub fn backoff(attempts: i64) -> Duration {
    let attempt = u32::try_from(attempts.max(1)).unwrap_or(u32::MAX);
    common::backoff::full_jitter(common::backoff::step(BASE_BACKOFF, MAX_BACKOFF, attempt))
}

/// What the workers share.
#[derive(Clone)]
pub struct Workers {
    /// The queue.
    pub store: Store,
    /// The providers.
    pub pushers: Pushers,
    /// Woken when this replica queues ringing pushes.
    pub ring_wake: Arc<Notify>,
    /// Woken when this replica queues other pushes.
    pub bulk_wake: Arc<Notify>,
    /// Idle poll interval.
    pub poll: Duration,
    /// How long a claimed delivery stays ours before another worker may take it.
    pub lease: Duration,
}

impl Workers {
    /// Starts one loop per lane, with the given concurrency; they stop when `stop` fires.
    pub fn spawn(
        &self,
        ring_concurrency: u32,
        bulk_concurrency: u32,
        stop: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (lane, concurrency, wake) in [
            (Lane::Ring, ring_concurrency, self.ring_wake.clone()),
            (Lane::Bulk, bulk_concurrency, self.bulk_wake.clone()),
        ] {
            let (me, stop) = (self.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    () = me.run_lane(lane, concurrency, wake) => {}
                    () = stop.cancelled() => {}
                }
            }));
        }
        let (me, stop) = (self.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = me.housekeeping() => {}
                () = stop.cancelled() => {}
            }
        }));
        tasks
    }

    async fn run_lane(&self, lane: Lane, concurrency: u32, wake: Arc<Notify>) {
        let slots = Arc::new(Semaphore::new(concurrency.max(1) as usize));
        let mut retry = common::backoff::Backoff::new(self.poll, MAX_BACKOFF);
        loop {
            // Wait for a free slot before claiming, so a claimed row is sent at once rather
            // than holding its lease while it queues.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
            let lease = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
            let claimed = match self.store.claim(lane, now_ms(), lease, free + 1).await {
                Ok(claimed) => {
                    retry.reset();
                    claimed
                }
                Err(e) => {
                    tracing::warn!(lane = lane.as_str(), error = %e, "cannot claim deliveries");
                    drop(first);
                    tokio::time::sleep(retry.next_delay()).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(self.poll) => {}
                }
                continue;
            }
            let mut permits = vec![first];
            for _ in 1..claimed.len() {
                match slots.clone().acquire_owned().await {
                    Ok(p) => permits.push(p),
                    Err(_) => return,
                }
            }
            for (delivery, permit) in claimed.into_iter().zip(permits) {
                let me = self.clone();
                tokio::spawn(async move {
                    me.deliver(lane, delivery).await;
                    drop(permit);
                });
            }
        }
    }

    /// Sends one claimed delivery and records the outcome.
    async fn deliver(&self, lane: Lane, d: Claimed) {
        let provider = d.request.provider();
        let now = now_ms();
        if d.deadline_ms <= now {
            self.finish(&d, &Finish::Expired).await;
            crate::metrics::push(provider, &d.kind, "expired");
            return;
        }
        if d.attempts == 1 {
            // From the commit that caused it (the event's creation) to the request leaving.
            let secs = (now - d.event_at_ms).max(0) as f64 / 1000.0;
            crate::metrics::latency(provider, &d.kind, secs);
        }
        let sent = self
            .pushers
            .send(&d.token, &d.request, d.deadline_ms, now)
            .await;
        let outcome = match sent {
            Sent::Skipped => {
                crate::metrics::push(provider, &d.kind, "skipped");
                self.finish(&d, &Finish::Failed(format!("{provider} is not configured")))
                    .await;
                return;
            }
            Sent::Outcome(outcome) => outcome,
        };
        crate::metrics::push(provider, &d.kind, outcome.label());
        let token = crate::devices::redact_token(&d.token);
        match outcome {
            PushOutcome::Delivered { .. } => {
                tracing::info!(lane = lane.as_str(), provider, kind = %d.kind, call_id = %d.call_id,
                    user_id = %d.user_id, device_id = %d.device_id, %token, attempts = d.attempts, "push sent");
                self.finish(&d, &Finish::Sent).await;
            }
            PushOutcome::InvalidToken { reason, since } => {
                tracing::info!(provider, %reason, user_id = %d.user_id, device_id = %d.device_id,
                    %token, "push token refused for good; removing the device");
                self.finish(&d, &Finish::Failed(reason.clone())).await;
                let since_ms = since.map(|t| calls_db::to_millis(time::OffsetDateTime::from(t)));
                match self
                    .store
                    .remove_invalid_token(&d.token, since_ms, now_ms())
                    .await
                {
                    Ok(n) if n > 0 => crate::metrics::devices_removed(provider, &reason, n),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot remove an invalid device"),
                }
            }
            PushOutcome::Retry { reason, after } => {
                let wait = after.unwrap_or_default().max(backoff(d.attempts));
                let due = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                if due >= d.deadline_ms {
                    tracing::warn!(provider, %reason, kind = %d.kind, call_id = %d.call_id,
                        device_id = %d.device_id, attempts = d.attempts, "push failed; its deadline passes before a retry");
                    self.finish(&d, &Finish::Expired).await;
                    crate::metrics::push(provider, &d.kind, "expired");
                } else {
                    tracing::info!(provider, %reason, kind = %d.kind, call_id = %d.call_id,
                        device_id = %d.device_id, attempts = d.attempts, retry_in_ms = %wait.as_millis(), "push failed; retrying");
                    self.finish(
                        &d,
                        &Finish::Retry {
                            due_ms: due,
                            reason,
                        },
                    )
                    .await;
                }
            }
            PushOutcome::Rejected { reason } => {
                tracing::warn!(provider, %reason, kind = %d.kind, call_id = %d.call_id,
                    device_id = %d.device_id, "push refused by the provider");
                self.finish(&d, &Finish::Failed(reason)).await;
            }
            PushOutcome::CredentialsRejected { reason } => {
                tracing::error!(provider, %reason, "the push provider refuses our credentials: \
                    check APNS_KEY_FILE / APNS_KEY_ID / APNS_TEAM_ID or FCM_SERVICE_ACCOUNT_FILE");
                crate::metrics::credentials_rejected(provider);
                self.finish(&d, &Finish::Failed(reason)).await;
            }
        }
    }

    async fn finish(&self, d: &Claimed, finish: &Finish) {
        // The row stays pending under its lease if this fails; it is retried when the lease
        // runs out (at least once).
        if let Err(e) = self.store.finish(d.id, finish, now_ms()).await {
            tracing::warn!(error = %e, delivery = d.id, "cannot record a push outcome");
        }
    }

    /// Every minute: backlog gauges, and rows older than a week forgotten.
    async fn housekeeping(&self) {
        const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = now_ms();
            for lane in [Lane::Ring, Lane::Bulk] {
                if let Ok((pending, oldest_ms)) = self.store.backlog(lane, now).await {
                    crate::metrics::backlog(lane, pending, oldest_ms);
                }
            }
            if let Err(e) = self.store.prune(now - WEEK_MS).await {
                tracing::warn!(error = %e, "housekeeping failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn delivery_retries_back_off_within_the_schedule_and_are_spread() {
        for attempts in 0..40 {
            let cap = common::backoff::step(
                BASE_BACKOFF,
                MAX_BACKOFF,
                u32::try_from(attempts.max(1)).unwrap(),
            );
            assert!(backoff(attempts) <= cap);
        }
        let samples: std::collections::BTreeSet<u128> =
            (0..50).map(|_| backoff(10).as_millis()).collect();
        assert!(
            samples.len() > 10,
            "full jitter spreads retries: {samples:?}"
        );
    }
}
