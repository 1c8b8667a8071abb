//! The `/calls` namespace: handshake, client events, disconnects.
//!
//! How the socketioxide traps (SOCKETIO-NOTES.md) are handled here:
//!
//! - *Handlers ready before the first emit*: the event and disconnect handlers are registered in
//!   [`authenticate`], the connect middleware, which runs before the CONNECT packet is sent; the
//!   connect handler runs only after it, too late for a client that emits in `on('connect')`.
//! - *Events of one socket applied in order*: socketioxide spawns a task per event, so the
//!   [`Inbound`] extractor, which runs synchronously in the socket's read loop and so in arrival
//!   order, queues each event behind the previous one of the same socket
//!   ([`SocketCtx::next_in_line`]); the handler task waits for its turn.
//! - *No handler skipped silently*: there is one handler, the fallback, for every event name,
//!   and its only extractor is infallible; payloads are decoded inside it and any failure is
//!   answered (ack or `error` event). The disconnect handler uses `MaybeExtension`. Names that
//!   need JSON escapes (or are not strings) reach it too, thanks to the patched parser in
//!   `vendor/socketioxide-parser-common` (socketioxide 0.18.9 closed the connection on them).
//! - *Cleanup before shutdown*: see [`crate::server`].
//!
//! Limits (payload size, events per second) are checked in the extractor and answered at once,
//! without queueing, so a flooding client cannot build a backlog.

use std::convert::Infallible;
use std::sync::Arc;
use tracing::Instrument;

use calls_bus::{Ack, ErrorBody};
use common::auth::{AuthError, bearer_token};
use common::error::ErrorCode;
use serde::Serialize;
use serde_json::Value;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event, MaybeExtension, SocketRef, State, TryData};
use socketioxide::handler::{FromMessageParts, Value as RawMessage};
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::sync::oneshot;

use crate::commands::{self, ClientEvent};
use crate::metrics;
use crate::relay::RoomKind;
use crate::state::{Shared, SocketCtx};

/// The namespace path.
pub const NAMESPACE: &str = "/calls";

/// Why a handshake was refused; the text is the client's `connect_error` message.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Missing, malformed, expired or wrongly signed token.
    #[error("unauthorized")]
    Unauthorized,
    /// The node cannot subscribe to the user's events (the bus is down), or cannot check tokens
    /// (the identity provider's keys have been unreachable since start-up).
    #[error("unavailable")]
    Unavailable,
}

/// The connect middleware: authenticates, prepares the socket's state, registers its handlers
/// and subscribes to the user's events, all before the client learns it is connected.
pub async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<Arc<Shared>>,
) -> Result<(), Refusal> {
    let auth = auth.ok();
    let from_auth = auth
        .as_ref()
        .and_then(|auth| auth.get("token").and_then(Value::as_str).map(str::to_owned));
    // Optional; an id the registry would refuse is ignored rather than refusing the socket.
    let device = auth
        .as_ref()
        .and_then(|auth| auth.get("deviceId").and_then(Value::as_str))
        .and_then(|id| common::ids::DeviceId::parse(id).ok());
    let from_header = || {
        socket
            .req_parts()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .map(str::to_owned)
    };
    let Some(token) = from_auth.or_else(from_header) else {
        metrics::error(ErrorCode::Unauthorized.as_str());
        return Err(Refusal::Unauthorized);
    };
    let claims = state.verifier.verify(&token).await.map_err(|err| {
        tracing::debug!(error = %err, "handshake refused");
        if err == AuthError::KeysUnavailable {
            // The identity provider has been unreachable since start-up: not the client's fault.
            metrics::error(ErrorCode::DependencyUnavailable.as_str());
            return Refusal::Unavailable;
        }
        metrics::error(ErrorCode::Unauthorized.as_str());
        Refusal::Unauthorized
    })?;

    let ctx = Arc::new(SocketCtx::new(
        claims.sub,
        device,
        claims.exp.saturating_add(common::auth::LEEWAY_SECS),
        state.events_per_second,
        state.events_burst,
    ));
    socket.extensions.insert(ctx.clone());
    socket.on_fallback(dispatch);
    socket.on_disconnect(disconnected);
    state.sockets.insert(socket.clone(), ctx.clone());
    metrics::sockets(1.0);

    let subject = state.subjects.user_events(ctx.user.as_str());
    if let Err(err) = state.relay.enter(RoomKind::User, &subject, &socket).await {
        tracing::warn!(error = %err, "cannot subscribe to the user's events; refusing the socket");
        // socketioxide runs no disconnect handler for a refused socket.
        state.cleanup(&socket, &ctx);
        return Err(Refusal::Unavailable);
    }
    Ok(())
}

