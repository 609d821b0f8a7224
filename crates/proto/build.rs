//! Compiles `proto/` into `OUT_DIR` with a vendored `protoc`, and writes the
//! descriptor set that gRPC reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "ferrobase/common/v1/http.proto",
        "ferrobase/auth/v1/auth.proto",
        "ferrobase/rest/v1/rest.proto",
        "ferrobase/storage/v1/storage.proto",
        "ferrobase/meta/v1/meta.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        // Bodies become `bytes::Bytes`, so relaying them copies nothing.
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("ferrobase_descriptor.bin"))
        .compile_with_config(config, &paths, &[root])?;
    Ok(())
}
