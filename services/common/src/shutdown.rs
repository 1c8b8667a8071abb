//! Graceful shutdown.
//!
//! Services take `shutdown: impl Future<Output = ()> + Send + 'static` in their `run` and hand it
//! to `axum::serve(...).with_graceful_shutdown(...)`. What stops a process is one
//! [`CancellationToken`] (tokio-util's): [`crate::process::run`] cancels it on [`signal()`], the
//! standalone binary hands every service it runs `token.cancelled_owned()`, and tests cancel it
//! by hand. A token cancelled once stays cancelled, so a waiter created after the cancel
//! completes at once; that is what lets a service start its tasks late in a shutdown safely.

pub use tokio_util::sync::CancellationToken;

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

#[cfg(test)]
mod tests {
    //! The properties of [`CancellationToken`] the services rely on.

    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_cancel_stops_every_waiter() {
        let shutdown = CancellationToken::new();
        let a = tokio::spawn(shutdown.clone().cancelled_owned());
        let b = tokio::spawn(shutdown.clone().cancelled_owned());
        assert!(!shutdown.is_cancelled());
        shutdown.cancel();
        let both = tokio::time::timeout(Duration::from_secs(1), async {
            a.await.ok();
            b.await.ok();
        })
        .await;
        assert!(both.is_ok());
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn a_waiter_created_after_the_cancel_completes_at_once() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let done =
            tokio::time::timeout(Duration::from_secs(1), shutdown.clone().cancelled_owned()).await;
        assert!(done.is_ok());
    }

    #[tokio::test]
    async fn an_uncancelled_token_keeps_waiting() {
        let shutdown = CancellationToken::new();
        let done = tokio::time::timeout(Duration::from_millis(50), shutdown.cancelled()).await;
        assert!(done.is_err());
    }
}
