//! Which pushes a ring event causes, to which devices, with which payloads (CONTRACT section 8;
//! pure code: no I/O, time passed in).
//!
//! - Incoming call: iOS devices with a VoIP token get an APNs VoIP push (topic
//!   `<bundleId>.voip`, priority 10, expiring at the ring deadline, collapsed by call); Android
//!   devices get a high-priority FCM data message whose TTL is the time left to ring.
//! - Ringing stopped: Android devices get a high-priority data message. iOS gets nothing (Apple
//!   requires every VoIP push to report a new call); its socket replay tells it instead.
//! - Missed call: every device gets a visible notification (APNs alert to the push token, FCM
//!   notification).
//!
//! The device that answered or declined (when the app said which) gets no "stopped" push.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::devices::{Platform, PushProvider};
use crate::events::RingInfo;

/// How long a "ringing stopped" message may wait for a phone beyond the ring deadline: a
/// phone that comes back later has dropped the ring message anyway (its TTL ran out).
pub const CANCEL_GRACE_MS: i64 = 60_000;
/// How long a missed-call notification is worth retrying and waiting for a phone.
pub const MISSED_CALL_TTL_MS: i64 = 6 * 3600 * 1000;

/// Which worker pool sends a delivery: ringing pushes never queue behind other work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Incoming call and ringing stopped: latency-critical.
    Ring,
    /// Missed-call notifications.
    Bulk,
}

impl Lane {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Ring => "ring",
            Lane::Bulk => "bulk",
        }
    }
}

/// The three kinds of push (the `kind` label of the push metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// Ring the phone.
    IncomingCall,
    /// Stop ringing (Android).
    IncomingCallCancelled,
    /// A visible missed-call notification.
    MissedCall,
}

impl PushKind {
    /// Stored form and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::IncomingCall => "incoming_call",
            PushKind::IncomingCallCancelled => "incoming_call_cancelled",
            PushKind::MissedCall => "missed_call",
        }
    }

    /// The lane it is sent in.
    pub fn lane(self) -> Lane {
        match self {
            PushKind::IncomingCall | PushKind::IncomingCallCancelled => Lane::Ring,
            PushKind::MissedCall => Lane::Bulk,
        }
    }
}

/// A registered device, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The app-chosen id.
    pub device_id: String,
    /// The OS.
    pub platform: Platform,
    /// Who carries `push_token`.
    pub push_provider: PushProvider,
    /// The push token.
    pub push_token: String,
    /// The PushKit token (iOS).
    pub voip_token: Option<String>,
    /// The bundle id it registered with.
    pub bundle_id: Option<String>,
}

/// What to send, stored with the delivery (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum PushRequest {
    /// An APNs request.
    Apns {
        /// `apns-topic`.
        topic: String,
        /// `voip` or `alert`.
        push_type: String,
        /// `apns-priority`.
        priority: u8,
        /// `apns-expiration`, unix seconds.
        expiration: Option<i64>,
        /// `apns-collapse-id`.
        collapse_id: Option<String>,
        /// The JSON body.
        payload: Value,
    },
    /// An FCM HTTP v1 message.
    Fcm {
        /// The data payload (every value a string).
        data: BTreeMap<String, String>,
        /// A visible notification, for missed calls.
        notification: Option<(String, String)>,
    },
}

impl PushRequest {
    /// The provider label.
    pub fn provider(&self) -> &'static str {
        match self {
            PushRequest::Apns { .. } => "apns",
            PushRequest::Fcm { .. } => "fcm",
        }
    }
}

/// A push to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The device.
    pub device_id: String,
    /// The token it goes to.
    pub token: String,
    /// What kind of push.
    pub kind: PushKind,
    /// What to send.
    pub request: PushRequest,
    /// Never sent after this, unix milliseconds.
    pub deadline_ms: i64,
}

/// The topic of a device's pushes, when one is known.
fn bundle<'a>(target: &'a Target, default_bundle: Option<&'a str>) -> Option<&'a str> {
    target.bundle_id.as_deref().or(default_bundle)
}

