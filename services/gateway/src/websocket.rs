//! Proxied WebSockets: the two upgraded connections spliced together, and closed on shutdown.
//!
//! The gateway does not parse WebSocket frames: once the upstream has answered `101 Switching
//! Protocols` (which the client gets unchanged, so extensions such as permessage-deflate are
//! negotiated end to end), both connections are upgraded and bytes are copied both ways until
//! either side closes.
//!
//! On shutdown every proxied WebSocket is closed at once (TCP close on both sides). They would
//! never finish on their own, and a closed transport is exactly what makes a Socket.IO client
//! reconnect, through the load balancer, to a gateway that is still running, while signaling
//! sees the disconnect and starts its grace period.

use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::OpenWebSocket;

/// How long the two upgrades may take to complete once the 101 is on its way.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing one side may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The proxied WebSockets of one gateway.
#[derive(Debug, Default, Clone)]
pub struct WebSockets {
    close: CancellationToken,
    tracker: TaskTracker,
}

impl WebSockets {
    /// Splices `client` and `upstream` once both upgrades complete, in a tracked task.
    pub fn splice(&self, client: OnUpgrade, upstream: OnUpgrade, request_id: String) {
        let close = self.close.clone();
        self.tracker.spawn(async move {
            let upgraded =
                tokio::time::timeout(UPGRADE_TIMEOUT, async { tokio::join!(client, upstream) })
                    .await;
            let (client, upstream) = match upgraded {
                Ok((Ok(client), Ok(upstream))) => (client, upstream),
                Ok((client, upstream)) => {
                    tracing::debug!(
                        request_id,
                        client_ok = client.is_ok(),
                        upstream_ok = upstream.is_ok(),
                        "websocket upgrade failed"
                    );
                    return;
                }
                Err(_) => {
                    tracing::debug!(request_id, "websocket upgrade timed out");
                    return;
                }
            };
            run(client, upstream, close, &request_id).await;
        });
    }

    /// Closes every proxied WebSocket and waits (up to `deadline`) for the tasks to end.
    pub async fn close_all(&self, deadline: Duration) {
        self.tracker.close();
        self.close.cancel();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "websockets still closing at the deadline"
            );
        }
    }

    /// Proxied WebSockets currently open (or upgrading).
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

async fn run(client: Upgraded, upstream: Upgraded, close: CancellationToken, request_id: &str) {
    let _open = OpenWebSocket::open();
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
            Ok((up, down)) => tracing::debug!(request_id, bytes_up = up, bytes_down = down, "websocket closed"),
            Err(err) => tracing::debug!(request_id, error = %err, "websocket ended with an error"),
        },
        () = close.cancelled() => tracing::debug!(request_id, "closing websocket for shutdown"),
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown()).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, upstream.shutdown()).await;
}
