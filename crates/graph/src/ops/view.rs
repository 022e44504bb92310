//! Strided copies: one routine serves Transpose, Slice, Split and Expand.

use super::parallel::fill_row_blocks;
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
        self.copy_on(input, 1)
    }

    /// [`View::copy`] with the output's rows split over `threads` threads of the current rayon
    /// pool when large ([`fill_row_blocks`]). The same values either way.
    pub fn copy_on(&self, input: &Tensor, threads: usize) -> Tensor {
        let data = map_data!(input.data(), v => gather(v, self, threads));
        Tensor::from_parts(self.shape.clone(), data)
    }

    /// Calls `row(offset)` with the input offset of each output row (the last axis) from
    /// `first_row` on, for `rows` rows.
    fn for_each_row(&self, first_row: usize, rows: usize, mut row: impl FnMut(isize)) {
        let outer = &self.shape[..self.shape.len() - 1];
        let mut index = vec![0usize; outer.len()];
        let mut rest = first_row;
        for (i, &d) in index.iter_mut().zip(outer).rev() {
            *i = rest % d;
            rest /= d;
        }
        let mut offset = self.base + index.iter().zip(&self.strides).map(|(&i, &s)| i as isize * s).sum::<isize>();
        for done in 1..=rows {
            row(offset);
            if done == rows {
                return;
            }
            let mut axis = outer.len();
            while axis > 0 {
                axis -= 1;
                index[axis] += 1;
                offset += self.strides[axis];
                if index[axis] < outer[axis] {
                    break;
                }
                offset -= self.strides[axis] * outer[axis] as isize;
                index[axis] = 0;
            }
        }
    }
}

fn gather<T: Copy + Send + Sync>(src: &[T], view: &View, threads: usize) -> Vec<T> {
    let n: usize = view.shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let Some(&inner) = view.shape.last() else {
        return vec![src[view.base as usize]];
    };
    let step = view.strides[view.shape.len() - 1];
    fill_row_blocks(n, inner, threads, |first_row, part| {
        let count = part.len() / inner;
        let mut rows = part.chunks_exact_mut(inner);
        view.for_each_row(first_row, count, |offset| {
            let row = rows.next().expect("one row per offset");
            if step == 1 {
                row.iter_mut().zip(&src[offset as usize..offset as usize + inner]).for_each(|(o, &v)| {
                    o.write(v);
                });
            } else {
                row.iter_mut().enumerate().for_each(|(i, o)| {
                    o.write(src[(offset + i as isize * step) as usize]);
                });
            }
        });
    })
}

#[cfg(test)]
mod tests {
    use super::super::parallel::MIN_PARALLEL;
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

    #[test]
    fn copies_split_over_threads_equal_the_serial_copy() {
        let shape = [5, 6, 8, 11, 13];
        let t = Tensor::i64(shape.to_vec(), (0..shape.iter().product::<usize>() as i64).collect());
        let st = strides(&shape);
        let perm = [2, 0, 3, 1, 4];
        let transposed =
            View { base: 0, shape: perm.iter().map(|&a| shape[a]).collect(), strides: perm.iter().map(|&a| st[a] as isize).collect() };
        let reversed_cols = View { base: 12, shape: vec![34320 / 13, 13], strides: vec![13, -1] };
        const _: () = assert!(34320 >= MIN_PARALLEL);
        let big = Tensor::i64(vec![MIN_PARALLEL / 4 + 3, 4], (0..(MIN_PARALLEL + 12) as i64).collect());
        let big_t = View { base: 0, shape: vec![4, MIN_PARALLEL / 4 + 3], strides: vec![1, 4] };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (v, x) in [(&transposed, &t), (&reversed_cols, &t), (&big_t, &big)] {
            let serial = v.copy(x).to_i64_vec().unwrap();
            for threads in [2, 3, 7] {
                let split = pool.install(|| v.copy_on(x, threads));
                assert_eq!(split.shape(), &v.shape[..]);
                assert_eq!(split.to_i64_vec().unwrap(), serial, "{threads} threads");
            }
        }
    }
}
