//! One request through the gateway: id, route, protections, then the upstream.
//!
//! The order of checks is deliberate: the cheap ones that need no secret work come first, so an
//! abusive client costs as little as possible. Head size, then route (unknown and internal paths
//! end here), then the per-IP bucket, then the token (a signature check), then the per-user and
//! initiate buckets, then the body (read only once the request is admitted).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use common::auth::JwtVerifier;
use common::error::{ApiError, ErrorCode};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use tower::ServiceExt;

use crate::auth::CachingVerifier;
use crate::client::PooledBody;
use crate::config::Config;
use crate::headers::{self, X_REQUEST_ID};
use crate::pool::Pool;
use crate::proxy::{self, Forwarder, Outbound};
use crate::ratelimit::{self, RateLimiter};
use crate::route::{self, Route};
use crate::sticky::{self, SessionTable};
use crate::websocket::WebSockets;
use crate::{RunError, metrics};

/// Most header lines a request may carry. The upstreams (hyper's default) take 100, and the
/// gateway adds up to five (`X-Forwarded-*`, `X-Request-Id`, `traceparent`): past this, the
/// client gets the envelope here rather than an empty 431 from an upstream. Past 100, hyper
/// refuses the head itself, before the gateway sees it (see [`crate::server`]).
pub const MAX_REQUEST_HEADERS: usize = 90;

/// Largest engine.io handshake answer read to learn its sid (the open packet is ~120 bytes).
const HANDSHAKE_MAX_BYTES: u64 = 16 * 1024;
/// The API document both calls-api and notifier serve (the gateway merges them).
const OPENAPI_PATH: &str = "/api/docs/openapi.json";
/// Largest API document read from an upstream.
const OPENAPI_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Largest 400 answer read to tell engine.io's "Session ID unknown" apart.
const UNKNOWN_SESSION_MAX_BYTES: u64 = 4 * 1024;

/// Everything a request needs, shared by all connections.
pub(crate) struct Gateway {
    pub(crate) verifier: CachingVerifier,
    forwarder: Forwarder,
    pub(crate) calls_api: Arc<Pool>,
    pub(crate) signaling: Arc<Pool>,
    /// The device registry; `None` when no notifier is configured.
    pub(crate) notifier: Option<Arc<Pool>>,
    pub(crate) sessions: SessionTable,
    pub(crate) user_limit: Option<RateLimiter<String>>,
    pub(crate) ip_limit: Option<RateLimiter<IpAddr>>,
    pub(crate) initiate_limit: Option<RateLimiter<String>>,
    /// `/healthz`, `/readyz`, `/metrics`: the admin listener serves all three, the public one
    /// the first two.
    pub(crate) ops: axum::Router,
    pub(crate) websockets: WebSockets,
    max_body_bytes: usize,
    max_header_bytes: usize,
    body_read_timeout: Duration,
    request_timeout: Duration,
    long_poll_timeout: Duration,
    trust_forwarded_for: bool,
}

/// What is known about a request while it is handled, for the access log and metrics.
struct Exchange {
    route: Route,
    upstream: &'static str,
    peer_ip: HeaderValue,
    client_ip: IpAddr,
    request_id: HeaderValue,
}

