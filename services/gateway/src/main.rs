//! `gateway`: the public edge. Configuration comes from the environment (see `gateway --help`).

use common::process::{Runtime, bind};

fn main() -> std::process::ExitCode {
    let config: gateway::Config = common::config::parse_or_exit();
    let runtime = Runtime::from_workers(config.worker_threads);
    common::process::run("gateway", runtime, |shutdown| async move {
        let listener = bind(config.listen, "GATEWAY_LISTEN").await?;
        gateway::run(config, listener, shutdown.cancelled_owned()).await?;
        Ok(())
    })
}
