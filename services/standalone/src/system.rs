//! Starting the five services in one process, wired together, and stopping them together.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use common::shutdown::CancellationToken;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The default database of the embedded mode: a file under `./data`, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/calls.db";
/// notifier's own file beside it when `DATABASE_URL` is unset (a second SQLite file keeps the
/// two services' writers from queueing on one lock).
pub const DEFAULT_NOTIFIER_DATABASE_URL: &str = "sqlite://data/notifier.db";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the data directory {}: {source}", .path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The running system.
pub struct Running {
    /// Where apps connect (the gateway).
    pub addr: SocketAddr,
    /// The database in use (`sqlite://…` or `postgres://…`), without credentials.
    pub database: String,
    /// Whether `AGORA_APP_ID` / `AGORA_APP_CERTIFICATE` are set (media sessions enabled).
    pub media_enabled: bool,
    /// Where the chat backend writes room members (`INTERNAL_API_TOKEN` set), if anywhere.
    pub internal_api: Option<String>,
    /// Where webhook endpoints are managed (`INTERNAL_API_TOKEN` set), if anywhere.
    pub webhooks_api: Option<String>,
    /// `WEBHOOK_URL`, when set.
    pub webhook_url: Option<String>,
    /// Whether APNs credentials are set (iPhones ring while the app sleeps).
    pub apns_enabled: bool,
    /// Whether an FCM service account is set (Android phones ring while the app sleeps).
    pub fcm_enabled: bool,
    /// The gateway's admin listener (`GATEWAY_ADMIN_LISTEN`): `/metrics` of the whole process.
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: ServiceTasks,
}

impl Running {
    /// Stops every service and waits for them; returns the first failure, if any.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until every service has stopped (after its shutdown token is cancelled, or a failure).
    pub async fn wait(mut self) -> Result<(), String> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let (name, outcome) = match joined {
                Ok((name, result)) => (name, result),
                Err(e) => ("a service", Err(format!("task failed: {e}"))),
            };
            if let Err(e) = outcome {
                tracing::error!(service = name, error = %e, "service stopped with an error; stopping the others");
                self.shutdown.cancel();
                first_error.get_or_insert(format!("{name}: {e}"));
            } else if !self.shutdown.is_cancelled() {
                // A service that ends on its own takes the system down with it: a half-running
                // backend is worse than a stopped one.
                tracing::error!(
                    service = name,
                    "service stopped unexpectedly; stopping the others"
                );
                self.shutdown.cancel();
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// One service's task: its name and how it ended.
type ServiceTasks = JoinSet<(&'static str, Result<(), String>)>;

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Parses a service's configuration the way its own binary would: from the environment, with
/// the standalone wiring given as flags (flags win over the environment).
fn parse<T: clap::Args>(name: &str, flags: Vec<String>) -> Result<T, StartError> {
    #[derive(clap::Parser)]
    struct Wrapper<A: clap::Args> {
        #[command(flatten)]
        inner: A,
    }
    let mut argv = vec![name.to_owned()];
    argv.extend(flags);
    Wrapper::<T>::try_parse_from(argv)
        .map(|w| w.inner)
        .map_err(|e| StartError::Config(format!("{name}: {}", e.render().to_string().trim())))
}

async fn loopback() -> Result<(TcpListener, String), StartError> {
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let url = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(source) => return Err(StartError::Listen { addr, source }),
    };
    Ok((listener, url))
}

/// The listener of a service whose internal API stays private unless `var` names an address
/// to expose it on (`CALLS_API_LISTEN`, `NOTIFIER_LISTEN`); a loopback port otherwise.
async fn listen_or_loopback(var: &str) -> Result<(TcpListener, String), StartError> {
    let Some(addr) = std::env::var(var).ok().filter(|v| !v.is_empty()) else {
        return loopback().await;
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| StartError::Config(format!("{var} is not an address: {addr}")))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let port = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?
        .port();
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    Ok((listener, format!("http://{host}:{port}")))
}

/// Creates the directory of a relative or absolute SQLite file path, so the first start works.
fn ensure_sqlite_dir(url: &str) -> Result<(), StartError> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return Ok(());
    }
    if let Some(dir) = PathBuf::from(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Hides the password of a database URL for printing.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Starts every service; `gateway` is the public listener (bind it yourself, port 0 in tests).
pub async fn start(
    gateway: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let addr = gateway.local_addr().map_err(|source| StartError::Listen {
        addr: ([0, 0, 0, 0], 0).into(),
        source,
    })?;
    let bus = calls_bus::Bus::local();

    // One random credential per process: nothing outside this process talks to media-token.
    let credential = {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    };

    let (media_listener, media_url) = loopback().await?;
    let media_config: media_token::Config = parse(
        "media-token",
        vec![
            "--listen".into(),
            media_url.trim_start_matches("http://").into(),
            "--service-tokens".into(),
            credential.clone(),
        ],
    )?;
    let media_enabled = media_config.agora.app_id.is_some();

    let database = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    ensure_sqlite_dir(&database)?;
    // calls-api is private (the gateway never routes /internal), except that a chat backend
    // using MEMBERSHIP_MODE=table must reach its internal API: CALLS_API_LISTEN exposes it.
    let (api_listener, api_url) = listen_or_loopback("CALLS_API_LISTEN").await?;
    let internal_api = env_set("INTERNAL_API_TOKEN").then(|| format!("{api_url}/internal/v1"));
    // notifier's internal API (webhook endpoints) is private the same way: NOTIFIER_LISTEN
    // exposes it.
    let (notifier_listener, notifier_url) = listen_or_loopback("NOTIFIER_LISTEN").await?;
    let webhooks_api =
        env_set("INTERNAL_API_TOKEN").then(|| format!("{notifier_url}/internal/v1/webhooks"));
    let mut api_flags = vec![
        "--listen".to_owned(),
        api_url.trim_start_matches("http://").to_owned(),
        "--media-token-url".to_owned(),
        media_url,
        "--media-token-service-token".to_owned(),
        credential,
    ];
    if !env_set("DATABASE_URL") {
        api_flags.extend(["--database-url".to_owned(), database.clone()]);
    }
    let api_config: calls_api::Config = parse("calls-api", api_flags)?;

    // notifier consumes the events calls-api publishes: on the in-process bus its consumer must
    // exist before calls-api starts, or the first events would be missed.
    let mut notifier_flags = vec![
        "--listen".to_owned(),
        notifier_url.trim_start_matches("http://").to_owned(),
    ];
    if !env_set("DATABASE_URL") {
        ensure_sqlite_dir(DEFAULT_NOTIFIER_DATABASE_URL)?;
        notifier_flags.extend([
            "--database-url".to_owned(),
            DEFAULT_NOTIFIER_DATABASE_URL.to_owned(),
        ]);
    }
    let notifier_config: notifier::Config = parse("notifier", notifier_flags)?;
    let webhook_url = notifier_config.webhooks.url.clone();
    let apns_enabled = notifier_config.push.apns_key_file.is_some();
    let fcm_enabled = notifier_config.push.fcm_service_account_file.is_some();
    let notifier_events = notifier::open_consumers(
        &bus,
        &notifier_config.subjects,
        usize::from(notifier_config.nats_stream_replicas),
    )
    .await
    .map_err(|e| StartError::Config(format!("notifier: {e}")))?;

    let (signaling_listener, signaling_url) = loopback().await?;
    let signaling_config: signaling::Config = parse(
        "signaling",
        vec![
            "--listen".into(),
            signaling_url.trim_start_matches("http://").into(),
        ],
    )?;

    // The admin listener is bound here, like the public one, so a busy port is reported
    // before anything starts and the banner can say where the metrics are.
    let admin_addr: SocketAddr = match std::env::var("GATEWAY_ADMIN_LISTEN")
        .ok()
        .filter(|v| !v.is_empty())
    {
        None => SocketAddr::from(([127, 0, 0, 1], 9090)),
        Some(addr) => addr.parse().map_err(|_| {
            StartError::Config(format!("GATEWAY_ADMIN_LISTEN is not an address: {addr}"))
        })?,
    };
    let admin = TcpListener::bind(admin_addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: admin_addr,
            source,
        })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Listen {
        addr: admin_addr,
        source,
    })?;

