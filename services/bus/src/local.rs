//! The in-process bus for the standalone single-process mode: the semantics of core NATS that
//! the services rely on, without a server.
//!
//! - subjects are dot-separated tokens; subscriptions may use `*` (one token) and `>` (one or
//!   more trailing tokens); publishes must name a concrete subject;
//! - every plain subscriber gets every matching message; among the members of a queue group,
//!   one does (round robin);
//! - delivery is at most once and in publish order per subscriber; a subscriber that falls more
//!   than [`SUBSCRIPTION_CAPACITY`] messages behind loses messages, as a NATS slow consumer does;
//! - requests get `NoResponders` at once when nobody is subscribed, `Timeout` otherwise.
//!
//! Subscriptions to concrete subjects are indexed by subject, so a publish costs the same with
//! ten thousand per-user subscriptions as with ten.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::bus::{BusError, Headers, Message};

/// How many undelivered messages a subscription buffers before newer ones are dropped.
pub const SUBSCRIPTION_CAPACITY: usize = 8192;

/// An in-process bus. Clones share the same subscriptions.
#[derive(Clone, Debug, Default)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    subs: Mutex<Registry>,
    next_id: AtomicU64,
    round_robin: AtomicUsize,
}

#[derive(Debug, Default)]
struct Registry {
    exact: HashMap<String, Vec<Entry>>,
    wildcard: Vec<(Vec<String>, Entry)>,
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    group: Option<String>,
    tx: Sender,
}

/// Plain subscriptions are bounded (a slow subscriber loses messages, as on NATS); durable
/// consumers are not (they must lose nothing, and their consumer is in this very process).
#[derive(Debug, Clone)]
enum Sender {
    Bounded(mpsc::Sender<Message>),
    Lossless(mpsc::UnboundedSender<Message>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Bounded(tx) => tx.is_closed(),
            Sender::Lossless(tx) => tx.is_closed(),
        }
    }

    /// `false` when the message was dropped.
    fn send(&self, message: Message) -> bool {
        match self {
            Sender::Bounded(tx) => tx.try_send(message).is_ok(),
            Sender::Lossless(tx) => tx.send(message).is_ok(),
        }
    }
}

#[derive(Debug)]
enum Receiver {
    Bounded(mpsc::Receiver<Message>),
    Lossless(mpsc::UnboundedReceiver<Message>),
}

impl Receiver {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match self {
            Receiver::Bounded(rx) => rx.poll_recv(cx),
            Receiver::Lossless(rx) => rx.poll_recv(cx),
        }
    }

    async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl LocalBus {
    /// A bus with no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the registry half-updated (every update
        // is a single push or retain), so a poisoned lock is safe to keep using.
        self.inner
            .subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn subscribe(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<LocalSubscription, BusError> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        self.register(subject, group, Sender::Bounded(tx), Receiver::Bounded(rx))
    }

    /// A subscription that never drops a message, however far behind its reader is (for
    /// durable consumers in process).
    pub(crate) fn subscribe_lossless(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<LocalSubscription, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.register(subject, group, Sender::Lossless(tx), Receiver::Lossless(rx))
    }

    fn register(
        &self,
        subject: &str,
        group: Option<&str>,
        tx: Sender,
        rx: Receiver,
    ) -> Result<LocalSubscription, BusError> {
        validate(subject, true)?;
        if let Some(group) = group
            && (group.is_empty() || group.chars().any(char::is_whitespace))
        {
            {
                return Err(BusError::InvalidSubject(format!(
                    "invalid queue group {group:?}"
                )));
            }
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            id,
            group: group.map(str::to_owned),
            tx,
        };
        let mut registry = self.registry();
        if is_wildcard(subject) {
            registry.wildcard.push((tokens(subject), entry));
        } else {
            registry
                .exact
                .entry(subject.to_owned())
                .or_default()
                .push(entry);
        }
        drop(registry);
        Ok(LocalSubscription {
            rx,
            _guard: Guard {
                bus: Arc::downgrade(&self.inner),
                id,
                subject: subject.to_owned(),
            },
        })
    }

    pub(crate) fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.deliver(subject, None, headers, payload).map(|_| ())
    }

    /// Delivers to every matching subscriber; returns how many got it (or would have, had their
    /// buffers not been full).
    fn deliver(
        &self,
        subject: &str,
        reply: Option<String>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<usize, BusError> {
        validate(subject, false)?;
        let message = Message {
            subject: subject.to_owned(),
            reply,
            headers,
            payload,
        };
        let registry = self.registry();
        let subject_tokens: Vec<&str> = subject.split('.').collect();
        let matching = registry
            .exact
            .get(subject)
            .into_iter()
            .flatten()
            .chain(
                registry
                    .wildcard
                    .iter()
                    .filter(|(pattern, _)| matches(pattern, &subject_tokens))
                    .map(|(_, entry)| entry),
            )
            .filter(|entry| !entry.tx.is_closed());

        let mut plain = Vec::new();
        let mut groups: HashMap<&str, Vec<&Entry>> = HashMap::new();
        for entry in matching {
            match &entry.group {
                None => plain.push(entry),
                Some(group) => groups.entry(group.as_str()).or_default().push(entry),
            }
        }
        let turn = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
        let chosen = groups.values().map(|members| members[turn % members.len()]);
        let mut delivered = 0;
        for entry in plain.into_iter().chain(chosen) {
            delivered += 1;
            if !entry.tx.send(message.clone()) {
                tracing::warn!(subject, "local bus subscriber is too slow; message dropped");
            }
        }
        Ok(delivered)
    }

    pub(crate) async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let inbox = format!(
            "_INBOX.local.{}",
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let mut replies = self.subscribe(&inbox, None)?;
        if self.deliver(subject, Some(inbox), headers, payload)? == 0 {
            return Err(BusError::NoResponders);
        }
        match tokio::time::timeout(timeout, replies.rx.recv()).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(BusError::Unavailable("local bus closed".to_owned())),
            Err(_) => Err(BusError::Timeout),
        }
    }

    fn unsubscribe(inner: &Inner, id: u64, subject: &str) {
        let mut registry = inner
            .subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if is_wildcard(subject) {
            registry.wildcard.retain(|(_, e)| e.id != id);
        } else if let Some(entries) = registry.exact.get_mut(subject) {
            entries.retain(|e| e.id != id);
            if entries.is_empty() {
                registry.exact.remove(subject);
            }
        }
    }

    /// How many subscriptions are live (for tests that check nothing is left behind).
    pub fn subscription_count(&self) -> usize {
        let registry = self.registry();
        registry.exact.values().map(Vec::len).sum::<usize>() + registry.wildcard.len()
    }
}