impl Gateway {
    /// Builds the gateway from validated configuration.
    pub(crate) fn new(config: &Config) -> Result<Self, RunError> {
        config.validate()?;
        // The recorder first: the pools register their metric handles when created.
        let _ = common::metrics::prometheus();
        metrics::describe();
        let verifier = CachingVerifier::new(JwtVerifier::from_config(&config.jwt)?);
        let cors = config.cors_origins()?.is_some();

        let calls_api = Arc::new(Pool::new(
            "calls-api",
            &config.calls_api_upstreams,
            &config.pools,
        ));
        let signaling = Arc::new(Pool::new(
            "signaling",
            &config.signaling_upstreams,
            &config.pools,
        ));

        // Not part of readiness: without notifier, calls still ring on live sockets, and taking
        // the whole edge out of rotation for it would stop every call.
        let notifier = (!config.notifier_upstreams.is_empty()).then(|| {
            Arc::new(Pool::new(
                "notifier",
                &config.notifier_upstreams,
                &config.pools,
            ))
        });

        let ready = {
            let calls_api = calls_api.clone();
            let signaling = signaling.clone();
            move || {
                let result = if !calls_api.is_ready() {
                    Err(calls_api.name().to_owned())
                } else if !signaling.is_ready() {
                    Err(signaling.name().to_owned())
                } else {
                    Ok(())
                };
                async move { result }
            }
        };
        // The middleware stamps the request id into the readiness envelope.
        let ops = common::health::router(ready).layer(axum::middleware::from_fn(
            common::error::envelope_middleware,
        ));

        let limits = &config.rate_limits;
        Ok(Self {
            verifier,
            forwarder: Forwarder::new(config.pools.max_attempts, cors),
            calls_api,
            signaling,
            notifier,
            sessions: SessionTable::default(),
            user_limit: RateLimiter::new(limits.per_user_per_minute, limits.per_user_burst),
            ip_limit: RateLimiter::new(limits.per_ip_per_minute, limits.per_ip_burst),
            initiate_limit: RateLimiter::new(
                limits.initiate_per_user_per_minute,
                limits.initiate_burst,
            ),
            ops,
            websockets: WebSockets::default(),
            max_body_bytes: config.limits.max_body_bytes,
            max_header_bytes: config.limits.max_header_bytes,
            body_read_timeout: config.limits.body_read_timeout(),
            request_timeout: config.pools.request_timeout(),
            long_poll_timeout: config.pools.long_poll_timeout(),
            trust_forwarded_for: config.trust_forwarded_for,
        })
    }

    /// Handles one request; never fails: every refusal is an envelope.
    ///
    /// `peer_ip` is the peer's address as a header value, made once per connection.
    pub(crate) async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        peer_ip: HeaderValue,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let request_id = headers::request_id(&parts.headers);
        parts.headers.insert(&X_REQUEST_ID, request_id.clone());
        // The access log is usually on, but when it is filtered out its copies are not made.
        let logged = tracing::enabled!(target: "gateway::access", tracing::Level::INFO)
            .then(|| (Instant::now(), parts.method.clone(), parts.uri.clone()));
        let route = route::classify(&parts.method, parts.uri.path());
        // The edge span: a root, or the child of a client that sent `traceparent`; upstreams
        // get its context in place of the client's. Made only when someone will see it (an
        // exporter, or the access log, whose line carries its trace id): on the hot path, a span
        // nobody reads is pure cost, and the client's own `traceparent` still passes through.
        let traced = logged.is_some() || common::telemetry::exporting();
        let span = if !traced {
            tracing::Span::none()
        } else {
            tracing::info_span!(
            "http.request",
            otel.name = format!("{} {}", parts.method, route.label()),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            service = "gateway",
            http.request.method = %parts.method,
            http.route = route.label(),
            http.response.status_code = tracing::field::Empty,
            request_id = request_id.to_str().unwrap_or_default(),
            trace_id = tracing::field::Empty,
            user_id = tracing::field::Empty,
            )
        };
        if traced {
            common::telemetry::set_parent_from_http(&span, &parts.headers);
            common::telemetry::inject_http(&span, &mut parts.headers);
        }
        let mut exchange = Exchange {
            route,
            upstream: "none",
            peer_ip,
            client_ip: headers::client_ip(peer, &parts.headers, self.trust_forwarded_for),
            request_id,
        };

