//! Consuming the call event stream: every ring event becomes delivery rows before it is
//! acknowledged, so a notifier killed at any point, a NATS outage or two replicas never lose a
//! ring nor queue one twice.
//!
//! On NATS this is the durable JetStream consumer `notifier`, shared by every replica (each
//! event goes to one of them; one not acknowledged within the ack wait goes again). In the
//! standalone process it is a lossless in-process subscription.

use std::sync::Arc;
use std::time::Duration;

use calls_bus::{Bus, DurableMessage, DurableOptions, Subjects};
use tokio::sync::Notify;

use crate::events::{Decoded, decode};
use crate::store::{Store, StoreError, now_ms};

/// The durable consumer's name, shared by every notifier replica.
pub const DURABLE_NAME: &str = "notifier";
/// How long an event may stay unacknowledged (being written) before NATS delivers it again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Events in flight across replicas.
const MAX_ACK_PENDING: i64 = 1000;
/// Events one replica applies at once. Each is a short transaction; applying them one after
/// the other would make a ringing event wait behind every earlier event's round trips to the
/// database. Order does not need the queue: the store keeps each ring's latest event id and
/// treats an older one as stale, as it must for redeliveries anyway.
const IN_FLIGHT: usize = 16;

/// What the consumer needs.
#[derive(Clone)]
pub struct Consumer {
    /// The bus.
    pub bus: Bus,
    /// The deployment's subjects.
    pub subjects: Subjects,
    /// Where deliveries go.
    pub store: Store,
    /// `APNS_BUNDLE_ID`.
    pub default_bundle: Option<String>,
    /// Woken when ringing pushes were queued.
    pub ring_wake: Arc<Notify>,
    /// Woken when other pushes were queued.
    pub bulk_wake: Arc<Notify>,
    /// `NATS_STREAM_REPLICAS`.
    pub stream_replicas: usize,
}

/// The consumer's configuration: user events only (pushes are about users' rings).
pub fn options(subjects: &Subjects) -> DurableOptions {
    DurableOptions {
        durable: DURABLE_NAME.to_owned(),
        stream: subjects.events_stream(),
        filter_subjects: vec![format!("{}.evt.user.>", subjects.prefix())],
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
    }
}

/// Opens the durable consumer (creating the stream if calls-api has not yet). On the
/// in-process bus, events published before this returns are missed: the standalone process
/// opens it before starting calls-api and hands it to [`crate::serve`].
pub async fn open(
    bus: &Bus,
    subjects: &Subjects,
    stream_replicas: usize,
) -> Result<calls_bus::DurableConsumer, calls_bus::BusError> {
    open_durable(bus, subjects, stream_replicas, &options(subjects)).await
}

/// Opens a durable consumer of the event stream, creating the stream first if calls-api has
/// not yet (both of notifier's consumers: pushes and webhooks).
pub(crate) async fn open_durable(
    bus: &Bus,
    subjects: &Subjects,
    stream_replicas: usize,
    options: &DurableOptions,
) -> Result<calls_bus::DurableConsumer, calls_bus::BusError> {
    bus.ensure_stream(
        &subjects.events_stream(),
        vec![subjects.all_events()],
        stream_replicas,
    )
    .await?;
    bus.durable_consumer(options).await
}

impl Consumer {
    async fn open(&self) -> Result<calls_bus::DurableConsumer, calls_bus::BusError> {
        open(&self.bus, &self.subjects, self.stream_replicas).await
    }

    /// Consumes until the task is dropped, reopening the consumer whenever it ends.
    pub async fn run(self, first: Option<calls_bus::DurableConsumer>) {
        let mut consumer = first;
        let mut retry =
            common::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let mut current = match consumer.take() {
                Some(c) => c,
                None => match self.open().await {
                    Ok(c) => {
                        retry.reset();
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the event consumer; retrying");
                        tokio::time::sleep(retry.next_delay()).await;
                        continue;
                    }
                },
            };
            // Dropped with this task (shutdown): an event whose transaction was cut is not
            // acknowledged, so it comes again.
            let mut applying = tokio::task::JoinSet::new();
            while let Some(item) = current.next().await {
                while applying.try_join_next().is_some() {}
                match item {
                    Ok(message) => {
                        if applying.len() >= IN_FLIGHT {
                            applying.join_next().await;
                        }
                        let this = self.clone();
                        applying.spawn(async move { this.handle(message).await });
                    }
                    Err(e) => {
                        // Missed heartbeats while NATS is away; the consumer resumes by itself.
                        tracing::debug!(error = %e, "event consumer hiccup");
                    }
                }
            }
            tracing::warn!("event consumer ended; reopening");
        }
    }

    async fn handle(&self, message: DurableMessage) {
        let ring = match decode(&self.subjects, &message.message) {
            Decoded::Ring(ring) => ring,
            Decoded::Skip => {
                crate::metrics::event("skipped");
                ack(message).await;
                return;
            }
            Decoded::Invalid(why) => {
                tracing::warn!(subject = %message.message.subject, why, "undecodable event skipped");
                crate::metrics::event("invalid");
                ack(message).await;
                return;
            }
        };
        // The database may be down: keep trying (the event stays unacknowledged, so a restart
        // or another replica takes it over), but hand it back to NATS before the ack wait runs
        // out rather than racing a redelivery.
        let started = tokio::time::Instant::now();
        let mut retry =
            common::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let applied = loop {
            match self
                .store
                .apply_ring_event(&ring, now_ms(), self.default_bundle.as_deref())
                .await
            {
                Ok(applied) => break Some(applied),
                Err(e) => {
                    let wait = retry.next_delay();
                    if started.elapsed() + wait > ACK_WAIT / 2 {
                        tracing::warn!(error = %e, call_id = %ring.call_id, "cannot store an event; handing it back");
                        break None;
                    }
                    if !matches!(e, StoreError::Unavailable(_)) {
                        tracing::warn!(error = %e, call_id = %ring.call_id, "storing an event failed");
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
        crate::metrics::event(if applied.stale { "stale" } else { "applied" });
        if applied.ring > 0 {
            self.ring_wake.notify_waiters();
            self.ring_wake.notify_one();
        }
        if applied.bulk > 0 {
            self.bulk_wake.notify_waiters();
            self.bulk_wake.notify_one();
        }
        ack(message).await;
    }
}

async fn ack(message: DurableMessage) {
    // A lost ack means a redelivery, which the store makes harmless (idempotent per event).
    if let Err(e) = message.ack().await {
        tracing::debug!(error = %e, "ack failed; the event will be delivered again");
    }
}
