use gemm::Parallelism;

/// How many threads a kernel may use. `1` keeps everything on the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Threads {
    fn parallelism(self) -> Parallelism {
        if self.0 <= 1 {
            Parallelism::None
        } else {
            Parallelism::Rayon(self.0)
        }
    }
}

/// Element strides of a matrix operand: element `(i, j)` lives at `ptr[i * row + j * col]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatLayout {
    pub row: isize,
    pub col: isize,
}

impl MatLayout {
    /// Row-major with `cols` columns.
    pub fn row_major(cols: usize) -> Self {
        MatLayout { row: cols as isize, col: 1 }
    }
    /// The transpose of a row-major matrix that has `cols` columns (i.e. column-major reads).
    pub fn transposed(cols: usize) -> Self {
        MatLayout { row: 1, col: cols as isize }
    }
}

/// `c[m×n] = a[m×k] · b[k×n]` (+ `c` when `accumulate`), with arbitrary strides for `a` and `b`
/// and a row-major `c`.
///
/// Contract: every index reachable through the layouts lies inside the slices; `c.len() >= m * n`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_layout: MatLayout,
    b: &[f32],
    b_layout: MatLayout,
    c: &mut [f32],
    accumulate: bool,
    threads: Threads,
) {
    assert!(c.len() >= m * n, "matmul: output holds {} < {}x{}", c.len(), m, n);
    if m == 0 || n == 0 {
        return;
    }
    let last = |l: MatLayout, rows: usize, cols: usize| -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            ((rows - 1) as isize * l.row + (cols - 1) as isize * l.col) as usize
        }
    };
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    assert!(last(a_layout, m, k) < a.len(), "matmul: lhs too short");
    assert!(last(b_layout, k, n) < b.len(), "matmul: rhs too short");
    // SAFETY: the asserts above keep every address that gemm reads or writes inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_layout.col,
            a_layout.row,
            b.as_ptr(),
            b_layout.col,
            b_layout.row,
            1.0,
            1.0,
            false,
            false,
            false,
            threads.parallelism(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_including_transposed_rhs() {
        let (m, n, k) = (7, 13, 33);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![0.0; m * n];
        matmul(m, n, k, &a, MatLayout::row_major(k), &b, MatLayout::row_major(n), &mut c, false, Threads(1));
        assert_eq!(c, want);
        let mut bt = vec![0.0; k * n];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        let mut c2 = vec![1.0; m * n];
        matmul(m, n, k, &a, MatLayout::row_major(k), &bt, MatLayout::transposed(k), &mut c2, false, Threads(2));
        assert_eq!(c2, want);
    }
}