/// The connect handler, after CONNECT was sent: start relaying the user's events and report the
/// socket to calls-api.
pub async fn connected(socket: SocketRef, State(state): State<Arc<Shared>>) {
    let Some(ctx) = socket.extensions.get::<Arc<SocketCtx>>() else {
        return;
    };
    if ctx.is_cleaned() {
        return;
    }
    let subject = state.subjects.user_events(ctx.user.as_str());
    state.relay.activate::<()>(&subject, socket.id, None, None);
    state
        .presence
        .connected(&ctx.presence, socket.id.to_string(), ctx.user.to_string());
    // A phone woken by a push connects to learn whether the call still rings: send it the
    // user's ring events of the last ring timeout. Its subscription is live already, so an
    // event published meanwhile arrives at worst twice, never not at all.
    let ring_state = {
        let (socket, state) = (socket.clone(), state.clone());
        async move {
            match commands::ring_state(&state, &ctx, &socket.id.to_string()).await {
                Ok(events) => {
                    for (event, data) in events {
                        if let Err(err) = socket.emit(event.as_str(), &data) {
                            tracing::debug!(sid = %socket.id, error = %err, "ring replay not delivered");
                            break;
                        }
                        metrics::event_out(&event);
                    }
                }
                Err(err) => {
                    tracing::warn!(sid = %socket.id, code = %err.code, "could not replay the user's rings");
                }
            }
        }
    };
    tokio::spawn(ring_state);
}

async fn disconnected(
    socket: SocketRef,
    reason: DisconnectReason,
    MaybeExtension(ctx): MaybeExtension<Arc<SocketCtx>>,
    State(state): State<Arc<Shared>>,
) {
    tracing::debug!(sid = %socket.id, ?reason, "socket disconnected");
    if let Some(ctx) = ctx {
        state.cleanup(&socket, &ctx);
    }
}

/// One client event, taken in arrival order; `None` when it was already answered (over a limit)
/// or cannot be handled.
pub struct Inbound(Option<Job>);

/// A client event queued behind the socket's previous one.
pub struct Job {
    event: String,
    payload: Result<Value, ()>,
    reply: Reply,
    ctx: Arc<SocketCtx>,
    state: Arc<Shared>,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

/// Where the answer goes: the ack if the client asked for one, else (failures only) the `error`
/// event.
struct Reply {
    socket: SocketRef,
    ack: Option<AckSender>,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    event: &'a str,
    code: &'a str,
    message: &'a str,
    #[serde(rename = "callId", skip_serializing_if = "Option::is_none")]
    call_id: Option<String>,
}

impl Reply {
    fn send(self, event: &str, result: Result<Value, ErrorBody>, call_id: Option<String>) {
        if let Err(err) = &result {
            metrics::error(&err.code);
        }
        match (self.ack, result) {
            (Some(ack), result) => {
                let answer = match result {
                    Ok(data) => Ack::Ok(data),
                    Err(err) => Ack::Err(err),
                };
                if let Err(err) = ack.send(&answer) {
                    tracing::debug!(sid = %self.socket.id, error = %err, "ack not delivered");
                }
            }
            (None, Ok(_)) => {}
            (None, Err(err)) => {
                let payload = ErrorEvent {
                    event,
                    code: &err.code,
                    message: &err.message,
                    call_id,
                };
                if let Err(err) = self.socket.emit("error", &payload) {
                    tracing::debug!(sid = %self.socket.id, error = %err, "error event not delivered");
                }
            }
        }
    }
}

impl FromMessageParts<LocalAdapter> for Inbound {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket>,
        v: &mut RawMessage,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let event = Event::from_message_parts(s, v, ack_id)
            .map(|e| unescape_event_name(e.0))
            .unwrap_or_default();
        metrics::event_in(&event);
        let ack = ack_id
            .is_some()
            .then(|| AckSender::from_message_parts(s, v, ack_id))
            .and_then(Result::ok);
        let reply = Reply {
            socket: SocketRef::from(s.clone()),
            ack,
        };
        let refuse = |reply: Reply, code: ErrorCode, message: &str| {
            reply.send(&event, Err(commands::failure(code, message)), None);
            Ok(Inbound(None))
        };

        let (Some(ctx), Ok(State(state))) = (
            s.extensions.get::<Arc<SocketCtx>>(),
            State::<Arc<Shared>>::from_message_parts(s, v, ack_id),
        ) else {
            // Only possible if the socket skipped the auth middleware, which socketioxide does
            // not allow; answer rather than drop.
            return refuse(
                reply,
                ErrorCode::Internal,
                ErrorCode::Internal.default_message(),
            );
        };

        let size = match &*v {
            RawMessage::Str(text, binaries) => {
                text.len()
                    + binaries
                        .as_ref()
                        .map_or(0, |b| b.iter().map(bytes::Bytes::len).sum())
            }
            RawMessage::Bytes(bytes) => bytes.len(),
        };
        if size > state.max_payload_bytes {
            let message = format!(
                "Event payload is larger than {} bytes",
                state.max_payload_bytes
            );
            return refuse(reply, ErrorCode::PayloadTooLarge, &message);
        }
        if !ctx.allow_event() {
            return refuse(reply, ErrorCode::RateLimited, "Too many events; slow down");
        }

