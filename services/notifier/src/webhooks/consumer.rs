//! The webhook consumer: its own durable JetStream consumer (`notifier-webhooks`) over every
//! event (`{p}.evt.>`), shared by the replicas. It is separate from the ring consumer so a
//! backlog of call events (after an outage, or a burst of media changes) never delays a ring
//! event, and each keeps its own position in the stream.
//!
//! Each message updates its call's projection and queues the deliveries it causes in one
//! transaction before it is acknowledged (see [`crate::store`]'s webhook module).

use std::sync::Arc;
use std::time::Duration;

use calls_bus::{Bus, DurableMessage, DurableOptions, Subjects};
use tokio::sync::Notify;

use super::stream::{Decoded, decode};
use crate::store::{Store, StoreError, WebhookInput, now_ms};

/// The durable consumer's name, shared by every notifier replica.
pub const DURABLE_NAME: &str = "notifier-webhooks";
const ACK_WAIT: Duration = Duration::from_secs(30);
const MAX_ACK_PENDING: i64 = 1000;

/// The consumer's configuration: every event of the deployment.
pub fn options(subjects: &Subjects) -> DurableOptions {
    DurableOptions {
        durable: DURABLE_NAME.to_owned(),
        stream: subjects.events_stream(),
        filter_subjects: vec![subjects.all_events()],
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
    }
}

/// Opens the consumer (creating the stream if calls-api has not yet).
pub async fn open(
    bus: &Bus,
    subjects: &Subjects,
    stream_replicas: usize,
) -> Result<calls_bus::DurableConsumer, calls_bus::BusError> {
    crate::consumer::open_durable(bus, subjects, stream_replicas, &options(subjects)).await
}

/// What the consumer needs.
#[derive(Clone)]
pub struct WebhookConsumer {
    /// The bus.
    pub bus: Bus,
    /// The deployment's subjects.
    pub subjects: Subjects,
    /// Where deliveries go.
    pub store: Store,
    /// Woken when deliveries were queued.
    pub wake: Arc<Notify>,
    /// `NATS_STREAM_REPLICAS`.
    pub stream_replicas: usize,
}

impl WebhookConsumer {
    /// Consumes until the task is dropped, reopening the consumer whenever it ends.
    pub async fn run(self, first: Option<calls_bus::DurableConsumer>) {
        let mut consumer = first;
        let mut retry =
            common::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let mut current = match consumer.take() {
                Some(c) => c,
                None => match open(&self.bus, &self.subjects, self.stream_replicas).await {
                    Ok(c) => {
                        retry.reset();
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the webhook consumer; retrying");
                        tokio::time::sleep(retry.next_delay()).await;
                        continue;
                    }
                },
            };
            while let Some(item) = current.next().await {
                match item {
                    Ok(message) => self.handle(message).await,
                    Err(e) => tracing::debug!(error = %e, "webhook consumer hiccup"),
                }
            }
            tracing::warn!("webhook consumer ended; reopening");
        }
    }

    async fn handle(&self, message: DurableMessage) {
        let input = match decode(&self.subjects, &message.message) {
            Decoded::Snapshot { call, from, .. } => WebhookInput::Snapshot { call, from },
            Decoded::Event {
                call_id,
                event,
                raw,
            } => WebhookInput::Event {
                call_id,
                event,
                raw,
            },
            Decoded::Skip => {
                ack(message).await;
                return;
            }
            Decoded::Invalid(why) => {
                tracing::warn!(subject = %message.message.subject, why, "undecodable event skipped by webhooks");
                crate::metrics::webhook_events("invalid", 1);
                ack(message).await;
                return;
            }
        };
        // As for rings: keep trying while the database is away, but hand the event back to
        // NATS before its ack wait runs out rather than race a redelivery.
        let started = tokio::time::Instant::now();
        let mut retry =
            common::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let applied = loop {
            match self.store.apply_webhook(&input, now_ms()).await {
                Ok(applied) => break Some(applied),
                Err(e) => {
                    let wait = retry.next_delay();
                    // In process there is nobody to hand it back to: keep trying.
                    let redeliverable = message.stream_sequence.is_some();
                    if redeliverable && started.elapsed() + wait > ACK_WAIT / 2 {
                        tracing::warn!(error = %e, "cannot store a call event for webhooks; handing it back");
                        break None;
                    }
                    if !matches!(e, StoreError::Unavailable(_)) {
                        tracing::warn!(error = %e, "storing a call event for webhooks failed");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let Some(applied) = applied else {
            if let Err(e) = message.nak(Duration::from_secs(1)).await {
                tracing::debug!(error = %e, "nak failed (the ack wait redelivers)");
            }
            return;
        };
        let outcome = if applied.stale {
            "stale"
        } else if applied.waiting {
            "waiting"
        } else {
            "applied"
        };
        crate::metrics::webhook_events(outcome, 1);
        if applied.queued > 0 {
            self.wake.notify_one();
        }
        ack(message).await;
    }
}

async fn ack(message: DurableMessage) {
    // A lost ack means a redelivery, which the store makes harmless (applied once per seq).
    if let Err(e) = message.ack().await {
        tracing::debug!(error = %e, "ack failed; the event will be delivered again");
    }
}
