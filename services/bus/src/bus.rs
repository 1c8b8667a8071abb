//! [`Bus`]: one handle over NATS or the in-process [`LocalBus`], chosen at start-up.
//!
//! An enum rather than a trait object: there are exactly two implementations, the enum is
//! `Clone` and needs no boxing of futures, and a match per call costs nothing next to I/O.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::local::{LocalBus, LocalSubscription};
use crate::nats::{NatsBus, NatsSubscription};

/// Message headers: ordered name/value pairs; names compare case-sensitively, as NATS does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Builder form of [`Headers::insert`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published on.
    pub subject: String,
    /// Where to send the reply (requests only); answer with [`Bus::respond`].
    pub reply: Option<String>,
    /// Its headers.
    pub headers: Headers,
    /// Its payload.
    pub payload: Bytes,
}

/// Why a bus operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Nobody is subscribed to the request's subject (calls-api is not running).
    #[error("no responders")]
    NoResponders,
    /// A request got no reply in time.
    #[error("request timed out")]
    Timeout,
    /// The subject is not a valid NATS subject for this operation.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// The payload exceeds the server's maximum.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The connection is down or the operation failed in transport.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// JetStream refused or did not acknowledge a publish, or a stream operation failed.
    #[error("jetstream: {0}")]
    JetStream(String),
    /// No JetStream stream captures the published subject (deleted, or lost with a server that
    /// had no storage): creating it again is the cure, unlike a slow or leaderless stream.
    #[error("jetstream: no stream captures the subject")]
    NoStream,
}

impl BusError {
    /// Whether a caller should answer `DEPENDENCY_UNAVAILABLE` (retrying may help), as opposed to
    /// a bug such as an invalid subject.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::NoResponders
                | Self::Timeout
                | Self::Unavailable(_)
                | Self::JetStream(_)
                | Self::NoStream
        )
    }
}

/// A message bus: NATS (scaled deployment) or in-process (standalone). Cheap to clone; clones
/// share the connection.
#[derive(Clone, Debug)]
pub enum Bus {
    /// NATS with JetStream for events.
    Nats(NatsBus),
    /// In-process, for the single-process standalone mode and tests.
    Local(LocalBus),
}

impl From<NatsBus> for Bus {
    fn from(bus: NatsBus) -> Self {
        Self::Nats(bus)
    }
}

impl From<LocalBus> for Bus {
    fn from(bus: LocalBus) -> Self {
        Self::Local(bus)
    }
}

