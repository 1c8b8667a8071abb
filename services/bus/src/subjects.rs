//! Subject names: the one place that spells them.
//!
//! Every subject starts with a prefix (`calls.v1` by default, `NATS_SUBJECT_PREFIX` to change it)
//! so that tests, or two deployments sharing one NATS, can isolate themselves by prefix alone.
//! User and node ids are arbitrary strings, so they are encoded with [`token_key`] (base64url
//! without padding) into something that is always a single valid NATS token; call ids are UUIDs
//! and are used as they are.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "calls.v1";

/// Command names served by calls-api on `{prefix}.cmd.{name}`.
pub const COMMANDS: [&str; 4] = [
    "join_call",
    "leave_call",
    "media_state_changed",
    "call_status_changed",
];

/// The queue group calls-api replicas share for commands and presence, so each request is
/// answered once.
pub const CALLS_API_QUEUE_GROUP: &str = "calls-api";

/// The JetStream stream that keeps every event (`{prefix}.evt.>`) for durable consumers.
pub const EVENTS_STREAM: &str = "CALLS_EVENTS";

/// Why a prefix is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subject prefix: {0}")]
pub struct InvalidPrefix(&'static str);

/// Builds the subjects of one deployment (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Subjects {
    /// Subjects under `prefix`, trusted as given (use [`Subjects::validated`] for configuration
    /// input). A trailing `.` is trimmed.
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.ends_with('.') {
            prefix.pop();
        }
        Self { prefix }
    }

    /// Like [`Subjects::new`], but rejects prefixes that would make invalid or wildcard subjects:
    /// empty, empty tokens (`a..b`), whitespace, `*` or `>`.
    pub fn validated(prefix: &str) -> Result<Self, InvalidPrefix> {
        let trimmed = prefix.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(InvalidPrefix("must not be empty"));
        }
        if trimmed.split('.').any(str::is_empty) {
            return Err(InvalidPrefix("must not contain empty tokens"));
        }
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c == '*' || c == '>')
        {
            return Err(InvalidPrefix("must not contain whitespace or wildcards"));
        }
        Ok(Self::new(trimmed))
    }

    /// The prefix, without a trailing dot.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{p}.evt.call.{callId}`: events of one call.
    pub fn call_events(&self, call_id: &str) -> String {
        format!("{}.evt.call.{call_id}", self.prefix)
    }

    /// `{p}.evt.user.{user_key}`: events for every device of one user.
    pub fn user_events(&self, user_id: &str) -> String {
        format!("{}.evt.user.{}", self.prefix, user_key(user_id))
    }

    /// `{p}.cmd.{name}`: a command request (see [`COMMANDS`]).
    pub fn command(&self, name: &str) -> String {
        format!("{}.cmd.{name}", self.prefix)
    }

    /// `{p}.presence.{node_key}`: presence of one signaling node.
    pub fn presence(&self, node_id: &str) -> String {
        format!("{}.presence.{}", self.prefix, node_key(node_id))
    }

    /// `{p}.ctl.signaling`: instructions from calls-api to every signaling node about their
    /// sockets ([`crate::wire::ControlMessage`]). Core NATS, outside the event stream: these are
    /// not events for clients or for durable consumers.
    pub fn signaling_control(&self) -> String {
        format!("{}.ctl.signaling", self.prefix)
    }

    /// `{p}.evt.>`: every event (the JetStream stream's subject).
    pub fn all_events(&self) -> String {
        format!("{}.evt.>", self.prefix)
    }

    /// The JetStream stream that keeps this prefix's events: one stream per prefix, so
    /// deployments (and tests) sharing a NATS server do not fight over one stream's subjects.
    pub fn events_stream(&self) -> String {
        let suffix: String = self
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{EVENTS_STREAM}_{suffix}")
    }

    /// What an event subject addresses: `{p}.evt.call.<id>` or `{p}.evt.user.<userKey>`
    /// (the user id decoded); `None` for anything else.
    pub fn event_target(&self, subject: &str) -> Option<EventTarget> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".evt.")?;
        if let Some(call_id) = rest.strip_prefix("call.") {
            return (!call_id.is_empty() && !call_id.contains('.'))
                .then(|| EventTarget::Call(call_id.to_owned()));
        }
        let key = rest.strip_prefix("user.")?;
        let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
        String::from_utf8(bytes).ok().map(EventTarget::User)
    }

    /// `{p}.cmd.*`: every command.
    pub fn all_commands(&self) -> String {
        format!("{}.cmd.*", self.prefix)
    }

    /// `{p}.presence.*`: presence of every node.
    pub fn all_presence(&self) -> String {
        format!("{}.presence.*", self.prefix)
    }

    /// The command name of a command subject (`{p}.cmd.join_call` → `join_call`), for a
    /// responder subscribed to [`Subjects::all_commands`].
    pub fn command_name<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".cmd.")?;
        (!rest.is_empty() && !rest.contains('.')).then_some(rest)
    }
}

