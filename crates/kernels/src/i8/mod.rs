//! int8 kernels: u8 × s8 → i32 matrix multiply on pre-packed right operands, and the
//! epilogues that turn i32 accumulators into u8/s8 or f32 (doc/quantization.md, eq. 8).
//!
//! Every tier returns the same bits as [`Isa::Scalar`]: integer accumulation is exact, and the
//! epilogues use the same f32 operations in the same order on every ISA.

use std::mem::MaybeUninit;

mod avx2;
pub mod elementwise;
mod peak;
mod scalar;
mod vnni;

pub use crate::isa::Isa;
pub use peak::peak;

/// The right operand `B[k][j]` (K × N, s8) packed for one tier, with its column sums.
///
/// Represents `B_real[k][j] = s8[k][j] − zero_point`.
#[derive(Clone, Debug)]
pub struct PackedB {
    pub isa: Isa,
    pub k: usize,
    pub n: usize,
    pub zero_point: i32,
    /// The AVX2 microkernel `data` is laid out for (`None` on other tiers).
    avx2_kernel: Option<avx2::Kernel>,
    /// AVX-512 VNNI: `data` holds 16-bit words `B − zero_point` for `vpdpwssd`
    /// ([`PackedB::from_rows_for_i16`]), which only 16-bit left operands read.
    vnni_words: bool,
    data: Vec<u8>,
    /// `Σ_k s8[k][j]`.
    col_sums: Vec<i32>,
}

impl PackedB {
    /// Packs `get(k, j)` (the stored s8 values) for `isa`.
    pub fn pack(isa: Isa, k: usize, n: usize, zero_point: i32, get: impl Fn(usize, usize) -> i8 + Copy) -> PackedB {
        let mut col_sums = vec![0i32; n];
        for kk in 0..k {
            for (j, s) in col_sums.iter_mut().enumerate() {
                *s = s.wrapping_add(get(kk, j) as i32);
            }
        }
        let avx2_kernel = (isa == Isa::Avx2).then(|| avx2::Kernel::for_operand(k, n, get));
        let data = match (isa, avx2_kernel) {
            (Isa::Avx2, Some(kernel)) => avx2::pack(kernel, k, n, get),
            (Isa::Avx512Vnni, _) => vnni::pack(k, n, get),
            _ => (0..k).flat_map(|kk| (0..n).map(move |j| (kk, j))).map(|(kk, j)| get(kk, j) as u8).collect(),
        };
        PackedB { isa, k, n, zero_point, avx2_kernel, vnni_words: false, data, col_sums }
    }

    /// Packs a row-major `K × N` s8 matrix (row stride `ld`).
    pub fn from_rows(isa: Isa, k: usize, n: usize, zero_point: i32, b: &[i8], ld: usize) -> PackedB {
        PackedB::rows(isa, k, n, zero_point, b, ld, None)
    }

    /// [`PackedB::from_rows`] for 16-bit left operands ([`gemm_i16s8`], [`gemm_i16s8_epilogue`]),
    /// which multiply 16-bit values in one product: on AVX2 always the `vpmaddwd` layout; on
    /// AVX-512 VNNI (for an s8 zero point) the words `B − zero_point` for `vpdpwssd`, so that no
    /// zero-point correction is left for the product.
    pub fn from_rows_for_i16(isa: Isa, k: usize, n: usize, zero_point: i32, b: &[i8], ld: usize) -> PackedB {
        if let (Isa::Avx512Vnni, Ok(zp)) = (isa, i8::try_from(zero_point)) {
            let (col_sums, data) = (row_major_col_sums(k, n, b, ld), vnni::pack_rows_words(k, n, b, ld, zp));
            return PackedB { isa, k, n, zero_point, avx2_kernel: None, vnni_words: true, data, col_sums };
        }
        PackedB::rows(isa, k, n, zero_point, b, ld, Some(avx2::Kernel::Madd))
    }

    fn rows(isa: Isa, k: usize, n: usize, zero_point: i32, b: &[i8], ld: usize, avx2_kernel: Option<avx2::Kernel>) -> PackedB {
        if isa == Isa::Scalar {
            return PackedB::pack(isa, k, n, zero_point, |kk, j| b[kk * ld + j]);
        }
        let col_sums = row_major_col_sums(k, n, b, ld);
        let (avx2_kernel, data) = match isa {
            Isa::Avx2 => {
                let kernel = avx2_kernel.unwrap_or_else(|| avx2::kernel_for_rows(k, n, b, ld));
                (Some(kernel), avx2::pack_rows(kernel, k, n, b, ld))
            }
            _ => (None, vnni::pack_rows(k, n, b, ld)),
        };
        PackedB { isa, k, n, zero_point, avx2_kernel, vnni_words: false, data, col_sums }
    }

