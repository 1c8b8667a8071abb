//! `signaling`: the Socket.IO `/calls` service (see the library docs).

use std::process::ExitCode;

use signaling::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = common::config::parse_or_exit();
    common::telemetry::init("signaling");
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "cannot listen on {} (SIGNALING_LISTEN): {err}",
                config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let code = match signaling::run(config, listener, common::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "signaling failed");
            eprintln!("signaling: {err}");
            ExitCode::FAILURE
        }
    };
    common::telemetry::shutdown();
    code
}
