//! Compute kernels over plain slices. No graph, no tensors: shapes are passed as integers and
//! every buffer is a row-major slice. The graph and quant crates call these from their ops.

pub mod affine;
mod disjoint;
mod dispatch;
pub mod f32;
pub mod i8;
pub mod isa;

pub use affine::Affine;
pub use disjoint::DisjointWrites;
pub use isa::Isa;