    /// Packs the transpose of a row-major `N × K` s8 matrix (row stride `ld`): `B[k][j] = bt[j][k]`.
    pub fn from_cols(isa: Isa, k: usize, n: usize, zero_point: i32, bt: &[i8], ld: usize) -> PackedB {
        if isa == Isa::Scalar {
            return PackedB::pack(isa, k, n, zero_point, |kk, j| bt[j * ld + kk]);
        }
        let mut col_sums = vec![0i32; n];
        row_sums(k, bt, ld, &mut col_sums);
        let (avx2_kernel, data) = match isa {
            Isa::Avx2 => {
                let kernel = avx2::kernel_for_cols(k, n, bt, ld);
                (Some(kernel), avx2::pack_cols(kernel, k, n, bt, ld))
            }
            _ => (None, vnni::pack_cols(k, n, bt, ld)),
        };
        PackedB { isa, k, n, zero_point, avx2_kernel, vnni_words: false, data, col_sums }
    }

    /// `a · B` for `m` rows of `a` (row stride `lda`, zero point 0) through `out`, on a SIMD tier.
    ///
    /// # Safety
    /// `self.isa` is not scalar; `a` holds `m` rows of `k` bytes; `out` addresses `m` rows of `n`
    /// columns (and `n` biases and scales).
    unsafe fn gemm_to(&self, m: usize, a: &[u8], lda: usize, out: Store) {
        assert!(!self.vnni_words, "an operand packed for 16-bit left operands multiplied by bytes");
        match (self.isa, self.avx2_kernel) {
            (Isa::Avx2, Some(kernel)) => avx2::gemm_to(kernel, m, self.k, self.n, a, lda, &self.data, out),
            (Isa::Avx512Vnni, _) => vnni::gemm_to(m, self.k, self.n, a, lda, &self.data, out),
            _ => unreachable!("gemm_to on the scalar tier"),
        }
    }

    /// `Σ_k s8[k][j]` per column.
    pub fn col_sums(&self) -> &[i32] {
        &self.col_sums
    }

    /// Bytes of packed data.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Rows of the left operand one tile of that microkernel computes: a block of rows split off
    /// for a thread wastes nothing when it is a multiple of this.
    pub fn tile_rows(&self) -> usize {
        match (self.isa, self.avx2_kernel) {
            (Isa::Avx2, Some(kernel)) => kernel.tile_rows(),
            (Isa::Avx512Vnni, _) => vnni::TILE_ROWS,
            _ => 1,
        }
    }

    /// The microkernel that multiplies by this operand.
    pub fn kernel_name(&self) -> &'static str {
        if self.vnni_words {
            return "avx512vnni_gemm_i16s8_6x64";
        }
        match self.avx2_kernel {
            Some(kernel) => kernel.name(),
            None => gemm_kernel_name(self.isa),
        }
    }
}

/// `Σ_k b[k][j]` of a row-major `K × N` s8 matrix (row stride `ld`).
fn row_major_col_sums(k: usize, n: usize, b: &[i8], ld: usize) -> Vec<i32> {
    let mut col_sums = vec![0i32; n];
    add_rows(k, b, ld, &mut col_sums);
    col_sums
}

crate::dispatch::simd_dispatch! {
    /// Adds each of `k` rows of s8 values (row stride `ld`) to `sums`, element by element
    /// (wrapping; the column sums of packed operands, run at every attention head).
    fn add_rows(k: usize, b: &[i8], ld: usize, sums: &mut [i32]) {
        let n = sums.len();
        for kk in 0..k {
            for (s, &v) in sums.iter_mut().zip(&b[kk * ld..kk * ld + n]) {
                *s = s.wrapping_add(v as i32);
            }
        }
    }
}

crate::dispatch::simd_dispatch! {
    /// `sums[j] = Σ_k bt[j][k]` over the first `k` values of each of `sums.len()` rows of s8
    /// values (row stride `ld`), wrapping: the column sums of an operand packed from its transpose.
    fn row_sums(k: usize, bt: &[i8], ld: usize, sums: &mut [i32]) {
        for (j, s) in sums.iter_mut().enumerate() {
            *s = bt[j * ld..j * ld + k].iter().fold(0i32, |s, &v| s.wrapping_add(v as i32));
        }
    }
}

/// Where a tile's results go: raw i32 sums, or through the requantizing epilogue (eq. 8) straight
/// to 8-bit or f32 outputs. Pointers are at the tile's first row and column; `bias` and `scale`
/// at its first column.
#[derive(Clone, Copy)]
pub(crate) enum Store {
    Raw {
        c: *mut i32,
        ldc: usize,
    },
    Requant {
        q: *mut u8,
        ldq: usize,
        bias: *const i32,
        scale: *const f32,
        zero_point: i32,
        signed: bool,
    },
    /// `sum`, when not null, holds values (row stride `ldf`) added to the outputs last.
    Float {
        f: *mut f32,
        ldf: usize,
        bias: *const i32,
        scale: *const f32,
        sum: *const f32,
    },
}

