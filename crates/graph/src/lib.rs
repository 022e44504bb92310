//! octet's graph layer: tensors, the typed graph, the op registry (the single source of truth
//! for supported operators), shape inference with constant folding and the rewrite passes. The
//! ops' float `eval` is the reference for every quantized kernel; sessions and plans that run a
//! graph are in `octet-runtime`.

pub mod attrs;
pub mod error;
pub mod graph;
pub mod limits;
pub mod memory;
pub mod op;
pub mod ops;
pub mod pattern;
pub mod qparams;
pub mod rewrite;
pub mod tensor;
pub mod typed;

pub use attrs::{Attr, Attrs};
pub use error::{Error, Result};
pub use graph::{Dim, Graph, Input, Node, ValueId};
pub use op::{EvalCtx, Fact, Op};
pub use qparams::{QParams, QType};
pub use tensor::{DType, Data, Tensor};
pub use typed::TypedGraph;