        // A client that asked for `100 Continue` has not sent its body; reading it now would
        // only invite it to, for a request that is being refused.
        let waits_for_continue = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let mut body = Some(body);
        let mut response = match self
            .dispatch(&mut exchange, parts, &mut body)
            .instrument(span.clone())
            .await
        {
            Ok(response) => response,
            Err(err) => {
                if let Some(body) = body.take()
                    && !waits_for_continue
                {
                    Box::pin(proxy::discard(body)).await;
                }
                let id = exchange.request_id.to_str().unwrap_or_default();
                err.with_request_id(id).into_response()
            }
        };
        response
            .headers_mut()
            .insert(&X_REQUEST_ID, exchange.request_id.clone());

        let status = response.status();
        metrics::request(exchange.route, status, exchange.upstream);
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        if let Some((started, method, uri)) = logged {
            let _entered = span.enter();
            tracing::info!(
                target: "gateway::access",
                request_id = exchange.request_id.to_str().unwrap_or_default(),
                method = %method,
                path = uri.path(),
                status = status.as_u16(),
                route = exchange.route.label(),
                upstream = exchange.upstream,
                client_ip = %exchange.client_ip,
                duration_us = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        response
    }

    async fn dispatch(
        &self,
        exchange: &mut Exchange,
        parts: Parts,
        body: &mut Option<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        if headers::head_size(&parts) > self.max_header_bytes {
            return Err(ApiError::new(
                ErrorCode::HeaderTooLarge,
                format!(
                    "Request headers are larger than {} bytes",
                    self.max_header_bytes
                ),
            ));
        }
        if parts.headers.len() > MAX_REQUEST_HEADERS {
            return Err(ApiError::new(
                ErrorCode::HeaderTooLarge,
                format!("Requests may carry at most {MAX_REQUEST_HEADERS} headers"),
            ));
        }
        match exchange.route {
            // The metrics name every upstream instance: admin listener only.
            Route::Metrics => Err(ApiError::not_found()),
            // Boxed, like every path but the proxied one below: a request's future is as large
            // as its largest path, and is moved and copied whole (into its box, between states).
            Route::Healthz | Route::Readyz => {
                let request = Request::from_parts(parts, Body::empty());
                Ok(Box::pin(self.ops.clone().oneshot(request))
                    .await
                    .unwrap_or_else(|never| match never {}))
            }
            Route::NotFound => Err(ApiError::not_found()),
            Route::ApiDocs => {
                self.limit_ip(exchange.client_ip)?;
                if parts.method == http::Method::GET
                    && parts.uri.path() == OPENAPI_PATH
                    && let Some(notifier) = self.notifier.clone()
                {
                    return Box::pin(self.merged_openapi(exchange, parts, &notifier)).await;
                }
                self.forward(exchange, parts, body, &self.calls_api).await
            }
            Route::ApiDevices => {
                self.limit_ip(exchange.client_ip)?;
                let authorization = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let user = self
                    .verifier
                    .user(authorization)
                    .await
                    .map_err(ApiError::from)?;
                tracing::Span::current().record("user_id", &*user);
                limit(self.user_limit.as_ref(), &*user, "user")?;
                let Some(notifier) = self.notifier.clone() else {
                    return Err(ApiError::new(
                        ErrorCode::DependencyUnavailable,
                        "Device registration is not available: this deployment runs no notifier",
                    ));
                };
                Box::pin(self.forward(exchange, parts, body, &notifier)).await
            }
            Route::Api | Route::ApiInitiate => {
                self.limit_ip(exchange.client_ip)?;
                let authorization = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let user = self
                    .verifier
                    .user(authorization)
                    .await
                    .map_err(ApiError::from)?;
                tracing::Span::current().record("user_id", &*user);
                limit(self.user_limit.as_ref(), &*user, "user")?;
                if exchange.route == Route::ApiInitiate {
                    limit(self.initiate_limit.as_ref(), &*user, "initiate")?;
                }
                self.forward(exchange, parts, body, &self.calls_api).await
            }
            // No access token and no per-IP limit: Agora posts from a few addresses of its own,
            // and calls-api authenticates every notice by its signature (a cheap HMAC over a
            // body capped far below `MAX_BODY_BYTES`).
            Route::AgoraWebhook => {
                Box::pin(self.forward(exchange, parts, body, &self.calls_api)).await
            }
            // Boxed: the Socket.IO path's state is large and rarer than /api.
            Route::SocketIo => Box::pin(self.socket_io(exchange, parts, body)).await,
        }
    }

    fn limit_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        limit(self.ip_limit.as_ref(), &ratelimit::ip_key(ip), "ip")
    }