impl Store {
    /// The same store moved by `rows` rows and `cols` columns.
    pub(crate) unsafe fn at(self, rows: usize, cols: usize) -> Store {
        match self {
            Store::Raw { c, ldc } => Store::Raw { c: c.add(rows * ldc + cols), ldc },
            Store::Requant { q, ldq, bias, scale, zero_point, signed } => {
                Store::Requant { q: q.add(rows * ldq + cols), ldq, bias: bias.add(cols), scale: scale.add(cols), zero_point, signed }
            }
            Store::Float { f, ldf, bias, scale, sum } => Store::Float {
                f: f.add(rows * ldf + cols),
                ldf,
                bias: bias.add(cols),
                scale: scale.add(cols),
                sum: if sum.is_null() { sum } else { sum.add(rows * ldf + cols) },
            },
        }
    }
}

/// B laid out in panels of `nr` columns with k in groups of `group`: element `(k, j)` goes to
/// `((p · groups + g) · nr + jj) · group + kk` for `j = p·nr + jj`, `k = g·group + kk`; padding
/// is zero. The layout every SIMD tier packs its right operand into.
pub(crate) fn pack_panels<T: Copy + Default>(k: usize, n: usize, nr: usize, group: usize, get: impl Fn(usize, usize) -> T) -> Vec<T> {
    let (panels, groups) = (n.div_ceil(nr), k.div_ceil(group));
    let mut out = vec![T::default(); panels * groups * nr * group];
    for p in 0..panels {
        for g in 0..groups {
            for jj in 0..nr.min(n - p * nr) {
                for kk in 0..group.min(k - g * group) {
                    out[((p * groups + g) * nr + jj) * group + kk] = get(g * group + kk, p * nr + jj);
                }
            }
        }
    }
    out
}

/// Four bytes of A starting at `p`, of which only `valid` (1..=4) are read, as one i32 (the
/// broadcast of the 4-k group kernels).
///
/// # Safety
/// `p` addresses `valid` readable bytes.
#[inline(always)]
pub(crate) unsafe fn a_word(p: *const u8, valid: usize) -> i32 {
    if valid == 4 {
        return (p as *const i32).read_unaligned();
    }
    // Byte by byte: a variable-length copy would call memcpy, and around a call the kernels'
    // accumulator registers are saved and restored.
    let mut w = 0u32;
    for i in 0..valid {
        w |= (p.add(i).read() as u32) << (8 * i);
    }
    w as i32
}

/// Panels in the next block of a product with `remaining` panels left, blocks of at most `max`:
/// the remaining blocks as even as can be (13 panels of at most 4 go 4, 3, 3, 3, not 4, 4, 4, 1,
/// whose last one-panel tile reloads A for every 16 columns and ran at half the rate).
pub(crate) fn block_panels(remaining: usize, max: usize) -> usize {
    if remaining == 0 {
        return 0;
    }
    remaining.div_ceil(remaining.div_ceil(max))
}

/// Pulls share `tile` of `tiles` of `next`, the block of packed panels after the one being
/// multiplied, into the L2 cache: called before each row tile, so the next block arrives while
/// this one is multiplied. Weights stream from memory once per product, and the first tile of
/// each block stalled on them (5–7 % of a ViT Linear with its weights out of cache, on Zen 4).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_share(next: &[u8], tile: usize, tiles: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    const LINE: usize = 64;
    let per_tile = next.len().div_ceil(LINE).div_ceil(tiles.max(1)) * LINE;
    let from = (tile * per_tile).min(next.len());
    for line in (from..(from + per_tile).min(next.len())).step_by(LINE) {
        // SAFETY: `line` is inside `next`; a prefetch neither reads nor faults.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(next.as_ptr().add(line) as *const i8) };
    }
}

/// The microkernels of a tier, by name: each has its own [`peak`].
pub fn tier_kernels(isa: Isa) -> &'static [&'static str] {
    match isa {
        Isa::Scalar => &["scalar_gemm_u8s8_1x1"],
        Isa::Avx2 => &["avx2_gemm_u8s7_5x16", "avx2_gemm_u8s8_6x16"],
        Isa::Avx512Vnni => &["avx512vnni_gemm_u8s8_6x64"],
    }
}

/// Name of the microkernel a tier uses for full-range s8 right operands, for reports:
/// `<isa>_<what>_<mr>x<nr>` ([`PackedB::kernel_name`] names the one a packed operand uses).
pub fn gemm_kernel_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Scalar => "scalar_gemm_u8s8_1x1",
        Isa::Avx2 => avx2::Kernel::Madd.name(),
        Isa::Avx512Vnni => "avx512vnni_gemm_u8s8_6x64",
    }
}

/// `c[i][j] = Σ_k (a[i][k] − a_zp) · (B[k][j] − b_zp)` for `m` rows of `a` (u8, row stride
/// `lda`), into `c` (row stride `ldc`), on the calling thread (callers split rows over threads).
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8s8(m: usize, a: &[u8], lda: usize, a_zp: i32, b: &PackedB, c: &mut [i32], ldc: usize) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= (m - 1) * lda + k && c.len() >= (m - 1) * ldc + n, "gemm_u8s8: buffers too short");
    gemm_raw(m, a, lda, b, c, ldc);
    correct_zero_points(m, k, n, a, lda, a_zp, b, c, ldc);
}

