//! Compiles `proto/identity/v1` with protox (pure Rust: no protoc to install) and writes the
//! file descriptor set that the server's reflection service publishes.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build script compiled for one
    // checkout may be reused for another (a shared CARGO_TARGET_DIR).
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "identity/v1/common.proto",
        "identity/v1/user.proto",
        "identity/v1/wallet.proto",
        "identity/v1/status_tier.proto",
        "identity/v1/identification.proto",
        "identity/v1/projection.proto",
        "identity/v1/audit.proto",
        "identity/v1/access.proto",
        "identity/v1/auth.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("identity_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
