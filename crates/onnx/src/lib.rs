//! ONNX files in and out of octet graphs. The protobuf bindings in `proto/onnx.rs` are generated
//! by `tools/protogen` from the `onnx.proto` that the `onnx` wheel ships, and checked in.

#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!("proto/onnx.rs");
}

mod export;
mod import;
pub mod opset;
pub mod qdq;
pub mod scope;
mod tensor;

pub use export::{inline_external_data, save};
pub use import::{load, load_bytes, load_for_inference, ImportError, OnnxModel};
pub use tensor::dtype_name;