/// `c = a · B` on the stored s8 values of `B`, zero points not applied.
fn gemm_raw(m: usize, a: &[u8], lda: usize, b: &PackedB, c: &mut [i32], ldc: usize) {
    assert!(!b.vnni_words, "gemm_u8s8: the right operand was packed for 16-bit left operands");
    let (k, n) = (b.k, b.n);
    match b.isa {
        Isa::Scalar => scalar::gemm(m, k, n, a, lda, &b.data, c, ldc),
        // SAFETY: a PackedB for a tier exists only if that tier was chosen as available.
        Isa::Avx2 => unsafe { avx2::gemm(b.avx2_kernel.expect("AVX2 operands name their kernel"), m, k, n, a, lda, &b.data, c, ldc) },
        Isa::Avx512Vnni => unsafe { vnni::gemm(m, k, n, a, lda, &b.data, c, ldc) },
    }
}

/// `c[i][j] = Σ_k a[i][k] · (B[k][j] − b_zp)` for `m` rows of i16 `a` (row stride `lda`), on
/// the calling thread, wrapping mod 2³²: exact whenever the true sums fit in i32. AVX2 with a
/// `vpmaddwd`-packed operand and AVX-512 VNNI with a `vpdpwssd`-packed one
/// ([`PackedB::from_rows_for_i16`]) multiply 16-bit values directly; other operands split
/// `a + 32768` into its high and low bytes, run one u8 × s8 product of `2m` rows, and take
/// `256 · Σ hi·B + Σ lo·B − 32768 · Σ_k B`. The same bits on every tier.
pub fn gemm_i16s8(m: usize, a: &[i16], lda: usize, b: &PackedB, c: &mut [i32], ldc: usize) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= (m - 1) * lda + k && c.len() >= (m - 1) * ldc + n, "gemm_i16s8: buffers too short");
    if b.vnni_words {
        // SAFETY: words are packed only on the VNNI tier, chosen as available; the assert bounds `a` and `c`.
        unsafe { vnni::gemm_words_to(m, k, n, a, lda, &b.data, Store::Raw { c: c.as_mut_ptr(), ldc }) };
        return;
    }
    match (b.isa, b.avx2_kernel) {
        (Isa::Scalar, _) => {
            for i in 0..m {
                let ci = &mut c[i * ldc..i * ldc + n];
                ci.fill(0);
                for (kk, &av) in a[i * lda..i * lda + k].iter().enumerate() {
                    for (cv, &bv) in ci.iter_mut().zip(&b.data[kk * n..kk * n + n]) {
                        *cv = cv.wrapping_add((av as i32).wrapping_mul((bv as i8) as i32));
                    }
                }
            }
        }
        // SAFETY: an AVX2 PackedB exists only if AVX2 was available; its layout is Madd's.
        (Isa::Avx2, Some(avx2::Kernel::Madd)) => unsafe { avx2::gemm_i16(m, k, n, a, lda, &b.data, c, ldc) },
        _ => with_scratch_u8(2 * m * k, |bytes| {
            let (hi, lo) = bytes.split_at_mut(m * k);
            for (i, (hi, lo)) in hi.chunks_exact_mut(k).zip(lo.chunks_exact_mut(k)).enumerate() {
                for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(&a[i * lda..i * lda + k]) {
                    let u = (x as u16) ^ 0x8000;
                    *h = (u >> 8) as u8;
                    *l = u as u8;
                }
            }
            with_scratch(2 * m * n, |acc| {
                gemm_raw(2 * m, bytes, k, b, acc, n);
                let (high, low) = acc.split_at(m * n);
                for i in 0..m {
                    let row = high[i * n..(i + 1) * n].iter().zip(&low[i * n..(i + 1) * n]).zip(&b.col_sums);
                    for (v, ((&h, &l), &s)) in c[i * ldc..i * ldc + n].iter_mut().zip(row) {
                        *v = h.wrapping_mul(256).wrapping_add(l).wrapping_sub(s.wrapping_mul(32768));
                    }
                }
            });
        }),
    }
    if b.zero_point != 0 {
        for i in 0..m {
            let shift = b.zero_point.wrapping_mul(a[i * lda..i * lda + k].iter().fold(0i32, |s, &v| s.wrapping_add(v as i32)));
            c[i * ldc..i * ldc + n].iter_mut().for_each(|v| *v = v.wrapping_sub(shift));
        }
    }
}

