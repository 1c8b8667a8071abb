//! `notifier`: device registry and pushes (see the library docs).

fn main() -> std::process::ExitCode {
    common::process::main(
        "notifier",
        |config: notifier::Config, shutdown| async move {
            let listener = common::process::bind(config.listen, "NOTIFIER_LISTEN").await?;
            notifier::run(config, listener, shutdown.cancelled_owned()).await?;
            Ok(())
        },
    )
}
