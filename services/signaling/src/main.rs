//! `signaling`: the Socket.IO `/calls` service (see the library docs).

fn main() -> std::process::ExitCode {
    common::process::main(
        "signaling",
        |config: signaling::Config, shutdown| async move {
            let listener = common::process::bind(config.listen, "SIGNALING_LISTEN").await?;
            signaling::run(config, listener, shutdown.cancelled_owned()).await?;
            Ok(())
        },
    )
}
