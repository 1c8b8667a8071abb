//! What notifier knows of a call, rebuilt from the call's own events, and the webhook events
//! each step causes (pure code: no I/O, no clock).
//!
//! notifier never reads calls-api's tables. The bus carries what is needed: `incoming_call`
//! holds the whole call as created (the projection's start, `seq` 0), and every later change
//! is an event with the call's gap-free `seq`. Applied in `seq` order (the store holds back an
//! event that arrives before an earlier one), the projection follows the call exactly,
//! including what no single event says: when the call started, who was still ringing when it
//! ended, and how long each participant was in it across leaves and rejoins — what
//! `call.ended` reports.
//!
//! Each webhook event gets a `position`, `seq << 16 | n` for the `n`-th event a bus event
//! causes: the order a call's events are delivered in, and with the call id, the `webhook-id`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::EventType;
#[cfg(test)]
use super::stream::MediaSeconds;
use super::stream::{CallEvent, SeqEvent, millis};
use crate::events::Caller;

/// A participant, as in CONTRACT section 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantView {
    /// The user.
    pub user_id: String,
    /// `host` or `participant`.
    pub role: String,
    /// `invited`, `ringing`, `joined`, `left`, `declined`, `missed`.
    pub status: String,
    /// Microphone muted.
    #[serde(default)]
    pub is_mic_muted: bool,
    /// Camera off.
    #[serde(default)]
    pub is_camera_off: bool,
    /// Sharing the screen.
    #[serde(default)]
    pub is_sharing_screen: bool,
    /// When invited (or when they joined a group call uninvited).
    pub invited_at: String,
    /// When they last joined.
    #[serde(default)]
    pub joined_at: Option<String>,
    /// When they last left.
    #[serde(default)]
    pub left_at: Option<String>,
    /// Why they declined (`busy` when they were in another call).
    #[serde(default)]
    pub decline_reason: Option<String>,
    /// Whether one of their sockets is connected.
    #[serde(default = "yes")]
    pub is_connected: bool,
    /// Seconds in the call over every stay (`call.ended` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_seconds: Option<i64>,
    /// Seconds in the call's Agora channel, as calls-api counted them from Agora's notices
    /// (`call.ended` only; not read from the bus's participants, where it is not final).
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub media_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A call, as in CONTRACT section 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// The call id.
    pub id: String,
    /// The chat room.
    pub chat_room_id: String,
    /// `audio` or `video`.
    #[serde(rename = "type")]
    pub call_type: String,
    /// Group or 1:1.
    pub is_group_call: bool,
    /// `ringing`, `active`, `ended`.
    pub status: String,
    /// Who started it.
    pub initiator_id: String,
    /// The capacity.
    pub max_participants: u32,
    /// When it was created.
    pub created_at: String,
    /// When someone first answered.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Why it ended.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Whose action ended it.
    #[serde(default)]
    pub ended_by: Option<String>,
    /// The last event applied.
    pub seq: u64,
    /// Everyone invited or joined.
    pub participants: Vec<ParticipantView>,
    /// From `startedAt` to `endedAt`, whole seconds (`call.ended` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
}

/// `call.ended`'s data: the call and its `mediaSeconds` (kept out of [`CallView`], which every
/// stored projection and bus event carries, for the one event that reports it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndedCall<'a> {
    #[serde(flatten)]
    call: &'a CallView,
    /// The participants' `mediaSeconds` summed, as calls-api reported it.
    media_seconds: u64,
}

/// Time in the call of one participant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedTime {
    /// Milliseconds of completed stays.
    pub total_ms: i64,
    /// Since when they are in the call, when they are.
    pub since_ms: Option<i64>,
}

/// The projection of one call (stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    /// The call as it is after the last applied event.
    pub call: CallView,
    /// Who called.
    pub from: Caller,
    /// Time in the call, by user.
    pub time: BTreeMap<String, JoinedTime>,
}

