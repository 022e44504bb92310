//! Strided copies: one routine serves Transpose, Slice, Split and Expand.

use crate::map_data;
use crate::tensor::{strides, Tensor};

/// A strided window onto a row-major buffer: output element `(i_0, …, i_r)` reads
/// `input[base + Σ i_k · strides[k]]`. Strides may be 0 (broadcast) or negative (reversed slice).
#[derive(Clone, Debug)]
pub struct View {
    pub base: isize,
    pub shape: Vec<usize>,
    pub strides: Vec<isize>,
}

impl View {
    /// The identity view of a tensor of `shape`.
    pub fn of(shape: &[usize]) -> View {
        View { base: 0, shape: shape.to_vec(), strides: strides(shape).into_iter().map(|s| s as isize).collect() }
    }

    /// Copies the viewed elements into a new row-major tensor.
    ///
    /// Contract: every address the view reaches lies inside `input`.
    pub fn copy(&self, input: &Tensor) -> Tensor {
        let data = map_data!(input.data(), v => gather(v, self));
        Tensor::from_parts(self.shape.clone(), data)
    }
}

fn gather<T: Copy>(src: &[T], view: &View) -> Vec<T> {
    let n: usize = view.shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = view.shape.len();
    if rank == 0 {
        out.push(src[view.base as usize]);
        return out;
    }
    let inner = view.shape[rank - 1];
    let step = view.strides[rank - 1];
    let mut index = vec![0usize; rank - 1];
    let mut offset = view.base;
    loop {
        if step == 1 {
            let s = offset as usize;
            out.extend_from_slice(&src[s..s + inner]);
        } else {
            out.extend((0..inner).map(|i| src[(offset + i as isize * step) as usize]));
        }
        let mut axis = rank - 1;
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            index[axis] += 1;
            offset += view.strides[axis];
            if index[axis] < view.shape[axis] {
                break;
            }
            offset -= view.strides[axis] * view.shape[axis] as isize;
            index[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_and_reversed_views() {
        let t = Tensor::i64(vec![2, 3], (0..6).collect());
        let tr = View { base: 0, shape: vec![3, 2], strides: vec![1, 3] }.copy(&t);
        assert_eq!(tr.to_i64_vec().unwrap(), vec![0, 3, 1, 4, 2, 5]);
        let rev = View { base: 5, shape: vec![2, 3], strides: vec![-3, -1] }.copy(&t);
        assert_eq!(rev.to_i64_vec().unwrap(), vec![5, 4, 3, 2, 1, 0]);
        let bc = View { base: 0, shape: vec![2, 3], strides: vec![0, 1] }.copy(&t);
        assert_eq!(bc.to_i64_vec().unwrap(), vec![0, 1, 2, 0, 1, 2]);
    }
}
