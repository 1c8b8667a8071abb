//! The webhook store on both databases: a call's events become deliveries once each, in `seq`
//! order, whatever order replicas consume them in; only the earliest pending event of a call
//! can be claimed for an endpoint, so a failing event holds back its own call and no other;
//! disabled endpoints, dead letters and replays. Each Postgres test gets its own database.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use notifier::events::Caller;
use notifier::store::{Endpoint, EndpointPatch, Store, WebhookFinish, WebhookInput};
use notifier::webhooks::model::{EndpointId, EventType, WebhookSecret};
use notifier::webhooks::projection::CallView;
use notifier::webhooks::stream::decode_call_event;
use serde_json::json;

const T0: i64 = 1_767_225_600_000;
const LEASE: i64 = 15_000;

on_both!(
    events_consumed_out_of_order_are_applied_in_seq_order_and_queued_once,
    events_consumed_before_the_calls_snapshot_wait_for_it,
    a_gap_that_lasts_is_skipped_and_a_call_never_seen_created_is_set_aside,
    a_failing_event_holds_back_the_later_events_of_its_call_only,
    two_workers_never_claim_the_same_delivery_and_one_endpoint_gets_at_most_its_limit,
    a_disabled_endpoint_fails_what_is_pending_and_a_replay_sends_it_again_with_the_same_ids,
    an_endpoint_gets_the_events_after_its_creation_of_the_types_it_asked_for,
    a_worker_whose_lease_ran_out_cannot_overwrite_a_newer_attempt,
    one_endpoints_backlog_does_not_crowd_out_another_endpoint,
);

fn at(seconds: i64) -> String {
    notifier::plan::rfc3339(T0 + seconds * 1000)
}

fn snapshot(call_id: &str) -> WebhookInput {
    let participant = |user: &str, role: &str, status: &str| {
        json!({"userId": user, "role": role, "status": status, "isMicMuted": false,
            "isCameraOff": false, "isSharingScreen": false, "invitedAt": at(0),
            "joinedAt": if status == "joined" { json!(at(0)) } else { json!(null) },
            "leftAt": null, "declineReason": null, "isConnected": true})
    };
    let call: CallView = serde_json::from_value(json!({
        "id": call_id, "chatRoomId": "room", "type": "audio", "isGroupCall": false,
        "status": "ringing", "initiatorId": "alice", "maxParticipants": 2, "createdAt": at(0),
        "startedAt": null, "endedAt": null, "endReason": null, "endedBy": null, "seq": 0,
        "participants": [participant("alice", "host", "joined"), participant("bob", "participant", "invited")]
    }))
    .unwrap();
    WebhookInput::Snapshot {
        call: Box::new(call),
        from: Caller {
            user_id: "alice".into(),
            display_name: None,
            avatar_url: None,
        },
    }
}

fn event(call_id: &str, seq: u64, name: &str, extra: serde_json::Value) -> WebhookInput {
    let mut data =
        json!({"callId": call_id, "seq": seq, "at": at(i64::try_from(seq).unwrap() * 10)});
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    let raw = json!({"event": name, "data": data}).to_string();
    WebhookInput::Event {
        call_id: call_id.into(),
        event: decode_call_event(&raw).unwrap(),
        raw,
    }
}

/// Bob answers (1), leaves (2), the call ends (3).
fn answered(call_id: &str) -> Vec<WebhookInput> {
    vec![
        event(
            call_id,
            1,
            "participant_joined",
            json!({"participant": {"userId": "bob", "role": "participant", "status": "joined",
                "invitedAt": at(0), "joinedAt": at(10)}}),
        ),
        event(
            call_id,
            2,
            "participant_left",
            json!({"userId": "bob", "reason": "left"}),
        ),
        event(
            call_id,
            3,
            "call_ended",
            json!({"reason": "completed", "endedBy": "bob"}),
        ),
    ]
}

fn endpoint(id: &str, created_ms: i64, types: Option<Vec<EventType>>) -> Endpoint {
    Endpoint {
        id: EndpointId::parse(id).unwrap(),
        url: format!("https://hooks.example.com/{id}"),
        secrets: vec![WebhookSecret::generate()],
        event_types: types,
        enabled: true,
        disabled_reason: None,
        last_success_ms: None,
        created_ms,
        updated_ms: created_ms,
    }
}

/// `(call, type)` of an endpoint's deliveries, oldest first.
async fn queued(store: &Store, id: &str) -> Vec<(String, String, String)> {
    let mut rows = store
        .webhook_deliveries(&EndpointId::parse(id).unwrap(), None, None, 200)
        .await
        .unwrap();
    rows.reverse();
    rows.into_iter()
        .map(|d| (d.call_id, d.event_type, d.status))
        .collect()
}