impl Bus {
    /// Connects to NATS at `url` (fails if the server cannot be reached at start-up; reconnects
    /// by itself afterwards).
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        NatsBus::connect(url).await.map(Self::Nats)
    }

    /// A fresh in-process bus.
    pub fn local() -> Self {
        Self::Local(LocalBus::new())
    }

    /// Publishes a plain (core) message.
    pub async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        match self {
            Self::Nats(b) => b.publish(subject, headers, payload).await,
            Self::Local(b) => b.publish(subject, headers, payload),
        }
    }

    /// Publishes an event with `Nats-Msg-Id: msg_id`. On NATS it goes through JetStream and
    /// returns once the stream acknowledged it (a duplicate id inside the stream's window is
    /// stored once, and still succeeds); core subscribers receive it like any publish.
    pub async fn publish_event(
        &self,
        subject: &str,
        msg_id: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        match self {
            Self::Nats(b) => b.publish_event(subject, msg_id, headers, payload).await,
            Self::Local(b) => b.publish(
                subject,
                headers.with(crate::wire::HEADER_MSG_ID, msg_id),
                payload,
            ),
        }
    }

    /// Changes on every reconnection to the server (NATS; `None` for the in-process bus, which
    /// never disconnects). Core subscriptions miss what is published while disconnected.
    pub fn connections(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Self::Nats(b) => Some(b.connections()),
            Self::Local(_) => None,
        }
    }

    /// The events stored (by [`Bus::publish_event`]) on `subject`, oldest first: JetStream
    /// keeps them on NATS; the in-process bus keeps nothing and answers an empty list.
    pub async fn replay(&self, subject: &str) -> Result<Vec<Message>, BusError> {
        match self {
            Self::Nats(b) => b.replay(subject).await,
            Self::Local(_) => Ok(Vec::new()),
        }
    }

    /// Subscribes to `subject` (wildcards `*` and `>` allowed). Dropping the subscription
    /// unsubscribes.
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        match self {
            Self::Nats(b) => b.subscribe(subject).await.map(Subscription::Nats),
            Self::Local(b) => b.subscribe(subject, None).map(Subscription::Local),
        }
    }

    /// Subscribes as a member of queue `group`: each message goes to one member of the group.
    pub async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<Subscription, BusError> {
        match self {
            Self::Nats(b) => b
                .queue_subscribe(subject, group)
                .await
                .map(Subscription::Nats),
            Self::Local(b) => b.subscribe(subject, Some(group)).map(Subscription::Local),
        }
    }

    /// Sends a request and waits up to `timeout` for the first reply.
    /// [`BusError::NoResponders`] when nobody listens, [`BusError::Timeout`] when nobody answers.
    pub async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        match self {
            Self::Nats(b) => b.request(subject, headers, payload, timeout).await,
            Self::Local(b) => b.request(subject, headers, payload, timeout).await,
        }
    }

    /// Answers a request: publishes `payload` to its reply subject.
    pub async fn respond(&self, reply: &str, payload: Bytes) -> Result<(), BusError> {
        self.publish(reply, Headers::new(), payload).await
    }

    /// Waits until everything published or subscribed so far has reached the server, so that a
    /// subscription made before is live for messages published by others after this returns.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            Self::Nats(b) => b.flush().await,
            Self::Local(_) => Ok(()),
        }
    }

    /// Whether the bus is usable now (always true in process).
    pub fn is_connected(&self) -> bool {
        match self {
            Self::Nats(b) => b.is_connected(),
            Self::Local(_) => true,
        }
    }

    /// Creates or updates the JetStream stream `name` over `subjects`, stored on `replicas`
    /// servers of the NATS cluster (1 on a single server; an existing stream is scaled to it).
    /// A no-op in process.
    pub async fn ensure_stream(
        &self,
        name: &str,
        subjects: Vec<String>,
        replicas: usize,
    ) -> Result<(), BusError> {
        match self {
            Self::Nats(b) => b.ensure_stream(name, subjects, replicas).await,
            Self::Local(_) => Ok(()),
        }
    }

    /// Opens the durable consumer `options.durable` of `options.stream` (see [`crate::durable`]):
    /// on NATS a JetStream pull consumer shared by every replica that opens the same name; in
    /// process a subscription to the filter subjects that never drops a message. Ensure the
    /// stream exists first ([`Bus::ensure_stream`]).
    pub async fn durable_consumer(
        &self,
        options: &crate::durable::DurableOptions,
    ) -> Result<crate::durable::DurableConsumer, BusError> {
        match self {
            Self::Nats(b) => b.durable_consumer(options).await,
            Self::Local(b) => {
                // One subscription, so messages arrive in publish order across the filters:
                // several filters become their common wildcard, and callers ignore the rest.
                let subject = common_wildcard(&options.filter_subjects);
                b.subscribe_lossless(&subject, None)
                    .map(crate::durable::DurableConsumer::Local)
            }
        }
    }

    /// Deletes the JetStream stream `name` if it exists (no-op in process); for tests and
    /// tooling.
    pub async fn delete_stream(&self, name: &str) -> Result<(), BusError> {
        match self {
            Self::Nats(b) => b.delete_stream(name).await,
            Self::Local(_) => Ok(()),
        }
    }
}

/// The narrowest single subject covering every filter: the filter itself when there is one,
/// else the tokens they share followed by `>`.
fn common_wildcard(filters: &[String]) -> String {
    let Some((first, rest)) = filters.split_first() else {
        return ">".to_owned();
    };
    if rest.is_empty() {
        return first.clone();
    }
    let mut shared: Vec<&str> = first.split('.').collect();
    for filter in rest {
        let tokens: Vec<&str> = filter.split('.').collect();
        let same = shared
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b && **a != "*" && **a != ">")
            .count();
        shared.truncate(same);
    }
    shared.push(">");
    shared.join(".")
}

/// A live subscription: a `Stream` of [`Message`]s that unsubscribes when dropped.
#[derive(Debug)]
pub enum Subscription {
    /// On NATS.
    Nats(NatsSubscription),
    /// In process.
    Local(LocalSubscription),
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match self.get_mut() {
            Self::Nats(s) => Pin::new(s).poll_next(cx),
            Self::Local(s) => Pin::new(s).poll_next(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::common_wildcard;

    #[test]
    fn several_filters_share_their_common_prefix() {
        let f =
            |v: &[&str]| common_wildcard(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(f(&["a.b.evt.user.>"]), "a.b.evt.user.>");
        assert_eq!(f(&["a.b.evt.user.>", "a.b.evt.call.>"]), "a.b.evt.>");
        assert_eq!(f(&["a.*.x", "a.*.y"]), "a.>");
        assert_eq!(f(&[]), ">");
    }
}
