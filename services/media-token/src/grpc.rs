//! The `calls.mediatoken.v1.MediaTokenService` implementation and its service-credential check.

use std::time::Instant;

use agora_token::RtcRole;
use calls_proto::mediatoken::v1 as pb;
use common::config::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::signer::{self, Identity, RtcTokenSpec, SignError, Signer};

/// The gRPC service: thin translation between protobuf and [`Signer`], plus metrics.
#[derive(Clone, Debug)]
pub struct MediaTokenGrpc {
    signer: Signer,
}

impl MediaTokenGrpc {
    pub fn new(signer: Signer) -> Self {
        Self { signer }
    }
}

fn role_label(role: RtcRole) -> &'static str {
    match role {
        RtcRole::Publisher => "publisher",
        RtcRole::Subscriber => "subscriber",
    }
}

/// Records the outcome of one RPC: requests by method and code, latency, errors by code.
fn observe<T>(method: &'static str, started: Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    let code_label = code_name(code);
    tracing::Span::current().record("rpc.grpc.status_code", code_label);
    metrics::counter!("grpc_server_requests_total", "service" => "media-token", "method" => method, "code" => code_label)
        .increment(1);
    metrics::histogram!("grpc_server_request_duration_seconds", "service" => "media-token", "method" => method)
        .record(started.elapsed().as_secs_f64());
    if code != tonic::Code::Ok {
        metrics::counter!("media_token_errors_total", "code" => code_label).increment(1);
    }
}

/// Lower-snake gRPC code names, stable for metric labels.
pub fn code_name(code: tonic::Code) -> &'static str {
    common::metrics::grpc_code_name(code as i32)
}

/// The server span of one RPC, continuing the caller's trace from the request's metadata.
fn server_span<T>(method: &'static str, request: &Request<T>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = format!("calls.mediatoken.v1.MediaTokenService/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let get = |name| request.metadata().get(name).and_then(|v| v.to_str().ok());
    common::telemetry::set_parent(
        &span,
        get(common::telemetry::TRACEPARENT),
        get(common::telemetry::TRACESTATE),
    );
    span
}

impl From<SignError> for Status {
    fn from(err: SignError) -> Self {
        match err {
            SignError::NotConfigured => Status::failed_precondition(err.to_string()),
            SignError::InvalidArgument(msg) => Status::invalid_argument(msg),
            SignError::Build(e) => Status::invalid_argument(e.to_string()),
        }
    }
}

fn spec_from(req: pb::IssueRtcTokenRequest) -> Result<RtcTokenSpec, Status> {
    let identity = match req.identity {
        Some(pb::issue_rtc_token_request::Identity::UserAccount(account)) => {
            Identity::Account(account)
        }
        Some(pb::issue_rtc_token_request::Identity::Uid(uid)) => Identity::Uid(uid),
        None => return Err(Status::invalid_argument("set user_account or uid")),
    };
    let role = match pb::RtcRole::try_from(req.role) {
        Ok(pb::RtcRole::Unspecified | pb::RtcRole::Publisher) => RtcRole::Publisher,
        Ok(pb::RtcRole::Subscriber) => RtcRole::Subscriber,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown role {}",
                req.role
            )));
        }
    };
    Ok(RtcTokenSpec {
        channel_name: req.channel_name,
        identity,
        role,
        token_ttl: (req.token_ttl_seconds != 0).then_some(req.token_ttl_seconds),
        privilege_ttl: (req.privilege_ttl_seconds != 0).then_some(req.privilege_ttl_seconds),
    })
}

