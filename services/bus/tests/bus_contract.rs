//! One suite, run against both implementations: what calls-api and signaling rely on must hold
//! the same in process and over NATS. NATS tests use a random subject prefix each (and a random
//! stream name), so they run in parallel with each other and with other suites, and delete what
//! they create.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use calls_bus::wire::{HEADER_CREATED_AT, HEADER_MSG_ID};
use calls_bus::{Bus, BusError, Headers, Subjects};
use futures::StreamExt;

const NATS_URL: &str = "nats://127.0.0.1:4222";
const WAIT: Duration = Duration::from_secs(5);

fn unique_prefix() -> String {
    format!("test.{}", uuid::Uuid::new_v4().simple())
}

async fn nats() -> (Bus, Subjects) {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| NATS_URL.to_owned());
    (
        Bus::connect(&url).await.unwrap(),
        Subjects::new(unique_prefix()),
    )
}

async fn local() -> (Bus, Subjects) {
    (Bus::local(), Subjects::new(unique_prefix()))
}

async fn next(sub: &mut calls_bus::Subscription) -> calls_bus::Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("message in time")
        .expect("stream open")
}

/// Asserts nothing arrives for a short while: the only way to observe an absence.
async fn nothing(sub: &mut calls_bus::Subscription) {
    let got = tokio::time::timeout(Duration::from_millis(150), sub.next()).await;
    assert!(got.is_err(), "unexpected message: {got:?}");
}

mod cases {
    use super::*;

    pub async fn a_subscriber_receives_payload_and_headers(bus: Bus, s: Subjects) {
        let subject = s.call_events("c1");
        let mut sub = bus.subscribe(&subject).await.unwrap();
        bus.flush().await.unwrap();
        let headers = Headers::new().with(HEADER_CREATED_AT, "123");
        bus.publish(&subject, headers, Bytes::from_static(b"{\"x\":1}"))
            .await
            .unwrap();
        let m = next(&mut sub).await;
        assert_eq!(m.subject, subject);
        assert_eq!(m.payload, Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(m.headers.get(HEADER_CREATED_AT), Some("123"));
    }

    pub async fn wildcards_deliver_matching_subjects_only(bus: Bus, s: Subjects) {
        let mut all = bus.subscribe(&s.all_events()).await.unwrap();
        let mut one_level = bus
            .subscribe(&format!("{}.evt.call.*", s.prefix()))
            .await
            .unwrap();
        bus.flush().await.unwrap();
        bus.publish(
            &s.call_events("c1"),
            Headers::new(),
            Bytes::from_static(b"1"),
        )
        .await
        .unwrap();
        bus.publish(
            &s.user_events("u1"),
            Headers::new(),
            Bytes::from_static(b"2"),
        )
        .await
        .unwrap();
        bus.publish(
            &s.command("join_call"),
            Headers::new(),
            Bytes::from_static(b"3"),
        )
        .await
        .unwrap();
        assert_eq!(next(&mut all).await.payload, Bytes::from_static(b"1"));
        assert_eq!(next(&mut all).await.payload, Bytes::from_static(b"2"));
        nothing(&mut all).await;
        assert_eq!(next(&mut one_level).await.payload, Bytes::from_static(b"1"));
        nothing(&mut one_level).await;
    }

    pub async fn queue_group_members_share_messages_each_delivered_once(bus: Bus, s: Subjects) {
        let subject = s.command("join_call");
        let mut a = bus
            .queue_subscribe(&s.all_commands(), "calls-api")
            .await
            .unwrap();
        let mut b = bus
            .queue_subscribe(&s.all_commands(), "calls-api")
            .await
            .unwrap();
        let mut watcher = bus.subscribe(&subject).await.unwrap();
        bus.flush().await.unwrap();
        for i in 0..20u8 {
            bus.publish(&subject, Headers::new(), Bytes::from(vec![i]))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(next(&mut watcher).await.payload[0]);
        }
        assert_eq!(
            seen,
            (0..20).collect::<Vec<u8>>(),
            "a plain subscriber sees all, in order"
        );
        let mut group = Vec::new();
        while group.len() < 20 {
            tokio::select! {
                Some(m) = a.next() => group.push(m.payload[0]),
                Some(m) = b.next() => group.push(m.payload[0]),
                _ = tokio::time::sleep(WAIT) => panic!("queue group lost messages: {group:?}"),
            }
        }
        group.sort_unstable();
        assert_eq!(group, (0..20).collect::<Vec<u8>>());
        nothing(&mut a).await;
        nothing(&mut b).await;
    }

    pub async fn a_request_gets_the_responders_reply(bus: Bus, s: Subjects) {
        let mut responder = bus
            .queue_subscribe(&s.all_presence(), "calls-api")
            .await
            .unwrap();
        bus.flush().await.unwrap();
        let server = bus.clone();
        let task = tokio::spawn(async move {
            let m = responder.next().await.unwrap();
            assert_eq!(m.headers.get("traceparent"), Some("00-abc-def-01"));
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&m.payload);
            server
                .respond(m.reply.as_deref().unwrap(), Bytes::from(reply))
                .await
                .unwrap();
        });
        let headers = Headers::new().with("traceparent", "00-abc-def-01");
        let reply = bus
            .request(
                &s.presence("node-1"),
                headers,
                Bytes::from_static(b"hi"),
                WAIT,
            )
            .await
            .unwrap();
        assert_eq!(reply.payload, Bytes::from_static(b"echo:hi"));
        task.await.unwrap();
    }