/// A webhook event to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// The type.
    pub event_type: EventType,
    /// Its place in the call's order (see the module docs).
    pub position: i64,
    /// When it happened (the envelope's `timestamp`).
    pub at: String,
    /// The same, unix milliseconds.
    pub at_ms: i64,
    /// The envelope's `data`, as JSON text (fields in the order the docs show them).
    pub data: String,
}

impl WebhookEvent {
    /// The request body: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> String {
        format!(
            r#"{{"type":"{}","timestamp":{},"data":{}}}"#,
            self.event_type.as_str(),
            serde_json::to_string(&self.at).unwrap_or_else(|_| "null".into()),
            self.data
        )
    }
}

/// `participant.joined`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinedData<'a> {
    call_id: &'a str,
    chat_room_id: &'a str,
    seq: u64,
    participant: &'a ParticipantView,
}

/// `participant.left`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeftData<'a> {
    call_id: &'a str,
    chat_room_id: &'a str,
    seq: u64,
    user_id: &'a str,
    reason: &'a str,
}

/// `call.missed` / `call.declined`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InviteeData<'a> {
    call_id: &'a str,
    chat_room_id: &'a str,
    user_id: &'a str,
    from: &'a Caller,
    call_type: &'a str,
    is_group_call: bool,
    reason: Option<&'a str>,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings, numbers and options: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The position of the `n`-th webhook event caused by the bus event `seq`.
pub fn position(seq: u64, n: usize) -> i64 {
    let seq = i64::try_from(seq)
        .unwrap_or(i64::MAX >> 16)
        .min(i64::MAX >> 16);
    (seq << 16) | i64::try_from(n.min(0xffff)).unwrap_or(0xffff)
}

fn is_pending(status: &str) -> bool {
    status == "invited" || status == "ringing"
}

/// Collects the webhook events of one step with their positions.
struct Out<'a> {
    seq: u64,
    at: &'a str,
    at_ms: i64,
    events: Vec<WebhookEvent>,
}

impl Out<'_> {
    fn push(&mut self, event_type: EventType, data: String) {
        let n = self.events.len();
        self.events.push(WebhookEvent {
            event_type,
            position: position(self.seq, n),
            at: self.at.to_owned(),
            at_ms: self.at_ms,
            data,
        });
    }
}

impl CallState {
    /// The projection of a call from its `incoming_call` snapshot, and the events its creation
    /// causes (`call.initiated`, and `call.declined` for every invitee who was busy already),
    /// when the snapshot is the call's creation (`seq` 0).
    pub fn start(call: CallView, from: Caller) -> (CallState, Vec<WebhookEvent>) {
        let mut time = BTreeMap::new();
        for p in &call.participants {
            if p.status == "joined" {
                let since = p
                    .joined_at
                    .as_deref()
                    .and_then(millis)
                    .or_else(|| millis(&call.created_at));
                time.insert(
                    p.user_id.clone(),
                    JoinedTime {
                        total_ms: 0,
                        since_ms: since,
                    },
                );
            }
        }
        let state = CallState { call, from, time };
        let mut out = Out {
            seq: state.call.seq,
            at: &state.call.created_at,
            at_ms: millis(&state.call.created_at).unwrap_or(0),
            events: Vec::new(),
        };
        if state.call.seq == 0 {
            out.push(EventType::CallInitiated, state.call_data());
            for p in &state.call.participants {
                if p.status == "declined" {
                    out.push(
                        EventType::CallDeclined,
                        state.invitee_data(&p.user_id, p.decline_reason.as_deref()),
                    );
                }
            }
        }
        let events = out.events;
        (state, events)
    }