/// The epilogue `e` of `Σ_k (a[i][k] + 32768) · (B[k][j] − b_zp)` for `m` rows of 16-bit codes
/// stored centred, `a = code − 32768` (row stride `lda`): the attention's probabilities times
/// V. Exact whenever the true sums fit in i32 (a row of probability codes sums to about 65,535).
/// With a VNNI operand packed for 16-bit left operands the epilogue runs on the tile's
/// registers, `32768 · Σ_k (B − b_zp)` in its bias; elsewhere [`gemm_i16s8`] writes a scratch
/// block first. The same bits either way.
#[allow(clippy::too_many_arguments)]
pub fn gemm_i16s8_epilogue(
    m: usize,
    a: &[i16],
    lda: usize,
    b: &PackedB,
    e: &Epilogue,
    out_f32: &mut [f32],
    out_q: &mut [u8],
    residual: &[u8],
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    let bias = e.bias.clone().unwrap_or_else(|| vec![0; n]);
    assert!(bias.len() == n, "gemm_i16s8_epilogue: {} biases for {n} columns", bias.len());
    let centre = |s: i32| s.wrapping_sub((k as i32).wrapping_mul(b.zero_point)).wrapping_mul(32768);
    let bias: Vec<i32> = bias.iter().zip(&b.col_sums).map(|(&x, &s)| x.wrapping_add(centre(s))).collect();
    let e = Epilogue { bias: Some(bias), ..e.clone() };
    if b.vnni_words {
        assert!(a.len() >= (m - 1) * lda + k, "gemm_i16s8_epilogue: lhs too short");
        let (f, q) = ((out_f32.as_mut_ptr(), out_f32.len()), (out_q.as_mut_ptr(), out_q.len()));
        // SAFETY: words are packed only on the VNNI tier, chosen as available; `a` is bounded
        // by the assert; the outputs are initialised slices.
        unsafe { with_store(m, n, &e, f, q, residual, &[], |store| vnni::gemm_words_to(m, k, n, a, lda, &b.data, store)) };
        return;
    }
    with_scratch(m * n, |c| {
        gemm_i16s8(m, a, lda, b, c, n);
        epilogue(m, n, c, n, &e, out_f32, out_q, residual);
    });
}

/// Turns raw sums `Σ a·b` into `Σ (a − a_zp)(b − b_zp)`.
#[allow(clippy::too_many_arguments)]
fn correct_zero_points(m: usize, k: usize, n: usize, a: &[u8], lda: usize, a_zp: i32, b: &PackedB, c: &mut [i32], ldc: usize) {
    let b_zp = b.zero_point;
    if a_zp == 0 && b_zp == 0 {
        return;
    }
    for i in 0..m {
        let row_sum = a[i * lda..i * lda + k].iter().fold(0i32, |s, &v| s.wrapping_add(v as i32));
        let row_term =
            if b_zp != 0 { b_zp.wrapping_mul(row_sum).wrapping_sub((k as i32).wrapping_mul(a_zp).wrapping_mul(b_zp)) } else { 0 };
        let ci = &mut c[i * ldc..i * ldc + n];
        for (v, &cs) in ci.iter_mut().zip(&b.col_sums) {
            *v = v.wrapping_sub(a_zp.wrapping_mul(cs).wrapping_add(row_term));
        }
    }
}

/// i32 arithmetic wraps around on every tier (as `vpaddd` does), so that hostile shapes or
/// biases give the same bits everywhere and never a panic; real models stay far from 2³¹.
///
/// How i32 accumulators become outputs: `v = (acc + bias_j) as f32 · scale_j`, then either
/// `v` itself (f32 out) or `saturate(round_half_even(v) + zero_point)` (u8 or s8 out) (eq. 8).
#[derive(Clone, Debug)]
pub struct Epilogue {
    /// Per output column (one value broadcast when length 1).
    pub scale: Vec<f32>,
    pub bias: Option<Vec<i32>>,
    pub out: OutType,
    /// For 8-bit outputs: a 256-entry table applied to every requantized byte (an elementwise
    /// op that followed, e.g. GELU); the bytes written are the table's.
    pub table: Option<Box<[u8; 256]>>,
    /// For 8-bit outputs: a residual added after the table, `q(dq(y) + dq(r))`, with `r` passed
    /// to [`epilogue`] (the arithmetic of the residual Add it replaces).
    pub residual: Option<Residual>,
    /// A float activation on the scaled accumulators: before the requantization of 8-bit
    /// outputs (then `scale` gives the product's real values, not output steps), or on the f32
    /// output.
    pub activation: Option<Activation>,
}

/// A float function applied in an [`Epilogue`]: `q = saturate(round_half_even(f(v) / out_scale)
/// + zero_point)` for the real product values `v`.
#[derive(Clone, Copy, Debug)]
pub struct Activation {
    /// Elementwise, in place (a vectorised slice kernel such as `f32::gelu_erf`).
    pub f: fn(&mut [f32]),
    /// The scale of 8-bit outputs (not read for f32 outputs).
    pub out_scale: f32,
}

/// Parameters of a residual epilogue: the GEMM's (table's) output, the residual, the sum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Residual {
    pub y: elementwise::Affine,
    pub r: elementwise::Affine,
    pub out: elementwise::Affine,
}

/// The output of an epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    U8 { zero_point: i32 },
    S8 { zero_point: i32 },
}

