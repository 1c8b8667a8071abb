//! The durable consumer: what notifier relies on to lose no event. NATS tests use their own
//! prefix and stream and delete them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use calls_bus::{Bus, DurableConsumer, DurableMessage, DurableOptions, Headers, Subjects};

const WAIT: Duration = Duration::from_secs(10);

struct Nats {
    bus: Bus,
    s: Subjects,
    stream: String,
}

impl Nats {
    async fn start() -> Nats {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let bus = Bus::connect(&url).await.unwrap();
        let s = Subjects::new(format!("test.{}", uuid::Uuid::new_v4().simple()));
        let stream = s.events_stream();
        bus.ensure_stream(&stream, vec![s.all_events()], 1)
            .await
            .unwrap();
        Nats { bus, s, stream }
    }

    fn options(&self, ack_wait: Duration) -> DurableOptions {
        DurableOptions {
            durable: "notifier".into(),
            stream: self.stream.clone(),
            filter_subjects: vec![
                format!("{}.evt.user.>", self.s.prefix()),
                format!("{}.evt.call.>", self.s.prefix()),
            ],
            ack_wait,
            max_ack_pending: 100,
        }
    }

    async fn publish(&self, subject: &str, id: &str) {
        self.bus
            .publish_event(subject, id, Headers::new(), Bytes::from(id.to_owned()))
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.bus.delete_stream(&self.stream).await.unwrap();
    }
}

async fn next(consumer: &mut DurableConsumer) -> DurableMessage {
    loop {
        match tokio::time::timeout(WAIT, consumer.next()).await {
            Ok(Some(Ok(m))) => return m,
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("consumer ended"),
            Err(_) => panic!("no message in time"),
        }
    }
}

async fn nothing(consumer: &mut DurableConsumer, within: Duration) {
    if let Ok(Some(Ok(m))) = tokio::time::timeout(within, consumer.next()).await {
        panic!("unexpected message {:?}", m.message.payload)
    }
}

#[tokio::test]
async fn events_published_before_the_consumer_existed_are_delivered_in_order() {
    let n = Nats::start().await;
    n.publish(&n.s.user_events("bob"), "e1").await;
    n.publish(&n.s.call_events("c1"), "e2").await;
    n.publish(&n.s.user_events("bob"), "e3").await;
    let mut consumer = n.bus.durable_consumer(&n.options(WAIT)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next(&mut consumer).await;
        got.push((m.message.payload.clone(), m.stream_sequence));
        m.ack().await.unwrap();
    }
    assert_eq!(
        got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        vec!["e1", "e2", "e3"]
    );
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "stream order");
    n.stop().await;
}

#[tokio::test]
async fn an_acknowledged_event_is_not_delivered_again_after_a_restart_but_an_unacknowledged_one_is()
{
    let n = Nats::start().await;
    let options = n.options(Duration::from_secs(1));
    n.publish(&n.s.user_events("bob"), "acked").await;
    n.publish(&n.s.user_events("bob"), "lost").await;
    {
        let mut consumer = n.bus.durable_consumer(&options).await.unwrap();
        next(&mut consumer).await.ack().await.unwrap();
        let lost = next(&mut consumer).await;
        assert_eq!(lost.message.payload, "lost");
        // The consumer dies before acknowledging it.
        drop(lost);
    }
    let mut again = n.bus.durable_consumer(&options).await.unwrap();
    let m = next(&mut again).await;
    assert_eq!(m.message.payload, "lost");
    assert!(m.delivered >= 2, "a redelivery");
    m.ack().await.unwrap();
    nothing(&mut again, Duration::from_millis(1500)).await;
    n.stop().await;
}

#[tokio::test]
async fn a_single_filter_is_honoured_and_changed_settings_apply_to_the_existing_consumer() {
    let n = Nats::start().await;
    let mut users = n.options(WAIT);
    users.filter_subjects = vec![format!("{}.evt.user.>", n.s.prefix())];
    n.publish(&n.s.call_events("c1"), "c0").await;
    n.publish(&n.s.user_events("bob"), "u1").await;
    {
        let mut consumer = n.bus.durable_consumer(&users).await.unwrap();
        let m = next(&mut consumer).await;
        assert_eq!(m.message.payload, "u1", "the call event is filtered out");
        m.ack().await.unwrap();
    }
    // The upgrade: the same durable with a shorter ack wait keeps its position and applies it.
    users.ack_wait = Duration::from_secs(1);
    n.publish(&n.s.user_events("bob"), "u2").await;
    let mut consumer = n.bus.durable_consumer(&users).await.unwrap();
    let m = next(&mut consumer).await;
    assert_eq!(m.message.payload, "u2", "nothing before is sent again");
    drop(m);
    let started = std::time::Instant::now();
    let again = next(&mut consumer).await;
    assert_eq!(again.message.payload, "u2");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "redelivered after the new 1 s ack wait, not the old 10 s"
    );
    again.ack().await.unwrap();
    n.stop().await;
}

#[tokio::test]
async fn replicas_sharing_a_durable_name_each_get_every_event_once_between_them() {
    let n = Nats::start().await;
    let options = n.options(WAIT);
    let mut a = n.bus.durable_consumer(&options).await.unwrap();
    let mut b = n.bus.durable_consumer(&options).await.unwrap();
    for i in 0..20 {
        n.publish(&n.s.user_events("bob"), &format!("e{i}")).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let m = tokio::select! {
            Some(Ok(m)) = a.next() => m,
            Some(Ok(m)) = b.next() => m,
            () = tokio::time::sleep(WAIT) => panic!("only {} of 20", seen.len()),
        };
        seen.push(String::from_utf8(m.message.payload.to_vec()).unwrap());
        m.ack().await.unwrap();
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20);
    nothing(&mut a, Duration::from_millis(300)).await;
    n.stop().await;
}

#[tokio::test]
async fn the_in_process_consumer_loses_nothing_to_a_burst_and_keeps_publish_order() {
    let bus = Bus::local();
    let s = Subjects::new("t");
    let options = DurableOptions {
        durable: "notifier".into(),
        stream: s.events_stream(),
        filter_subjects: vec!["t.evt.user.>".into(), "t.evt.call.>".into()],
        ack_wait: WAIT,
        max_ack_pending: 1,
    };
    let mut consumer = bus.durable_consumer(&options).await.unwrap();
    // Far beyond a plain subscription's buffer.
    let n = calls_bus::local::SUBSCRIPTION_CAPACITY + 100;
    for i in 0..n {
        let subject = if i % 2 == 0 {
            s.user_events("u")
        } else {
            s.call_events("c")
        };
        bus.publish_event(
            &subject,
            &i.to_string(),
            Headers::new(),
            Bytes::from(i.to_string()),
        )
        .await
        .unwrap();
    }
    bus.publish(
        &s.command("join_call"),
        Headers::new(),
        Bytes::from_static(b"not an event"),
    )
    .await
    .unwrap();
    for i in 0..n {
        let m = next(&mut consumer).await;
        assert_eq!(m.message.payload, i.to_string());
        m.ack().await.unwrap();
    }
    nothing(&mut consumer, Duration::from_millis(100)).await;
}
