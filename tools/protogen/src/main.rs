//! Regenerates the checked-in ONNX protobuf bindings.
//!
//! Run from the repository root: `cargo run --manifest-path tools/protogen/Cargo.toml`.
//! Reads `crates/onnx/proto/onnx.proto` (copied from the `onnx` wheel) and writes
//! `crates/onnx/src/proto/onnx.rs`.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = Path::new("crates/onnx/proto");
    let out_dir = Path::new("crates/onnx/src/proto");
    let descriptors = protox::compile(["onnx.proto"], [proto_dir])?;
    // Initializer bytes as `bytes::Bytes`: decoding from a mapped file then slices it instead
    // of copying every weight (octet_onnx::load_for_inference).
    prost_build::Config::new()
        .bytes([".onnx.TensorProto.raw_data"])
        .out_dir(out_dir)
        .compile_fds(descriptors)?;
    println!("wrote {}", out_dir.join("onnx.rs").display());
    Ok(())
}
