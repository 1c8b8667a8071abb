//! `run(config, listener, shutdown)`: the accept loop, per-connection protections, background
//! tasks, and graceful shutdown.
//!
//! Connections are served with hyper's HTTP/1.1 server directly rather than through
//! `axum::serve`, for the knobs a public edge needs: a header read timeout (which also bounds
//! idle keep-alive connections), a cap on the request head, a write timeout (see [`crate::io`]),
//! and per-connection graceful shutdown. HTTP/2 from clients is left to the TLS-terminating load
//! balancer in front.
//!
//! Oversized heads: the gateway answers 431 `HEADER_TOO_LARGE` in the envelope for heads over
//! `GATEWAY_MAX_HEADER_BYTES` or with more than `MAX_REQUEST_HEADERS` (90) lines.
//! hyper keeps two backstops of its own, at four times the byte limit and at 100 header lines:
//! past those it refuses the head while parsing, with a bare 431 and no body, and closes the
//! connection. No envelope is possible there: hyper never hands the service a request it could
//! not parse, and buffering ever larger heads to answer politely is what the limit prevents.
//! Only a client sending tens of KiB of headers (never an app) meets them.
//!
//! Shutdown: stop accepting; close proxied WebSockets; ask every connection to finish the request
//! it is serving and close (idle keep-alive connections close at once); after
//! `GATEWAY_SHUTDOWN_GRACE_MS`, close whatever is left.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::HeaderName;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::RunError;
use crate::config::{Config, CorsOrigins};
use crate::gateway::Gateway;
use crate::headers::{IDEMPOTENCY_KEY, X_REQUEST_ID};
use crate::io::WriteTimeout;

/// How often rate-limit buckets, session pins and expired cached tokens are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How long proxied WebSockets may take to close on shutdown.
const WEBSOCKET_CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Runs the gateway on `listener`, with its admin listener bound to `GATEWAY_ADMIN_LISTEN`,
/// until `shutdown` completes, then drains (see the module docs).
///
/// The upstream URLs come from `config`, so tests and the all-in-one binary can point it at
/// services on any address.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| RunError::AdminListen {
            addr: config.admin_listen,
            source,
        })?;
    run_with_admin(config, listener, admin, shutdown).await
}

/// [`run`] with the admin listener (`/metrics`, `/healthz`, `/readyz`) given, for tests and
/// embedders that pick their own port. It serves until the public listener has drained, so the
/// last metrics of a shutdown can still be scraped.
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let gateway = Arc::new(Gateway::new(&config)?);
    let cors = cors_layer(config.cors_origins()?);

    let background = CancellationToken::new();
    let pools = &config.pools;
    for pool in [&gateway.calls_api, &gateway.signaling]
        .into_iter()
        .chain(gateway.notifier.as_ref())
    {
        pool.clone().spawn_health_checks(
            pools.health_check_interval(),
            pools.health_check_timeout(),
            background.child_token(),
        );
    }
    spawn_sweeper(gateway.clone(), background.child_token());
    let admin_addr = admin.local_addr()?;
    let admin_stop = background.child_token();
    let admin_server = tokio::spawn(
        axum::serve(admin, gateway.ops.clone())
            .with_graceful_shutdown(async move { admin_stop.cancelled().await })
            .into_future(),
    );

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.limits.header_read_timeout())
        // The envelope's 431 is produced by the gateway for heads over GATEWAY_MAX_HEADER_BYTES;
        // this backstop only bounds the memory a single connection's head can take.
        .max_header_size(config.limits.max_header_bytes.saturating_mul(4))
        .keep_alive(true);
    let write_timeout = config.limits.write_timeout();

    let connections = TaskTracker::new();
    let graceful = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    tracing::info!(
        addr = %listener.local_addr()?,
        admin = %admin_addr,
        calls_api = %join(&config.calls_api_upstreams),
        signaling = %join(&config.signaling_upstreams),
        notifier = %join(&config.notifier_upstreams),
        "gateway listening"
    );

    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Per-connection errors (reset before accept) are the client's problem;
                    // others (out of file descriptors) need a pause, not a hot loop.
                    if !matches!(err.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        // Small request/response exchanges: Nagle would hold them back.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(WriteTimeout::new(stream, write_timeout));
        let service = GatewayService {
            gateway: gateway.clone(),
            peer,
            peer_ip: crate::headers::ip_header(peer.ip()),
        };
        let stop = (graceful.clone(), hard_stop.clone());
        // Without CORS the service is handed to hyper directly, saving the tower adapter's
        // per-request clone.
        match &cors {
            Some(cors) => {
                let service = TowerToHyperService::new(cors.clone().layer(service));
                spawn_connection(&connections, &http, io, service, peer, stop);
            }
            None => spawn_connection(&connections, &http, io, service, peer, stop),
        }
    }

    drop(listener);
    tracing::info!(
        in_flight_connections = connections.len(),
        "shutting down: not accepting; finishing requests in flight"
    );
    graceful.cancel();
    connections.close();
    let (_, drained) = tokio::join!(
        gateway.websockets.close_all(WEBSOCKET_CLOSE_DEADLINE),
        tokio::time::timeout(config.limits.shutdown_grace(), connections.wait()),
    );
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "shutdown grace over; closing remaining connections"
        );
        hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), connections.wait()).await;
    }
    background.cancel();
    match tokio::time::timeout(Duration::from_secs(2), admin_server).await {
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "admin listener failed"),
        Ok(Err(err)) => tracing::warn!(error = %err, "admin listener task failed"),
        Err(_) => tracing::warn!("admin listener did not stop in time"),
        Ok(Ok(Ok(()))) => {}
    }
    tracing::info!("gateway stopped");
    Ok(())
}

