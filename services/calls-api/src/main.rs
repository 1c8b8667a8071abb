//! `calls-api` (serve, the default) and `calls-api migrate`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "calls-api", version, about = "Calls REST API, state machine and persistence")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Option<calls_api::Config>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations and exit (run before rolling out a new version).
    Migrate(calls_api::DatabaseConfig),
}

fn main() -> ExitCode {
    let cli: Cli = common::config::parse_or_exit();
    common::telemetry::init("calls-api");
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        eprintln!("calls-api: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async move {
        match (cli.command, cli.serve) {
            (Some(Command::Migrate(db)), _) => {
                let store = calls_api::store::Store::connect(db.url.expose(), 1).await?;
                store.migrate().await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            (None, Some(config)) => {
                let listener = tokio::net::TcpListener::bind(config.listen).await?;
                calls_api::run(config, listener, common::shutdown::signal()).await
            }
            (None, None) => Err(calls_api::RunError::Config("nothing to do".into())),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calls-api: {e}");
            ExitCode::FAILURE
        }
    }
}