crate::dispatch::simd_dispatch! {
    /// Applies `e` to an `m × n` block of accumulators (row stride `ldc`), writing f32 rows of
    /// `n` values into `out_f32`, or 8-bit rows into `out_q` (as u8 bits; s8 stored two's
    /// complement). `residual` holds the `m × n` residual codes when `e.residual` is set.
    pub fn epilogue(m: usize, n: usize, c: &[i32], ldc: usize, e: &Epilogue, out_f32: &mut [f32], out_q: &mut [u8], residual: &[u8]) {
        epilogue_rows(m, n, c, ldc, e, out_f32, out_q, residual, |v, b| v.wrapping_add(b) as f32);
    }
}

crate::dispatch::simd_dispatch! {
    /// [`epilogue`] for sums already in f32 with the bias added (`e.bias` is not read): the
    /// products whose sums pass 2³¹ ([`gemm_u16s8_epilogue`]).
    pub fn epilogue_sums(m: usize, n: usize, c: &[f32], ldc: usize, e: &Epilogue, out_f32: &mut [f32], out_q: &mut [u8], residual: &[u8]) {
        epilogue_rows(m, n, c, ldc, e, out_f32, out_q, residual, |v, _| v);
    }
}

/// The body of the epilogues: `sum(acc, bias_j)` is the f32 value `scale_j` multiplies (eq. 8).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn epilogue_rows<T: Copy>(
    m: usize,
    n: usize,
    c: &[T],
    ldc: usize,
    e: &Epilogue,
    out_f32: &mut [f32],
    out_q: &mut [u8],
    residual: &[u8],
    sum: impl Fn(T, i32) -> f32,
) {
    let scale = |j: usize| if e.scale.len() == 1 { e.scale[0] } else { e.scale[j] };
    let scales: Vec<f32> = (0..n).map(scale).collect();
    let bias: Vec<i32> = e.bias.clone().unwrap_or_else(|| vec![0; n]);
    let mut real = if e.activation.is_some() { vec![0.0f32; n] } else { Vec::new() };
    for i in 0..m {
        let row = &c[i * ldc..i * ldc + n];
        match e.out {
            OutType::F32 => {
                let o = &mut out_f32[i * n..(i + 1) * n];
                for (((o, &v), &b), &s) in o.iter_mut().zip(row).zip(&bias).zip(&scales) {
                    *o = sum(v, b) * s;
                }
                if let Some(act) = e.activation {
                    (act.f)(o);
                }
            }
            OutType::U8 { zero_point } | OutType::S8 { zero_point } => {
                let (lo, hi) = if matches!(e.out, OutType::U8 { .. }) { (0, 255) } else { (-128, 127) };
                let o = &mut out_q[i * n..(i + 1) * n];
                match e.activation {
                    None => {
                        for (((o, &v), &b), &s) in o.iter_mut().zip(row).zip(&bias).zip(&scales) {
                            *o = (elementwise::round_half_even(sum(v, b) * s) + zero_point).clamp(lo, hi) as u8;
                        }
                    }
                    Some(act) => {
                        for (((r, &v), &b), &s) in real.iter_mut().zip(row).zip(&bias).zip(&scales) {
                            *r = sum(v, b) * s;
                        }
                        (act.f)(&mut real);
                        elementwise::quantize(
                            &real,
                            crate::Affine { scale: act.out_scale, zero_point, signed: matches!(e.out, OutType::S8 { .. }) },
                            o,
                        );
                    }
                }
            }
        }
    }
    if e.out != OutType::F32 {
        epilogue_post(m, n, e, out_q, residual);
    }
}

crate::dispatch::simd_dispatch! {
    /// The table and residual steps of `e` on requantized rows of `n` bytes.
    pub fn epilogue_post(m: usize, n: usize, e: &Epilogue, out_q: &mut [u8], residual: &[u8]) {
        for i in 0..m {
            let o = &mut out_q[i * n..(i + 1) * n];
            if let Some(t) = &e.table {
                elementwise::lookup_in_place(o, t);
            }
            if let Some(r) = e.residual {
                let res = &residual[i * n..(i + 1) * n];
                for (v, &x) in o.iter_mut().zip(res) {
                    *v = r.out.quantize(r.y.dequantize(*v) + r.r.dequantize(x));
                }
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_U8: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_I16: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `f` with `len` values of this thread's buffer in `cell`, reused across calls (allocating
/// and zeroing a fresh one per GEMM costs more than some GEMMs); its contents are whatever the
/// last user left. A nested call gets a fresh buffer.
fn scratch<T: Copy + Default + 'static, R>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut f = Some(f);
    let reused = cell.with(|s| {
        let mut s = s.try_borrow_mut().ok()?;
        if s.len() < len {
            s.resize(len, T::default());
        }
        Some((f.take().expect("called once"))(&mut s[..len]))
    });
    match reused {
        Some(r) => r,
        None => (f.take().expect("not called yet"))(&mut vec![T::default(); len]),
    }
}

/// [`scratch`] of i32 accumulators.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [i32]) -> R) -> R {
    scratch(&SCRATCH, len, f)
}

/// [`scratch`] of f32 values.
pub fn with_scratch_f32<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    scratch(&SCRATCH_F32, len, f)
}

/// [`scratch`] of bytes.
pub fn with_scratch_u8<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    scratch(&SCRATCH_U8, len, f)
}

