//! Compute kernels over plain slices. No graph, no tensors: shapes are passed as integers and
//! every buffer is a row-major slice. The graph crate calls these from its op implementations.

pub mod f32;
