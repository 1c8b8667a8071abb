//! Background work every replica runs: the outbox relay, the timer loop, dead signaling-node
//! expiry, and housekeeping. Each loop is safe to run on every replica at once (the store
//! serializes what must happen once) and stops when `shutdown` fires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use calls_bus::{Bus, Headers, Subjects};
use common::backoff::Backoff;
use common::shutdown::CancellationToken;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::domain::{Audience, EventKind, TimerKind, Timing};
use crate::kicks::{AgoraKicker, KickError, REQUEST_TIMEOUT};
use crate::store::{ClaimedKick, OutboxEvent, RelayStep, Store};

/// Events read per relay step.
const RELAY_BATCH: u32 = 256;
/// Timers fired per poll.
const TIMER_BATCH: usize = 100;
/// The relay's retry schedule while NATS or the database is down: 200 ms doubling to 5 s,
/// jittered so that replicas coming back together do not publish in lock-step.
const RELAY_RETRY_FIRST: Duration = Duration::from_millis(200);
const RELAY_RETRY_MAX: Duration = Duration::from_secs(5);
/// How long the relay waits before asking again for the lock another replica holds.
const BUSY_RETRY: Duration = Duration::from_millis(10);
/// How often the relay refreshes the outbox-lag and live-calls gauges (they are scraped every
/// few seconds; the relay itself wakes on every write).
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// Sends of one kick before it is given up (retries after 1, 2, 4 … 60 s: about four minutes).
const KICK_ATTEMPTS: u32 = 8;
const KICK_RETRY_FIRST: Duration = Duration::from_secs(1);
const KICK_RETRY_MAX: Duration = Duration::from_secs(60);
/// How long a replica holds a kick it is sending before another may take it: the request's
/// timeout and a margin.
const KICK_LEASE: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 10);

/// The name of the JetStream stream for a subject prefix: one stream per prefix, so
/// deployments (and tests) sharing a NATS server do not fight over one stream's subjects.
pub fn stream_name(subjects: &Subjects) -> String {
    subjects.events_stream()
}

/// Everything the loops share.
#[derive(Clone)]
pub struct Workers {
    pub store: Store,
    pub bus: Bus,
    pub subjects: Subjects,
    pub timing: Timing,
    pub relay: Arc<Notify>,
    pub poll: Duration,
    pub heartbeat: Duration,
    /// `NATS_STREAM_REPLICAS`: re-creating a lost stream must not shrink it.
    pub stream_replicas: usize,
    /// Whether a re-creation of the stream is in flight (at most one at a time).
    pub ensuring_stream: Arc<AtomicBool>,
    /// Agora's kicking-rule API; `None` while it is not configured (kicks are then dropped,
    /// counted as `not_configured`).
    pub kicker: Option<AgoraKicker>,
}

fn subject_of(subjects: &Subjects, event: &OutboxEvent) -> String {
    match &event.audience {
        Audience::Call(id) => subjects.call_events(&id.to_string()),
        Audience::User(user) => subjects.user_events(user),
        Audience::SignalingNodes => subjects.signaling_control(),
    }
}

/// `{"event": name, "data": payload}` without re-encoding the stored payload.
fn wire_message(event: &OutboxEvent) -> Bytes {
    let mut out = String::with_capacity(event.payload.len() + event.event.len() + 24);
    out.push_str("{\"event\":");
    // Event names are fixed identifiers; serde_json quotes them correctly all the same.
    out.push_str(&serde_json::to_string(&event.event).unwrap_or_else(|_| "\"\"".into()));
    out.push_str(",\"data\":");
    out.push_str(&event.payload);
    out.push('}');
    Bytes::from(out)
}

/// Counts what users experience from the events themselves, once per event.
fn record_event_metrics(event: &OutboxEvent) {
    if let Audience::User(_) = event.audience {
        // Every invitee's ringing ends with exactly one `incoming_call_cancelled`, whose reason
        // is the ring's outcome.
        if event.event == "incoming_call_cancelled"
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(&event.payload)
        {
            let outcome = match value.get("reason").and_then(|r| r.as_str()) {
                Some("answered_elsewhere") => "answered",
                Some("declined_elsewhere") => "declined",
                Some("missed") => "missed",
                Some("cancelled") => "cancelled",
                _ => "other",
            };
            metrics::counter!("calls_ring_outcomes_total", "outcome" => outcome).increment(1);
        }
        return;
    }
    if event.event == "call_ended"
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&event.payload)
    {
        let reason = value
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("unknown")
            .to_owned();
        metrics::counter!("calls_ended_total", "reason" => reason).increment(1);
    }
    let age = (OffsetDateTime::now_utc() - event.created_at)
        .as_seconds_f64()
        .max(0.0);
    metrics::histogram!("calls_outbox_publish_delay_seconds").record(age);
}