#[tonic::async_trait]
impl pb::media_token_service_server::MediaTokenService for MediaTokenGrpc {
    async fn issue_rtc_token(
        &self,
        request: Request<pb::IssueRtcTokenRequest>,
    ) -> Result<Response<pb::IssueRtcTokenResponse>, Status> {
        let started = Instant::now();
        let span = server_span("IssueRtcToken", &request);
        let _entered = span.enter();
        let result = spec_from(request.into_inner()).and_then(|spec| {
            let issued = self.signer.issue(&spec)?;
            metrics::counter!("media_token_tokens_issued_total", "role" => role_label(spec.role))
                .increment(1);
            Ok(Response::new(pb::IssueRtcTokenResponse {
                token: issued.token,
                app_id: issued.app_id,
                expires_at_unix: issued.expires_at,
                expires_at: signer::rfc3339(issued.expires_at),
                issued_at_unix: issued.issued_at,
            }))
        });
        if let Err(status) = &result {
            tracing::info!(
                code = code_name(status.code()),
                message = status.message(),
                "token refused"
            );
        }
        observe("IssueRtcToken", started, &result);
        result
    }

    async fn inspect_token(
        &self,
        request: Request<pb::InspectTokenRequest>,
    ) -> Result<Response<pb::InspectTokenResponse>, Status> {
        let started = Instant::now();
        let span = server_span("InspectToken", &request);
        let _entered = span.enter();
        let result = self.inspect(&request.into_inner().token);
        observe("InspectToken", started, &result);
        result
    }
}

impl MediaTokenGrpc {
    fn inspect(&self, token: &str) -> Result<Response<pb::InspectTokenResponse>, Status> {
        let decoded = agora_token::decode(token)
            .map_err(|e| Status::invalid_argument(format!("not an AccessToken2: {e}")))?;
        let cert = self.signer.certificate().map(Secret::expose);
        let inspection = decoded.inspect(cert);
        let services = inspection
            .services
            .iter()
            .map(|s| {
                let (channel_name, account) = match &s.service {
                    agora_token::Service::Rtc {
                        channel_name,
                        account,
                        ..
                    }
                    | agora_token::Service::Streaming {
                        channel_name,
                        account,
                        ..
                    }
                    | agora_token::Service::Fcdn {
                        channel_name,
                        account,
                        ..
                    } => (channel_name.clone(), account.clone()),
                    _ => (String::new(), String::new()),
                };
                pb::TokenService {
                    service_type: u32::from(s.service.service_type()),
                    type_name: s.service.name().to_owned(),
                    channel_name,
                    account,
                    privileges: s
                        .privileges
                        .iter()
                        .map(|p| pb::Privilege {
                            name: p.name.to_string(),
                            id: u32::from(p.id),
                            expire: p.expire,
                            expires_at_unix: i64::try_from(p.expires_at).unwrap_or(i64::MAX),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::InspectTokenResponse {
            version: inspection.version.to_owned(),
            app_id: inspection.app_id.clone(),
            issue_ts: inspection.issue_ts,
            expire: inspection.expire,
            expires_at_unix: i64::try_from(inspection.expires_at).unwrap_or(i64::MAX),
            salt: inspection.salt,
            services,
            signature_valid: inspection.signature_valid.unwrap_or(false),
            app_id_matches: self.signer.app_id() == Some(inspection.app_id.as_str()),
        }))
    }
}

/// Checks `authorization: Bearer <credential>` against the configured service credentials.
///
/// Both sides are hashed first so the constant-time comparison also hides the credential's
/// length; every configured credential is compared, so timing does not reveal which one matched.
#[derive(Clone)]
pub struct ServiceAuth {
    digests: std::sync::Arc<Vec<[u8; 32]>>,
}

impl ServiceAuth {
    pub fn new(tokens: &[Secret]) -> Self {
        let digests = tokens.iter().map(|t| digest(t.expose())).collect();
        Self {
            digests: std::sync::Arc::new(digests),
        }
    }

    pub fn check<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let Some(presented) = presented else {
            metrics::counter!("media_token_errors_total", "code" => "unauthenticated").increment(1);
            return Err(Status::unauthenticated("missing bearer service credential"));
        };
        let presented = digest(presented);
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented));
        if bool::from(matched) {
            Ok(request)
        } else {
            metrics::counter!("media_token_errors_total", "code" => "unauthenticated").increment(1);
            Err(Status::unauthenticated("invalid service credential"))
        }
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}