/// The audience of an event subject (see [`Subjects::event_target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTarget {
    /// `{p}.evt.call.<callId>`: the call's subscribers.
    Call(String),
    /// `{p}.evt.user.<userKey>`: every device of this user.
    User(String),
}

/// Encodes any string as one NATS subject token: base64url without padding of its UTF-8 bytes.
/// The alphabet (`A-Z a-z 0-9 - _`) has no `.`, `*`, `>` or whitespace, and the encoding is
/// injective, so distinct ids never share a subject.
pub fn token_key(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// The subject token of a user id (see [`token_key`]).
pub fn user_key(user_id: &str) -> String {
    token_key(user_id)
}

/// The subject token of a signaling node id (see [`token_key`]).
pub fn node_key(node_id: &str) -> String {
    token_key(node_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn event_subjects_tell_whom_they_address() {
        let s = Subjects::new("t.x");
        let call = "0193a2b4-0000-7000-8000-000000000001";
        assert_eq!(
            s.event_target(&s.call_events(call)),
            Some(EventTarget::Call(call.to_owned()))
        );
        assert_eq!(
            s.event_target(&s.user_events("ana.b*>é")),
            Some(EventTarget::User("ana.b*>é".to_owned()))
        );
        assert_eq!(s.event_target("t.x.cmd.join_call"), None);
        assert_eq!(s.event_target("other.evt.user.dTE"), None);
        assert_eq!(s.event_target("t.x.evt.user.%%%"), None);
    }

    #[test]
    fn subjects_follow_the_documented_layout() {
        let s = Subjects::default();
        let call = "0193a2b4-0000-7000-8000-000000000001";
        assert_eq!(s.call_events(call), format!("calls.v1.evt.call.{call}"));
        assert_eq!(s.user_events("u1"), "calls.v1.evt.user.dTE");
        assert_eq!(s.command("join_call"), "calls.v1.cmd.join_call");
        assert_eq!(s.presence("node-a"), "calls.v1.presence.bm9kZS1h");
        assert_eq!(s.all_events(), "calls.v1.evt.>");
        assert_eq!(s.all_commands(), "calls.v1.cmd.*");
        assert_eq!(s.all_presence(), "calls.v1.presence.*");
        assert_eq!(s.events_stream(), "CALLS_EVENTS_CALLS_V1");
        assert_eq!(s.signaling_control(), "calls.v1.ctl.signaling");
    }

    #[test]
    fn user_keys_are_single_safe_tokens_for_any_string() {
        for id in [
            "a.b",
            "*",
            ">",
            "with space",
            "émoji 🎉",
            "a\tb",
            "x".repeat(255).as_str(),
        ] {
            let key = user_key(id);
            assert!(!key.is_empty());
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{key}"
            );
        }
        assert_ne!(user_key("ab"), user_key("a.b"));
    }

    #[test]
    fn a_prefix_with_wildcards_or_empty_tokens_is_rejected() {
        assert!(Subjects::validated("").is_err());
        assert!(Subjects::validated("a..b").is_err());
        assert!(Subjects::validated("a.*").is_err());
        assert!(Subjects::validated("a b").is_err());
        assert_eq!(Subjects::validated("test.x.").unwrap().prefix(), "test.x");
    }

    #[test]
    fn command_names_are_read_back_from_subjects() {
        let s = Subjects::new("t1");
        assert_eq!(s.command_name("t1.cmd.join_call"), Some("join_call"));
        assert_eq!(s.command_name("t2.cmd.join_call"), None);
        assert_eq!(s.command_name("t1.cmd."), None);
        assert_eq!(s.command_name("t1.cmd.a.b"), None);
    }
}
