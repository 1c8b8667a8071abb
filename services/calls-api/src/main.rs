//! `calls-api` (serve, the default) and `calls-api migrate`.

use std::process::ExitCode;

use clap::Parser;
use common::process::{Runtime, bind};

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

enum Command {
    Serve(Box<calls_api::Config>),
    Migrate(calls_api::DatabaseConfig),
}

fn main() -> ExitCode {
    // A subcommand would make every serve flag optional to clap; two parsers keep `serve`'s
    // required variables required.
    let command = if std::env::args().nth(1).as_deref() == Some("migrate") {
        let args = std::env::args()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, a)| a);
        let Migrate { database } = Migrate::try_parse_from(args).unwrap_or_else(|e| e.exit());
        Command::Migrate(database)
    } else {
        let Serve { config } = common::config::parse_or_exit();
        Command::Serve(Box::new(config))
    };
    common::process::run("calls-api", Runtime::default(), |shutdown| async move {
        match command {
            Command::Migrate(database) => {
                let store = calls_api::store::Store::connect(database.url.expose(), 1).await?;
                store.migrate().await?;
                tracing::info!("migrations applied");
            }
            Command::Serve(config) => {
                let listener = bind(config.listen, "CALLS_API_LISTEN").await?;
                calls_api::run(*config, listener, shutdown.cancelled_owned()).await?;
            }
        }
        Ok(())
    })
}
