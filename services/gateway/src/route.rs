//! Which route a request takes, from its method and path alone.
//!
//! The gateway forwards only what it recognises: `/api/*` to calls-api, `/socket.io/*` to
//! signaling, `/webhooks/agora` to calls-api (Agora's Notification Center, authenticated by its
//! signature rather than an access token), and its own operational endpoints. Everything else, `/internal/*` in particular,
//! gets the same 404 as a route that does not exist, so nothing reveals that internal routes are
//! there. Paths with dot segments (`/api/../internal`, also percent-encoded) are refused outright
//! rather than normalised: no legitimate client sends them, and an upstream that resolved them
//! differently from the gateway could otherwise be reached past the routing rules.

use http::Method;

/// A request's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Route {
    /// `GET /healthz`: the gateway itself is alive.
    Healthz,
    /// `GET /readyz`: every pool has a healthy instance.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `/api/docs` and below: calls-api's Swagger UI and OpenAPI document, public (the
    /// document merged with notifier's part when notifier is configured).
    ApiDocs,
    /// Any other `/api` path: calls-api, access token required.
    Api,
    /// `POST /api/v1/calls/rooms/:chatRoomId/initiate` and `POST /api/v1/calls/:id/invite`:
    /// like [`Route::Api`], with a stricter rate limit (both ring other people's phones).
    ApiInitiate,
    /// `/socket.io/*`: signaling (WebSocket and long-polling).
    SocketIo,
    /// Not routed: unknown paths, `/internal/*`, dot segments.
    NotFound,
    /// `/api/v1/devices` and below: notifier's device registry, access token required.
    ApiDevices,
    /// `/webhooks/agora`: Agora's Notification Center posting channel events to calls-api. No
    /// access token (Agora has none): calls-api checks the `Agora-Signature-V2` HMAC. The body
    /// is capped at [`WEBHOOK_MAX_BODY_BYTES`].
    AgoraWebhook,
}

/// The largest body accepted on [`Route::AgoraWebhook`] (or the gateway's `MAX_BODY_BYTES`,
/// if smaller): an NCS notice is a few hundred bytes, and nobody has authenticated yet when it
/// is read.
pub const WEBHOOK_MAX_BODY_BYTES: usize = 64 * 1024;