    /// Applies the next event of the call (the caller guarantees `seq` order) and returns the
    /// webhook events it causes.
    pub fn apply(&mut self, e: &SeqEvent) -> Vec<WebhookEvent> {
        let mut out = Out {
            seq: e.seq,
            at: &e.at,
            at_ms: e.at_ms,
            events: Vec::new(),
        };
        self.call.seq = self.call.seq.max(e.seq);
        match &e.event {
            CallEvent::Joined { participant } => {
                let user = participant.user_id.clone();
                match self.index(&user) {
                    Some(i) => self.call.participants[i] = (**participant).clone(),
                    None => self.call.participants.push((**participant).clone()),
                }
                let t = self.time.entry(user.clone()).or_default();
                if t.since_ms.is_none() {
                    t.since_ms = Some(e.at_ms);
                }
                out.push(
                    EventType::ParticipantJoined,
                    to_json(&JoinedData {
                        call_id: &self.call.id,
                        chat_room_id: &self.call.chat_room_id,
                        seq: e.seq,
                        participant,
                    }),
                );
                if self.call.status == "ringing" && user != self.call.initiator_id {
                    self.call.status = "active".into();
                    self.call.started_at = Some(e.at.clone());
                    out.push(EventType::CallStarted, self.call_data());
                }
            }
            CallEvent::Left { user_id, reason } => {
                self.leave(user_id, &e.at, e.at_ms);
                out.push(
                    EventType::ParticipantLeft,
                    to_json(&LeftData {
                        call_id: &self.call.id,
                        chat_room_id: &self.call.chat_room_id,
                        seq: e.seq,
                        user_id,
                        reason,
                    }),
                );
            }
            CallEvent::StatusChanged {
                user_id,
                status,
                reason,
            } => {
                if let Some(i) = self.index(user_id) {
                    let p = &mut self.call.participants[i];
                    p.status = status.clone();
                    if status == "declined" {
                        p.decline_reason = reason.clone();
                    }
                }
                match status.as_str() {
                    "declined" => out.push(
                        EventType::CallDeclined,
                        self.invitee_data(user_id, reason.as_deref()),
                    ),
                    "missed" => out.push(
                        EventType::CallMissed,
                        self.invitee_data(user_id, reason.as_deref()),
                    ),
                    _ => {}
                }
            }
            CallEvent::Media {
                user_id,
                is_mic_muted,
                is_camera_off,
                is_sharing_screen,
            } => {
                if let Some(i) = self.index(user_id) {
                    let p = &mut self.call.participants[i];
                    p.is_mic_muted = *is_mic_muted;
                    p.is_camera_off = *is_camera_off;
                    p.is_sharing_screen = *is_sharing_screen;
                }
            }
            CallEvent::Connection { user_id, connected } => {
                if let Some(i) = self.index(user_id) {
                    self.call.participants[i].is_connected = *connected;
                }
            }
            CallEvent::Ended {
                reason,
                ended_by,
                media,
            } => {
                // As in calls-api: `call_ended` alone stands for everyone still in the call
                // leaving and everyone still ringing having missed it.
                let users: Vec<(String, String)> = self
                    .call
                    .participants
                    .iter()
                    .map(|p| (p.user_id.clone(), p.status.clone()))
                    .collect();
                for (user, status) in users {
                    if status == "joined" {
                        self.leave(&user, &e.at, e.at_ms);
                    } else if is_pending(&status) {
                        if let Some(i) = self.index(&user) {
                            self.call.participants[i].status = "missed".into();
                        }
                        let reason = (reason != "missed").then_some("call_ended");
                        out.push(EventType::CallMissed, self.invitee_data(&user, reason));
                    }
                }
                self.call.status = "ended".into();
                self.call.ended_at = Some(e.at.clone());
                self.call.end_reason = Some(reason.clone());
                self.call.ended_by = ended_by.clone();
                out.push(
                    EventType::CallEnded,
                    self.ended_data(media.call, &media.by_user),
                );
            }
            // Someone rung into the live call: known from now on, so their answer, decline or
            // miss is reported like an initial invitee's (a busy one is declined at once).
            CallEvent::Invited { participant } => {
                let user = participant.user_id.clone();
                match self.index(&user) {
                    Some(i) => self.call.participants[i] = (**participant).clone(),
                    None => self.call.participants.push((**participant).clone()),
                }
                if participant.status == "declined" {
                    out.push(
                        EventType::CallDeclined,
                        self.invitee_data(&user, participant.decline_reason.as_deref()),
                    );
                }
            }
            CallEvent::Updated {
                is_group_call,
                max_participants,
            } => {
                self.call.is_group_call = *is_group_call;
                self.call.max_participants = *max_participants;
            }
            CallEvent::HostChanged { user_id } => {
                for p in &mut self.call.participants {
                    if p.user_id == *user_id {
                        p.role = "host".into();
                    } else if p.role == "host" {
                        p.role = "participant".into();
                    }
                }
            }
            CallEvent::Other => {}
        }
        out.events
    }