/// Incoming-call pushes to `targets` for the call `call_id` (CONTRACT section 8 payloads).
/// Devices that cannot be rung (iOS without a VoIP token, an APNs device with no known bundle
/// id) are left out.
pub fn ring(
    call_id: &str,
    info: &RingInfo,
    targets: &[Target],
    default_bundle: Option<&str>,
) -> Vec<NewDelivery> {
    let deadline_rfc3339 = rfc3339(info.ring_deadline_ms);
    let mut out = Vec::new();
    for t in targets {
        match t.platform {
            Platform::Ios => {
                let (Some(voip), Some(bundle)) = (&t.voip_token, bundle(t, default_bundle)) else {
                    continue;
                };
                let mut from = json!({"userId": info.caller.user_id});
                if let Some(name) = &info.caller.display_name {
                    from["displayName"] = json!(name);
                }
                if let Some(url) = &info.caller.avatar_url {
                    from["avatarUrl"] = json!(url);
                }
                out.push(NewDelivery {
                    device_id: t.device_id.clone(),
                    token: voip.clone(),
                    kind: PushKind::IncomingCall,
                    request: PushRequest::Apns {
                        topic: format!("{bundle}.voip"),
                        push_type: "voip".into(),
                        priority: 10,
                        expiration: Some(info.ring_deadline_ms.div_euclid(1000)),
                        collapse_id: Some(call_id.to_owned()),
                        payload: json!({
                            "type": "incoming_call",
                            "callId": call_id,
                            "chatRoomId": info.chat_room_id,
                            "callType": info.call_type,
                            "isGroupCall": info.is_group_call,
                            "from": from,
                            "ringDeadline": deadline_rfc3339,
                        }),
                    },
                    deadline_ms: info.ring_deadline_ms,
                });
            }
            Platform::Android => {
                let mut data = BTreeMap::from([
                    ("type".to_owned(), "incoming_call".to_owned()),
                    ("callId".to_owned(), call_id.to_owned()),
                    ("chatRoomId".to_owned(), info.chat_room_id.clone()),
                    ("callType".to_owned(), info.call_type.clone()),
                    ("isGroupCall".to_owned(), info.is_group_call.to_string()),
                    ("fromUserId".to_owned(), info.caller.user_id.clone()),
                    ("ringDeadline".to_owned(), deadline_rfc3339.clone()),
                ]);
                if let Some(name) = &info.caller.display_name {
                    data.insert("fromDisplayName".into(), name.clone());
                }
                if let Some(url) = &info.caller.avatar_url {
                    data.insert("fromAvatarUrl".into(), url.clone());
                }
                out.push(NewDelivery {
                    device_id: t.device_id.clone(),
                    token: t.push_token.clone(),
                    kind: PushKind::IncomingCall,
                    request: PushRequest::Fcm {
                        data,
                        notification: None,
                    },
                    deadline_ms: info.ring_deadline_ms,
                });
            }
        }
    }
    out
}

/// "Ringing stopped" pushes: Android devices only, except the one that answered or declined.
pub fn stopped(
    call_id: &str,
    reason: &str,
    origin_device: Option<&str>,
    ring_deadline_ms: Option<i64>,
    now_ms: i64,
    targets: &[Target],
) -> Vec<NewDelivery> {
    let deadline_ms = ring_deadline_ms.unwrap_or(now_ms).max(now_ms) + CANCEL_GRACE_MS;
    targets
        .iter()
        .filter(|t| t.platform == Platform::Android)
        .filter(|t| Some(t.device_id.as_str()) != origin_device)
        .map(|t| NewDelivery {
            device_id: t.device_id.clone(),
            token: t.push_token.clone(),
            kind: PushKind::IncomingCallCancelled,
            request: PushRequest::Fcm {
                data: BTreeMap::from([
                    ("type".to_owned(), "incoming_call_cancelled".to_owned()),
                    ("callId".to_owned(), call_id.to_owned()),
                    ("reason".to_owned(), reason.to_owned()),
                ]),
                notification: None,
            },
            deadline_ms,
        })
        .collect()
}

/// The text of a missed-call notification (English; iOS apps localise it through `loc-key`).
pub const MISSED_CALL_TITLE: &str = "Missed call";
/// The body's format: `%@` is the caller (APNs `loc-key` convention, so an app without its
/// own translation shows this text with the name filled in).
pub const MISSED_CALL_BODY_KEY: &str = "Missed call from %@";