type ClientIo = TokioIo<WriteTimeout<tokio::net::TcpStream>>;

/// Serves one connection in a tracked task: until it ends, or until shutdown asks it to finish
/// its request and close, or the grace period is over.
fn spawn_connection<S>(
    tracker: &TaskTracker,
    http: &hyper::server::conn::http1::Builder,
    io: ClientIo,
    service: S,
    peer: SocketAddr,
    (graceful, hard_stop): (CancellationToken, CancellationToken),
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = http.serve_connection(io, service).with_upgrades();
    tracker.spawn(async move {
        let mut connection = pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            () = graceful.cancelled() => connection.as_mut().graceful_shutdown(),
        }
        tokio::select! {
            _ = connection.as_mut() => {}
            () = hard_stop.cancelled() => {}
        }
    });
}

fn join(urls: &[crate::config::UpstreamUrl]) -> String {
    urls.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn spawn_sweeper(gateway: Arc<Gateway>, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {
                    let now = std::time::Instant::now();
                    for limiter in [&gateway.user_limit, &gateway.initiate_limit].into_iter().flatten() {
                        limiter.sweep(now);
                    }
                    if let Some(limiter) = &gateway.ip_limit {
                        limiter.sweep(now);
                    }
                    gateway.sessions.sweep(now);
                    gateway.verifier.sweep();
                }
            }
        }
    });
}

fn cors_layer(origins: Option<CorsOrigins>) -> Option<CorsLayer> {
    let allow_origin = match origins? {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                IDEMPOTENCY_KEY.clone(),
                X_REQUEST_ID.clone(),
                // A web app's own trace, joined by the gateway (W3C trace context).
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("tracestate"),
                // The device answering or declining (CONTRACT section 8).
                HeaderName::from_static("x-device-id"),
            ])
            .expose_headers([X_REQUEST_ID.clone(), RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// The per-connection service: the shared gateway plus the peer address.
#[derive(Clone)]
struct GatewayService {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    peer_ip: http::HeaderValue,
}

impl hyper::service::Service<Request<Incoming>> for GatewayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let gateway = self.gateway.clone();
        let peer = self.peer;
        let peer_ip = self.peer_ip.clone();
        Box::pin(async move { Ok(gateway.handle(peer, peer_ip, request).await) })
    }
}

/// The same service for tower layers (CORS).
impl tower::Service<Request<Incoming>> for GatewayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        hyper::service::Service::call(&*self, request)
    }
}