/// [`scratch`] of 16-bit values.
pub fn with_scratch_i16<R>(len: usize, f: impl FnOnce(&mut [i16]) -> R) -> R {
    scratch(&SCRATCH_I16, len, f)
}

/// Runs `product` (a SIMD tile loop over `m × n` outputs) with a [`Store`] that applies `e` on
/// the accumulator registers, then the steps of `e` that follow the store: an activation before
/// 8-bit outputs goes through an f32 scratch block and is quantized after it. `out_f32` and
/// `out_q` are the output blocks (pointer and length; the one `e` does not write may be empty);
/// `sum`, empty or `m × n` values, is added to f32 outputs last.
///
/// # Safety
/// Each pointer is valid for writes of its length; `product` writes all `m × n` outputs through
/// the store it is given. With an activation before 8-bit outputs, `out_q` is initialised.
#[allow(clippy::too_many_arguments)]
unsafe fn with_store(
    m: usize,
    n: usize,
    e: &Epilogue,
    (out_f32, f32_len): (*mut f32, usize),
    (out_q, q_len): (*mut u8, usize),
    residual: &[u8],
    sum: &[f32],
    product: impl FnOnce(Store),
) {
    let scale: Vec<f32> = if e.scale.len() == 1 { vec![e.scale[0]; n] } else { e.scale.clone() };
    let bias: Vec<i32> = e.bias.clone().unwrap_or_else(|| vec![0; n]);
    assert!(scale.len() == n && bias.len() == n, "epilogue: {} scales and {} biases for {n} columns", scale.len(), bias.len());
    let written_q = || {
        assert!(q_len >= m * n);
        // SAFETY: valid for `q_len` bytes (the caller), all written by `product` or initialised.
        unsafe { std::slice::from_raw_parts_mut(out_q, m * n) }
    };
    if let (Some(act), OutType::U8 { zero_point } | OutType::S8 { zero_point }) = (e.activation, e.out) {
        let out_q = written_q();
        with_scratch_f32(m * n, |real| {
            product(Store::Float { f: real.as_mut_ptr(), ldf: n, bias: bias.as_ptr(), scale: scale.as_ptr(), sum: std::ptr::null() });
            (act.f)(real);
            elementwise::quantize(
                real,
                crate::Affine { scale: act.out_scale, zero_point, signed: matches!(e.out, OutType::S8 { .. }) },
                out_q,
            );
        });
        epilogue_post(m, n, e, out_q, residual);
        return;
    }
    let store = match e.out {
        OutType::F32 => {
            assert!(f32_len >= m * n && (sum.is_empty() || sum.len() >= m * n));
            // The sum is added in the store unless an activation comes between.
            let sum = if sum.is_empty() || e.activation.is_some() { std::ptr::null() } else { sum.as_ptr() };
            Store::Float { f: out_f32, ldf: n, bias: bias.as_ptr(), scale: scale.as_ptr(), sum }
        }
        OutType::U8 { zero_point } | OutType::S8 { zero_point } => {
            assert!(q_len >= m * n);
            let signed = matches!(e.out, OutType::S8 { .. });
            Store::Requant { q: out_q, ldq: n, bias: bias.as_ptr(), scale: scale.as_ptr(), zero_point, signed }
        }
    };
    product(store);
    match (e.out, e.activation) {
        (OutType::F32, Some(act)) => {
            // SAFETY: valid for `f32_len ≥ m·n` values, all written by `product`.
            let out = unsafe { std::slice::from_raw_parts_mut(out_f32, m * n) };
            (act.f)(out);
            crate::f32::add_assign(out, sum);
        }
        (OutType::F32, None) => {}
        _ => epilogue_post(m, n, e, written_q(), residual),
    }
}

