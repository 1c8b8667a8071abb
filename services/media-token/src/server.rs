//! `run(config, listener, shutdown)`: gRPC (token service, health, reflection) and HTTP
//! (`/healthz`, `/readyz`, `/metrics`) multiplexed on one listener.
//!
//! One port keeps the Kubernetes wiring simple (the gRPC health probe and the Prometheus scrape
//! hit the same container port); hyper tells HTTP/2 gRPC from HTTP/1.1 by the connection preface.

use std::future::Future;

use axum::serve::ListenerExt;
use calls_proto::mediatoken::v1::media_token_service_server::MediaTokenServiceServer;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::grpc::{MediaTokenGrpc, ServiceAuth};
use crate::signer::Signer;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the router serving every gRPC service and the operational HTTP endpoints.
pub async fn router(config: &Config) -> Result<axum::Router, ServeError> {
    config.agora.validate().map_err(ServeError::Config)?;
    if config.service_tokens.is_empty() {
        return Err(ServeError::Config(
            "MEDIA_TOKEN_SERVICE_TOKENS must list at least one credential".into(),
        ));
    }
    let signer = Signer::new(&config.agora);
    let auth = ServiceAuth::new(&config.service_tokens);
    let tokens = MediaTokenServiceServer::with_interceptor(
        MediaTokenGrpc::new(signer.clone()),
        move |req| auth.check(req),
    );

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<MediaTokenServiceServer<MediaTokenGrpc>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(calls_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let grpc = tonic::service::Routes::new(tokens)
        .add_service(health_service)
        .add_service(reflection)
        .prepare()
        .into_axum_router();

    let _ = common::metrics::prometheus();
    // Always ready once started: the service has no dependencies; unset Agora credentials are a
    // per-request answer, not a reason to pull the pod from rotation.
    let ops = common::health::router(|| async { Ok(()) });
    Ok(grpc.merge(ops))
}

/// Serves until `shutdown` completes, then finishes in-flight RPCs and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = router(&config).await?;
    let configured = config.agora.app_id.is_some();
    tracing::info!(
        addr = %listener.local_addr()?,
        agora_configured = configured,
        "media-token listening (gRPC + HTTP)"
    );
    if !configured {
        tracing::warn!(
            "AGORA_APP_ID / AGORA_APP_CERTIFICATE unset: IssueRtcToken answers FAILED_PRECONDITION"
        );
    }
    // Token requests are tiny and latency-bound: Nagle would hold responses back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("media-token stopped");
    Ok(())
}
