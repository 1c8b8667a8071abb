//! Following the primary of a replicated Postgres with one sqlx pool.
//!
//! sqlx connects a pool to one host and has no `target_session_attrs`, so this module does
//! libpq's part around the pool:
//! - a *follower* task keeps one connection of its own (the sentinel) to the host the pool
//!   uses and asks it every [`CHECK_INTERVAL`] whether it still is what the URL asks for
//!   (`transaction_read_only = off` for `read-write`). When the sentinel fails or the answer
//!   changes, it tries the hosts in the URL's order until one is, and points the pool there
//!   ([`sqlx::Pool::set_connect_options`]: the pool's connect loop reads the options again on
//!   each retry, so requests waiting for a connection land on the new primary);
//! - every new pooled connection is checked the same way (`after_connect`): a session on a
//!   demoted node is refused (the pool retries until its acquire timeout: the request then
//!   answers "unavailable" instead of writing into a read-only error), and the follower is
//!   woken to look for the primary at once;
//! - pooled connections opened before the follower last had to look for the primary are closed
//!   instead of being handed out (`before_acquire`, from the connection's age: no round trip),
//!   so nothing keeps talking to a node that stopped being the primary, even behind a single
//!   name such as a Kubernetes Service.
//!
//! While no host qualifies (the seconds a failover takes), acquiring a connection times out
//! after the pool's acquire timeout: callers answer 503 and retry, and nothing is written to
//! a standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::Notify;

use crate::ConnectError;
use crate::hosts::{PgUrl, Target};

/// How often the sentinel asks its host whether it is still the primary. A failover takes
/// seconds (the HA manager must first declare the old primary dead), so a second's delay in
/// noticing it costs little, and it costs one tiny query per second per process.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long one host may take to accept a connection or answer the check before the next one
/// is tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long to wait before trying every host again while none qualifies.
const RESCAN_DELAY: Duration = Duration::from_millis(250);

/// Times the pool moved to another host (a failover or switchover seen by this process).
pub const SWITCHES_METRIC: &str = "calls_db_host_switches_total";
/// 1 while the pool's host is known to meet `target_session_attrs`, 0 while looking for one.
pub const UP_METRIC: &str = "calls_db_host_up";

struct Host {
    label: String,
    options: AnyConnectOptions,
}

/// What the pool hooks and the follower task share.
struct Shared {
    hosts: Vec<Host>,
    target: Target,
    /// The index of the host the pool connects to.
    current: AtomicUsize,
    /// When the pool last moved, in nanoseconds since `epoch`: connections older than that
    /// belong to a host we left.
    switched_at: AtomicU64,
    epoch: Instant,
    /// Wakes the follower: a new connection found its host unsuitable.
    recheck: Notify,
}

