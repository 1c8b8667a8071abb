//! Instructions from calls-api to every node ([`ControlMessage`] on `{p}.ctl.signaling`).
//!
//! calls-api writes them to its outbox with the change that calls for them (a room member or a
//! participant removed), so they are published once, after the commit, in order with the call's
//! events. Every node receives every instruction (they are rare) and applies it to the sockets
//! it holds; the others are no-ops. Like the relay, this is at most once: a node that is
//! disconnected from NATS when one is published misses it (its sockets then keep the
//! subscription until they leave the call, reconnect or the call ends).

use std::str::FromStr;
use std::sync::{Arc, Weak};

use calls_bus::{BusError, ControlMessage};
use common::ids::CallId;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::metrics;
use crate::relay::Ending;
use crate::state::Shared;

/// How long past the reorder window a socket waits for the event its subscription ends after,
/// before it stops following the call anyway: the event was lost (the relay is at most once) or
/// is late beyond any gap the relay waits for. Either way the call's later events must stop
/// reaching a user who may no longer see them.
const LOST_EVENT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Subscribes this node to the control subject (live on the server when this returns) and
/// spawns the task that applies what arrives; abort the task on shutdown.
pub async fn listen(shared: &Arc<Shared>) -> Result<JoinHandle<()>, BusError> {
    let mut subscription = shared
        .bus
        .subscribe(&shared.subjects.signaling_control())
        .await?;
    shared.bus.flush().await?;
    let weak: Weak<Shared> = Arc::downgrade(shared);
    Ok(tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            let Some(shared) = weak.upgrade() else { break };
            match serde_json::from_slice::<ControlMessage>(&message.payload) {
                Ok(instruction) => apply(&shared, instruction),
                // A newer calls-api may send instructions this node does not know yet.
                Err(err) => {
                    tracing::debug!(error = %err, "ignoring an unknown control message");
                }
            }
        }
    }))
}

/// Applies one instruction to this node's sockets.
pub fn apply(shared: &Shared, instruction: ControlMessage) {
    match instruction {
        ControlMessage::EndSubscription {
            call_id,
            user_id,
            after_seq,
        } => {
            let Ok(call) = CallId::from_str(&call_id) else {
                return;
            };
            let subject = shared.subjects.call_events(call.as_str());
            for (socket, ctx) in shared.sockets.snapshot() {
                if ctx.user.as_str() != user_id {
                    continue;
                }
                // A socket still joining (in the room as pending) stops at once: its snapshot
                // will not have the call. One following it stops after the event the
                // instruction follows (their removal, which they must see), whichever of the
                // two this node handles first.
                let ending = shared.relay.end_after(&subject, socket.id, after_seq);
                ctx.remove_call(&call);
                if ending == Ending::Deferred {
                    let relay = shared.relay.clone();
                    let (subject, sid) = (subject.clone(), socket.id);
                    tokio::spawn(async move {
                        tokio::time::sleep(relay.reorder_window() + LOST_EVENT_GRACE).await;
                        relay.end_if_still_ending(&subject, sid);
                    });
                }
                if ending != Ending::NotFollowing {
                    tracing::info!(sid = %socket.id, user_id = %user_id, call_id = %call, "subscription ended by calls-api");
                    metrics::subscription_ended();
                }
            }
        }
    }
}