fn row(call: &str, t: &str, status: &str) -> (String, String, String) {
    (call.into(), t.into(), status.into())
}

/// Claims and delivers everything that may go, round after round; returns the types in the
/// order they went.
async fn deliver_all(store: &Store, now: i64) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    loop {
        let claimed = store.claim_webhooks(now, LEASE, 50, 50).await.unwrap();
        if claimed.is_empty() {
            return sent;
        }
        for c in claimed {
            store
                .finish_webhook(
                    c.id,
                    c.attempts,
                    &WebhookFinish::Delivered { status: 204 },
                    now,
                )
                .await
                .unwrap();
            sent.push((c.call_id, c.event_type));
        }
    }
}

async fn events_consumed_out_of_order_are_applied_in_seq_order_and_queued_once(store: &Store) {
    store
        .create_endpoint(&endpoint("a", T0 - 1, None))
        .await
        .unwrap();
    let events = answered("c1");
    store.apply_webhook(&snapshot("c1"), T0).await.unwrap();
    let third = store.apply_webhook(&events[2], T0).await.unwrap();
    assert!(
        third.waiting && third.queued == 0,
        "seq 3 waits for 1 and 2"
    );
    let second = store.apply_webhook(&events[1], T0).await.unwrap();
    assert!(second.waiting);
    let first = store.apply_webhook(&events[0], T0).await.unwrap();
    assert_eq!(
        first.queued, 4,
        "joined + started, then the waiting left and ended"
    );
    for e in &events {
        assert!(
            store.apply_webhook(e, T0).await.unwrap().stale,
            "a redelivery queues nothing"
        );
    }
    assert!(
        store
            .apply_webhook(&snapshot("c1"), T0)
            .await
            .unwrap()
            .stale
    );
    assert_eq!(store.webhook_call("c1").await.unwrap(), Some((3, false)));
    let sent = deliver_all(store, T0).await;
    let types: Vec<&str> = sent.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "call.initiated",
            "participant.joined",
            "call.started",
            "participant.left",
            "call.ended"
        ]
    );
    let ended = store
        .webhook_deliveries(&EndpointId::parse("a").unwrap(), Some("delivered"), None, 1)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&ended[0].body).unwrap();
    assert_eq!(body["type"], "call.ended");
    assert_eq!(body["data"]["durationSeconds"], 20);
    assert_eq!(body["data"]["participants"][1]["joinedSeconds"], 10);
}

async fn events_consumed_before_the_calls_snapshot_wait_for_it(store: &Store) {
    store
        .create_endpoint(&endpoint("a", T0 - 1, None))
        .await
        .unwrap();
    let events = answered("c1");
    assert!(store.apply_webhook(&events[0], T0).await.unwrap().waiting);
    let applied = store.apply_webhook(&snapshot("c1"), T0).await.unwrap();
    assert_eq!(
        applied.queued, 3,
        "initiated, then the waiting joined + started"
    );
    assert_eq!(
        queued(store, "a").await,
        vec![
            row("c1", "call.initiated", "pending"),
            row("c1", "participant.joined", "pending"),
            row("c1", "call.started", "pending"),
        ]
    );
}

async fn a_gap_that_lasts_is_skipped_and_a_call_never_seen_created_is_set_aside(store: &Store) {
    store
        .create_endpoint(&endpoint("a", T0 - 1, None))
        .await
        .unwrap();
    // c1: seq 2 is lost; 3 waits for it.
    store.apply_webhook(&snapshot("c1"), T0).await.unwrap();
    let events = answered("c1");
    store.apply_webhook(&events[0], T0).await.unwrap();
    store.apply_webhook(&events[2], T0).await.unwrap();
    // c2: only an end, never the creation (every invitee was busy).
    store
        .apply_webhook(&event("c2", 1, "call_ended", json!({"reason": "busy"})), T0)
        .await
        .unwrap();
    let wait = notifier::store::GAP_WAIT_MS;
    assert_eq!(
        store.skip_gaps(T0 + wait - 1, wait).await.unwrap(),
        (0, 0, 0),
        "not yet"
    );
    let (moved, orphaned, queued_now) = store.skip_gaps(T0 + wait + 1, wait).await.unwrap();
    assert_eq!((moved, orphaned, queued_now), (1, 1, 1));
    assert_eq!(store.webhook_call("c1").await.unwrap(), Some((3, false)));
    assert_eq!(store.webhook_call("c2").await.unwrap(), Some((-1, true)));
    let types: Vec<String> = queued(store, "a").await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        types,
        vec![
            "call.initiated",
            "participant.joined",
            "call.started",
            "call.ended"
        ]
    );
    // A late copy of the lost event changes nothing now.
    assert!(
        store
            .apply_webhook(&events[1], T0 + wait + 2)
            .await
            .unwrap()
            .stale
    );
}