impl Workers {
    /// Spawns every loop; they end when `shutdown` is triggered.
    pub fn spawn(self, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().relay_loop(shutdown.clone())),
            tokio::spawn(self.clone().timer_loop(shutdown.clone())),
            tokio::spawn(self.clone().node_expiry_loop(shutdown.clone())),
            tokio::spawn(self.clone().kick_loop(shutdown.clone())),
            tokio::spawn(self.housekeeping_loop(shutdown.clone())),
        ]
    }

    async fn publish(&self, event: OutboxEvent) -> bool {
        let subject = subject_of(&self.subjects, &event);
        let mut headers = Headers::new().with(
            calls_bus::wire::HEADER_CREATED_AT,
            (event.created_at.unix_timestamp_nanos() / 1_000_000).to_string(),
        );
        if let Some(socket) = &event.origin_socket {
            headers.insert(calls_bus::wire::HEADER_ORIGIN_SOCKET, socket.clone());
        }
        if let Some(device) = &event.origin_device {
            headers.insert(calls_bus::wire::HEADER_ORIGIN_DEVICE, device.clone());
        }
        // A child of the request or command that wrote the event (its context was stored with
        // it), so the trace goes on from the write, through this publish, to every socket emit.
        let span = tracing::info_span!(
            "bus.publish",
            otel.name = format!("publish {}", event.event),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            event_id = event.id,
            trace_id = tracing::field::Empty,
        );
        common::telemetry::set_parent(&span, event.trace_context.as_deref(), None);
        if let Some((traceparent, _)) = common::telemetry::traceparent(&span) {
            headers.insert(common::telemetry::TRACEPARENT, traceparent);
        }
        let msg_id = calls_bus::wire::event_msg_id(event.id);
        let published = if event.audience == Audience::SignalingNodes {
            // An instruction, not an event: core NATS, outside the stream, stored payload as is.
            self.bus
                .publish(&subject, headers, Bytes::from(event.payload.clone()))
                .instrument(span)
                .await
        } else {
            self.bus
                .publish_event(&subject, &msg_id, headers, wire_message(&event))
                .instrument(span)
                .await
        };
        match published {
            Ok(()) => {
                record_event_metrics(&event);
                metrics::counter!("calls_outbox_published_total").increment(1);
                true
            }
            Err(e) => {
                metrics::counter!("calls_outbox_publish_failures_total").increment(1);
                tracing::warn!(error = %e, event_id = event.id, "event publish failed; will retry");
                false
            }
        }
    }

    fn ensure_stream_in_background(&self) {
        if self.ensuring_stream.swap(true, Ordering::SeqCst) {
            return;
        }
        let (bus, name, subjects, replicas, ensuring) = (
            self.bus.clone(),
            stream_name(&self.subjects),
            vec![self.subjects.all_events()],
            self.stream_replicas,
            self.ensuring_stream.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = bus.ensure_stream(&name, subjects, replicas).await {
                tracing::debug!(error = %e, "event stream not ensured; will retry");
            }
            ensuring.store(false, Ordering::SeqCst);
        });
    }

    /// Publishes the outbox: woken by this replica's writes, and polling for other replicas'.
    async fn relay_loop(self, shutdown: CancellationToken) {
        let mut stop = std::pin::pin!(shutdown.cancelled_owned());
        let mut backoff = Backoff::new(RELAY_RETRY_FIRST, RELAY_RETRY_MAX);
        let mut gauges_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = self.relay.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
            // Drain: keep stepping while there is more, retry briefly while another replica
            // holds the relay lock (it may not have seen our newest events).
            let mut busy_rounds = 0;
            loop {
                match self
                    .store
                    .relay_step(RELAY_BATCH, |e| self.publish(e))
                    .await
                {
                    Ok(RelayStep::Published { stopped: true, .. }) => {
                        // The bus is down, the stream is electing a leader, or the stream is
                        // gone (a NATS restart without storage; with core subscribers on the
                        // subject that looks like a timeout too): recreate it, then back off;
                        // the events wait in the outbox. In the background: while a NATS
                        // cluster elects its JetStream leader the request waits out its
                        // timeout, which must not hold back the retries that will succeed
                        // once a stream leader is back.
                        self.ensure_stream_in_background();
                        tokio::select! {
                            () = &mut stop => return,
                            () = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                    Ok(RelayStep::Published { more: true, .. }) => {
                        backoff.reset();
                    }
                    Ok(RelayStep::Published { .. }) => {
                        backoff.reset();
                        break;
                    }
                    Ok(RelayStep::Busy) => {
                        busy_rounds += 1;
                        if busy_rounds > 50 {
                            break;
                        }
                        // Replicas waiting for the lock must not all ask again at once.
                        tokio::time::sleep(common::backoff::jitter(BUSY_RETRY)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox relay step failed");
                        tokio::select! {
                            () = &mut stop => return,
                            () = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                        break;
                    }
                }
            }
            // The gauges at most once per GAUGE_INTERVAL: the relay wakes on every write, and two
            // queries per wake were a fifth of the database's transactions per call under load
            // (`make bench-system`), for gauges scraped every few seconds.
            if gauges_at.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL) {
                gauges_at = Some(tokio::time::Instant::now());
                if let Ok(lag) = self.store.outbox_lag(OffsetDateTime::now_utc()).await {
                    metrics::gauge!("calls_outbox_lag_seconds").set(lag.as_secs_f64());
                }
                if let Ok(live) = self.store.live_call_count().await {
                    metrics::gauge!("calls_active").set(live as f64);
                }
            }
        }
    }

    /// Fires due timers (ring timeout, disconnect grace, max duration).
    async fn timer_loop(self, shutdown: CancellationToken) {
        let mut stop = std::pin::pin!(shutdown.cancelled_owned());
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.poll) => {}
            }
            loop {
                let now = OffsetDateTime::now_utc();
                match self.store.fire_due_timers(now, TIMER_BATCH).await {
                    Ok(fired) => {
                        for timer in &fired {
                            let lag = (now - timer.due_at).as_seconds_f64().max(0.0);
                            metrics::histogram!("calls_timer_lag_seconds", "kind" => timer.kind.as_str()).record(lag);
                            metrics::counter!("calls_timers_fired_total", "kind" => timer.kind.as_str()).increment(1);
                            if timer.kind == TimerKind::MediaGrace
                                && timer
                                    .events
                                    .iter()
                                    .any(|e| matches!(e.kind, EventKind::ParticipantLeft { .. }))
                            {
                                metrics::counter!("calls_media_ghosts_removed_total").increment(1);
                            }
                        }
                        if fired.iter().any(|t| !t.events.is_empty()) {
                            self.relay.notify_one();
                        }
                        if fired.len() < TIMER_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "timer poll failed");
                        break;
                    }
                }
            }
        }
    }

    /// Sends due kicks through Agora's kicking-rule API, one at a time (Agora allows ten such
    /// requests a second per account), polling like the timer loop.
    async fn kick_loop(self, shutdown: CancellationToken) {
        let mut stop = std::pin::pin!(shutdown.cancelled_owned());
        let mut gauge_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.poll) => {}
            }
            loop {
                let claimed = match self
                    .store
                    .claim_media_kick(OffsetDateTime::now_utc(), KICK_LEASE)
                    .await
                {
                    Ok(Some(kick)) => kick,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "kick poll failed");
                        break;
                    }
                };
                let sent = tokio::select! {
                    () = &mut stop => return,
                    sent = self.send_kick(&claimed) => sent,
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, kick = claimed.id, "could not record a kick's outcome");
                }
            }
            if gauge_at.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL * 5) {
                gauge_at = Some(tokio::time::Instant::now());
                if let Ok(pending) = self.store.pending_media_kicks().await {
                    #[allow(clippy::cast_precision_loss)]
                    metrics::gauge!("calls_media_kicks_pending").set(pending as f64);
                }
            }
        }
    }

    /// Sends one claimed kick (unless it is moot or kicking is off) and records what became of
    /// it: done, or due again after a backoff.
    async fn send_kick(&self, kick: &ClaimedKick) -> Result<(), crate::store::StoreError> {
        let count = |outcome: &'static str| {
            metrics::counter!("calls_media_kicks_total", "outcome" => outcome).increment(1);
        };
        if !kick.needed {
            count("not_needed");
            return self.store.finish_media_kick(kick.id).await;
        }
        let Some(kicker) = &self.kicker else {
            tracing::info!(call_id = %kick.call_id, user_id = %kick.user_id, uid = kick.uid,
                "would kick this user out of the call's Agora channel, but AGORA_CUSTOMER_ID / AGORA_CUSTOMER_SECRET / AGORA_APP_ID are not set");
            count("not_configured");
            return self.store.finish_media_kick(kick.id).await;
        };
        let channel = format!("call_{}", kick.call_id);
        let started = std::time::Instant::now();
        let result = kicker.kick(&channel, kick.uid).await;
        metrics::histogram!("calls_media_kick_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let label = result.as_ref().map_or_else(KickError::label, |_| "ok");
        metrics::counter!("calls_media_kick_attempts_total", "result" => label).increment(1);
        match result {
            Ok(rule) => {
                tracing::info!(call_id = %kick.call_id, user_id = %kick.user_id, uid = kick.uid, rule,
                    "kicked out of the call's Agora channel");
                count("sent");
                self.store.finish_media_kick(kick.id).await
            }
            Err(e) if e.is_transient() && kick.attempts + 1 < KICK_ATTEMPTS => {
                let delay = KICK_RETRY_FIRST
                    .saturating_mul(1 << kick.attempts.min(16))
                    .min(KICK_RETRY_MAX);
                tracing::info!(call_id = %kick.call_id, user_id = %kick.user_id, error = %e,
                    retry_in_ms = delay.as_millis() as u64, "kick failed; will retry");
                let at = OffsetDateTime::now_utc() + delay;
                self.store.retry_media_kick(kick.id, at).await
            }
            Err(e) => {
                tracing::warn!(call_id = %kick.call_id, user_id = %kick.user_id, uid = kick.uid,
                    attempts = kick.attempts + 1, error = %e, "kick given up");
                count("failed");
                self.store.finish_media_kick(kick.id).await
            }
        }
    }

    /// Declares signaling nodes dead after three missed heartbeats: their sockets are gone,
    /// which starts the disconnect grace for their users (a node that crashed says no goodbye).
    ///
    /// Heartbeats reach this replica through the bus and are recorded in the database, so while
    /// either is out of reach, silence proves nothing: expiry pauses, and resumes only once
    /// every node has had three heartbeats' time to be heard again.
    async fn node_expiry_loop(self, shutdown: CancellationToken) {
        let mut stop = std::pin::pin!(shutdown.cancelled_owned());
        let window = self.heartbeat * 3;
        let mut deaf_until: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.heartbeat) => {}
            }
            if !self.bus.is_connected() {
                if deaf_until.is_none_or(|until| tokio::time::Instant::now() >= until) {
                    tracing::warn!(
                        "the bus is down: signaling nodes are not expired until it is back"
                    );
                }
                deaf_until = Some(tokio::time::Instant::now() + window);
                continue;
            }
            if deaf_until.is_some_and(|until| tokio::time::Instant::now() < until) {
                continue;
            }
            match self
                .store
                .expire_dead_nodes(OffsetDateTime::now_utc(), window, &self.timing)
                .await
            {
                Ok(expiry) => {
                    for node in &expiry.nodes {
                        tracing::warn!(
                            node,
                            "signaling node stopped heartbeating; its sockets count as gone"
                        );
                        metrics::counter!("calls_signaling_nodes_expired_total").increment(1);
                    }
                    if !expiry.events.is_empty() {
                        self.relay.notify_one();
                    }
                }
                Err(e) => {
                    // The next attempt may come up to a heartbeat and an acquire timeout after
                    // the database is back: one heartbeat of margin on top of the three.
                    deaf_until = Some(tokio::time::Instant::now() + self.heartbeat * 4);
                    tracing::warn!(error = %e, "node expiry failed");
                }
            }
        }
    }

    /// Trims published events, old idempotency keys and old Agora notice ids; the outbox is not
    /// an archive.
    async fn housekeeping_loop(self, shutdown: CancellationToken) {
        let mut stop = std::pin::pin!(shutdown.cancelled_owned());
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(Duration::from_secs(600)) => {}
            }
            let now = OffsetDateTime::now_utc();
            if let Err(e) = self
                .store
                .purge_published_events(now - time::Duration::days(1))
                .await
            {
                tracing::warn!(error = %e, "purging published events failed");
            }
            if let Err(e) = self
                .store
                .purge_idempotency_keys(now - time::Duration::days(1))
                .await
            {
                tracing::warn!(error = %e, "purging idempotency keys failed");
            }
            if let Err(e) = self
                .store
                .purge_agora_notices(now - time::Duration::days(1))
                .await
            {
                tracing::warn!(error = %e, "purging Agora notice ids failed");
            }
        }
    }
}
