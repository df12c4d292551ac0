//! Compiles `auth/v1/auth.proto` and `tasks/v1/tasks.proto` with protox, a
//! pure-Rust protobuf compiler, so building needs no `protoc` on the machine.
//! The encoded descriptor set is kept beside the generated code for reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "auth/v1/auth.proto",
        "auth/internal/v1/session_events.proto",
        "tasks/v1/tasks.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // `compile_fds` takes the descriptors as given and writes no set of its
    // own, so the one reflection serves is written here.
    std::fs::write(
        out_dir.join("descriptor_set.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
