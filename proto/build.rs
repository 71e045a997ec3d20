//! Compiles the borg API with the vendored `protoc`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded before any other code of this crate.
    std::env::set_var("PROTOC", protoc);
    let files = [
        "borg/v1/types.proto",
        "borg/v1/cell.proto",
        "borg/v1/scheduler.proto",
        "borg/v1/link.proto",
        "borg/v1/borglet.proto",
        "borg/v1/replica.proto",
        "borg/v1/access.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure().compile_protos(&files, &["."])?;
    Ok(())
}
