use gemm::Parallelism;

use crate::DisjointWrites;

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

/// Columns per panel of a [`PanelMatrix`]: the gemm crate's AVX-512 f32 tile height (4 × 16
/// lanes), and 8 of its AVX2 vectors.
pub const PANEL: usize = 64;

/// A constant right-hand operand `b[k×n]` stored as column panels: panel `p` holds columns
/// `p·PANEL ..` as `k` rows of [`PANEL`] floats (the last panel zero-padded). The gemm crate reads
/// such a panel in place, where a row-major `b` is repacked on every call (doc/kernels.md).
#[derive(Debug)]
pub struct PanelMatrix {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PanelMatrix {
    /// Packs a row-major `b[k×n]`.
    pub fn pack(b: &[f32], k: usize, n: usize) -> PanelMatrix {
        assert_eq!(b.len(), k * n, "PanelMatrix::pack: b holds {} values, not {k}x{n}", b.len());
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0.0f32; panels * k * PANEL];
        for (p, panel) in data.chunks_mut(k * PANEL).enumerate() {
            let (j0, w) = (p * PANEL, PANEL.min(n - p * PANEL));
            for (row, dst) in panel.chunks_mut(PANEL).enumerate() {
                dst[..w].copy_from_slice(&b[row * n + j0..row * n + j0 + w]);
            }
        }
        PanelMatrix { k, n, data }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// `c[m×n] = a[m×k] · b`, plus `bias[n]` on every row when given, then `epilogue` applied
    /// in place to each block of output rows while it is in cache, then `residual[m×n]` added
    /// (the residual Add that followed, as that Add computes it); `a`, `c` and `residual`
    /// row-major. Writes all `m×n` outputs without reading them: `c` need not be initialised
    /// (zeroing a ViT-S fc1 output at batch 8, 9.7 MB, took 4 % of the model on one thread of
    /// two).
    ///
    /// Contract: `a.len() >= m·k`, `c.len() >= m·n`, `bias.len() == n`, `residual.len() >= m·n`;
    /// `epilogue` is elementwise.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        m: usize,
        a: &[f32],
        bias: Option<&[f32]>,
        epilogue: Option<fn(&mut [f32])>,
        residual: Option<&[f32]>,
        c: &mut [std::mem::MaybeUninit<f32>],
        threads: Threads,
    ) {
        let (k, n) = (self.k, self.n);
        assert!(a.len() >= m * k && c.len() >= m * n, "PanelMatrix::matmul: operands shorter than {m}x{k} and {m}x{n}");
        assert!(bias.is_none_or(|b| b.len() == n), "PanelMatrix::matmul: bias is not {n} long");
        assert!(residual.is_none_or(|r| r.len() >= m * n), "PanelMatrix::matmul: residual shorter than {m}x{n}");
        if m == 0 || n == 0 {
            return;
        }
        leave_aligned_lhs_unpacked();
        let panels = n.div_ceil(PANEL);
        // Tasks are (panel, row block): row blocks only when there are too few panels to share.
        let row_blocks = if threads.0 > 1 { (2 * threads.0).div_ceil(panels).min(m.div_ceil(16)) } else { 1 };
        let rows_per = m.div_ceil(row_blocks);
        let out = DisjointWrites::uninit(c);
        let task = |t: usize| {
            let (p, r0) = (t % panels, (t / panels) * rows_per);
            let (j0, w, rows) = (p * PANEL, PANEL.min(n - p * PANEL), rows_per.min(m - r0));
            // SAFETY: block (r0.., j0..) of `c` lies inside it (asserted above) and no other task
            // writes it; the panel holds `k` rows of PANEL floats; `a` holds `m` rows of `k`.
            unsafe {
                let dst = out.at(r0 * n + j0);
                if let Some(bias) = bias {
                    for r in 0..rows {
                        std::ptr::copy_nonoverlapping(bias.as_ptr().add(j0), dst.add(r * n), w);
                    }
                }
                gemm::gemm(
                    rows,
                    w,
                    k,
                    dst,
                    1,
                    n as isize,
                    bias.is_some(),
                    a.as_ptr().add(r0 * k),
                    1,
                    k as isize,
                    self.data.as_ptr().add(p * k * PANEL),
                    1,
                    PANEL as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
                for r in 0..rows {
                    let row = std::slice::from_raw_parts_mut(dst.add(r * n), w);
                    if let Some(f) = epilogue {
                        f(row);
                    }
                    if let Some(residual) = residual {
                        row.iter_mut().zip(&residual[(r0 + r) * n + j0..][..w]).for_each(|(y, &x)| *y += x);
                    }
                }
            }
        };
        let tasks = panels * m.div_ceil(rows_per);
        if threads.0 > 1 && tasks > 1 {
            use rayon::prelude::*;
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }
}

/// Tells the gemm crate not to repack a left operand whose columns are already contiguous and
/// tile-aligned (in its transposed view, a [`PanelMatrix`] panel is such an operand). Set once for
/// the process; other matmuls measured no slower with it on ViT-S.
fn leave_aligned_lhs_unpacked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gemm::set_lhs_packing_threshold_single_thread(usize::MAX / 64);
        gemm::set_lhs_packing_threshold_multi_thread(usize::MAX / 64);
    });
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

    #[test]
    fn panel_matmul_matches_naive_with_bias_and_threads() {
        for &(m, n, k) in &[(7, 13, 33), (197, 130, 40), (1, 64, 5), (40, 1, 3)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5).collect();
            let want = naive(m, n, k, &a, &b);
            let packed = PanelMatrix::pack(&b, k, n);
            // Outputs start as NaN, so that an output left unwritten shows.
            let run = |bias: Option<&[f32]>, epilogue: Option<fn(&mut [f32])>, threads: usize| -> Vec<f32> {
                let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
                packed.matmul(m, &a, bias, epilogue, None, &mut c, Threads(threads));
                // SAFETY: initialised above.
                c.iter().map(|v| unsafe { v.assume_init() }).collect()
            };
            for threads in [1, 3] {
                assert_eq!(run(None, None, threads), want, "{m}x{n}x{k}, {threads} threads");
                let with_bias: Vec<f32> = want.iter().enumerate().map(|(i, v)| v + bias[i % n]).collect();
                assert_eq!(run(Some(&bias), None, threads), with_bias, "{m}x{n}x{k} with bias, {threads} threads");
                let mut gelu = with_bias.clone();
                crate::f32::gelu_erf(&mut gelu);
                assert_eq!(
                    run(Some(&bias), Some(crate::f32::gelu_erf), threads),
                    gelu,
                    "{m}x{n}x{k} with bias and GELU, {threads} threads"
                );
                let residual: Vec<f32> = (0..m * n).map(|i| (i % 17) as f32 * 0.25 - 2.0).collect();
                let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
                packed.matmul(m, &a, Some(&bias), Some(crate::f32::gelu_erf), Some(&residual), &mut c, Threads(threads));
                // SAFETY: initialised above.
                let got: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
                let want: Vec<f32> = gelu.iter().zip(&residual).map(|(y, r)| y + r).collect();
                assert_eq!(got, want, "{m}x{n}x{k} with bias, GELU and residual, {threads} threads");
            }
        }
    }
}
