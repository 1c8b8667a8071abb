//! Media sessions: asks media-token (gRPC, with the service credential) for an Agora RTC token
//! bound to the call's channel and the caller's account.
//!
//! calls-api never sees the Agora certificate. In the standalone binary media-token runs in the
//! same process on a loopback listener, so this client is the only code path in every topology.

use std::time::Duration;
use tracing::Instrument;

use calls_proto::mediatoken::v1::{
    self as pb, media_token_service_client::MediaTokenServiceClient,
};
use common::config::Secret;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// What `POST /calls/:id/media/session` returns in `data` (CONTRACT section 4).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaSession {
    /// Always `agora`.
    #[schema(example = "agora")]
    pub provider: &'static str,
    /// Always `sfu`: Agora routes media through its servers, for 1:1 and groups alike.
    #[schema(example = "sfu")]
    pub mode: &'static str,
    /// `call_<callId>`.
    pub channel_name: String,
    /// The caller's user id, to pass to Agora's `joinChannelWithUserAccount`.
    pub user_account: String,
    pub app_id: String,
    /// Agora AccessToken2 (`007…`) with join and publish privileges.
    pub rtc_token: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media provider not configured")]
    NotConfigured,
    #[error("media-token unavailable: {0}")]
    Unavailable(String),
    #[error("media-token refused the request: {0}")]
    Rejected(String),
}

/// A cheap-to-clone client of the media-token service.
#[derive(Clone)]
pub struct MediaClient {
    client: Option<MediaTokenServiceClient<Channel>>,
    credential: Option<Secret>,
    timeout: Duration,
}

impl std::fmt::Debug for MediaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaClient")
            .field("configured", &self.client.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl MediaClient {
    /// A lazily connecting client: calls-api starts even while media-token is still starting.
    pub fn new(
        url: Option<&str>,
        credential: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = match url {
            None => None,
            Some(url) => {
                let endpoint = Endpoint::from_shared(url.to_owned())
                    .map_err(|e| format!("MEDIA_TOKEN_URL is not a valid URL: {e}"))?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .tcp_nodelay(true);
                Some(MediaTokenServiceClient::new(endpoint.connect_lazy()))
            }
        };
        Ok(Self {
            client,
            credential,
            timeout,
        })
    }

    /// Signs a publisher token for `account` in `channel`.
    pub async fn session(&self, channel: &str, account: &str) -> Result<MediaSession, MediaError> {
        let Some(mut client) = self.client.clone() else {
            return Err(MediaError::NotConfigured);
        };
        let mut request = tonic::Request::new(pb::IssueRtcTokenRequest {
            channel_name: channel.to_owned(),
            identity: Some(pb::issue_rtc_token_request::Identity::UserAccount(
                account.to_owned(),
            )),
            role: pb::RtcRole::Publisher as i32,
            token_ttl_seconds: 0,
            privilege_ttl_seconds: 0,
        });
        request.set_timeout(self.timeout);
        if let Some(credential) = &self.credential {
            let value = format!("Bearer {}", credential.expose())
                .parse()
                .map_err(|_| {
                    MediaError::Rejected("service credential is not a valid header value".into())
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = "calls.mediatoken.v1.MediaTokenService/IssueRtcToken",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.method = "IssueRtcToken",
            rpc.grpc.status_code = tracing::field::Empty,
        );
        if let Some((traceparent, _)) = common::telemetry::traceparent(&span)
            && let Ok(value) = traceparent.parse()
        {
            request
                .metadata_mut()
                .insert(common::telemetry::TRACEPARENT, value);
        }
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, client.issue_rtc_token(request))
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        let code = match &result {
            Err(_) => "deadline_exceeded",
            Ok(Err(status)) => common::metrics::grpc_code_name(status.code() as i32),
            Ok(Ok(_)) => "ok",
        };
        span.record("rpc.grpc.status_code", code);
        metrics::histogram!("calls_api_media_token_duration_seconds").record(elapsed);
        metrics::counter!("grpc_client_requests_total", "service" => "calls-api", "method" => "IssueRtcToken", "code" => code)
            .increment(1);
        let response = match result {
            Err(_) => return Err(MediaError::Unavailable("timed out".into())),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::FailedPrecondition => MediaError::NotConfigured,
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
                    | tonic::Code::ResourceExhausted => {
                        MediaError::Unavailable(status.message().to_owned())
                    }
                    _ => MediaError::Rejected(format!("{:?}: {}", status.code(), status.message())),
                });
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        Ok(MediaSession {
            provider: "agora",
            mode: "sfu",
            channel_name: channel.to_owned(),
            user_account: account.to_owned(),
            app_id: response.app_id,
            rtc_token: response.token,
            expires_at: response.expires_at,
        })
    }
}