/// [`gemm_u8s8_epilogue`] with the left zero point 0, into output memory that need not be
/// initialised (a freshly allocated tensor): `out_f32` (f32 epilogues) or `out_q` (8-bit ones)
/// holds `m × n` elements, all of which are written; `sum` (empty, or `m × n` values for f32
/// outputs) is added to them last. On the SIMD tiers the tiles write the outputs directly, the
/// sum added on their registers; otherwise they are zeroed first and the general path runs. The
/// same bits either way.
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8s8_epilogue_uninit(
    m: usize,
    a: &[u8],
    lda: usize,
    b: &PackedB,
    e: &Epilogue,
    out_f32: &mut [MaybeUninit<f32>],
    out_q: &mut [MaybeUninit<u8>],
    residual: &[u8],
    sum: &[f32],
) {
    let n = b.n;
    if m == 0 || n == 0 {
        return;
    }
    if b.isa != Isa::Scalar && b.zero_point == 0 && e.activation.is_none() {
        assert!(a.len() >= (m - 1) * lda + b.k, "gemm_u8s8_epilogue_uninit: lhs too short");
        let (f, q) = ((out_f32.as_mut_ptr() as *mut f32, out_f32.len()), (out_q.as_mut_ptr() as *mut u8, out_q.len()));
        // SAFETY: the tier was available when `b` was packed; `a` is bounded by the assert; the
        // outputs are valid for their lengths and the tiles write all `m × n` of them.
        unsafe { with_store(m, n, e, f, q, residual, sum, |store| b.gemm_to(m, a, lda, store)) };
        return;
    }
    out_f32.fill(MaybeUninit::new(0.0));
    out_q.fill(MaybeUninit::new(0));
    // SAFETY: both were just initialised.
    let (f, q) = unsafe { (out_f32.assume_init_mut(), out_q.assume_init_mut()) };
    gemm_u8s8_epilogue(m, a, lda, 0, b, e, f, q, residual);
    crate::f32::add_assign(f, sum);
}

/// `a · B` for `m` rows and the epilogue `e` in one call: on the SIMD tiers (with both zero
/// points folded away) the epilogue runs on the accumulator registers of each tile, elsewhere
/// over a scratch i32 block. The same bits either way.
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8s8_epilogue(
    m: usize,
    a: &[u8],
    lda: usize,
    a_zp: i32,
    b: &PackedB,
    e: &Epilogue,
    out_f32: &mut [f32],
    out_q: &mut [u8],
    residual: &[u8],
) {
    let n = b.n;
    if m == 0 || n == 0 {
        return;
    }
    if b.isa != Isa::Scalar && a_zp == 0 && b.zero_point == 0 {
        assert!(a.len() >= (m - 1) * lda + b.k, "gemm_u8s8_epilogue: lhs too short");
        let (f, q) = ((out_f32.as_mut_ptr(), out_f32.len()), (out_q.as_mut_ptr(), out_q.len()));
        // SAFETY: the tier was available when `b` was packed; `a` is bounded by the assert; the
        // outputs are initialised slices.
        unsafe { with_store(m, n, e, f, q, residual, &[], |store| b.gemm_to(m, a, lda, store)) };
        return;
    }
    with_scratch(m * n, |c| {
        gemm_u8s8(m, a, lda, a_zp, b, c, n);
        epilogue(m, n, c, n, e, out_f32, out_q, residual);
    });
}

/// `a · B` and the epilogue `e` for `m` rows of 16-bit codes `a` (row stride `lda`, zero point
/// `a_zp`) and a right operand with zero point 0. Each row splits into its high and low bytes,
/// and one u8 × s8 product of `2m` rows gives `Σ hi·w` and `Σ lo·w`; then `256·Σ hi·w + Σ lo·w −
/// a_zp·Σ w + bias` is summed in i64 (a sum of K 16 × 8-bit products passes 2³¹) and rounded to
/// f32 once before [`epilogue_sums`] scales it. Every tier gives the same bits (the product is
/// exact, the rest is the same scalar arithmetic).
#[allow(clippy::too_many_arguments)]
pub fn gemm_u16s8_epilogue(
    m: usize,
    a: &[u16],
    lda: usize,
    a_zp: i32,
    b: &PackedB,
    e: &Epilogue,
    out_f32: &mut [f32],
    out_q: &mut [u8],
    residual: &[u8],
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(b.zero_point == 0, "gemm_u16s8_epilogue: the right operand's zero point must be 0");
    assert!(a.len() >= (m - 1) * lda + k, "gemm_u16s8_epilogue: lhs too short");
    let bias: Vec<i64> = match &e.bias {
        Some(bias) => bias.iter().map(|&x| x as i64).collect(),
        None => vec![0; n],
    };
    let shift: Vec<i64> = b.col_sums.iter().zip(&bias).map(|(&s, &x)| x - a_zp as i64 * s as i64).collect();
    with_scratch_u8(2 * m * k, |bytes| {
        let (hi, lo) = bytes.split_at_mut(m * k);
        for (i, (hi, lo)) in hi.chunks_exact_mut(k).zip(lo.chunks_exact_mut(k)).enumerate() {
            for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(&a[i * lda..i * lda + k]) {
                *h = (x >> 8) as u8;
                *l = x as u8;
            }
        }
        with_scratch(2 * m * n, |acc| {
            gemm_u8s8(2 * m, bytes, k, 0, b, acc, n);
            let (high, low) = acc.split_at(m * n);
            with_scratch_f32(m * n, |sums| {
                for ((s, (&h, &l)), &c) in sums.iter_mut().zip(high.iter().zip(low)).zip(shift.iter().cycle()) {
                    *s = (256 * h as i64 + l as i64 + c) as f32;
                }
                epilogue_sums(m, n, sums, n, e, out_f32, out_q, residual);
            });
        });
    });
}

#[cfg(test)]
mod tests;
