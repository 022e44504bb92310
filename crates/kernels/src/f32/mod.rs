//! f32 kernels: matrix multiply (through the `gemm` crate), softmax, LayerNorm, GELU and the
//! vectorisable elementwise functions they need.

mod math;
mod matmul;
mod norm;

pub use math::{
    add_assign, erf, erf_scalar, exp, exp_nonpositive, exp_scalar, gelu_erf, gelu_erf_scalar, gelu_tanh, gelu_tanh_scalar, sigmoid,
    sigmoid_scalar, tanh, tanh_scalar,
};
pub use matmul::{matmul, MatLayout, PanelMatrix, Threads, PANEL};
pub(crate) use norm::layer_norm_row;
pub use norm::{layer_norm_rows, softmax_rows, softmax_rows_u16};
