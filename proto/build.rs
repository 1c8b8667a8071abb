//! Generates the gRPC code with a vendored protoc, so building never depends on the machine's tools.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("calls_descriptor.bin"))
        .compile_with_config(config, &["calls/mediatoken/v1/media_token.proto"], &["."])?;
    println!("cargo:rerun-if-changed=calls");
    Ok(())
}