impl Route {
    /// Number of routes.
    pub const COUNT: usize = 10;

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `route` label of `gateway_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Metrics => "metrics",
            Self::ApiDocs => "api_docs",
            Self::Api => "api",
            Self::ApiInitiate => "api_initiate",
            Self::SocketIo => "socket_io",
            Self::NotFound => "not_found",
            Self::ApiDevices => "api_devices",
            Self::AgoraWebhook => "agora_webhook",
        }
    }
}

/// Classifies a request.
pub fn classify(method: &Method, path: &str) -> Route {
    if !path.starts_with('/') || has_dot_segment(path) {
        return Route::NotFound;
    }
    match path {
        "/healthz" => return Route::Healthz,
        "/readyz" => return Route::Readyz,
        "/metrics" => return Route::Metrics,
        "/webhooks/agora" => return Route::AgoraWebhook,
        _ => {}
    }
    if under(path, "/api/docs") {
        return Route::ApiDocs;
    }
    if under(path, "/api/v1/devices") {
        return Route::ApiDevices;
    }
    if under(path, "/api") {
        return if method == Method::POST && (is_initiate(path) || is_invite(path)) {
            Route::ApiInitiate
        } else {
            Route::Api
        };
    }
    if under(path, "/socket.io") {
        return Route::SocketIo;
    }
    // `/internal/*` lands here too, on purpose.
    Route::NotFound
}

/// `path` is `prefix` or below it (`/api` matches `/api` and `/api/x`, not `/apix`).
fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `/api/v1/calls/:id/invite`, with a non-empty id.
fn is_invite(path: &str) -> bool {
    let mut segments = path.split('/').skip(1);
    matches!(
        (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ),
        (Some("api"), Some("v1"), Some("calls"), Some(id), Some("invite"), None)
            if !id.is_empty()
    )
}

fn is_initiate(path: &str) -> bool {
    let mut segments = path.split('/').skip(1);
    matches!(
        (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ),
        (Some("api"), Some("v1"), Some("calls"), Some("rooms"), Some(room), Some("initiate"), None)
            if !room.is_empty()
    )
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let mut dots = 0;
        let mut rest = segment;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                rest = r;
            } else if rest
                .as_bytes()
                .get(..3)
                .is_some_and(|b| b.eq_ignore_ascii_case(b"%2e"))
            {
                // The three bytes are ASCII, so index 3 is a character boundary.
                rest = rest.get(3..).unwrap_or_default();
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_go_to_calls_api_and_docs_are_their_own_route() {
        assert_eq!(classify(&Method::GET, "/api/v1/calls"), Route::Api);
        assert_eq!(classify(&Method::GET, "/api"), Route::Api);
        assert_eq!(classify(&Method::GET, "/api/docs"), Route::ApiDocs);
        assert_eq!(
            classify(&Method::GET, "/api/docs/openapi.json"),
            Route::ApiDocs
        );
        assert_eq!(classify(&Method::GET, "/api/docsx"), Route::Api);
        assert_eq!(classify(&Method::GET, "/apix"), Route::NotFound);
    }

    #[test]
    fn the_device_registry_is_its_own_route() {
        assert_eq!(classify(&Method::GET, "/api/v1/devices"), Route::ApiDevices);
        assert_eq!(
            classify(&Method::PUT, "/api/v1/devices/iphone-1"),
            Route::ApiDevices
        );
        assert_eq!(classify(&Method::GET, "/api/v1/devicesx"), Route::Api);
        assert_eq!(
            classify(&Method::GET, "/api/v1/devices/../calls"),
            Route::NotFound
        );
    }

    #[test]
    fn only_a_post_to_a_room_initiate_is_the_initiate_route() {
        assert_eq!(
            classify(&Method::POST, "/api/v1/calls/rooms/room-42/initiate"),
            Route::ApiInitiate
        );
        assert_eq!(
            classify(&Method::GET, "/api/v1/calls/rooms/room-42/initiate"),
            Route::Api
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/calls/rooms//initiate"),
            Route::Api
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/calls/rooms/r/initiate/x"),
            Route::Api
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/calls/rooms/r/active"),
            Route::Api
        );
    }

    #[test]
    fn inviting_into_a_call_shares_the_initiate_route_because_it_rings_phones_too() {
        assert_eq!(
            classify(
                &Method::POST,
                "/api/v1/calls/0193a2b4-7c1d-7f00-8000-000000000001/invite"
            ),
            Route::ApiInitiate
        );
        assert_eq!(classify(&Method::GET, "/api/v1/calls/c/invite"), Route::Api);
        assert_eq!(classify(&Method::POST, "/api/v1/calls//invite"), Route::Api);
        assert_eq!(
            classify(&Method::POST, "/api/v1/calls/c/invite/x"),
            Route::Api
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/calls/c/participants/u/remove"),
            Route::Api
        );
    }

    #[test]
    fn agoras_webhook_is_its_own_route_and_nothing_else_under_webhooks_is_routed() {
        assert_eq!(
            classify(&Method::POST, "/webhooks/agora"),
            Route::AgoraWebhook
        );
        assert_eq!(classify(&Method::POST, "/webhooks"), Route::NotFound);
        assert_eq!(
            classify(&Method::POST, "/webhooks/agora/x"),
            Route::NotFound
        );
        assert_eq!(classify(&Method::POST, "/webhooks/other"), Route::NotFound);
    }

    #[test]
    fn socket_io_and_operational_routes_are_recognised() {
        assert_eq!(classify(&Method::GET, "/socket.io/"), Route::SocketIo);
        assert_eq!(classify(&Method::GET, "/socket.io"), Route::SocketIo);
        assert_eq!(classify(&Method::GET, "/healthz"), Route::Healthz);
        assert_eq!(classify(&Method::GET, "/readyz"), Route::Readyz);
        assert_eq!(classify(&Method::GET, "/metrics"), Route::Metrics);
    }

    #[test]
    fn internal_and_unknown_paths_are_not_routed() {
        for path in [
            "/internal/v1/rooms/r/members",
            "/internal",
            "/",
            "/favicon.ico",
            "/api/../internal/v1/rooms/r/members",
            "/api/%2e%2E/internal/v1/rooms/r/members",
            "/api/v1/./calls",
            "/socket.io/%2e/x",
            "*",
        ] {
            assert_eq!(classify(&Method::GET, path), Route::NotFound, "{path}");
        }
        // Dots inside a segment are ordinary characters.
        assert_eq!(
            classify(&Method::GET, "/api/docs/openapi.json"),
            Route::ApiDocs
        );
        assert_eq!(classify(&Method::GET, "/api/v1/calls/...x"), Route::Api);
        assert_eq!(classify(&Method::GET, "/api/v1/calls/..."), Route::Api);
    }
}
