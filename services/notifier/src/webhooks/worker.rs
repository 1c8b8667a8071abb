//! The webhook lane: claims deliveries that may go now, signs and sends them, and records what
//! the endpoint answered. It has its own loop and its own concurrency, apart from the push
//! lanes, so a slow endpoint never delays a ringing phone.
//!
//! - `2xx`: delivered. `410 Gone`: the endpoint is disabled (and its pending deliveries failed).
//! - Anything else (another status, a timeout, no connection, a refused address): retried with
//!   exponential backoff and full jitter (`Retry-After` honoured up to the schedule's cap) until
//!   `WEBHOOK_RETRY_HOURS` after the delivery was queued, then dead-lettered. An endpoint that
//!   accepted nothing during a dead letter's whole window is disabled and reported.
//! - Housekeeping: backlog gauges, calls whose events wait on a gap for too long, old rows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::shutdown::CancellationToken;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::client::{Answer, WebhookClient, is_success};
use super::signing::signature;
use crate::store::{ClaimedWebhook, GAP_WAIT_MS, Store, WebhookFinish, now_ms};

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What the lane needs.
#[derive(Clone)]
pub struct WebhookWorkers {
    /// The queue.
    pub store: Store,
    /// The HTTP client.
    pub client: WebhookClient,
    /// Woken when this replica queues deliveries.
    pub wake: Arc<Notify>,
    /// Idle poll interval.
    pub poll: Duration,
    /// `WEBHOOK_RETRY_HOURS`.
    pub retry_window: Duration,
    /// `WEBHOOK_RETRY_BASE_MS`.
    pub retry_base: Duration,
    /// `WEBHOOK_TIMEOUT_MS`: the lease is a little longer.
    pub timeout: Duration,
    /// `WEBHOOK_CONCURRENCY`.
    pub concurrency: u32,
    /// `WEBHOOK_ENDPOINT_CONCURRENCY`.
    pub endpoint_concurrency: u32,
}

/// The delay before the next attempt of a delivery tried `attempts` times: exponential from
/// `base`, capped at [`MAX_BACKOFF`], with full jitter.
pub fn backoff(base: Duration, attempts: i64) -> Duration {
    let attempt = u32::try_from(attempts.max(1)).unwrap_or(u32::MAX);
    common::backoff::full_jitter(common::backoff::step(base, MAX_BACKOFF, attempt))
}

/// When attempt `attempts + 1` should be made, or `None` when the window is over: the retry
/// never falls after the window's end (the last attempt is made right at it).
pub fn next_attempt(now_ms: i64, window_end_ms: i64, wait: Duration) -> Option<i64> {
    if now_ms >= window_end_ms {
        return None;
    }
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4);
    Some((now_ms + wait_ms).min(window_end_ms))
}

