//! octet's graph layer: tensors, the typed graph, the op registry (the single source of truth
//! for supported operators), shape inference with constant folding, rewrite passes and the
//! float interpreter that is the reference for every quantized kernel.

pub mod attrs;
pub mod error;
pub mod graph;
pub mod interp;
pub mod limits;
pub mod memory;
pub mod op;
pub mod qparams;
pub mod ops;
pub mod rewrite;
pub mod tensor;
pub mod typed;

pub use attrs::{Attr, Attrs};
pub use error::{Error, Result};
pub use graph::{Dim, Graph, Input, Node, ValueId};
pub use interp::{Hooks, NoHooks, Plan, Reload, Session};
pub use op::{EvalCtx, Fact, Op};
pub use qparams::{QParams, QType};
pub use tensor::{DType, Data, Tensor};
pub use typed::{Lowering, TypedGraph};