        let payload = match TryData::<Value>::from_message_parts(s, v, ack_id) {
            Ok(TryData(Ok(value))) => Ok(value),
            _ => Err(()),
        };
        let (previous, done) = ctx.next_in_line();
        Ok(Inbound(Some(Job {
            event,
            payload,
            reply,
            ctx,
            state,
            previous,
            done,
        })))
    }
}

/// The one message handler: every event name lands here (see the module docs for why).
async fn dispatch(Inbound(job): Inbound) {
    if let Some(job) = job {
        job.run().await;
    }
}

impl Job {
    async fn run(mut self) {
        if let Some(previous) = self.previous.take() {
            // An error only means the previous handler is gone, which also means it is done.
            let _ = previous.await;
        }
        let call_hint = self.payload.as_ref().ok().and_then(commands::call_id_hint);
        // Each client event starts a trace: its command, the state change in calls-api, the
        // events that change publishes and their emits on every node are its children.
        let name = ClientEvent::parse(&self.event).map_or("other", ClientEvent::name);
        let span = tracing::info_span!(
            "socket.event",
            otel.name = format!("socket {name}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            service = "signaling",
            event = name,
            sid = %self.reply.socket.id,
            user_id = self.ctx.user.as_str(),
            call_id = call_hint.as_deref().unwrap_or_default(),
            trace_id = tracing::field::Empty,
        );
        common::telemetry::record_trace_id(&span);
        let started = std::time::Instant::now();
        let result = self.handle().instrument(span.clone()).await;
        let outcome = result.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok");
        metrics::event_handled(name, outcome, started.elapsed());
        span.in_scope(|| match &result {
            Ok(_) => tracing::info!(
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "socket event"
            ),
            Err(err) => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                tracing::info!(
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    code = %err.code,
                    "socket event refused"
                );
            }
        });
        let Job {
            event, reply, done, ..
        } = self;
        reply.send(&event, result, call_hint);
        drop(done);
    }

    async fn handle(&self) -> Result<Value, ErrorBody> {
        let Some(event) = ClientEvent::parse(&self.event) else {
            return Err(commands::failure(
                ErrorCode::ValidationFailed,
                format!("Unknown event {:?}", truncate(&self.event)),
            ));
        };
        let Ok(payload) = &self.payload else {
            return Err(commands::failure(
                ErrorCode::ValidationFailed,
                format!("{} expects a JSON object payload", event.name()),
            ));
        };
        let call_id = commands::validate(event, payload)?;
        let socket = &self.reply.socket;
        let state = &self.state;
        let (user, sid) = (self.ctx.user.as_str(), socket.id.to_string());
        let subject = state.subjects.call_events(call_id.as_str());
        match event {
            ClientEvent::JoinCall => {
                let previous = state
                    .relay
                    .enter(RoomKind::Call, &subject, socket)
                    .await
                    .map_err(|err| {
                        tracing::warn!(error = %err, "cannot subscribe to the call's events");
                        commands::failure(
                            ErrorCode::DependencyUnavailable,
                            "The event bus is unavailable; retry shortly",
                        )
                    })?;
                self.ctx.add_call(call_id);
                if self.ctx.is_cleaned() {
                    // The socket went away while subscribing; its cleanup may have run before the
                    // call was recorded, so undo the subscription here.
                    state.relay.leave(&subject, socket.id);
                    return Err(commands::failure(
                        ErrorCode::Internal,
                        "The socket is closed",
                    ));
                }
                match commands::send(state, event, user, self.ctx.device.as_ref(), &sid, payload)
                    .await
                {
                    Ok(snapshot) => {
                        let seq = snapshot.get("seq").and_then(Value::as_u64);
                        state.relay.activate(
                            &subject,
                            socket.id,
                            seq,
                            Some(("call_participants", &snapshot)),
                        );
                        Ok(snapshot)
                    }
                    Err(err) => {
                        state.relay.restore(&subject, socket.id, previous);
                        if !state.relay.contains(&subject, socket.id) {
                            self.ctx.remove_call(&call_id);
                        }
                        Err(err)
                    }
                }
            }
            ClientEvent::LeaveCall => {
                let result =
                    commands::send(state, event, user, self.ctx.device.as_ref(), &sid, payload)
                        .await;
                // The socket stops listening whatever calls-api said: the client asked to leave,
                // and a retry of leave_call is answered without needing the subscription.
                state.relay.leave(&subject, socket.id);
                self.ctx.remove_call(&call_id);
                result
            }
            ClientEvent::MediaStateChanged | ClientEvent::CallStatusChanged => {
                commands::send(state, event, user, self.ctx.device.as_ref(), &sid, payload).await
            }
        }
    }
}

/// The name a client sent. The patched parser (vendor/socketioxide-parser-common) hands over a
/// name that needed JSON escapes as its raw JSON text (`join\"call`); read as the contents of a
/// JSON string it is the name itself again, which is what the answer should quote. A name
/// without escapes is returned as it is.
fn unescape_event_name(raw: String) -> String {
    if !raw.contains('\\') {
        return raw;
    }
    serde_json::from_str::<String>(&format!("\"{raw}\"")).unwrap_or(raw)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
