//! `notifier`: device registry and pushes (see the library docs).

use std::process::ExitCode;

use clap::Parser;

/// `notifier [OPTIONS]`: configuration from the environment, flags override.
#[derive(Parser)]
#[command(
    name = "notifier",
    version,
    about = "Rings phones whose app is asleep: device registry, APNs VoIP and FCM pushes from the call events"
)]
struct Cli {
    #[command(flatten)]
    config: notifier::Config,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { config } = common::config::parse_or_exit::<Cli>();
    common::telemetry::init("notifier");
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "cannot listen on {} (NOTIFIER_LISTEN): {err}",
                config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let code = match notifier::run(config, listener, common::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "notifier failed");
            eprintln!("notifier: {err}");
            ExitCode::FAILURE
        }
    };
    common::telemetry::shutdown();
    code
}
