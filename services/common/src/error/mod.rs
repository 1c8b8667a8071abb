//! The response envelope of CONTRACT section 1, and everything that keeps framework defaults out
//! of it.
//!
//! Success bodies are `{"statusCode","message","data"}` ([`Envelope`], [`ok`]); error bodies are
//! `{"statusCode","message","error","code","requestId"?,"details"?}` ([`ApiError`]).
//!
//! axum and tower-http answer some failures themselves with plain text (a JSON body that does not
//! parse, a body over the limit, an unknown route, a timeout). Four pieces make sure clients only
//! ever see the envelope:
//!
//! - [`ValidJson`], [`ValidPath`] and [`ValidQuery`] replace axum's extractors and reject with an
//!   [`ApiError`] naming the offending field where serde can tell;
//! - [`not_found`] and [`method_not_allowed`] are router fallbacks ([`with_fallbacks`] installs
//!   both);
//! - [`envelope_middleware`] rewrites any remaining non-JSON error response (4xx/5xx) into the
//!   envelope, and stamps `requestId` into error bodies.
//!
//! # Request ids
//!
//! `requestId` is copied from the request's `x-request-id` header (or the response's, if an
//! inner layer set it). A service wires it as:
//!
//! ```
//! use axum::middleware::from_fn;
//! use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
//!
//! let routes: axum::Router = axum::Router::new();
//! let app: axum::Router = common::error::with_fallbacks(routes)
//!     .layer(from_fn(common::error::envelope_middleware))       // innermost of the three
//!     .layer(PropagateRequestIdLayer::x_request_id())
//!     .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid)); // outermost: runs first
//! ```
//!
//! Every [`ApiError`] response carries a copy of the error in its extensions, so the middleware
//! can re-render it with the id without parsing JSON. Handlers never need to set
//! [`ApiError::request_id`] themselves.
//!
//! The pieces live in submodules, re-exported here: the codes (`code`), [`ApiError`] and its
//! body (`api_error`), the success [`Envelope`] (`envelope`), the extractors (`extract`), and
//! the fallbacks and middleware (`middleware`).

mod api_error;
mod code;
mod envelope;
mod extract;
mod middleware;

pub use api_error::{ApiError, ErrorEnvelope, FieldError};
pub use code::ErrorCode;
pub use envelope::{ApiResult, Envelope, ok};
pub use extract::{ValidJson, ValidPath, ValidQuery, parse_json};
pub use middleware::{envelope_middleware, method_not_allowed, not_found, with_fallbacks};

/// The default limit on request bodies (CONTRACT section 1: 64 KiB). Services apply it with
/// `axum::extract::DefaultBodyLimit::max(DEFAULT_BODY_LIMIT)`; [`ValidJson`] honours whatever
/// limit is in force and answers 413 `PAYLOAD_TOO_LARGE` past it.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
