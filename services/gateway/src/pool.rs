//! Upstream pools: the instances of one service, their health, and which one takes a request.
//!
//! An instance takes traffic when it is *available*: healthy by the active checks and not
//! passively ejected.
//!
//! - **Active checks**: `GET /healthz` on every instance each interval. After
//!   `GATEWAY_HEALTH_CHECK_FAILURES` consecutive failures an instance leaves rotation; one
//!   success brings it back.
//! - **Passive ejection**: `GATEWAY_EJECT_AFTER_FAILURES` consecutive failed requests
//!   (connection refused or reset, timeout) eject an instance for `GATEWAY_EJECT_COOLDOWN_MS`
//!   without waiting for the next check. After the cool-down it takes traffic again; one more
//!   failure ejects it again at once, one success clears the count. A health check that succeeds
//!   after a failed one also ends the ejection: the instance was down, and it is back.
//!
//! Balancing is round-robin over available instances. Requests are short and instances alike,
//! so round-robin spreads them evenly without the shared counters least-outstanding needs.
//!
//! Instances start out available, so the gateway serves at once; `/readyz` waits for the first
//! round of checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;

use crate::client::Connections;
use crate::config::{PoolConfig, UpstreamUrl};
use crate::metrics;

/// One upstream instance.
#[derive(Debug)]
pub struct Instance {
    url: UpstreamUrl,
    label: String,
    connections: Arc<Connections>,
    healthy: AtomicBool,
    failed_checks: AtomicU32,
    failures: AtomicU32,
    /// Milliseconds since the pool's epoch until which the instance is ejected; 0 = not ejected.
    ejected_until_ms: AtomicU64,
}

impl Instance {
    /// The instance's base URL.
    pub fn url(&self) -> &UpstreamUrl {
        &self.url
    }

    /// `host:port`, for logs and metric labels.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its keep-alive connections.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }
}

/// The instances of one upstream service.
#[derive(Debug)]
pub struct Pool {
    name: &'static str,
    instances: Box<[Instance]>,
    next: AtomicUsize,
    epoch: Instant,
    unhealthy_after_checks: u32,
    eject_after_failures: u32,
    eject_cooldown: Duration,
    checked_once: AtomicBool,
    duration: ::metrics::Histogram,
}

impl Pool {
    /// A pool named `name` (the `upstream` metric label) over `urls`.
    pub fn new(name: &'static str, urls: &[UpstreamUrl], config: &PoolConfig) -> Self {
        let instances = urls
            .iter()
            .map(|url| Instance {
                url: url.clone(),
                label: url.authority().to_string(),
                connections: Arc::new(Connections::new(
                    url.authority().clone(),
                    config.connect_timeout(),
                )),
                healthy: AtomicBool::new(true),
                failed_checks: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                ejected_until_ms: AtomicU64::new(0),
            })
            .collect();
        Self {
            name,
            instances,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            unhealthy_after_checks: config.health_check_failures.max(1),
            eject_after_failures: config.eject_after_failures.max(1),
            eject_cooldown: config.eject_cooldown(),
            checked_once: AtomicBool::new(false),
            duration: metrics::upstream_duration(name),
        }
    }

    /// Records the time an instance took to answer.
    pub fn record_duration(&self, elapsed: Duration) {
        metrics::record_duration(&self.duration, elapsed);
    }

    /// The service name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether the pool has no instance.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Instance `index`, if it exists.
    pub fn instance(&self, index: usize) -> Option<&Instance> {
        self.instances.get(index)
    }