    pub async fn a_request_nobody_listens_to_fails_with_no_responders(bus: Bus, s: Subjects) {
        let err = bus
            .request(&s.command("join_call"), Headers::new(), Bytes::new(), WAIT)
            .await
            .unwrap_err();
        assert_eq!(err, BusError::NoResponders);
        assert!(err.is_unavailable());
    }

    pub async fn a_request_to_a_silent_responder_times_out(bus: Bus, s: Subjects) {
        let _silent = bus.subscribe(&s.command("leave_call")).await.unwrap();
        bus.flush().await.unwrap();
        let err = bus
            .request(
                &s.command("leave_call"),
                Headers::new(),
                Bytes::new(),
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
        assert_eq!(err, BusError::Timeout);
    }

    pub async fn dropping_a_subscription_unsubscribes(bus: Bus, s: Subjects) {
        let sub = bus.subscribe(&s.command("join_call")).await.unwrap();
        bus.flush().await.unwrap();
        drop(sub);
        bus.flush().await.unwrap();
        // Unsubscribing is asynchronous on NATS; poll until the interest is gone.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = bus
                .request(
                    &s.command("join_call"),
                    Headers::new(),
                    Bytes::new(),
                    Duration::from_millis(200),
                )
                .await;
            if r == Err(BusError::NoResponders) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still subscribed: {r:?}"
            );
        }
    }

    pub async fn messages_arrive_in_publish_order(bus: Bus, s: Subjects) {
        let subject = s.call_events("ordered");
        let mut sub = bus.subscribe(&subject).await.unwrap();
        bus.flush().await.unwrap();
        for i in 0..500u32 {
            bus.publish(&subject, Headers::new(), Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        for i in 0..500u32 {
            assert_eq!(next(&mut sub).await.payload, Bytes::from(i.to_string()));
        }
    }

    pub async fn events_carry_their_message_id_and_reach_core_subscribers(bus: Bus, s: Subjects) {
        let stream = format!("TEST_{}", uuid::Uuid::new_v4().simple());
        bus.ensure_stream(&stream, vec![s.all_events()], 1)
            .await
            .unwrap();
        // Updating with the same subjects is fine (every calls-api replica does it at start-up).
        bus.ensure_stream(&stream, vec![s.all_events()], 1)
            .await
            .unwrap();
        let subject = s.call_events("c1");
        let mut sub = bus.subscribe(&subject).await.unwrap();
        bus.flush().await.unwrap();
        let result = bus
            .publish_event(&subject, "evt-1", Headers::new(), Bytes::from_static(b"{}"))
            .await;
        let m = next(&mut sub).await;
        bus.delete_stream(&stream).await.unwrap();
        result.unwrap();
        assert_eq!(m.headers.get(HEADER_MSG_ID), Some("evt-1"));
    }

    pub async fn invalid_subjects_are_rejected(bus: Bus, _s: Subjects) {
        let err = bus
            .publish("a b", Headers::new(), Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::InvalidSubject(_)), "{err:?}");
        let err = bus
            .request("", Headers::new(), Bytes::new(), WAIT)
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::InvalidSubject(_)), "{err:?}");
    }
}

