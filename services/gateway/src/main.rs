//! `gateway`: the public edge. Configuration comes from the environment (see `gateway --help`).

use common::process::{Runtime, bind};

// Every proxied request allocates a few short-lived buffers (read buffers, its future, channel
// state); the system allocator spent about a tenth of the gateway's CPU on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let config: gateway::Config = common::config::parse_or_exit();
    let runtime = Runtime::from_workers(config.worker_threads);
    common::process::run("gateway", runtime, |shutdown| async move {
        let listener = bind(config.listen, "GATEWAY_LISTEN").await?;
        gateway::run(config, listener, shutdown.cancelled_owned()).await?;
        Ok(())
    })
}