impl WebhookWorkers {
    fn window_ms(&self) -> i64 {
        i64::try_from(self.retry_window.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Starts the lane and its housekeeping; they stop when `stop` fires.
    pub fn spawn(&self, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let (me, s) = (self.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = me.run_lane() => {}
                () = s.cancelled() => {}
            }
        }));
        let (me, s) = (self.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = me.housekeeping() => {}
                () = s.cancelled() => {}
            }
        }));
        tasks
    }

    async fn run_lane(&self) {
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1) as usize));
        let mut retry = common::backoff::Backoff::new(self.poll, Duration::from_secs(30));
        // Longer than the request may take, so a live worker keeps its claim.
        let lease = i64::try_from((self.timeout + Duration::from_secs(5)).as_millis())
            .unwrap_or(i64::MAX / 4);
        loop {
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
            let claimed = match self
                .store
                .claim_webhooks(now_ms(), lease, free + 1, self.endpoint_concurrency)
                .await
            {
                Ok(c) => {
                    retry.reset();
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim webhook deliveries");
                    drop(first);
                    tokio::time::sleep(retry.next_delay()).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    () = self.wake.notified() => {}
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
                    let sent = me.deliver(&delivery).await;
                    drop(permit);
                    // The call's next event may go now.
                    if sent {
                        me.wake.notify_one();
                    }
                });
            }
        }
    }

    /// Sends one claimed delivery and records the outcome; `true` when it was delivered.
    async fn deliver(&self, d: &ClaimedWebhook) -> bool {
        let started = now_ms();
        let timestamp = started.div_euclid(1000);
        let headers = [
            ("webhook-id", d.message_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                signature(&d.secrets, &d.message_id, timestamp, d.body.as_bytes()),
            ),
        ];
        let clock = std::time::Instant::now();
        let answer = self
            .client
            .post(&d.url, &headers, Bytes::from(d.body.clone()))
            .await;
        crate::metrics::webhook_request(&d.endpoint_id, clock.elapsed().as_secs_f64());
        let now = now_ms();
        let (status, error, retry_after) = match &answer {
            Answer::Status {
                status,
                body,
                retry_after,
            } => (
                Some(*status),
                format!("HTTP {status}: {body}"),
                *retry_after,
            ),
            Answer::Timeout => (
                None,
                format!("no answer within {} ms", self.timeout.as_millis()),
                None,
            ),
            Answer::Blocked(why) => (None, why.clone(), None),
            Answer::Connection(why) => (None, format!("connection: {why}"), None),
        };
        crate::metrics::webhook_attempt(&d.endpoint_id, result_label(&answer));
        match status {
            Some(s) if is_success(s) => {
                self.finish(d, &WebhookFinish::Delivered { status: s }, now)
                    .await;
                if let Err(e) = self.store.endpoint_succeeded(&d.endpoint_id, now).await {
                    tracing::debug!(error = %e, "cannot record an endpoint's success");
                }
                crate::metrics::webhook_delivery(&d.endpoint_id, "delivered");
                crate::metrics::webhook_latency(
                    &d.endpoint_id,
                    (now - d.event_ms).max(0) as f64 / 1000.0,
                );
                tracing::info!(endpoint = %d.endpoint_id, webhook_id = %d.message_id,
                    event_type = %d.event_type, call_id = %d.call_id, attempts = d.attempts,
                    status = s, "webhook delivered");
                return true;
            }
            Some(410) => {
                self.finish(
                    d,
                    &WebhookFinish::Failed {
                        status: Some(410),
                        error: error.clone(),
                    },
                    now,
                )
                .await;
                crate::metrics::webhook_delivery(&d.endpoint_id, "gone");
                tracing::warn!(endpoint = %d.endpoint_id, webhook_id = %d.message_id,
                    "the endpoint answered 410 Gone; disabling it");
                self.disable(
                    &d.endpoint_id,
                    "the endpoint answered 410 Gone",
                    "gone",
                    now,
                )
                .await;
                return false;
            }
            _ => {}
        }
        let wait = backoff(self.retry_base, d.attempts)
            .max(retry_after.unwrap_or_default().min(MAX_BACKOFF));
        let window_end = d.window_start_ms.saturating_add(self.window_ms());
        match next_attempt(now, window_end, wait) {
            Some(due_ms) => {
                tracing::info!(endpoint = %d.endpoint_id, webhook_id = %d.message_id,
                    event_type = %d.event_type, call_id = %d.call_id, attempts = d.attempts,
                    %error, retry_in_ms = due_ms - now, "webhook not accepted; retrying");
                self.finish(
                    d,
                    &WebhookFinish::Retry {
                        due_ms,
                        status,
                        error,
                    },
                    now,
                )
                .await;
            }
            None => {
                tracing::warn!(endpoint = %d.endpoint_id, webhook_id = %d.message_id,
                    event_type = %d.event_type, call_id = %d.call_id, attempts = d.attempts,
                    %error, "webhook dead-lettered: not accepted within WEBHOOK_RETRY_HOURS");
                self.finish(d, &WebhookFinish::Failed { status, error }, now)
                    .await;
                crate::metrics::webhook_delivery(&d.endpoint_id, "dead_lettered");
                self.disable_if_failing_throughout(d, now).await;
            }
        }
        false
    }

    /// Disables the endpoint when it accepted nothing since the dead letter's window began:
    /// it has been failing for a whole window, so it is down or gone, not unlucky.
    async fn disable_if_failing_throughout(&self, d: &ClaimedWebhook, now: i64) {
        let id = match crate::webhooks::model::EndpointId::parse(&d.endpoint_id) {
            Ok(id) => id,
            Err(_) => return,
        };
        match self.store.endpoint(&id).await {
            Ok(Some(e)) if e.last_success_ms.is_none_or(|t| t < d.window_start_ms) => {
                tracing::error!(endpoint = %d.endpoint_id,
                    "the endpoint accepted nothing for a whole retry window; disabling it \
                     (enable it with PATCH /internal/v1/webhooks/:id, then replay)");
                self.disable(
                    &d.endpoint_id,
                    "accepted nothing for a whole retry window (WEBHOOK_RETRY_HOURS)",
                    "failing",
                    now,
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read an endpoint"),
        }
    }

    async fn disable(&self, endpoint_id: &str, reason: &str, label: &'static str, now: i64) {
        match self.store.disable_endpoint(endpoint_id, reason, now).await {
            Ok(true) => crate::metrics::webhook_endpoint_disabled(endpoint_id, label),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot disable an endpoint"),
        }
    }

    async fn finish(&self, d: &ClaimedWebhook, finish: &WebhookFinish, now: i64) {
        // The row stays pending under its lease if this fails: it is sent again when the lease
        // runs out, with the same webhook-id (at least once).
        if let Err(e) = self
            .store
            .finish_webhook(d.id, d.attempts, finish, now)
            .await
        {
            tracing::warn!(error = %e, delivery = d.id, "cannot record a webhook outcome");
        }
    }

    /// Every few seconds: calls whose events wait on a gap too long move on. Every minute:
    /// backlog gauges and old rows.
    async fn housekeeping(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round: u64 = 0;
        loop {
            tick.tick().await;
            let now = now_ms();
            match self.store.skip_gaps(now, GAP_WAIT_MS).await {
                Ok((moved, orphaned, queued)) => {
                    if moved > 0 {
                        tracing::warn!(
                            calls = moved,
                            "call events waited too long for an earlier one; going on without it"
                        );
                        crate::metrics::webhook_events("gap_skipped", moved);
                    }
                    if orphaned > 0 {
                        tracing::debug!(
                            calls = orphaned,
                            "calls whose creation was never seen are not reported"
                        );
                        crate::metrics::webhook_events("orphaned", orphaned);
                    }
                    if queued > 0 {
                        self.wake.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check the calls waiting on a gap"),
            }
            round += 1;
            if round % 12 != 1 {
                continue;
            }
            match self.store.webhook_backlog(now).await {
                Ok(backlog) => {
                    for b in backlog {
                        crate::metrics::webhook_backlog(&b.endpoint_id, b.pending, b.oldest_ms);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the webhook backlog"),
            }
            if let Ok(n) = self.store.disabled_endpoints().await {
                crate::metrics::webhook_endpoints_disabled(n);
            }
            if let Err(e) = self
                .store
                .prune_webhooks(now - 7 * DAY_MS, now - 30 * DAY_MS, now - 2 * DAY_MS)
                .await
            {
                tracing::warn!(error = %e, "webhook housekeeping failed");
            }
        }
    }
}

fn result_label(answer: &Answer) -> &'static str {
    match answer {
        Answer::Status { status, .. } => match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            410 => "410",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Answer::Timeout => "timeout",
        Answer::Blocked(_) => "blocked",
        Answer::Connection(_) => "connection",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_full_jitter_up_to_an_hour() {
        let base = Duration::from_secs(5);
        for attempts in 1..40 {
            let cap = common::backoff::step(base, MAX_BACKOFF, u32::try_from(attempts).unwrap());
            assert!(backoff(base, attempts) <= cap);
        }
        assert_eq!(
            common::backoff::step(base, MAX_BACKOFF, 30),
            MAX_BACKOFF,
            "the schedule tops out at an hour"
        );
        let spread: std::collections::BTreeSet<u128> =
            (0..50).map(|_| backoff(base, 8).as_millis()).collect();
        assert!(spread.len() > 10, "full jitter spreads retries: {spread:?}");
    }

    #[test]
    fn the_last_attempt_is_made_at_the_end_of_the_window_and_none_after() {
        assert_eq!(
            next_attempt(1_000, 10_000, Duration::from_millis(500)),
            Some(1_500)
        );
        assert_eq!(
            next_attempt(9_000, 10_000, Duration::from_secs(60)),
            Some(10_000)
        );
        assert_eq!(next_attempt(10_000, 10_000, Duration::from_millis(1)), None);
    }

    #[test]
    fn attempts_are_labelled_by_what_happened() {
        let status = |s| Answer::Status {
            status: s,
            body: String::new(),
            retry_after: None,
        };
        assert_eq!(result_label(&status(204)), "2xx");
        assert_eq!(result_label(&status(410)), "410");
        assert_eq!(result_label(&status(404)), "4xx");
        assert_eq!(result_label(&status(302)), "3xx");
        assert_eq!(result_label(&status(503)), "5xx");
        assert_eq!(result_label(&Answer::Timeout), "timeout");
    }
}
