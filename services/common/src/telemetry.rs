//! Logging set-up: JSON lines on stdout, filtered by `RUST_LOG` (default `info`).
//!
//! The standalone binary runs every service in one process and each service calls [`init`], so
//! only the first call installs the subscriber and later calls do nothing. Services tell their
//! log lines apart by running inside [`service_span`], whose `service` field is printed with every
//! event (`"span":{"service":"calls-api",...}`).

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the global tracing subscriber once; later calls (from other services in the same
/// process) are no-ops. An unparsable `RUST_LOG` falls back to `info` rather than failing
/// start-up, and says so.
pub fn init(service_name: &str) {
    let mut first = false;
    INSTALLED.get_or_init(|| {
        first = true;
        let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
            Ok(filter) => (filter, None),
            Err(err) => {
                let bad = std::env::var("RUST_LOG")
                    .ok()
                    .map(|value| (value, err.to_string()));
                (EnvFilter::new("info"), bad)
            }
        };
        // `try_init` fails only if another subscriber was set (e.g. by a test harness); logging
        // then goes there, which is fine.
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .try_init();
        if let Some((value, err)) = bad_filter {
            // Only an unset variable is expected; a set-but-invalid one deserves a warning.
            if !value.is_empty() {
                tracing::warn!(rust_log = %value, error = %err, "invalid RUST_LOG; using info");
            }
        }
    });
    if first {
        tracing::info!(service = service_name, "logging initialised");
    }
}

/// A span naming the service; run a service's tasks inside it (`.instrument(span)`) so every
/// log line says which service wrote it.
pub fn service_span(service_name: &str) -> tracing::Span {
    tracing::info_span!("service", service = service_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_can_be_called_more_than_once() {
        init("first");
        init("second");
        tracing::info!("still logging");
    }
}
