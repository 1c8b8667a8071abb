//! The NATS implementation (async-nats): core NATS for subscriptions, requests and presence,
//! JetStream for event publishes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::client::{PublishErrorKind, RequestErrorKind};
use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind as JsPublishErrorKind;
use async_nats::{HeaderMap, Request};
use bytes::Bytes;
use futures::Stream;

use crate::bus::{BusError, Headers, Message};

/// How long a JetStream publish waits for the stream's acknowledgement.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages fetched per request when replaying a subject from the stream.
const REPLAY_BATCH: usize = 256;

/// A NATS connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NatsBus {
    // Behind an Arc: the client and context are large, and `Bus` moves them around by value.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// How many times the client reconnected; see [`NatsBus::connections`].
    connections: tokio::sync::watch::Receiver<u64>,
}

impl NatsBus {
    /// Connects to `url`, or to one of several comma-separated URLs (the servers of a NATS
    /// cluster: the client tries them in random order, and moves to another when its server
    /// goes). Fails if no server answers within a few seconds; once connected, the client
    /// reconnects by itself.
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let servers = server_addrs(url)?;
        let (reconnected, connections) = tokio::sync::watch::channel(0u64);
        let initial = std::sync::atomic::AtomicBool::new(true);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                // The first `Connected` is this connection; only the ones after it count.
                if matches!(event, async_nats::Event::Connected)
                    && !initial.swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    reconnected.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            })
            .connect(servers)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(Self::wrap(client, connections))
    }

    fn wrap(client: async_nats::Client, connections: tokio::sync::watch::Receiver<u64>) -> Self {
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(PUBLISH_ACK_TIMEOUT);
        Self {
            inner: Arc::new(Inner {
                client,
                jetstream,
                connections,
            }),
        }
    }

    /// Counts the client's reconnections to a server: it changes on every one, once the client
    /// has queued its subscriptions again (flush to be sure the server has them). Messages published while the client was away
    /// were missed by its core subscriptions; durable events can be read back with
    /// [`crate::Bus::replay`].
    pub fn connections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.connections.clone()
    }

    /// Every message the JetStream stream holds on `subject`, oldest first (an empty list when
    /// no stream captures it). Reads through a short-lived ephemeral consumer.
    pub(crate) async fn replay(&self, subject: &str) -> Result<Vec<Message>, BusError> {
        use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        use futures::StreamExt;

        let js_error = |e: &dyn std::fmt::Display| BusError::JetStream(e.to_string());
        let name = match self.inner.jetstream.stream_by_subject(subject).await {
            Ok(name) => name,
            Err(e) if e.to_string().contains("not found") => return Ok(Vec::new()),
            Err(e) => return Err(js_error(&e)),
        };
        let stream = self
            .inner
            .jetstream
            .get_stream(&name)
            .await
            .map_err(|e| js_error(&e))?;
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| js_error(&e))?;
        let pending = consumer.cached_info().num_pending;
        let consumer_name = consumer.cached_info().name.clone();
        let mut out = Vec::new();
        while (out.len() as u64) < pending {
            let mut batch = consumer
                .fetch()
                .max_messages(REPLAY_BATCH)
                .messages()
                .await
                .map_err(|e| js_error(&e))?;
            let before = out.len();
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| js_error(&e))?;
                out.push(from_nats(message.message));
            }
            if out.len() == before {
                break;
            }
        }
        // The consumer also goes by itself once inactive; deleting it now just tidies up.
        let _ = stream.delete_consumer(&consumer_name).await;
        Ok(out)
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    /// The underlying client, for what the bus does not cover.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    pub(crate) async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let subject = subject.to_owned();
        let result = if headers.is_empty() {
            self.inner.client.publish(subject, payload).await
        } else {
            self.inner
                .client
                .publish_with_headers(subject, to_header_map(&headers), payload)
                .await
        };
        result.map_err(|e| match e.kind() {
            PublishErrorKind::InvalidSubject => BusError::InvalidSubject(e.to_string()),
            PublishErrorKind::MaxPayloadExceeded => BusError::PayloadTooLarge,
            _ => BusError::Unavailable(e.to_string()),
        })
    }

    pub(crate) async fn publish_event(
        &self,
        subject: &str,
        msg_id: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(to_header_map(&headers))
            .message_id(msg_id);
        let ack = self
            .inner
            .jetstream
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(js_publish_error)?;
        ack.await.map_err(js_publish_error)?;
        Ok(())
    }

    pub(crate) async fn subscribe(&self, subject: &str) -> Result<NatsSubscription, BusError> {
        self.inner
            .client
            .subscribe(subject.to_owned())
            .await
            .map(NatsSubscription)
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    pub(crate) async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<NatsSubscription, BusError> {
        self.inner
            .client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await
            .map(NatsSubscription)
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    pub(crate) async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let mut request = Request::new().payload(payload).timeout(Some(timeout));
        if !headers.is_empty() {
            request = request.headers(to_header_map(&headers));
        }
        match self
            .inner
            .client
            .send_request(subject.to_owned(), request)
            .await
        {
            Ok(message) => Ok(from_nats(message)),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders,
                RequestErrorKind::TimedOut => BusError::Timeout,
                RequestErrorKind::InvalidSubject => BusError::InvalidSubject(e.to_string()),
                RequestErrorKind::MaxPayloadExceeded => BusError::PayloadTooLarge,
                RequestErrorKind::Other => BusError::Unavailable(e.to_string()),
            }),
        }
    }

    pub(crate) async fn flush(&self) -> Result<(), BusError> {
        self.inner
            .client
            .flush()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }

    pub(crate) async fn ensure_stream(
        &self,
        name: &str,
        subjects: Vec<String>,
        replicas: usize,
    ) -> Result<(), BusError> {
        let config = jetstream::stream::Config {
            name: name.to_owned(),
            subjects,
            // On a cluster, 3 replicas keep every event through the loss of one server; an
            // existing stream is scaled to this (the server moves the data).
            num_replicas: replicas.max(1),
            // Durable consumers (webhooks, analytics) catch up within a day; the relay to sockets
            // reads it back only after a reconnection.
            max_age: Duration::from_secs(24 * 3600),
            // The outbox retries within this window are de-duplicated by Nats-Msg-Id.
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.inner
            .jetstream
            .create_or_update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| BusError::JetStream(e.to_string()))
    }

    pub(crate) async fn delete_stream(&self, name: &str) -> Result<(), BusError> {
        match self.inner.jetstream.delete_stream(name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(BusError::JetStream(e.to_string())),
        }
    }
}

