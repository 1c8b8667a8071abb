//! Durable consumption of the event stream, for services that must see every event even when
//! they were down or cut off when it was published (notifier: pushes and webhooks).
//!
//! On NATS it is a JetStream durable pull consumer: every replica that opens the same durable
//! name shares it (each message goes to one of them), a message not acknowledged within the
//! ack wait is delivered again, and the consumer's position survives restarts of the service
//! and of the server. In process (the standalone binary) it is a subscription that never drops
//! a message: the process that publishes is the process that consumes, so there is nothing to
//! survive, only nothing to lose to a burst.
//!
//! Delivery is at least once: the consumer acknowledges a message once its effects are durable
//! (written to the database), so a consumer killed in between sees it again.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

use crate::bus::{BusError, Message};
use crate::local::LocalSubscription;

/// How a durable consumer is set up.
#[derive(Debug, Clone)]
pub struct DurableOptions {
    /// The durable name, shared by every replica of the consuming service.
    pub durable: String,
    /// The stream to read (see [`crate::Subjects::events_stream`]).
    pub stream: String,
    /// Subjects to receive (wildcards allowed); every one must be inside the stream.
    pub filter_subjects: Vec<String>,
    /// How long a delivered message may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// How many messages may be delivered and not yet acknowledged, across replicas.
    pub max_ack_pending: i64,
}

/// One message from a durable consumer; acknowledge it once its effects are durable.
#[derive(Debug)]
pub struct DurableMessage {
    /// The message.
    pub message: Message,
    /// The stream's sequence number of the message (`None` in process).
    pub stream_sequence: Option<u64>,
    /// How many times it has been delivered, this time included (1 in process).
    pub delivered: u64,
    acker: Option<jetstream::Message>,
}

impl DurableMessage {
    /// Acknowledges: the consumer will not deliver it again.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Some(m) => m
                .ack()
                .await
                .map_err(|e| BusError::JetStream(e.to_string())),
            None => Ok(()),
        }
    }

    /// Refuses it for now: it is delivered again after `delay` (immediately in process is not
    /// possible, so in process this only logs; the caller keeps its own retry).
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        match self.acker {
            Some(m) => m
                .ack_with(jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| BusError::JetStream(e.to_string())),
            None => Ok(()),
        }
    }
}

/// A durable consumer: call [`DurableConsumer::next`] in a loop.
pub enum DurableConsumer {
    /// JetStream.
    Nats(Box<jetstream::consumer::pull::Stream>),
    /// In process.
    Local(LocalSubscription),
}

impl std::fmt::Debug for DurableConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nats(_) => f.write_str("DurableConsumer::Nats"),
            Self::Local(_) => f.write_str("DurableConsumer::Local"),
        }
    }
}

impl DurableConsumer {
    /// The next message; `Some(Err)` for a transient problem (the connection is down, a
    /// heartbeat was missed: keep calling), `None` when the consumer is gone for good (open a
    /// new one).
    pub async fn next(&mut self) -> Option<Result<DurableMessage, BusError>> {
        match self {
            Self::Nats(stream) => {
                let item = stream.next().await?;
                Some(match item {
                    Ok(m) => {
                        let (stream_sequence, delivered) = m
                            .info()
                            .map(|i| {
                                (
                                    Some(i.stream_sequence),
                                    u64::try_from(i.delivered).unwrap_or(1),
                                )
                            })
                            .unwrap_or((None, 1));
                        let message = crate::nats::from_nats(m.message.clone());
                        Ok(DurableMessage {
                            message,
                            stream_sequence,
                            delivered,
                            acker: Some(m),
                        })
                    }
                    Err(e) => Err(BusError::JetStream(e.to_string())),
                })
            }
            Self::Local(sub) => sub.next().await.map(|message| {
                Ok(DurableMessage {
                    message,
                    stream_sequence: None,
                    delivered: 1,
                    acker: None,
                })
            }),
        }
    }
}

impl crate::nats::NatsBus {
    pub(crate) async fn durable_consumer(
        &self,
        options: &DurableOptions,
    ) -> Result<DurableConsumer, BusError> {
        use jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        let js_error = |e: &dyn std::fmt::Display| BusError::JetStream(e.to_string());
        let stream = self
            .jetstream()
            .get_stream(&options.stream)
            .await
            .map_err(|e| js_error(&e))?;
        let config = pull::Config {
            durable_name: Some(options.durable.clone()),
            // One filter goes in `filter_subject`, which every server version honours
            // (`filter_subjects` needs NATS 2.10; an older server ignores it and would deliver
            // the whole stream).
            filter_subject: match options.filter_subjects.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            },
            filter_subjects: if options.filter_subjects.len() > 1 {
                options.filter_subjects.clone()
            } else {
                Vec::new()
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_ack_pending: options.max_ack_pending,
            // A new consumer starts from the oldest event the stream keeps: events published
            // before the first start of the service are still delivered (consumers decide what
            // is too old to act on).
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        // `get_or_create_consumer` hands back an existing consumer as it is, so a changed
        // configuration (a new filter after an upgrade) is applied by updating it in place: the
        // consumer keeps its position, and events it already delivered are not sent again.
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(&options.durable, config.clone())
            .await
            .map_err(|e| js_error(&e))?;
        if !same_settings(&consumer.cached_info().config, options) {
            match stream.update_consumer(config).await {
                Ok(updated) => consumer = updated,
                // NATS before 2.10 cannot change a consumer's filter: keep consuming with the
                // old settings (the consumer skips what it does not handle) and say so, rather
                // than consuming nothing.
                Err(e) => tracing::warn!(
                    durable = %options.durable,
                    error = %e,
                    "cannot update the durable consumer's settings; delete it to apply them"
                ),
            }
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(256)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| js_error(&e))?;
        Ok(DurableConsumer::Nats(Box::new(messages)))
    }
}

/// Whether an existing consumer already has the settings `options` asks for (the server may
/// keep a single filter in `filter_subject` rather than `filter_subjects`).
fn same_settings(current: &jetstream::consumer::Config, options: &DurableOptions) -> bool {
    let mut have: Vec<&str> = current
        .filter_subjects
        .iter()
        .map(String::as_str)
        .chain((!current.filter_subject.is_empty()).then_some(current.filter_subject.as_str()))
        .collect();
    let mut want: Vec<&str> = options.filter_subjects.iter().map(String::as_str).collect();
    have.sort_unstable();
    have.dedup();
    want.sort_unstable();
    want.dedup();
    have == want
        && current.ack_wait == options.ack_wait
        && current.max_ack_pending == options.max_ack_pending
}
