//! `calls-backend`: the whole system in one process (`serve`, the default) and developer
//! commands (`token`).

fn main() -> std::process::ExitCode {
    standalone::cli::main()
}
