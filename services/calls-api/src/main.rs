//! `calls-api` (serve, the default) and `calls-api migrate`.

use std::process::ExitCode;

use clap::Parser;

/// `calls-api [OPTIONS]`: serve (configuration from the environment, flags override).
#[derive(Parser)]
#[command(
    name = "calls-api",
    version,
    about = "Calls REST API, state machine and persistence"
)]
#[command(after_help = "Run `calls-api migrate` to apply the database migrations and exit.")]
struct Serve {
    #[command(flatten)]
    config: calls_api::Config,
}

/// `calls-api migrate`: apply the database migrations and exit (run before rolling out a new
/// version).
#[derive(Parser)]
#[command(name = "calls-api migrate")]
struct Migrate {
    #[command(flatten)]
    database: calls_api::DatabaseConfig,
}

fn main() -> ExitCode {
    // A subcommand would make every serve flag optional to clap; two parsers keep `serve`'s
    // required variables required.
    let migrate = std::env::args().nth(1).as_deref() == Some("migrate");
    let (serve, migrate) = if migrate {
        let args = std::env::args()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, a)| a);
        let parsed = Migrate::try_parse_from(args).unwrap_or_else(|e| e.exit());
        (None, Some(parsed))
    } else {
        (Some(common::config::parse_or_exit::<Serve>()), None)
    };
    common::telemetry::init("calls-api");
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        eprintln!("calls-api: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async move {
        if let Some(Migrate { database }) = migrate {
            let store = calls_api::store::Store::connect(database.url.expose(), 1).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        let Some(Serve { config }) = serve else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        calls_api::run(config, listener, common::shutdown::signal()).await
    });
    common::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calls-api: {e}");
            ExitCode::FAILURE
        }
    }
}