    async fn read_body(&self, body: &mut Option<Incoming>) -> Result<Bytes, ApiError> {
        self.read_body_capped(body, self.max_body_bytes).await
    }

    async fn read_body_capped(
        &self,
        body: &mut Option<Incoming>,
        max_body_bytes: usize,
    ) -> Result<Bytes, ApiError> {
        // Refused on its Content-Length with the body left in place, so that `handle` decides
        // whether to drain it (not when the client waits for `100 Continue`).
        if body
            .as_ref()
            .is_some_and(|b| b.size_hint().lower() > max_body_bytes as u64)
        {
            return Err(proxy::too_large());
        }
        match body.take() {
            // Most requests through the gateway have no body: the reading state (boxed) is
            // made only for those that do.
            Some(body) if !body.is_end_stream() => {
                Box::pin(proxy::read_body(
                    body,
                    max_body_bytes,
                    self.body_read_timeout,
                ))
                .await
            }
            Some(_) | None => Ok(Bytes::new()),
        }
    }

    /// The upstream request's method, target and headers.
    fn outbound(
        &self,
        parts: Parts,
        peer_ip: &HeaderValue,
        body: Bytes,
        upgrade: bool,
    ) -> Outbound {
        let Parts {
            method,
            uri,
            mut headers,
            ..
        } = parts;
        headers::strip_hop_by_hop(&mut headers, upgrade);
        headers::set_forwarded(&mut headers, peer_ip, self.trust_forwarded_for);
        // The client connection called us by our name; the upstream gets its own (set from
        // the URI by the client), the original goes in X-Forwarded-Host.
        headers.remove(header::HOST);
        // The body has been read already; nobody is waiting for a 100 Continue.
        headers.remove(header::EXPECT);
        if !body.is_empty() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let path_and_query = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Outbound {
            method,
            path_and_query,
            headers,
            body,
        }
    }

    /// Forwards a REST request to `pool` (retried on another instance when safe).
    async fn forward(
        &self,
        exchange: &mut Exchange,
        parts: Parts,
        body: &mut Option<Incoming>,
        pool: &Pool,
    ) -> Result<Response<Body>, ApiError> {
        exchange.upstream = pool.name();
        let cap = if exchange.route == Route::AgoraWebhook {
            self.max_body_bytes.min(route::WEBHOOK_MAX_BODY_BYTES)
        } else {
            self.max_body_bytes
        };
        let body = self.read_body_capped(body, cap).await?;
        let idempotent = proxy::is_idempotent(&parts.method, &parts.headers);
        let outbound = self.outbound(parts, &exchange.peer_ip, body, false);
        // Boxed: each level of `async fn` above holds the state of the levels below it, and the
        // whole is moved (copied) at every level and into the request's box. One allocation
        // here halves the request's future (5 KB to 2.6 KB) and costs less than the copies.
        let (response, _) = Box::pin(self.forwarder.send_balanced(
            pool,
            outbound,
            idempotent,
            self.request_timeout,
        ))
        .await?;
        Ok(self.forwarder.to_client(response))
    }