impl Shared {
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Stops the follower task when the last handle to the pool goes.
pub(crate) struct FollowerGuard(tokio::task::AbortHandle);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Does what `target` asks of the session on `conn`?
async fn qualifies(conn: &mut AnyConnection, target: Target) -> Result<bool, sqlx::Error> {
    match target {
        Target::Any => {
            conn.ping().await?;
            Ok(true)
        }
        Target::ReadWrite => {
            let read_only: String =
                sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(read_only == "off")
        }
        Target::Primary => {
            let primary: bool = sqlx::query_scalar("SELECT NOT pg_is_in_recovery()")
                .fetch_one(&mut *conn)
                .await?;
            Ok(primary)
        }
    }
}

/// Tries the hosts in order; answers the first that qualifies, with a connection to it.
async fn scan(shared: &Shared) -> Option<(usize, AnyConnection)> {
    for (index, host) in shared.hosts.iter().enumerate() {
        let attempt = async {
            let mut conn = AnyConnection::connect_with(&host.options).await?;
            if qualifies(&mut conn, shared.target).await? {
                Ok(Some(conn))
            } else {
                let _ = conn.close().await;
                Ok::<_, sqlx::Error>(None)
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(Some(conn))) => return Some((index, conn)),
            Ok(Ok(None)) => {
                tracing::debug!(host = %host.label, target = shared.target.as_str(), "database host does not qualify");
            }
            Ok(Err(e)) => {
                tracing::debug!(host = %host.label, error = %e, "database host unreachable")
            }
            Err(_) => tracing::debug!(host = %host.label, "database host did not answer in time"),
        }
    }
    None
}

/// Connects a pool that follows the host the URL's `target_session_attrs` asks for.
pub(crate) async fn connect(
    url: PgUrl,
    options: AnyPoolOptions,
    acquire_timeout: Duration,
) -> Result<(AnyPool, FollowerGuard), ConnectError> {
    let hosts = url
        .hosts
        .into_iter()
        .map(|h| {
            h.url
                .parse::<AnyConnectOptions>()
                .map(|options| Host {
                    label: h.label,
                    options,
                })
                .map_err(ConnectError::Database)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shared = Arc::new(Shared {
        hosts,
        target: url.target,
        current: AtomicUsize::new(0),
        switched_at: AtomicU64::new(0),
        epoch: Instant::now(),
        recheck: Notify::new(),
    });

    // Find the primary first, within the acquire timeout, as connecting a plain pool would.
    let deadline = tokio::time::Instant::now() + acquire_timeout;
    let (index, sentinel) = loop {
        if let Some(found) = scan(&shared).await {
            break found;
        }
        if tokio::time::Instant::now() + RESCAN_DELAY >= deadline {
            return Err(ConnectError::NoSuitableHost {
                hosts: shared.hosts.len(),
                target: shared.target.as_str(),
            });
        }
        tokio::time::sleep(RESCAN_DELAY).await;
    };
    shared.current.store(index, Ordering::SeqCst);
    tracing::info!(host = %shared.hosts[index].label, target = shared.target.as_str(), "database: using this host");

    let on_connect = shared.clone();
    let on_acquire = shared.clone();
    let pool = options
        .after_connect(move |conn, _meta| {
            let shared = on_connect.clone();
            Box::pin(async move {
                if qualifies(conn, shared.target).await? {
                    return Ok(());
                }
                shared.recheck.notify_one();
                Err(sqlx::Error::Protocol(format!(
                    "the session does not meet target_session_attrs={}",
                    shared.target.as_str()
                )))
            })
        })
        .before_acquire(move |_conn, meta| {
            let opened_at = on_acquire
                .now_nanos()
                .saturating_sub(u64::try_from(meta.age.as_nanos()).unwrap_or(u64::MAX));
            let current = opened_at >= on_acquire.switched_at.load(Ordering::SeqCst);
            Box::pin(async move { Ok(current) })
        })
        .connect_with(shared.hosts[index].options.clone())
        .await
        .map_err(ConnectError::Database)?;

    metrics::gauge!(UP_METRIC).set(1.0);
    let task = tokio::spawn(follow(pool.clone(), shared, sentinel));
    Ok((pool, FollowerGuard(task.abort_handle())))
}

/// The follower: checks the pool's host, and moves the pool when it stops qualifying.
async fn follow(pool: AnyPool, shared: Arc<Shared>, sentinel: AnyConnection) {
    let mut sentinel = Some(sentinel);
    let closed = pool.close_event();
    tokio::pin!(closed);
    loop {
        let Some(conn) = sentinel.as_mut() else {
            // Looking for a host that qualifies.
            match scan(&shared).await {
                Some((index, conn)) => {
                    let previous = shared.current.swap(index, Ordering::SeqCst);
                    // Pooled connections from before are to a server that went or stopped
                    // qualifying, even when the host is the same name (a Service such as
                    // CloudNativePG's `-rw` now pointing at the promoted replica): close them.
                    shared
                        .switched_at
                        .store(shared.now_nanos(), Ordering::SeqCst);
                    if previous != index {
                        pool.set_connect_options(shared.hosts[index].options.clone());
                        metrics::counter!(SWITCHES_METRIC).increment(1);
                        tracing::warn!(
                            from = %shared.hosts[previous].label,
                            to = %shared.hosts[index].label,
                            target = shared.target.as_str(),
                            "database: following a new host"
                        );
                    } else {
                        tracing::info!(host = %shared.hosts[index].label, "database: host qualifies again");
                    }
                    metrics::gauge!(UP_METRIC).set(1.0);
                    sentinel = Some(conn);
                }
                None => {
                    tokio::select! {
                        () = &mut closed => return,
                        () = tokio::time::sleep(RESCAN_DELAY) => {}
                    }
                }
            }
            continue;
        };
        tokio::select! {
            () = &mut closed => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
            () = shared.recheck.notified() => {}
        }
        let ok = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, qualifies(conn, shared.target)).await,
            Ok(Ok(true))
        );
        if !ok {
            let current = shared.current.load(Ordering::SeqCst);
            tracing::warn!(
                host = %shared.hosts[current].label,
                target = shared.target.as_str(),
                "database: the host no longer qualifies or is gone; looking for another"
            );
            metrics::gauge!(UP_METRIC).set(0.0);
            sentinel = None;
        }
    }
}
