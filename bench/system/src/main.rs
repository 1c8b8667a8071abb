//! `bench-system`: the load driver of `make bench-system` (see `bench/system/run.sh`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Plays app users with real sockets against a running deployment and reports calls per
/// second, latencies, errors, and CPU and database work per call, per step.
#[derive(Parser, Debug)]
#[command(name = "bench-system")]
struct Args {
    /// The gateway.
    #[arg(long, env = "BENCH_BASE_URL", default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// Connected users (one socket each).
    #[arg(long, env = "BENCH_USERS", default_value_t = 2000)]
    users: usize,
    /// Calls started per second, one step per comma-separated rate.
    #[arg(long, env = "BENCH_RATES", default_value = "25,50,100,200")]
    rates: String,
    /// Seconds each step starts calls.
    #[arg(long, env = "BENCH_STEP_SECONDS", default_value_t = 30.0)]
    step_seconds: f64,
    /// Percentage of calls that are groups of 4–8.
    #[arg(long, env = "BENCH_GROUP_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    group_percent: u32,
    /// How long a callee lets it ring, milliseconds, `low-high`.
    #[arg(long, env = "BENCH_ANSWER_DELAY_MS", default_value = "100-600")]
    answer_delay_ms: String,
    /// How long an answered call lasts, milliseconds, `low-high`.
    #[arg(long, env = "BENCH_TALK_MS", default_value = "500-1500")]
    talk_ms: String,
    /// The HS256 secret the services verify access tokens with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// The deployment's database, for pg_stat_database (optional).
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// The cluster's pids file (`name pid` per line), for CPU per service (optional).
    #[arg(long, env = "BENCH_PIDS_FILE")]
    pids_file: Option<PathBuf>,
    /// Seconds of idle measurement before the steps (the per-call baseline).
    #[arg(long, env = "BENCH_IDLE_SECONDS", default_value_t = 10.0)]
    idle_seconds: f64,
    /// Where to write the JSON report (optional).
    #[arg(long, env = "BENCH_OUT")]
    out: Option<PathBuf>,
    /// A file to write each step's number to as it starts (optional; for a profiler).
    #[arg(long, env = "BENCH_STEP_FILE")]
    step_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let parsed = (|| {
        Ok::<_, String>(bench_system::Config {
            rates: bench_system::report::parse_rates(&args.rates)?,
            answer_delay_ms: bench_system::report::parse_range_ms(&args.answer_delay_ms)?,
            talk_ms: bench_system::report::parse_range_ms(&args.talk_ms)?,
            base_url: args.base_url.trim_end_matches('/').to_owned(),
            users: args.users.max(2),
            step_seconds: args.step_seconds.max(1.0),
            group_percent: args.group_percent,
            jwt_secret: args.jwt_secret.clone(),
            database_url: args.database_url.clone(),
            pids_file: args.pids_file.clone(),
            idle_seconds: args.idle_seconds.max(1.0),
            out: args.out.clone(),
            step_file: args.step_file.clone(),
        })
    })();
    let config = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-system: {e}");
            return ExitCode::from(2);
        }
    };
    match bench_system::run(config).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-system: {e}");
            ExitCode::FAILURE
        }
    }
}