/// The servers of a `NATS_URL`: one URL, or several separated by commas (async-nats parses
/// one URL per string, so the list is split here).
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                // The parser's message may quote the URL, credentials included.
                .map_err(|_| BusError::Unavailable("NATS_URL holds an invalid server URL".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(BusError::Unavailable("NATS_URL names no server".into()));
    }
    Ok(servers)
}

fn js_publish_error(e: jetstream::context::PublishError) -> BusError {
    match e.kind() {
        JsPublishErrorKind::StreamNotFound => BusError::NoStream,
        JsPublishErrorKind::MaxPayloadExceeded => BusError::PayloadTooLarge,
        JsPublishErrorKind::TimedOut => BusError::Timeout,
        _ => BusError::JetStream(e.to_string()),
    }
}

fn to_header_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        map.insert(name, value);
    }
    map
}

pub(crate) fn from_nats(message: async_nats::Message) -> Message {
    let mut headers = Headers::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            if let Some(value) = values.last() {
                headers.insert(name.to_string(), value.as_str());
            }
        }
    }
    Message {
        subject: message.subject.to_string(),
        reply: message.reply.map(|r| r.to_string()),
        headers,
        payload: message.payload,
    }
}

/// A core NATS subscription; async-nats unsubscribes when it is dropped.
#[derive(Debug)]
pub struct NatsSubscription(async_nats::Subscriber);

impl Stream for NatsSubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|m| m.map(from_nats))
    }
}

#[cfg(test)]
mod tests {
    use super::server_addrs;

    #[test]
    fn a_comma_separated_nats_url_names_every_server_of_the_cluster() {
        let servers =
            server_addrs("nats://a:4222, nats://user:pw@b:4223,c:4224").expect("three servers");
        let hosts: Vec<_> = servers
            .iter()
            .map(|s| format!("{}:{}", s.host(), s.port()))
            .collect();
        assert_eq!(hosts, ["a:4222", "b:4223", "c:4224"]);
    }

    #[test]
    fn an_unusable_nats_url_is_refused_without_repeating_it() {
        for url in ["", " , ", "http://user:hunter2@a:4222"] {
            let err = server_addrs(url).expect_err(url);
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