/// Missed-call notifications to every device of the user.
pub fn missed(
    call_id: &str,
    info: &RingInfo,
    now_ms: i64,
    targets: &[Target],
    default_bundle: Option<&str>,
) -> Vec<NewDelivery> {
    let caller = info.caller.shown_as();
    let body = MISSED_CALL_BODY_KEY.replace("%@", caller);
    let deadline_ms = now_ms + MISSED_CALL_TTL_MS;
    let mut out = Vec::new();
    for t in targets {
        let request = match t.push_provider {
            PushProvider::Apns => {
                let Some(bundle) = bundle(t, default_bundle) else {
                    continue;
                };
                PushRequest::Apns {
                    topic: bundle.to_owned(),
                    push_type: "alert".into(),
                    priority: 10,
                    expiration: Some(deadline_ms.div_euclid(1000)),
                    collapse_id: Some(format!("missed-{call_id}")),
                    payload: json!({
                        "aps": {
                            "alert": {
                                "title": MISSED_CALL_TITLE,
                                "body": body,
                                "title-loc-key": MISSED_CALL_TITLE,
                                "loc-key": MISSED_CALL_BODY_KEY,
                                "loc-args": [caller],
                            },
                            "thread-id": info.chat_room_id,
                            "sound": "default",
                        },
                        "type": "missed_call",
                        "callId": call_id,
                        "chatRoomId": info.chat_room_id,
                        "callType": info.call_type,
                        "fromUserId": info.caller.user_id,
                    }),
                }
            }
            PushProvider::Fcm => PushRequest::Fcm {
                data: BTreeMap::from([
                    ("type".to_owned(), "missed_call".to_owned()),
                    ("callId".to_owned(), call_id.to_owned()),
                    ("chatRoomId".to_owned(), info.chat_room_id.clone()),
                    ("fromUserId".to_owned(), info.caller.user_id.clone()),
                ]),
                notification: Some((MISSED_CALL_TITLE.to_owned(), body.clone())),
            },
        };
        out.push(NewDelivery {
            device_id: t.device_id.clone(),
            token: t.push_token.clone(),
            kind: PushKind::MissedCall,
            request,
            deadline_ms,
        });
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as the rest of the API writes timestamps.
pub fn rfc3339(ms: i64) -> String {
    let t = calls_db::from_millis(ms).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::events::Caller;

    const HEX: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn info() -> RingInfo {
        RingInfo {
            chat_room_id: "room-42".into(),
            call_type: "video".into(),
            is_group_call: false,
            caller: Caller {
                user_id: "alice".into(),
                display_name: Some("Alice".into()),
                avatar_url: None,
            },
            ring_deadline_ms: 1_767_225_645_000,
        }
    }

    fn iphone(voip: bool) -> Target {
        Target {
            device_id: "iphone".into(),
            platform: Platform::Ios,
            push_provider: PushProvider::Apns,
            push_token: HEX.into(),
            voip_token: voip.then(|| HEX.replace('a', "b")),
            bundle_id: None,
        }
    }

    fn pixel() -> Target {
        Target {
            device_id: "pixel".into(),
            platform: Platform::Android,
            push_provider: PushProvider::Fcm,
            push_token: "fcm:tok".into(),
            voip_token: None,
            bundle_id: None,
        }
    }

    #[test]
    fn an_iphone_rings_through_voip_and_an_android_through_a_data_message() {
        let out = ring("c1", &info(), &[iphone(true), pixel()], Some("com.ex.app"));
        assert_eq!(out.len(), 2);
        let PushRequest::Apns {
            topic,
            push_type,
            priority,
            expiration,
            collapse_id,
            payload,
        } = &out[0].request
        else {
            panic!()
        };
        assert_eq!(topic, "com.ex.app.voip");
        assert_eq!((push_type.as_str(), *priority), ("voip", 10));
        assert_eq!(*expiration, Some(1_767_225_645));
        assert_eq!(collapse_id.as_deref(), Some("c1"));
        assert_eq!(out[0].token, HEX.replace('a', "b"));
        assert_eq!(
            payload,
            &json!({"type": "incoming_call", "callId": "c1", "chatRoomId": "room-42",
                "callType": "video", "isGroupCall": false,
                "from": {"userId": "alice", "displayName": "Alice"},
                "ringDeadline": "2026-01-01T00:00:45.000Z"})
        );
        let PushRequest::Fcm { data, notification } = &out[1].request else {
            panic!()
        };
        assert!(notification.is_none());
        assert_eq!(data["isGroupCall"], "false");
        assert_eq!(data["fromDisplayName"], "Alice");
        assert!(!data.contains_key("fromAvatarUrl"));
        assert_eq!(out[1].deadline_ms, 1_767_225_645_000);
    }

    #[test]
    fn an_iphone_without_voip_token_or_bundle_cannot_ring() {
        assert!(ring("c1", &info(), &[iphone(false)], Some("com.ex")).is_empty());
        assert!(ring("c1", &info(), &[iphone(true)], None).is_empty());
    }

    #[test]
    fn ringing_stopped_reaches_android_only_and_not_the_device_that_answered() {
        let mut other = pixel();
        other.device_id = "tablet".into();
        let out = stopped(
            "c1",
            "answered_elsewhere",
            Some("pixel"),
            Some(1000),
            500,
            &[iphone(true), pixel(), other],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].device_id, "tablet");
        assert_eq!(out[0].deadline_ms, 1000 + CANCEL_GRACE_MS);
    }

    #[test]
    fn a_missed_call_is_a_visible_notification_on_every_device() {
        let out = missed("c1", &info(), 0, &[iphone(true), pixel()], Some("com.ex"));
        assert_eq!(out.len(), 2);
        let PushRequest::Apns {
            topic,
            push_type,
            payload,
            ..
        } = &out[0].request
        else {
            panic!()
        };
        assert_eq!((topic.as_str(), push_type.as_str()), ("com.ex", "alert"));
        assert_eq!(out[0].token, HEX, "alerts go to the push token, not VoIP");
        assert_eq!(payload["aps"]["thread-id"], "room-42");
        assert_eq!(payload["aps"]["alert"]["body"], "Missed call from Alice");
        assert_eq!(payload["aps"]["alert"]["loc-args"], json!(["Alice"]));
        let PushRequest::Fcm { data, notification } = &out[1].request else {
            panic!()
        };
        assert_eq!(data["type"], "missed_call");
        assert_eq!(
            notification.as_ref().unwrap().1,
            "Missed call from Alice".to_owned()
        );
    }
}
