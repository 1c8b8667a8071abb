//! How a service binary starts and stops, written once for every `main.rs`.
//!
//! Every service process does the same things in the same order, and getting the order wrong is
//! easy to miss in review: configuration is parsed before anything else (so `--help` and a bad
//! variable print and exit without a log line), telemetry is installed before the runtime exists
//! (its exporter has a runtime of its own), SIGINT/SIGTERM cancel one [`CancellationToken`] the
//! service is handed, and traces are flushed after the service has stopped, so the last spans of
//! a shutdown are exported too. A failure ends as `<name>: <error>` on stderr (and a log line)
//! with a failing exit code.
//!
//! A binary configured only from the environment is one call:
//!
//! ```no_run
//! # #[derive(clap::Parser)] struct Config { #[arg(long, env = "DEMO_LISTEN")] listen: std::net::SocketAddr }
//! # async fn serve(_: Config, _: tokio::net::TcpListener, _: impl std::future::Future<Output = ()>) -> std::io::Result<()> { Ok(()) }
//! fn main() -> std::process::ExitCode {
//!     common::process::main("demo", |config: Config, shutdown| async move {
//!         let listener = common::process::bind(config.listen, "DEMO_LISTEN").await?;
//!         serve(config, listener, shutdown.cancelled_owned()).await?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! Binaries that parse something else first (subcommands, a runtime size from the
//! configuration) call [`crate::config::parse_or_exit`] themselves and then [`run`].

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a service's start-up or run may fail with; printed as `<name>: <error>`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The Tokio runtime a service runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Runtime {
    /// The multi-threaded scheduler with one worker per core.
    #[default]
    MultiThread,
    /// Exactly this many workers. One means the single-threaded scheduler: it skips the
    /// work-stealing machinery a lone worker cannot use, which is measurably faster for a proxy.
    Workers(usize),
}

impl Runtime {
    /// [`Runtime::Workers`] when a size is configured, else [`Runtime::MultiThread`].
    pub fn from_workers(workers: Option<usize>) -> Self {
        workers.map_or(Self::MultiThread, Self::Workers)
    }

    fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self {
            Self::Workers(1) => tokio::runtime::Builder::new_current_thread(),
            Self::Workers(workers) => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(workers.max(1));
                builder
            }
            Self::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }
}

/// The whole `main` of a service configured from the environment (and flags): parses `C` with
/// [`crate::config::parse_or_exit`], then [`run`]s `serve` on the default runtime.
pub fn main<C, F, Fut>(name: &'static str, serve: F) -> ExitCode
where
    C: clap::Parser,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let config: C = crate::config::parse_or_exit();
    run(name, Runtime::default(), |shutdown| serve(config, shutdown))
}

/// Runs a service process whose arguments are already parsed: installs telemetry as `name`,
/// builds `runtime`, and runs `serve` on it with a token that the first SIGINT or SIGTERM
/// cancels. Traces are flushed once `serve` has returned. An error is logged and printed as
/// `<name>: <error>`, and the process exit code says it failed.
pub fn run<F, Fut>(name: &'static str, runtime: Runtime, serve: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    crate::telemetry::init(name);
    let code = execute(name, runtime, serve);
    crate::telemetry::shutdown();
    code
}

/// [`run`] without the process-wide telemetry set-up, which tests must not tear down.
fn execute<F, Fut>(name: &'static str, runtime: Runtime, serve: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        // Dropped with the runtime if the service stops for another reason first.
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            on_signal.cancel();
        });
        serve(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(service = name, error = %err, "service failed");
            eprintln!("{name}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({variable}): {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The environment variable that configures it: what the operator has to change.
    pub variable: &'static str,
    /// Why the bind failed (in use, no permission, no such address).
    #[source]
    pub source: std::io::Error,
}

/// Binds a service's listener on `addr`, configured by the environment variable `variable`,
/// which the error names.
pub async fn bind(addr: SocketAddr, variable: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        addr,
        variable,
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_service_that_returns_ok_exits_with_success() {
        let code = execute("process-test", Runtime::Workers(1), |shutdown| async move {
            assert!(!shutdown.is_cancelled());
            Ok(())
        });
        assert_eq!(code, ExitCode::SUCCESS);
    }

    #[test]
    fn a_service_that_fails_exits_with_failure() {
        let code = execute("process-test", Runtime::Workers(2), |_| async {
            Err::<(), Error>("it broke".into())
        });
        assert_eq!(code, ExitCode::FAILURE);
    }

    #[test]
    fn a_runtime_size_chooses_the_scheduler() {
        assert_eq!(Runtime::from_workers(None), Runtime::MultiThread);
        assert_eq!(Runtime::from_workers(Some(1)), Runtime::Workers(1));
        let single = Runtime::Workers(1).build().unwrap();
        assert_eq!(
            single.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        let multi = Runtime::Workers(2).build().unwrap();
        assert_eq!(
            multi.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
    }

    #[tokio::test]
    async fn a_bind_failure_names_the_variable_and_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr, "DEMO_LISTEN").await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains("(DEMO_LISTEN)"), "{message}");
    }
}