macro_rules! suite {
    ($module:ident, $make:ident) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn a_subscriber_receives_payload_and_headers() {
                let (bus, s) = $make().await;
                cases::a_subscriber_receives_payload_and_headers(bus, s).await;
            }

            #[tokio::test]
            async fn wildcards_deliver_matching_subjects_only() {
                let (bus, s) = $make().await;
                cases::wildcards_deliver_matching_subjects_only(bus, s).await;
            }

            #[tokio::test]
            async fn queue_group_members_share_messages_each_delivered_once() {
                let (bus, s) = $make().await;
                cases::queue_group_members_share_messages_each_delivered_once(bus, s).await;
            }

            #[tokio::test]
            async fn a_request_gets_the_responders_reply() {
                let (bus, s) = $make().await;
                cases::a_request_gets_the_responders_reply(bus, s).await;
            }

            #[tokio::test]
            async fn a_request_nobody_listens_to_fails_with_no_responders() {
                let (bus, s) = $make().await;
                cases::a_request_nobody_listens_to_fails_with_no_responders(bus, s).await;
            }

            #[tokio::test]
            async fn a_request_to_a_silent_responder_times_out() {
                let (bus, s) = $make().await;
                cases::a_request_to_a_silent_responder_times_out(bus, s).await;
            }

            #[tokio::test]
            async fn dropping_a_subscription_unsubscribes() {
                let (bus, s) = $make().await;
                cases::dropping_a_subscription_unsubscribes(bus, s).await;
            }

            #[tokio::test]
            async fn messages_arrive_in_publish_order() {
                let (bus, s) = $make().await;
                cases::messages_arrive_in_publish_order(bus, s).await;
            }

            #[tokio::test]
            async fn events_carry_their_message_id_and_reach_core_subscribers() {
                let (bus, s) = $make().await;
                cases::events_carry_their_message_id_and_reach_core_subscribers(bus, s).await;
            }

            #[tokio::test]
            async fn invalid_subjects_are_rejected() {
                let (bus, s) = $make().await;
                cases::invalid_subjects_are_rejected(bus, s).await;
            }
        }
    };
}

suite!(over_nats, nats);
suite!(in_process, local);

#[tokio::test]
async fn the_local_bus_forgets_dropped_subscriptions() {
    let bus = calls_bus::LocalBus::new();
    let any = Bus::from(bus.clone());
    let a = any.subscribe("x.y").await.unwrap();
    let b = any.subscribe("x.*").await.unwrap();
    let c = any.queue_subscribe("x.>", "g").await.unwrap();
    assert_eq!(bus.subscription_count(), 3);
    drop((a, b, c));
    assert_eq!(bus.subscription_count(), 0);
}

#[tokio::test]
async fn the_local_bus_is_always_connected() {
    let bus = Bus::local();
    assert!(bus.is_connected());
    bus.flush().await.unwrap();
    bus.ensure_stream("S", vec!["a.>".into()], 1).await.unwrap();
}

#[tokio::test]
async fn a_nats_url_listing_several_servers_connects_to_one_that_answers() {
    let live = std::env::var("NATS_URL").unwrap_or_else(|_| NATS_URL.to_owned());
    // Port 1 refuses: the client must move on to the next server of the list.
    let bus = Bus::connect(&format!("nats://127.0.0.1:1,{live}"))
        .await
        .unwrap();
    let s = Subjects::new(unique_prefix());
    let mut sub = bus.subscribe(&s.call_events("c1")).await.unwrap();
    bus.flush().await.unwrap();
    bus.publish(
        &s.call_events("c1"),
        Headers::new(),
        Bytes::from_static(b"hi"),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut sub).await.payload, Bytes::from_static(b"hi"));
}

#[tokio::test]
async fn an_event_no_stream_captures_is_refused_as_no_stream() {
    // calls-api re-creates its stream on exactly this error, and only on it.
    let (bus, s) = nats().await;
    let err = bus
        .publish_event(
            &s.call_events("c1"),
            "evt-1",
            Headers::new(),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap_err();
    assert_eq!(err, BusError::NoStream);
    assert!(err.is_unavailable());
}