    fn now_ms(&self) -> u64 {
        // Offset by one so that 0 can mean "not ejected".
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether instance `index` should take traffic now.
    pub fn is_available(&self, index: usize) -> bool {
        self.instances
            .get(index)
            .is_some_and(|i| self.available_at(i, self.now_ms()))
    }

    fn available_at(&self, instance: &Instance, now_ms: u64) -> bool {
        instance.healthy.load(Ordering::Relaxed)
            && instance.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// The next available instance in round-robin order, skipping `tried`.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.instances.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // The clock is read only if some instance has been ejected: the common case needs none.
        let mut now = None;
        (0..n).map(|k| start.wrapping_add(k) % n).find(|&i| {
            let instance = &self.instances[i];
            if tried.contains(&i) || !instance.healthy.load(Ordering::Relaxed) {
                return false;
            }
            let until = instance.ejected_until_ms.load(Ordering::Relaxed);
            until == 0 || until <= *now.get_or_insert_with(|| self.now_ms())
        })
    }

    /// Whether any instance is available.
    pub fn any_available(&self) -> bool {
        let now = self.now_ms();
        self.instances.iter().any(|i| self.available_at(i, now))
    }

    /// Whether the pool is ready: checked at least once and with an available instance.
    pub fn is_ready(&self) -> bool {
        self.checked_once.load(Ordering::Relaxed) && self.any_available()
    }

    /// The available instances, in index order: where an engine.io session unknown to this
    /// gateway is looked for.
    pub fn available_instances(&self) -> Vec<usize> {
        let now = self.now_ms();
        (0..self.instances.len())
            .filter(|&i| self.available_at(&self.instances[i], now))
            .collect()
    }

    /// A request to `index` got an answer.
    pub fn report_success(&self, index: usize) {
        let Some(instance) = self.instances.get(index) else {
            return;
        };
        // Checked before writing: the common case touches no shared cache line.
        if instance.failures.load(Ordering::Relaxed) != 0 {
            instance.failures.store(0, Ordering::Relaxed);
        }
        // It answered after its cool-down: no longer ejected (and `pick` can skip the clock).
        if instance.ejected_until_ms.load(Ordering::Relaxed) != 0 {
            instance.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// A request to `index` failed (connection, reset or timeout).
    pub fn report_failure(&self, index: usize) {
        let Some(instance) = self.instances.get(index) else {
            return;
        };
        let failures = instance
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < self.eject_after_failures {
            return;
        }
        let now = self.now_ms();
        let until =
            now.saturating_add(u64::try_from(self.eject_cooldown.as_millis()).unwrap_or(u64::MAX));
        let previous = instance.ejected_until_ms.swap(until, Ordering::Relaxed);
        if previous <= now {
            tracing::warn!(
                upstream = self.name,
                instance = %instance.label,
                failures,
                cooldown_ms = self.eject_cooldown.as_millis() as u64,
                "ejecting upstream instance after consecutive failures"
            );
            metrics::ejected(self.name, &instance.label);
            self.publish_health();
        }
    }

    fn record_check(&self, index: usize, ok: bool) {
        let Some(instance) = self.instances.get(index) else {
            return;
        };
        if ok {
            if instance.failed_checks.swap(0, Ordering::Relaxed) > 0 {
                // It was failing checks and now passes: it restarted or the network healed, so
                // a passive ejection from the outage no longer applies.
                instance.failures.store(0, Ordering::Relaxed);
                instance.ejected_until_ms.store(0, Ordering::Relaxed);
            }
            if !instance.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(upstream = self.name, instance = %instance.label, "upstream instance healthy again");
            }
        } else {
            let failed = instance
                .failed_checks
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if failed >= self.unhealthy_after_checks
                && instance.healthy.swap(false, Ordering::Relaxed)
            {
                tracing::warn!(upstream = self.name, instance = %instance.label, failed, "upstream instance failed its health checks; out of rotation");
            }
        }
    }

    /// Updates the health gauges.
    fn publish_health(&self) {
        let now = self.now_ms();
        let mut available = 0usize;
        for instance in self.instances.iter() {
            let up = self.available_at(instance, now);
            available += usize::from(up);
            metrics::instance_health(self.name, &instance.label, up);
        }
        metrics::available_instances(self.name, available);
    }

    /// One round of health checks on every instance, concurrently.
    pub async fn check_all(&self, timeout: Duration) {
        let checks = self
            .instances
            .iter()
            .map(|instance| check(instance, timeout));
        let results = futures::future::join_all(checks).await;
        for (index, ok) in results.into_iter().enumerate() {
            self.record_check(index, ok);
        }
        self.checked_once.store(true, Ordering::Relaxed);
        self.publish_health();
    }

    /// Runs [`Pool::check_all`] now and then about every `interval` until `cancel`.
    ///
    /// Each round starts between half an interval and an interval after the previous one
    /// started ([`common::backoff::jitter`]): gateway replicas started together (a rollout) would
    /// otherwise probe every instance at the same moment, and keep doing so. A round slower
    /// than that is followed by the next at once, never by a burst of catch-up rounds.
    pub fn spawn_health_checks(
        self: Arc<Self>,
        interval: Duration,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut next_round = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep_until(next_round) => {
                        next_round = tokio::time::Instant::now() + common::backoff::jitter(interval);
                        self.check_all(timeout).await;
                        for instance in self.instances.iter() {
                            instance.connections.prune();
                        }
                    }
                }
            }
        })
    }
}

