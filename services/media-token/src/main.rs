//! `media-token`: the gRPC token service (`serve`) and a support CLI (`sign`, `inspect`).

fn main() -> std::process::ExitCode {
    media_token::cli::main()
}