    /// Whether the call has ended.
    pub fn is_ended(&self) -> bool {
        self.call.status == "ended"
    }

    fn index(&self, user_id: &str) -> Option<usize> {
        self.call
            .participants
            .iter()
            .position(|p| p.user_id == user_id)
    }

    fn leave(&mut self, user_id: &str, at: &str, at_ms: i64) {
        if let Some(i) = self.index(user_id) {
            let p = &mut self.call.participants[i];
            p.status = "left".into();
            p.left_at = Some(at.to_owned());
            p.is_connected = true;
        }
        let t = self.time.entry(user_id.to_owned()).or_default();
        if let Some(since) = t.since_ms.take() {
            t.total_ms += (at_ms - since).max(0);
        }
    }

    fn call_data(&self) -> String {
        to_json(&self.call)
    }

    /// `call.missed` / `call.declined`: one invitee.
    fn invitee_data(&self, user_id: &str, reason: Option<&str>) -> String {
        to_json(&InviteeData {
            call_id: &self.call.id,
            chat_room_id: &self.call.chat_room_id,
            user_id,
            from: &self.from,
            call_type: &self.call.call_type,
            is_group_call: self.call.is_group_call,
            reason,
        })
    }

    /// `call.ended`: the call, `durationSeconds` from `startedAt` (0 when nobody answered),
    /// each participant's `joinedSeconds`, summed over every stay, and the `mediaSeconds` of
    /// the call and of each participant as `call_ended` carries them.
    fn ended_data(&self, media_seconds: u64, by_user: &BTreeMap<String, u64>) -> String {
        let mut call = self.call.clone();
        let duration_ms = match (
            call.started_at.as_deref().and_then(millis),
            call.ended_at.as_deref().and_then(millis),
        ) {
            (Some(start), Some(end)) => (end - start).max(0),
            _ => 0,
        };
        call.duration_seconds = Some(duration_ms / 1000);
        for p in &mut call.participants {
            let ms = self.time.get(&p.user_id).map_or(0, |t| t.total_ms);
            p.joined_seconds = Some(ms / 1000);
            p.media_seconds = Some(by_user.get(&p.user_id).copied().unwrap_or(0));
        }
        to_json(&EndedCall {
            call: &call,
            media_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::*;

    fn data(e: &WebhookEvent) -> Value {
        serde_json::from_str(&e.data).unwrap()
    }

    const T0: &str = "2026-01-01T00:00:00.000Z";

    fn at(seconds: i64) -> (String, i64) {
        let ms = 1_767_225_600_000 + seconds * 1000;
        (crate::plan::rfc3339(ms), ms)
    }

    fn participant(user: &str, role: &str, status: &str) -> ParticipantView {
        ParticipantView {
            user_id: user.into(),
            role: role.into(),
            status: status.into(),
            is_mic_muted: false,
            is_camera_off: false,
            is_sharing_screen: false,
            invited_at: T0.into(),
            joined_at: (status == "joined").then(|| T0.to_owned()),
            left_at: None,
            decline_reason: (status == "declined").then(|| "busy".to_owned()),
            is_connected: true,
            joined_seconds: None,
            media_seconds: None,
        }
    }

    fn call(group: bool, invitees: &[(&str, &str)]) -> CallView {
        let mut participants = vec![participant("alice", "host", "joined")];
        participants.extend(
            invitees
                .iter()
                .map(|(u, s)| participant(u, "participant", s)),
        );
        CallView {
            id: "c1".into(),
            chat_room_id: "room".into(),
            call_type: "video".into(),
            is_group_call: group,
            status: "ringing".into(),
            initiator_id: "alice".into(),
            max_participants: if group { 8 } else { 2 },
            created_at: T0.into(),
            started_at: None,
            ended_at: None,
            end_reason: None,
            ended_by: None,
            seq: 0,
            participants,
            duration_seconds: None,
        }
    }

    fn alice() -> Caller {
        Caller {
            user_id: "alice".into(),
            display_name: Some("Alice".into()),
            avatar_url: None,
        }
    }

    fn ev(seq: u64, seconds: i64, event: CallEvent) -> SeqEvent {
        let (at, at_ms) = at(seconds);
        SeqEvent {
            seq,
            at,
            at_ms,
            event,
        }
    }

    fn joined(seq: u64, seconds: i64, user: &str) -> SeqEvent {
        let mut p = participant(user, "participant", "joined");
        p.joined_at = Some(at(seconds).0);
        ev(
            seq,
            seconds,
            CallEvent::Joined {
                participant: Box::new(p),
            },
        )
    }

    fn left(seq: u64, seconds: i64, user: &str) -> SeqEvent {
        ev(
            seq,
            seconds,
            CallEvent::Left {
                user_id: user.into(),
                reason: "left".into(),
            },
        )
    }

    fn ended(seq: u64, seconds: i64, reason: &str, by: Option<&str>) -> SeqEvent {
        ev(
            seq,
            seconds,
            CallEvent::Ended {
                reason: reason.into(),
                ended_by: by.map(str::to_owned),
                media: Box::default(),
            },
        )
    }

    fn types(events: &[WebhookEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[test]
    fn an_answered_call_reports_initiated_joined_started_left_and_ended_with_durations() {
        let (mut s, mut all) = CallState::start(call(false, &[("bob", "invited")]), alice());
        all.extend(s.apply(&joined(1, 5, "bob")));
        all.extend(s.apply(&left(2, 125, "bob")));
        all.extend(s.apply(&ended(3, 125, "completed", Some("bob"))));
        assert_eq!(
            types(&all),
            vec![
                "call.initiated",
                "participant.joined",
                "call.started",
                "participant.left",
                "call.ended"
            ]
        );
        let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        let started = data(&all[2]);
        assert_eq!(started["status"], "active");
        assert_eq!(started["startedAt"], at(5).0);
        let end = data(&all[4]);
        assert_eq!(end["status"], "ended");
        assert_eq!(end["endReason"], "completed");
        assert_eq!(end["endedBy"], "bob");
        assert_eq!(end["durationSeconds"], 120);
        let secs: Vec<(&str, i64)> = end["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["userId"].as_str().unwrap(),
                    p["joinedSeconds"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(secs, vec![("alice", 125), ("bob", 120)]);
        assert!(all[4].body().contains("\"type\":\"call.ended\""));
    }

    #[test]
    fn call_ended_reports_the_media_seconds_calls_api_counted_and_0_for_the_others() {
        let (mut s, _) = CallState::start(
            call(true, &[("bob", "invited"), ("carol", "invited")]),
            alice(),
        );
        s.apply(&joined(1, 5, "bob"));
        let out = s.apply(&ev(
            2,
            100,
            CallEvent::Ended {
                reason: "completed".into(),
                ended_by: Some("alice".into()),
                media: Box::new(MediaSeconds {
                    call: 150,
                    by_user: BTreeMap::from([("alice".to_owned(), 90), ("bob".to_owned(), 60)]),
                }),
            },
        ));
        let end = out
            .iter()
            .find(|e| e.event_type == EventType::CallEnded)
            .map(data)
            .unwrap();
        assert_eq!(end["mediaSeconds"], 150);
        let secs: Vec<(&str, u64)> = end["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["userId"].as_str().unwrap(),
                    p["mediaSeconds"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(secs, vec![("alice", 90), ("bob", 60), ("carol", 0)]);
    }

    #[test]
    fn media_seconds_on_the_bus_participants_do_not_leak_into_other_webhooks() {
        let mut initial = serde_json::to_value(call(false, &[("bob", "invited")])).unwrap();
        initial["mediaSeconds"] = json!(0);
        initial["participants"][0]["mediaSeconds"] = json!(0);
        let view: CallView = serde_json::from_value(initial).unwrap();
        let (_, out) = CallState::start(view, alice());
        let initiated = data(&out[0]);
        assert!(initiated.get("mediaSeconds").is_none());
        assert!(initiated["participants"][0].get("mediaSeconds").is_none());
    }

    #[test]
    fn joined_seconds_add_up_every_stay_of_someone_who_rejoins() {
        let (mut s, _) = CallState::start(
            call(true, &[("bob", "invited"), ("carol", "invited")]),
            alice(),
        );
        s.apply(&joined(1, 10, "bob"));
        s.apply(&left(2, 40, "bob"));
        s.apply(&joined(3, 100, "bob"));
        s.apply(&joined(4, 100, "carol"));
        let out = s.apply(&ended(5, 160, "completed", Some("alice")));
        let end = data(out.last().unwrap());
        let by_user = |u: &str| {
            end["participants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["userId"] == u)
                .unwrap()["joinedSeconds"]
                .as_i64()
                .unwrap()
        };
        assert_eq!(by_user("bob"), 30 + 60);
        assert_eq!(by_user("carol"), 60);
        assert_eq!(by_user("alice"), 160);
        assert_eq!(end["durationSeconds"], 150);
        assert!(
            end["participants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["status"] == "left")
        );
    }

    #[test]
    fn a_call_nobody_answers_reports_each_missed_invitee_then_the_end() {
        let (mut s, _) = CallState::start(call(false, &[("bob", "ringing")]), alice());
        let missed = s.apply(&ev(
            1,
            45,
            CallEvent::StatusChanged {
                user_id: "bob".into(),
                status: "missed".into(),
                reason: Some("ring_timeout".into()),
            },
        ));
        assert_eq!(types(&missed), vec!["call.missed"]);
        assert_eq!(
            data(&missed[0]),
            json!({"callId": "c1", "chatRoomId": "room", "userId": "bob",
                "from": {"userId": "alice", "displayName": "Alice"}, "callType": "video",
                "isGroupCall": false, "reason": "ring_timeout"})
        );
        let end = s.apply(&ended(2, 45, "missed", None));
        assert_eq!(types(&end), vec!["call.ended"]);
        assert_eq!(data(&end[0])["durationSeconds"], 0);
        assert_eq!(data(&end[0])["startedAt"], Value::Null);
    }

    #[test]
    fn invitees_still_ringing_when_the_caller_gives_up_missed_the_call() {
        let (mut s, _) = CallState::start(
            call(true, &[("bob", "ringing"), ("carol", "invited")]),
            alice(),
        );
        let out = s.apply(&ended(1, 3, "cancelled", Some("alice")));
        assert_eq!(
            types(&out),
            vec!["call.missed", "call.missed", "call.ended"]
        );
        assert_eq!(data(&out[0])["userId"], "bob");
        assert_eq!(data(&out[1])["userId"], "carol");
        assert_eq!(data(&out[0])["reason"], "call_ended");
        assert!(
            data(&out[2])["participants"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["role"] == "participant")
                .all(|p| p["status"] == "missed")
        );
    }

    #[test]
    fn people_invited_into_a_live_call_are_reported_like_the_first_invitees() {
        let (mut s, _) = CallState::start(call(false, &[("bob", "invited")]), alice());
        s.apply(&joined(1, 1, "bob"));
        let quiet = [
            s.apply(&ev(
                2,
                2,
                CallEvent::Invited {
                    participant: Box::new(participant("carol", "participant", "invited")),
                },
            )),
            s.apply(&ev(
                3,
                2,
                CallEvent::Updated {
                    is_group_call: true,
                    max_participants: 16,
                },
            )),
        ];
        assert!(quiet.iter().all(Vec::is_empty));
        let busy = s.apply(&ev(
            4,
            2,
            CallEvent::Invited {
                participant: Box::new(ParticipantView {
                    decline_reason: Some("busy".into()),
                    ..participant("dave", "participant", "declined")
                }),
            },
        ));
        assert_eq!(types(&busy), vec!["call.declined"]);
        assert_eq!(data(&busy[0])["reason"], "busy");
        assert_eq!(data(&busy[0])["isGroupCall"], true);
        let missed = s.apply(&ev(
            5,
            47,
            CallEvent::StatusChanged {
                user_id: "carol".into(),
                status: "missed".into(),
                reason: Some("ring_timeout".into()),
            },
        ));
        assert_eq!(types(&missed), vec!["call.missed"]);
        assert_eq!(data(&missed[0])["userId"], "carol");
        assert!(
            s.apply(&ev(
                6,
                50,
                CallEvent::HostChanged {
                    user_id: "bob".into()
                }
            ))
            .is_empty()
        );
        let end = s.apply(&ended(7, 60, "completed", Some("bob")));
        let call = data(end.last().unwrap());
        assert_eq!(call["isGroupCall"], true);
        assert_eq!(call["maxParticipants"], 16);
        let roles: Vec<(&str, &str)> = call["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["userId"].as_str().unwrap(), p["role"].as_str().unwrap()))
            .collect();
        assert_eq!(
            roles,
            [
                ("alice", "participant"),
                ("bob", "host"),
                ("carol", "participant"),
                ("dave", "participant")
            ]
        );
    }

    #[test]
    fn declines_are_reported_per_invitee_including_those_busy_from_the_start() {
        let (mut s, first) = CallState::start(
            call(true, &[("bob", "invited"), ("dave", "declined")]),
            alice(),
        );
        assert_eq!(types(&first), vec!["call.initiated", "call.declined"]);
        assert_eq!(data(&first[1])["userId"], "dave");
        assert_eq!(data(&first[1])["reason"], "busy");
        let out = s.apply(&ev(
            1,
            2,
            CallEvent::StatusChanged {
                user_id: "bob".into(),
                status: "declined".into(),
                reason: Some("in a meeting".into()),
            },
        ));
        assert_eq!(types(&out), vec!["call.declined"]);
        assert_eq!(data(&out[0])["reason"], "in a meeting");
    }

    #[test]
    fn media_and_connection_changes_cause_no_webhook_but_show_in_the_final_call() {
        let (mut s, _) = CallState::start(call(false, &[("bob", "invited")]), alice());
        s.apply(&joined(1, 1, "bob"));
        let quiet = [
            s.apply(&ev(
                2,
                2,
                CallEvent::Media {
                    user_id: "bob".into(),
                    is_mic_muted: true,
                    is_camera_off: true,
                    is_sharing_screen: false,
                },
            )),
            s.apply(&ev(
                3,
                3,
                CallEvent::Connection {
                    user_id: "bob".into(),
                    connected: false,
                },
            )),
            s.apply(&ev(4, 4, CallEvent::Other)),
        ];
        assert!(quiet.iter().all(Vec::is_empty));
        let end = s.apply(&ended(5, 9, "completed", None));
        let bob = &data(&end[0])["participants"][1].clone();
        assert_eq!(
            (bob["isMicMuted"].clone(), bob["isCameraOff"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(data(&end[0])["seq"], 5);
    }

    #[test]
    fn a_snapshot_taken_after_creation_starts_the_projection_without_announcing_it() {
        let mut later = call(false, &[("bob", "invited")]);
        later.seq = 3;
        let (s, out) = CallState::start(later, alice());
        assert!(out.is_empty());
        assert_eq!(s.call.seq, 3);
    }

    #[test]
    fn positions_order_by_seq_then_by_event_within_it() {
        assert!(position(1, 5) < position(2, 0));
        assert!(position(2, 0) < position(2, 1));
        assert_eq!(position(0, 0), 0);
    }
}