async fn a_failing_event_holds_back_the_later_events_of_its_call_only(store: &Store) {
    store
        .create_endpoint(&endpoint("a", T0 - 1, None))
        .await
        .unwrap();
    store
        .create_endpoint(&endpoint("b", T0 - 1, None))
        .await
        .unwrap();
    for call in ["c1", "c2"] {
        store.apply_webhook(&snapshot(call), T0).await.unwrap();
        for e in answered(call) {
            store.apply_webhook(&e, T0).await.unwrap();
        }
    }
    // One head per call and endpoint may go.
    let claimed = store.claim_webhooks(T0, LEASE, 50, 50).await.unwrap();
    let heads: BTreeSet<(String, String, String)> = claimed
        .iter()
        .map(|c| {
            (
                c.endpoint_id.clone(),
                c.call_id.clone(),
                c.event_type.clone(),
            )
        })
        .collect();
    assert_eq!(heads.len(), 4);
    assert!(heads.iter().all(|(_, _, t)| t == "call.initiated"));
    // Endpoint a fails c1's first event; everything else is accepted.
    for c in &claimed {
        let finish = if c.endpoint_id == "a" && c.call_id == "c1" {
            WebhookFinish::Retry {
                due_ms: T0 + 60_000,
                status: Some(500),
                error: "HTTP 500".into(),
            }
        } else {
            WebhookFinish::Delivered { status: 200 }
        };
        store
            .finish_webhook(c.id, c.attempts, &finish, T0)
            .await
            .unwrap();
    }
    let sent = deliver_all(store, T0 + 1).await;
    assert_eq!(
        sent.iter().filter(|(call, _)| call == "c2").count(),
        8,
        "c2 flows to both"
    );
    assert_eq!(
        sent.iter().filter(|(call, _)| call == "c1").count(),
        4,
        "c1 flows to b only"
    );
    let a_c1: Vec<_> = queued(store, "a")
        .await
        .into_iter()
        .filter(|r| r.0 == "c1")
        .collect();
    assert!(
        a_c1.iter().all(|r| r.2 == "pending"),
        "a's c1 events wait behind the failing one"
    );
    // Once it is due and accepted, the rest of c1 follows in order.
    let sent = deliver_all(store, T0 + 60_000).await;
    let types: Vec<&str> = sent.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "call.initiated",
            "participant.joined",
            "call.started",
            "participant.left",
            "call.ended"
        ]
    );
}

async fn two_workers_never_claim_the_same_delivery_and_one_endpoint_gets_at_most_its_limit(
    store: &Store,
) {
    store
        .create_endpoint(&endpoint("a", T0 - 1, None))
        .await
        .unwrap();
    for i in 0..12 {
        store
            .apply_webhook(&snapshot(&format!("c{i}")), T0)
            .await
            .unwrap();
    }
    let (x, y) = tokio::join!(
        store.claim_webhooks(T0, LEASE, 10, 5),
        store.claim_webhooks(T0, LEASE, 10, 5)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let ids: BTreeSet<i64> = x.iter().chain(&y).map(|c| c.id).collect();
    assert_eq!(ids.len(), x.len() + y.len(), "no delivery claimed twice");
    assert!(
        x.len() <= 5 && y.len() <= 5,
        "one claim never passes the limit"
    );
    assert!(
        ids.len() >= 5,
        "the first claim takes what the limit allows"
    );
    assert!(
        store
            .claim_webhooks(T0, LEASE, 10, 5)
            .await
            .unwrap()
            .is_empty(),
        "with the limit in flight, nothing more goes to that endpoint"
    );
    // A lease that runs out frees its delivery, with one more attempt counted.
    let again = store
        .claim_webhooks(T0 + LEASE + 1, LEASE, 50, 50)
        .await
        .unwrap();
    assert_eq!(again.len(), 12);
    assert!(
        again
            .iter()
            .filter(|c| ids.contains(&c.id))
            .all(|c| c.attempts == 2)
    );
}

async fn a_disabled_endpoint_fails_what_is_pending_and_a_replay_sends_it_again_with_the_same_ids(
    store: &Store,
) {
    store
        .create_endpoint(&endpoint("a", T0 - 1, None))
        .await
        .unwrap();
    let id = EndpointId::parse("a").unwrap();
    store.apply_webhook(&snapshot("c1"), T0).await.unwrap();
    let first = store.claim_webhooks(T0, LEASE, 50, 50).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .disable_endpoint("a", "the endpoint answered 410 Gone", T0)
            .await
            .unwrap()
    );
    assert!(!store.disable_endpoint("a", "again", T0).await.unwrap());
    // Events while it is off are recorded as failed, not lost.
    for e in answered("c1") {
        store.apply_webhook(&e, T0 + 1).await.unwrap();
    }
    assert!(
        store
            .claim_webhooks(T0 + 2, LEASE, 50, 50)
            .await
            .unwrap()
            .is_empty()
    );
    let failed = store
        .webhook_deliveries(&id, Some("failed"), None, 50)
        .await
        .unwrap();
    assert_eq!(failed.len(), 5);
    let ids_before: BTreeSet<String> = failed.iter().map(|d| d.message_id.clone()).collect();
    let e = store.endpoint(&id).await.unwrap().unwrap();
    assert!(!e.enabled);
    assert_eq!(
        e.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );

    let patch = EndpointPatch {
        enabled: Some(true),
        ..EndpointPatch::default()
    };
    let e = store
        .update_endpoint(&id, &patch, T0 + 3)
        .await
        .unwrap()
        .unwrap();
    assert!(e.enabled && e.disabled_reason.is_none());
    assert_eq!(
        store.replay(&id, T0 + 1, T0 + 4).await.unwrap(),
        4,
        "only since the cut-off"
    );
    assert_eq!(store.replay(&id, T0, T0 + 4).await.unwrap(), 1);
    let sent = deliver_all(store, T0 + 5).await;
    assert_eq!(sent.len(), 5);
    assert_eq!(sent[0].1, "call.initiated", "still in the call's order");
    let delivered = store
        .webhook_deliveries(&id, Some("delivered"), None, 50)
        .await
        .unwrap();
    let ids_after: BTreeSet<String> = delivered.iter().map(|d| d.message_id.clone()).collect();
    assert_eq!(ids_before, ids_after, "a replay keeps each webhook-id");
}

