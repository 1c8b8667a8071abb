//! Graceful shutdown.
//!
//! Services take `shutdown: impl Future<Output = ()> + Send + 'static` in their `run` and hand it
//! to `axum::serve(...).with_graceful_shutdown(...)`. A single binary passes [`signal()`]; the
//! standalone binary runs several services, so it creates one [`Shutdown`], triggers it on the
//! signal, and gives each service [`Shutdown::wait`]. Tests trigger it by hand.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what Kubernetes sends). If a handler
/// cannot be installed, that source is ignored rather than ending the service at once.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C; shutting down"),
        () = terminate => tracing::info!("received SIGTERM; shutting down"),
    }
}

/// A cloneable shutdown token: one [`Shutdown::trigger`] completes every [`Shutdown::wait`],
/// past and future. Built on `tokio::sync::watch`, so late waiters see an earlier trigger.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A token that has not been triggered.
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// A token triggered by [`signal()`]. Must be called inside a Tokio runtime.
    pub fn on_signal() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            signal().await;
            trigger.trigger();
        });
        shutdown
    }

    /// Starts shutdown everywhere. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// A future that completes once shutdown has started; `'static`, so it can be handed to a
    /// service's `run` or to `with_graceful_shutdown`.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // `wait_for` errs only if the sender is gone; `self.tx` lives as long as any clone,
            // so treat that as shutdown too.
            let _ = rx.wait_for(|triggered| *triggered).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_trigger_stops_every_waiter() {
        let shutdown = Shutdown::new();
        let a = tokio::spawn(shutdown.wait());
        let b = tokio::spawn(shutdown.clone().wait());
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), async {
            a.await.ok();
            b.await.ok();
        })
        .await
        .ok();
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn a_waiter_created_after_the_trigger_completes_at_once() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let done = tokio::time::timeout(Duration::from_secs(1), shutdown.wait()).await;
        assert!(done.is_ok());
    }

    #[tokio::test]
    async fn an_untriggered_token_keeps_waiting() {
        let shutdown = Shutdown::new();
        let done = tokio::time::timeout(Duration::from_millis(50), shutdown.wait()).await;
        assert!(done.is_err());
    }
}