    /// `GET /api/docs/openapi.json` when notifier runs: calls-api's document with notifier's
    /// paths, schemas and tags merged in, so apps (and client generators) read one document.
    /// Without notifier's part (it is down) the calls-api document is served as it is.
    async fn merged_openapi(
        &self,
        exchange: &mut Exchange,
        parts: Parts,
        notifier: &Pool,
    ) -> Result<Response<Body>, ApiError> {
        exchange.upstream = self.calls_api.name();
        let base = self.fetch_json(&self.calls_api, &parts, exchange).await?;
        let extra = self.fetch_json(notifier, &parts, exchange).await.ok();
        let merged = match extra {
            Some(extra) => crate::openapi::merge(base, extra),
            None => base,
        };
        let body = serde_json::to_vec(&merged).map_err(ApiError::internal_from)?;
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(ApiError::internal_from)
    }

    async fn fetch_json(
        &self,
        pool: &Pool,
        parts: &Parts,
        exchange: &Exchange,
    ) -> Result<serde_json::Value, ApiError> {
        let mut headers = http::HeaderMap::new();
        if let Some(id) = parts.headers.get(common::error::REQUEST_ID_HEADER) {
            headers.insert(common::error::REQUEST_ID_HEADER, id.clone());
        }
        headers::set_forwarded(&mut headers, &exchange.peer_ip, self.trust_forwarded_for);
        let outbound = Outbound {
            method: http::Method::GET,
            path_and_query: PathAndQuery::from_static(OPENAPI_PATH),
            headers,
            body: Bytes::new(),
        };
        let (response, _) = self
            .forwarder
            .send_balanced(pool, outbound, true, self.request_timeout)
            .await?;
        if !response.status().is_success() {
            return Err(ApiError::from_status(StatusCode::BAD_GATEWAY));
        }
        let bytes = http_body_util::Limited::new(response.into_body(), OPENAPI_MAX_BYTES)
            .collect()
            .await
            .map_err(|_| ApiError::from_status(StatusCode::BAD_GATEWAY))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|_| ApiError::from_status(StatusCode::BAD_GATEWAY))
    }

    async fn socket_io(
        &self,
        exchange: &mut Exchange,
        parts: Parts,
        body: &mut Option<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        exchange.upstream = self.signaling.name();
        let sid = sticky::parse_query(parts.uri.query())
            .sid
            .map(Cow::into_owned);
        // A request with a sid continues a session that was admitted when it was opened;
        // only opening one (the handshake) counts against the client's IP.
        if sid.is_none() {
            self.limit_ip(exchange.client_ip)?;
        }
        if headers::is_websocket_upgrade(&parts.headers) {
            return self.websocket(exchange, parts, sid.as_deref()).await;
        }
        let body = self.read_body(body).await?;
        let is_get = parts.method == Method::GET;
        let outbound = self.outbound(parts, &exchange.peer_ip, body, false);
        match sid {
            None => {
                let (response, index) = self
                    .forwarder
                    .send_balanced(&self.signaling, outbound, is_get, self.long_poll_timeout)
                    .await?;
                if is_get && response.status() == StatusCode::OK {
                    Ok(self.learn_session(response, index).await)
                } else {
                    Ok(self.forwarder.to_client(response))
                }
            }
            Some(sid) => self.continue_session(&sid, outbound).await,
        }
    }

    /// Remembers which instance issued the sid in a handshake answer.
    async fn learn_session(&self, response: Response<PooledBody>, index: usize) -> Response<Body> {
        match proxy::read_small(response, HANDSHAKE_MAX_BYTES, self.request_timeout).await {
            Ok((parts, bytes)) => {
                if let Some(sid) = sticky::sid_from_handshake(&bytes) {
                    self.sessions.insert(&sid, index);
                }
                self.forwarder.to_client_buffered(parts, bytes)
            }
            Err(response) => self.forwarder.to_client(response),
        }
    }

    /// A polling request of an existing session: to its instance, found by asking around when
    /// this gateway did not see the handshake (see [`crate::sticky`]).
    async fn continue_session(
        &self,
        sid: &str,
        outbound: Outbound,
    ) -> Result<Response<Body>, ApiError> {
        let pool = &*self.signaling;
        if let Some(index) = self.sessions.get(sid) {
            return match self
                .forwarder
                .send_to(pool, index, &outbound, self.long_poll_timeout)
                .await?
            {
                Ok(response) => {
                    let (response, unknown) = self.inspect_unknown_session(response).await;
                    if unknown {
                        self.sessions.remove(sid);
                    }
                    Ok(response)
                }
                Err(failure) => {
                    // The session died with its instance; the client will open a new one.
                    self.sessions.remove(sid);
                    Err(failure.to_error(pool.name()))
                }
            };
        }

        let mut unknown_answer = None;
        let mut last_failure = None;
        for index in pool.available_instances() {
            match self
                .forwarder
                .send_to(pool, index, &outbound, self.long_poll_timeout)
                .await?
            {
                Ok(response) => {
                    let (response, unknown) = self.inspect_unknown_session(response).await;
                    if unknown {
                        unknown_answer = Some(response);
                        continue;
                    }
                    self.sessions.insert(sid, index);
                    return Ok(response);
                }
                Err(failure) => last_failure = Some(failure),
            }
        }
        match (unknown_answer, last_failure) {
            (Some(response), _) => Ok(response),
            (None, Some(failure)) => Err(failure.to_error(pool.name())),
            (None, None) => Err(proxy::unavailable(pool.name())),
        }
    }

    /// The client response, and whether it is engine.io's "Session ID unknown".
    async fn inspect_unknown_session(
        &self,
        response: Response<PooledBody>,
    ) -> (Response<Body>, bool) {
        if response.status() != StatusCode::BAD_REQUEST {
            return (self.forwarder.to_client(response), false);
        }
        match proxy::read_small(response, UNKNOWN_SESSION_MAX_BYTES, self.request_timeout).await {
            Ok((parts, bytes)) => {
                let unknown = sticky::is_unknown_session(parts.status, &bytes);
                (self.forwarder.to_client_buffered(parts, bytes), unknown)
            }
            Err(response) => (self.forwarder.to_client(response), false),
        }
    }

    /// A WebSocket upgrade: forwarded to the session's instance (or any), then spliced.
    async fn websocket(
        &self,
        exchange: &Exchange,
        mut parts: Parts,
        sid: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "This connection cannot be upgraded",
            ));
        };
        let pool = &*self.signaling;
        // A sid this gateway has not seen goes to any instance: with socketioxide the wrong one
        // accepts and then closes the WebSocket, and the client simply stays on long-polling.
        let pinned = sid.and_then(|sid| self.sessions.get(sid));
        let outbound = self.outbound(parts, &exchange.peer_ip, Bytes::new(), true);
        let mut response = match pinned {
            Some(index) => match self
                .forwarder
                .send_to(pool, index, &outbound, self.request_timeout)
                .await?
            {
                Ok(response) => response,
                Err(failure) => {
                    if let Some(sid) = sid {
                        self.sessions.remove(sid);
                    }
                    return Err(failure.to_error(pool.name()));
                }
            },
            None => {
                self.forwarder
                    .send_balanced(pool, outbound, true, self.request_timeout)
                    .await?
                    .0
            }
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(self.forwarder.to_client(response));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let request_id = exchange.request_id.to_str().unwrap_or_default().to_owned();
        self.websockets
            .splice(client_upgrade, upstream_upgrade, request_id);
        // The 101 goes to the client as the upstream sent it: Upgrade, Connection and the
        // Sec-WebSocket-* answers must reach the client unchanged.
        let (parts, _empty) = response.into_parts();
        Ok(Response::from_parts(parts, Body::empty()))
    }
}

/// Takes a token from `limiter` for `key`, or refuses with 429 and `Retry-After`.
fn limit<K, Q>(
    limiter: Option<&RateLimiter<K>>,
    key: &Q,
    scope: &'static str,
) -> Result<(), ApiError>
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check(key).map_err(|wait| {
        metrics::rate_limited(scope);
        ApiError::rate_limited(ratelimit::retry_after_secs(wait))
    })
}