    let gateway_config: gateway::Config = parse(
        "gateway",
        vec![
            "--listen".into(),
            addr.to_string(),
            "--calls-api-upstreams".into(),
            api_url,
            "--signaling-upstreams".into(),
            signaling_url,
            "--notifier-upstreams".into(),
            notifier_url,
        ],
    )?;

    let mut tasks = ServiceTasks::new();
    let stop = shutdown.clone().cancelled_owned();
    tasks.spawn(async move {
        (
            "media-token",
            media_token::run(media_config, media_listener, stop)
                .await
                .map_err(|e| e.to_string()),
        )
    });
    let (stop, notifier_bus) = (shutdown.clone().cancelled_owned(), bus.clone());
    tasks.spawn(async move {
        let result = notifier::serve(
            notifier_config,
            notifier_bus,
            Some(notifier_events),
            notifier_listener,
            stop,
        )
        .await;
        ("notifier", result.map_err(|e| e.to_string()))
    });
    let (stop, api_bus) = (shutdown.clone().cancelled_owned(), bus.clone());
    tasks.spawn(async move {
        let result = calls_api::run_with_bus(api_config, api_bus, api_listener, stop).await;
        ("calls-api", result.map_err(|e| e.to_string()))
    });
    let stop = shutdown.clone().cancelled_owned();
    tasks.spawn(async move {
        let result = signaling::run_with_bus(signaling_config, bus, signaling_listener, stop).await;
        ("signaling", result.map_err(|e| e.to_string()))
    });
    let stop = shutdown.clone().cancelled_owned();
    tasks.spawn(async move {
        (
            "gateway",
            gateway::run_with_admin(gateway_config, gateway, admin, stop)
                .await
                .map_err(|e| e.to_string()),
        )
    });

    Ok(Running {
        addr,
        database: redact_url(&database),
        media_enabled,
        internal_api,
        webhooks_api,
        webhook_url,
        apns_enabled,
        fcm_enabled,
        admin_addr,
        shutdown,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_hidden_when_printed() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/calls"),
            "postgres://app:***@db:5432/calls"
        );
        assert_eq!(
            redact_url("sqlite://data/calls.db"),
            "sqlite://data/calls.db"
        );
    }
}