static HEALTHZ: PathAndQuery = PathAndQuery::from_static("/healthz");

/// `GET /healthz` answered 2xx within `timeout`.
async fn check(instance: &Instance, timeout: Duration) -> bool {
    let Ok(uri) = instance.url.origin_for(&HEALTHZ) else {
        return false;
    };
    let Ok(request) = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(http::header::USER_AGENT, "calls-gateway-health-check")
        .body(Full::new(Bytes::new()))
    else {
        return false;
    };
    let attempt = async {
        let response = instance.connections.send(request).await.ok()?;
        let ok = response.status().is_success();
        // Reading the (small) body to the end lets the connection go back to the pool.
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;
    use crate::config::Config;

    fn pool(n: usize, extra: &[&str]) -> Pool {
        let urls: Vec<String> = (1..=n).map(|p| format!("http://127.0.0.1:{p}")).collect();
        let urls = urls.join(",");
        let mut args = vec![
            "gateway",
            "--calls-api-upstreams",
            &urls,
            "--signaling-upstreams",
            "http://x:1",
            "--jwt-secret",
            "s",
        ];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).unwrap();
        Pool::new("calls-api", &config.calls_api_upstreams, &config.pools)
    }

    #[test]
    fn picks_rotate_over_every_instance() {
        let pool = pool(3, &[]);
        let mut seen: Vec<usize> = (0..6).map(|_| pool.pick(&[]).unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn tried_instances_are_skipped() {
        let pool = pool(2, &[]);
        for _ in 0..4 {
            assert_eq!(pool.pick(&[0]), Some(1));
        }
        assert_eq!(pool.pick(&[0, 1]), None);
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_in_between_resets_the_count() {
        let pool = pool(
            2,
            &[
                "--eject-after-failures",
                "2",
                "--eject-cooldown-ms",
                "60000",
            ],
        );
        pool.report_failure(1);
        pool.report_success(1);
        pool.report_failure(1);
        assert!(pool.is_available(1));
        pool.report_failure(1);
        assert!(!pool.is_available(1));
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(0));
        }
    }

    #[test]
    fn an_ejected_instance_returns_after_the_cooldown() {
        let pool = pool(
            1,
            &["--eject-after-failures", "1", "--eject-cooldown-ms", "0"],
        );
        pool.report_failure(0);
        // A zero cool-down ends at once.
        assert!(pool.is_available(0));
    }

    #[test]
    fn failed_checks_take_an_instance_out_and_a_passing_check_brings_it_back_unejected() {
        let pool = pool(
            2,
            &[
                "--health-check-failures",
                "2",
                "--eject-after-failures",
                "1",
            ],
        );
        pool.record_check(0, false);
        assert!(pool.is_available(0));
        pool.record_check(0, false);
        assert!(!pool.is_available(0));
        pool.report_failure(0);
        pool.record_check(0, true);
        assert!(pool.is_available(0));
        assert_eq!(pool.available_instances(), vec![0, 1]);
    }

    #[test]
    fn a_passing_check_without_prior_failure_keeps_a_passive_ejection() {
        let pool = pool(2, &["--eject-after-failures", "1"]);
        pool.report_failure(1);
        pool.record_check(1, true);
        assert!(!pool.is_available(1));
        assert_eq!(pool.available_instances(), vec![0]);
    }

    #[test]
    fn readiness_waits_for_the_first_round_of_checks() {
        let pool = pool(1, &[]);
        assert!(pool.any_available());
        assert!(!pool.is_ready());
        pool.checked_once.store(true, Ordering::Relaxed);
        assert!(pool.is_ready());
    }
}
