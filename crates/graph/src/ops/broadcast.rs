//! Numpy-style broadcasting shared by the elementwise ops.

use super::parallel::{fill_row_blocks, MIN_PARALLEL};
use crate::error::OpResult;
use crate::tensor::strides;

/// The broadcast shape of several shapes (numpy rules, aligned on the right).
pub fn broadcast_shapes(shapes: &[&[usize]]) -> OpResult<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} cannot be broadcast together"));
            }
        }
    }
    Ok(out)
}

/// Strides (in elements) for reading a tensor of `shape` as if it had `out_shape`: 0 on
/// broadcast axes.
pub fn broadcast_strides(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let off = out_shape.len() - shape.len();
    (0..out_shape.len()).map(|i| if i < off || shape[i - off] == 1 { 0 } else { own[i - off] }).collect()
}

/// Calls `f(offsets, inner_len)` once per row of the last output axis, where `offsets[k]` is the
/// element offset of operand `k` at the start of that row. Every operand's stride along the last
/// axis is `strides[k][rank - 1]` (0 or 1).
pub fn for_each_row(out_shape: &[usize], strides: &[Vec<usize>], mut f: impl FnMut(&[usize], usize)) {
    let rank = out_shape.len();
    let n = strides.len();
    let mut offsets = vec![0usize; n];
    if rank == 0 {
        f(&offsets, 1);
        return;
    }
    if out_shape.contains(&0) {
        return;
    }
    let inner = out_shape[rank - 1];
    let mut index = vec![0usize; rank - 1];
    loop {
        f(&offsets, inner);
        let mut axis = rank - 1;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            for k in 0..n {
                offsets[k] += strides[k][axis];
            }
            if index[axis] < out_shape[axis] {
                break;
            }
            for k in 0..n {
                offsets[k] -= strides[k][axis] * out_shape[axis];
            }
            index[axis] = 0;
        }
    }
}

/// `out[i] = f(a[i'], b[i''])` over the broadcast of the two shapes.
pub fn binary<A: Copy, B: Copy, O: Copy + Default>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> Vec<O> {
    let n: usize = out_shape.iter().product();
    if a_shape == b_shape {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let mut out = Vec::with_capacity(n);
    let st = [broadcast_strides(a_shape, out_shape), broadcast_strides(b_shape, out_shape)];
    let last = out_shape.len().saturating_sub(1);
    let (sa, sb) = if out_shape.is_empty() { (0, 0) } else { (st[0][last], st[1][last]) };
    for_each_row(out_shape, &st, |off, len| {
        let (ra, rb) = (&a[off[0]..], &b[off[1]..]);
        match (sa, sb) {
            (1, 1) => out.extend(ra[..len].iter().zip(&rb[..len]).map(|(&x, &y)| f(x, y))),
            (1, 0) => out.extend(ra[..len].iter().map(|&x| f(x, rb[0]))),
            (0, 1) => out.extend(rb[..len].iter().map(|&y| f(ra[0], y))),
            _ => out.extend(std::iter::repeat_n(f(ra[0], rb[0]), len)),
        }
    });
    out
}

/// [`binary`], split over `threads` threads of the current rayon pool when the output is large
/// ([`fill_row_blocks`]) and each operand is either the output's shape or a single value
/// (residual adds, scalings).
pub fn binary_on<A: Copy + Sync, B: Copy + Sync, O: Copy + Default + Send>(
    (a, a_shape): (&[A], &[usize]),
    (b, b_shape): (&[B], &[usize]),
    out_shape: &[usize],
    threads: usize,
    f: impl Fn(A, B) -> O + Sync,
) -> Vec<O> {
    let n: usize = out_shape.iter().product();
    let elementwise = |len: usize, shape: &[usize]| shape == out_shape || len == 1;
    if threads < 2 || n < MIN_PARALLEL || !elementwise(a.len(), a_shape) || !elementwise(b.len(), b_shape) {
        return binary(a, a_shape, b, b_shape, out_shape, f);
    }
    fill_row_blocks(n, 1, threads, |first, part| {
        let len = part.len();
        match (a.len() == 1, b.len() == 1) {
            (false, false) => part.iter_mut().zip(&a[first..first + len]).zip(&b[first..first + len]).for_each(|((o, &x), &y)| {
                o.write(f(x, y));
            }),
            (false, true) => part.iter_mut().zip(&a[first..first + len]).for_each(|(o, &x)| {
                o.write(f(x, b[0]));
            }),
            _ => part.iter_mut().zip(&b[first..first + len]).for_each(|(o, &y)| {
                o.write(f(a[0], y));
            }),
        }
    })
}

/// `out[i] = f(a[i'], b[i''], c[i'''])` over the broadcast of three shapes.
pub fn ternary<A: Copy, B: Copy, C: Copy, O>(
    (a, a_shape): (&[A], &[usize]),
    (b, b_shape): (&[B], &[usize]),
    (c, c_shape): (&[C], &[usize]),
    out_shape: &[usize],
    f: impl Fn(A, B, C) -> O,
) -> Vec<O> {
    let st = [broadcast_strides(a_shape, out_shape), broadcast_strides(b_shape, out_shape), broadcast_strides(c_shape, out_shape)];
    let last = out_shape.len().saturating_sub(1);
    let inner: Vec<usize> = st.iter().map(|s| if out_shape.is_empty() { 0 } else { s[last] }).collect();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for_each_row(out_shape, &st, |off, len| {
        for i in 0..len {
            out.push(f(a[off[0] + i * inner[0]], b[off[1] + i * inner[1]], c[off[2] + i * inner[2]]));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_like_numpy() {
        assert_eq!(broadcast_shapes(&[&[2, 1, 4], &[3, 1]]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast_shapes(&[&[2, 3], &[4]]).is_err());
        let a: Vec<i64> = (0..6).collect();
        let b = vec![10i64, 20];
        let out = binary(&a, &[3, 1, 2], &b, &[2, 1], &[3, 2, 2], |x, y| x + y);
        assert_eq!(out, vec![10, 11, 20, 21, 12, 13, 22, 23, 14, 15, 24, 25]);
    }

    #[test]
    fn binary_split_over_threads_equals_the_serial_one() {
        let cols = MIN_PARALLEL / 8 + 3;
        let n = 8 * cols;
        let a: Vec<i64> = (0..n as i64).collect();
        let b: Vec<i64> = (0..n as i64).map(|v| v * 3 - 5).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let (full, row, one): (&[usize], &[usize], &[usize]) = (&[8, cols], &[cols], &[]);
        type Operand<'a> = (&'a [i64], &'a [usize]);
        let cases: [(Operand, Operand); 4] =
            [((&a, full), (&b, full)), ((&a, full), (&[7], one)), ((&[7], one), (&b, full)), ((&a, full), (&b[..cols], row))];
        for ((x, xs), (y, ys)) in cases {
            let serial = binary(x, xs, y, ys, full, |p, q| p * 2 - q);
            for threads in [1, 2, 3, 5] {
                assert_eq!(pool.install(|| binary_on((x, xs), (y, ys), full, threads, |p, q| p * 2 - q)), serial, "{threads} threads");
            }
        }
    }
}
