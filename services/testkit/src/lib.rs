//! Helpers the services' integration tests share; a dev-dependency only.
//!
//! - [`TcpProxy`]: a TCP proxy a test can cut and restore, to take a dependency (Postgres, NATS)
//!   away from one service while the rest of the system keeps it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long [`TcpProxy::restore`] keeps trying to listen on its old address.
const REBIND_DEADLINE: Duration = Duration::from_secs(15);

/// A TCP proxy the test can cut, to take a dependency away from a service and give it back.
/// Dropping it cuts it.
pub struct TcpProxy {
    /// Where to connect instead of the upstream.
    pub addr: SocketAddr,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream` (`host:port`).
    ///
    /// # Panics
    /// When no loopback port can be bound: the test cannot run.
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot listen on loopback: {e}"));
        let proxy = TcpProxy {
            addr: listener
                .local_addr()
                .unwrap_or_else(|e| panic!("no local address: {e}")),
            upstream: upstream.to_owned(),
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, tasks) = (self.upstream.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(pipe);
            }
        });
        self.tasks().push(accept);
    }

    /// Closes every connection and stops listening: connections are refused until
    /// [`TcpProxy::restore`].
    pub fn cut(&self) {
        for task in self.tasks().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same address.
    ///
    /// # Panics
    /// When the address cannot be bound again within 15 s.
    pub async fn restore(&self) {
        let started = tokio::time::Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        started.elapsed() < REBIND_DEADLINE,
                        "cannot listen on {} again: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