fn is_wildcard(subject: &str) -> bool {
    subject.split('.').any(|t| t == "*" || t == ">")
}

fn tokens(subject: &str) -> Vec<String> {
    subject.split('.').map(str::to_owned).collect()
}

fn validate(subject: &str, allow_wildcards: bool) -> Result<(), BusError> {
    let invalid = |why: &str| Err(BusError::InvalidSubject(format!("{subject:?}: {why}")));
    if subject.is_empty() {
        return invalid("empty");
    }
    if subject.chars().any(char::is_whitespace) {
        return invalid("contains whitespace");
    }
    let parts: Vec<&str> = subject.split('.').collect();
    for (i, token) in parts.iter().enumerate() {
        if token.is_empty() {
            return invalid("empty token");
        }
        let wildcard = *token == "*" || *token == ">";
        if wildcard && !allow_wildcards {
            return invalid("wildcards are not allowed here");
        }
        if *token == ">" && i + 1 != parts.len() {
            return invalid("`>` must be the last token");
        }
    }
    Ok(())
}

fn matches(pattern: &[String], subject: &[&str]) -> bool {
    for (i, p) in pattern.iter().enumerate() {
        match p.as_str() {
            ">" => return subject.len() > i,
            "*" => {
                if i >= subject.len() {
                    return false;
                }
            }
            literal => {
                if subject.get(i) != Some(&literal) {
                    return false;
                }
            }
        }
    }
    pattern.len() == subject.len()
}

#[derive(Debug)]
struct Guard {
    bus: Weak<Inner>,
    id: u64,
    subject: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(inner) = self.bus.upgrade() {
            LocalBus::unsubscribe(&inner, self.id, &self.subject);
        }
    }
}

/// An in-process subscription; unsubscribes when dropped.
#[derive(Debug)]
pub struct LocalSubscription {
    rx: Receiver,
    _guard: Guard,
}

impl Stream for LocalSubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, subject: &str) -> bool {
        let subject: Vec<&str> = subject.split('.').collect();
        matches(&tokens(pattern), &subject)
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(m("a.*.c", "a.b.c"));
        assert!(!m("a.*.c", "a.b.d"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.>", "a.b.c"));
        assert!(m("a.>", "a.b"));
        assert!(!m("a.>", "a"));
        assert!(m("*.>", "x.y"));
        assert!(!m("a.b", "a.b.c"));
    }

    #[test]
    fn invalid_subjects_are_refused() {
        assert!(validate("", false).is_err());
        assert!(validate("a..b", false).is_err());
        assert!(validate("a b", false).is_err());
        assert!(validate("a.*", false).is_err());
        assert!(validate("a.>.b", true).is_err());
        assert!(validate("a.*.>", true).is_ok());
    }
}