async fn an_endpoint_gets_the_events_after_its_creation_of_the_types_it_asked_for(store: &Store) {
    store
        .create_endpoint(&endpoint("late", T0 + 15_000, None))
        .await
        .unwrap();
    store
        .create_endpoint(&endpoint("ends", T0 - 1, Some(vec![EventType::CallEnded])))
        .await
        .unwrap();
    store.apply_webhook(&snapshot("c1"), T0).await.unwrap();
    for e in answered("c1") {
        store.apply_webhook(&e, T0).await.unwrap();
    }
    let late: Vec<String> = queued(store, "late")
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        late,
        vec!["participant.left", "call.ended"],
        "events at 20 s and 30 s"
    );
    let ends: Vec<String> = queued(store, "ends")
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(ends, vec!["call.ended"]);
}

async fn a_worker_whose_lease_ran_out_cannot_overwrite_a_newer_attempt(store: &Store) {
    store
        .create_endpoint(&endpoint("a", T0 - 1, None))
        .await
        .unwrap();
    store.apply_webhook(&snapshot("c1"), T0).await.unwrap();
    let slow = store
        .claim_webhooks(T0, LEASE, 1, 1)
        .await
        .unwrap()
        .remove(0);
    let fast = store
        .claim_webhooks(T0 + LEASE + 1, LEASE, 1, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (slow.id, slow.message_id.clone()),
        (fast.id, fast.message_id.clone())
    );
    store
        .finish_webhook(
            fast.id,
            fast.attempts,
            &WebhookFinish::Delivered { status: 200 },
            T0 + LEASE + 2,
        )
        .await
        .unwrap();
    store
        .finish_webhook(
            slow.id,
            slow.attempts,
            &WebhookFinish::Failed {
                status: None,
                error: "late".into(),
            },
            T0 + LEASE + 3,
        )
        .await
        .unwrap();
    assert_eq!(
        queued(store, "a").await,
        vec![row("c1", "call.initiated", "delivered")]
    );
}

async fn one_endpoints_backlog_does_not_crowd_out_another_endpoint(store: &Store) {
    store
        .create_endpoint(&endpoint("busy", T0 - 1, None))
        .await
        .unwrap();
    for i in 0..30 {
        store
            .apply_webhook(&snapshot(&format!("c{i}")), T0)
            .await
            .unwrap();
    }
    // Another endpoint, whose one event is queued after all of the above.
    store
        .create_endpoint(&endpoint("quiet", T0 - 1, None))
        .await
        .unwrap();
    store
        .apply_webhook(&snapshot("late"), T0 + 1_000)
        .await
        .unwrap();
    let claimed = store.claim_webhooks(T0 + 1_000, LEASE, 4, 2).await.unwrap();
    let per: Vec<(String, String)> = claimed
        .iter()
        .map(|c| (c.endpoint_id.clone(), c.call_id.clone()))
        .collect();
    assert_eq!(
        per.iter().filter(|(e, _)| e == "busy").count(),
        2,
        "{per:?}"
    );
    assert!(per.contains(&("quiet".into(), "late".into())), "{per:?}");
}
