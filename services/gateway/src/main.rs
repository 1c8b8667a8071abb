//! `gateway`: the public edge. Configuration comes from the environment (see `gateway --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let config: gateway::Config = common::config::parse_or_exit();
    common::telemetry::init("gateway");
    // One thread means Tokio's single-threaded scheduler: it skips the work-stealing machinery
    // that a lone worker cannot use anyway, which is measurably faster for a proxy.
    let mut runtime = match config.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gateway: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!(
                    "gateway: cannot listen on {} (GATEWAY_LISTEN): {err}",
                    config.listen
                );
                return ExitCode::FAILURE;
            }
        };
        match gateway::run(config, listener, common::shutdown::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "gateway failed");
                eprintln!("gateway: {err}");
                ExitCode::FAILURE
            }
        }
    });
    common::telemetry::shutdown();
    code
}
