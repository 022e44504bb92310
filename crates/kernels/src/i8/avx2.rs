//! AVX2: two exact u8 × s8 microkernels of 16 columns (5 or 6 rows), chosen per right operand when it
//! is packed. Both keep B 8-bit in memory.
//!
//! - [`Kernel::Maddubs`], for operands whose adjacent k pairs satisfy `|b₀| + |b₁| ≤ 128` in
//!   every column (7-bit weights, `--reduce-range`): `vpmaddubsw` cannot saturate
//!   (255 · 128 = 32640 < 2¹⁵), and `vpmaddwd` with ones widens its i16 pair sums to i32.
//!   32 multiply-adds cost two multiplies and one add. B: panels of 8 columns, k in groups of 4
//!   (32 bytes per panel and group, one ymm); A is broadcast 4 bytes at a time from its rows.
//! - [`Kernel::Madd`], for any s8 operand: B in panels of 8 columns, k in pairs (16 bytes,
//!   sign-extended to 16 i16 by one `vpmovsxbw`); A is widened to i16 once per call and
//!   broadcast 2 values at a time; `vpmaddwd` adds each pair of products into i32
//!   (|255 · 128 · 2| < 2³¹). 16 multiply-adds per multiply.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Store;

const NR: usize = 8;
/// Tile heights: `vpmaddubsw` needs `ones` and a temporary beside its accumulators, so 5 rows of
/// 2 panels (14 registers); `vpmaddwd` fits 6 rows (15).
const MR_MADDUBS: usize = 5;
const MR_MADD: usize = 6;
/// Panels per tile.
const NP: usize = 2;

/// The AVX2 microkernel a right operand is packed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Madd,
    Maddubs,
}

impl Kernel {
    /// The kernel for `B` (`k × n`, stored s8 values): `Maddubs` exactly when no pair
    /// `(b[2i][j], b[2i+1][j])` has `|b₀| + |b₁| > 128`.
    pub fn for_operand(k: usize, n: usize, get: impl Fn(usize, usize) -> i8) -> Kernel {
        let fits = (0..k.div_ceil(2)).all(|i| {
            (0..n).all(|j| {
                let second = if 2 * i + 1 < k { (get(2 * i + 1, j) as i32).abs() } else { 0 };
                (get(2 * i, j) as i32).abs() + second <= 128
            })
        });
        if fits {
            Kernel::Maddubs
        } else {
            Kernel::Madd
        }
    }

    /// Rows of the left operand one tile computes.
    pub fn tile_rows(self) -> usize {
        match self {
            Kernel::Madd => MR_MADD,
            Kernel::Maddubs => MR_MADDUBS,
        }
    }

    /// `<isa>_<what>_<mr>x<nr>`; `u8s7` names the kernel for 7-bit right operands.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Madd => "avx2_gemm_u8s8_6x16",
            Kernel::Maddubs => "avx2_gemm_u8s7_5x16",
        }
    }

    fn group(self) -> usize {
        match self {
            Kernel::Madd => 2,
            Kernel::Maddubs => 4,
        }
    }
}

/// [`Kernel::for_operand`] for a row-major `k × n` operand (row stride `ld`).
pub fn kernel_for_rows(k: usize, n: usize, b: &[i8], ld: usize) -> Kernel {
    let fits = (0..k / 2).all(|i| {
        let (r0, r1) = (&b[2 * i * ld..][..n], &b[(2 * i + 1) * ld..][..n]);
        r0.iter().zip(r1).all(|(&x, &y)| (x as i32).abs() + (y as i32).abs() <= 128)
    });
    if fits {
        Kernel::Maddubs
    } else {
        Kernel::Madd
    }
}

/// [`Kernel::for_operand`] for the transpose of a row-major `n × k` operand (row stride `ld`):
/// the pairs of k are adjacent bytes of a row.
pub fn kernel_for_cols(k: usize, n: usize, bt: &[i8], ld: usize) -> Kernel {
    let fits = (0..n).all(|j| bt[j * ld..][..k].chunks(2).all(|p| p.iter().map(|&x| (x as i32).abs()).sum::<i32>() <= 128));
    if fits {
        Kernel::Maddubs
    } else {
        Kernel::Madd
    }
}

/// Where element `(kk, j)` goes in the layout of [`pack`] with `groups` groups of `group` k.
#[inline(always)]
fn at(group: usize, groups: usize, kk: usize, j: usize) -> usize {
    (((j / NR) * groups + kk / group) * NR + j % NR) * group + kk % group
}

/// [`pack`] from a row-major `k × n` source (row stride `ld`), read row by row (for operands
/// packed at run time: attention's K and V).
pub fn pack_rows(kernel: Kernel, k: usize, n: usize, b: &[i8], ld: usize) -> Vec<u8> {
    let group = kernel.group();
    let groups = k.div_ceil(group);
    let mut out = vec![0u8; n.div_ceil(NR) * groups * NR * group];
    assert!(k == 0 || b.len() >= (k - 1) * ld + n, "pack_rows: source too short");
    // Pairs of rows and 16 columns at a time, interleaved by SSE2 byte unpacks; the rest below.
    let (pairs, wide) = if kernel == Kernel::Madd { (k / 2, n / 16 * 16) } else { (0, 0) };
    for g in 0..pairs {
        // SAFETY: SSE2 is part of x86-64; the assert above bounds both rows' 16-byte reads, and
        // `at` of a full pair of panels stays inside `out`.
        unsafe {
            let (r0, r1) = (b.as_ptr().add(2 * g * ld), b.as_ptr().add((2 * g + 1) * ld));
            for j in (0..wide).step_by(16) {
                let (x0, x1) = (_mm_loadu_si128(r0.add(j) as *const __m128i), _mm_loadu_si128(r1.add(j) as *const __m128i));
                _mm_storeu_si128(out.as_mut_ptr().add(at(2, groups, 2 * g, j)) as *mut __m128i, _mm_unpacklo_epi8(x0, x1));
                _mm_storeu_si128(out.as_mut_ptr().add(at(2, groups, 2 * g, j + NR)) as *mut __m128i, _mm_unpackhi_epi8(x0, x1));
            }
        }
    }
    for kk in 0..k {
        let from = if kk < 2 * pairs { wide } else { 0 };
        for (j, &v) in b[kk * ld..][..n].iter().enumerate().skip(from) {
            out[at(group, groups, kk, j)] = v as u8;
        }
    }
    out
}

/// [`pack`] from the transpose of a row-major `n × k` source: a column's `group` k are
/// contiguous in `bt`, and are copied together.
pub fn pack_cols(kernel: Kernel, k: usize, n: usize, bt: &[i8], ld: usize) -> Vec<u8> {
    let group = kernel.group();
    let groups = k.div_ceil(group);
    let mut out = vec![0u8; n.div_ceil(NR) * groups * NR * group];
    assert!(n == 0 || bt.len() >= (n - 1) * ld + k, "pack_cols: source too short");
    // Blocks of 8 columns × 8 pairs of k: an 8 × 8 transpose of 16-bit words by SSE2 unpacks.
    let (panels, blocks) = if kernel == Kernel::Madd { (n / NR, k / 16) } else { (0, 0) };
    for p in 0..panels {
        for h in 0..blocks {
            // SAFETY: SSE2 is part of x86-64; the assert above bounds the 8 rows' 16-byte reads at
            // `16·h + 16 ≤ k`, and the 8 stores of 16 bytes are pairs `8·h … 8·h + 7` of panel `p`.
            unsafe {
                let x: [__m128i; 8] =
                    std::array::from_fn(|r| _mm_loadu_si128(bt.as_ptr().add((p * NR + r) * ld + 16 * h) as *const __m128i));
                let t: [__m128i; 8] = std::array::from_fn(|i| {
                    let (a, b) = (x[2 * (i / 2)], x[2 * (i / 2) + 1]);
                    if i % 2 == 0 {
                        _mm_unpacklo_epi16(a, b)
                    } else {
                        _mm_unpackhi_epi16(a, b)
                    }
                });
                // u[0..4]: rows 0–3, pairs (0,1) (2,3) (4,5) (6,7); u[4..8]: rows 4–7.
                let u: [__m128i; 8] = std::array::from_fn(|i| {
                    let base = if i < 4 { 0 } else { 4 };
                    let (a, b) = (t[base + (i % 4) / 2], t[base + 2 + (i % 4) / 2]);
                    if i % 2 == 0 {
                        _mm_unpacklo_epi32(a, b)
                    } else {
                        _mm_unpackhi_epi32(a, b)
                    }
                });
                for g in 0..8 {
                    let (a, b) = (u[g / 2], u[4 + g / 2]);
                    let v = if g % 2 == 0 { _mm_unpacklo_epi64(a, b) } else { _mm_unpackhi_epi64(a, b) };
                    _mm_storeu_si128(out.as_mut_ptr().add(at(2, groups, 2 * (8 * h + g), p * NR)) as *mut __m128i, v);
                }
            }
        }
    }
    for j in 0..n {
        let from = if j < panels * NR { 16 * blocks } else { 0 };
        for (kk, &v) in bt[j * ld..][..k].iter().enumerate().skip(from) {
            out[at(group, groups, kk, j)] = v as u8;
        }
    }
    out
}

/// Packs `get(k, j)` for `kernel`.
pub fn pack(kernel: Kernel, k: usize, n: usize, get: impl Fn(usize, usize) -> i8) -> Vec<u8> {
    super::pack_panels(k, n, NR, kernel.group(), |kk, j| get(kk, j) as u8)
}

/// Stores `acc` (`R` rows × `P` panels) through `out` at the tile's origin, `cols` columns valid.
#[inline(always)]
unsafe fn store<const R: usize, const P: usize>(acc: &[[__m256i; P]; R], out: Store, cols: usize) {
    for (r, row) in acc.iter().enumerate() {
        for (p, &v) in row.iter().enumerate() {
            let start = p * NR;
            if start >= cols {
                break;
            }
            store_vector(out, r, start, (cols - start).min(NR), v);
        }
    }
}

/// Stores one accumulator vector of row `r`, columns `start .. start + valid`: the arithmetic of
/// the AVX-512 tier's store, eight lanes at a time.
#[inline(always)]
unsafe fn store_vector(out: Store, r: usize, start: usize, valid: usize, acc: __m256i) {
    // Masked loads and stores for partial vectors: a variable-length copy would call memcpy, and
    // around a call the other accumulators are saved and restored.
    // (Plain ones for full vectors: AMD cores run masked stores as many micro-ops.)
    let full = valid == NR;
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    let real = |bias: *const i32, scale: *const f32| {
        let (bias, scale) = (bias.add(start), scale.add(start));
        let (b, s) = if full {
            (_mm256_loadu_si256(bias as *const __m256i), _mm256_loadu_ps(scale))
        } else {
            (_mm256_maskload_epi32(bias, mask), _mm256_maskload_ps(scale, mask))
        };
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, b)), s)
    };
    match out {
        Store::Raw { c, ldc } if full => _mm256_storeu_si256(c.add(r * ldc + start) as *mut __m256i, acc),
        Store::Raw { c, ldc } => _mm256_maskstore_epi32(c.add(r * ldc + start), mask, acc),
        Store::Float { f, ldf, bias, scale, sum } => {
            let x = real(bias, scale);
            let at = r * ldf + start;
            match (full, sum.is_null()) {
                (true, true) => _mm256_storeu_ps(f.add(at), x),
                (true, false) => _mm256_storeu_ps(f.add(at), _mm256_add_ps(x, _mm256_loadu_ps(sum.add(at)))),
                (false, true) => _mm256_maskstore_ps(f.add(at), mask, x),
                (false, false) => _mm256_maskstore_ps(f.add(at), mask, _mm256_add_ps(x, _mm256_maskload_ps(sum.add(at), mask))),
            }
        }
        Store::Requant { q, ldq, bias, scale, zero_point, signed } => {
            // Round half to even with the default MXCSR mode after capping to ±2^30, as the
            // AVX-512 tier does: equal to elementwise::round_half_even once clamped to 8 bits.
            const CAP: f32 = 1_073_741_824.0;
            let x = _mm256_min_ps(_mm256_max_ps(real(bias, scale), _mm256_set1_ps(-CAP)), _mm256_set1_ps(CAP));
            let lo = if signed { -128 } else { 0 };
            let y = _mm256_add_epi32(_mm256_cvtps_epi32(x), _mm256_set1_epi32(zero_point));
            let y = _mm256_min_epi32(_mm256_max_epi32(y, _mm256_set1_epi32(lo)), _mm256_set1_epi32(lo + 255));
            // The low byte of each lane, gathered into the low 8 bytes.
            let bytes = _mm256_shuffle_epi8(
                y,
                _mm256_setr_epi8(
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                    -1,
                ),
            );
            let packed = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1)));
            let dst = q.add(r * ldq + start);
            if full {
                _mm_storel_epi64(dst as *mut __m128i, packed);
            } else {
                let word = (_mm_cvtsi128_si64(packed) as u64).to_le_bytes();
                for (i, &b) in word.iter().enumerate().take(valid) {
                    dst.add(i).write(b);
                }
            }
        }
    }
}

/// One group of 4 k (`valid` of them real) of [`tile_maddubs`].
#[inline(always)]
unsafe fn maddubs_group<const R: usize, const P: usize>(
    acc: &mut [[__m256i; P]; R],
    rows: &[*const u8; R],
    b: *const u8,
    k4: usize,
    g: usize,
    valid: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let bv: [__m256i; P] = std::array::from_fn(|p| _mm256_loadu_si256(b.add((p * k4 + g) * NR * 4) as *const __m256i));
    for (row, &ar) in acc.iter_mut().zip(rows) {
        let av = _mm256_set1_epi32(super::a_word(ar.add(g * 4), valid));
        for (v, &bp) in row.iter_mut().zip(&bv) {
            *v = _mm256_add_epi32(*v, _mm256_madd_epi16(_mm256_maddubs_epi16(av, bp), ones));
        }
    }
}

/// [`Kernel::Maddubs`]: `R` rows × `P` panels over `k4` groups of 4 k.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_maddubs<const R: usize, const P: usize>(
    k: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    k4: usize,
    out: Store,
    cols: usize,
) {
    let mut acc = [[_mm256_setzero_si256(); P]; R];
    let rows: [*const u8; R] = std::array::from_fn(|r| a.add(r * lda));
    for g in 0..k / 4 {
        maddubs_group(&mut acc, &rows, b, k4, g, 4);
    }
    if !k.is_multiple_of(4) {
        maddubs_group(&mut acc, &rows, b, k4, k / 4, k % 4);
    }
    store(&acc, out, cols);
}

/// One pair of k of [`tile_madd`]: `word(r)` is row `r`'s two 16-bit values.
#[inline(always)]
unsafe fn madd_pair<const R: usize, const P: usize>(
    acc: &mut [[__m256i; P]; R],
    b: *const u8,
    k2: usize,
    g: usize,
    word: impl Fn(usize) -> i32,
) {
    let bv: [__m256i; P] = std::array::from_fn(|p| _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add((p * k2 + g) * NR * 2) as *const __m128i)));
    for (r, row) in acc.iter_mut().enumerate() {
        let av = _mm256_set1_epi32(word(r));
        for (v, &bp) in row.iter_mut().zip(&bv) {
            *v = _mm256_add_epi32(*v, _mm256_madd_epi16(av, bp));
        }
    }
}

/// [`Kernel::Madd`]: `R` rows × `P` panels over the `k` values of rows of i16 `a` (row stride
/// `lda` values), each pair of them broadcast as one word; B holds `k2 = ⌈k/2⌉` pairs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_madd<const R: usize, const P: usize>(k: usize, a: *const i16, lda: usize, b: *const u8, k2: usize, out: Store, cols: usize) {
    let mut acc = [[_mm256_setzero_si256(); P]; R];
    for g in 0..k / 2 {
        madd_pair(&mut acc, b, k2, g, |r| (a.add(r * lda + 2 * g) as *const i32).read_unaligned());
    }
    if k % 2 == 1 {
        // The last k alone: its partner in B is zero padding, so the high half is never counted.
        madd_pair(&mut acc, b, k2, k / 2, |r| a.add(r * lda + k - 1).read() as u16 as i32);
    }
    store(&acc, out, cols);
}

/// Runs the tiles of `a · B` over `m` rows through `out` (positioned at row 0, column 0): `a`
/// is u8 (row stride `lda`) for [`Kernel::Maddubs`], `a16` is i16 (row stride `lda` values) for
/// [`Kernel::Madd`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<const MADD: bool>(m: usize, k: usize, n: usize, a: *const u8, a16: *const i16, lda: usize, b: &[u8], out: Store) {
    let (kernel, mr) = if MADD { (Kernel::Madd, MR_MADD) } else { (Kernel::Maddubs, MR_MADDUBS) };
    let kg = k.div_ceil(kernel.group());
    let panels = n.div_ceil(NR);
    let mut p = 0;
    while p < panels {
        let np = super::block_panels(panels - p, NP);
        let cols = (n - p * NR).min(np * NR);
        let bp = b.as_ptr().add(p * kg * NR * kernel.group());
        let next = std::slice::from_raw_parts(
            bp.add(np * kg * NR * kernel.group()),
            super::block_panels(panels - p - np, NP) * kg * NR * kernel.group(),
        );
        let mut i = 0;
        while i < m {
            super::prefetch_share(next, i / mr, m.div_ceil(mr));
            let rows = (m - i).min(mr);
            let o = out.at(i, p * NR);
            macro_rules! go {
                ($($r:literal)*) => {
                    match (kernel, rows, np) {
                        $((Kernel::Maddubs, $r, 2) => tile_maddubs::<$r, 2>(k, a.add(i * lda), lda, bp, kg, o, cols),
                          (Kernel::Maddubs, $r, _) => tile_maddubs::<$r, 1>(k, a.add(i * lda), lda, bp, kg, o, cols),
                          (Kernel::Madd, $r, 2) => tile_madd::<$r, 2>(k, a16.add(i * lda), lda, bp, kg, o, cols),
                          (Kernel::Madd, $r, _) => tile_madd::<$r, 1>(k, a16.add(i * lda), lda, bp, kg, o, cols),)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(1 2 3 4 5 6);
            i += mr;
        }
        p += np;
    }
}

thread_local! {
    static WIDE_A: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Raw sums `c = a · B` for `m` rows of u8 `a`.
///
/// # Safety
/// The CPU supports AVX2; `b` was packed by [`pack`] with `kernel` for `k × n`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(kernel: Kernel, m: usize, k: usize, n: usize, a: &[u8], lda: usize, b: &[u8], c: &mut [i32], ldc: usize) {
    gemm_to(kernel, m, k, n, a, lda, b, Store::Raw { c: c.as_mut_ptr(), ldc });
}

/// `a · B` for `m` rows of u8 `a` through `out` (positioned at row 0, column 0).
///
/// # Safety
/// As [`gemm`]; `out` addresses `m` rows of `n` columns (and `n` biases and scales).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_to(kernel: Kernel, m: usize, k: usize, n: usize, a: &[u8], lda: usize, b: &[u8], out: Store) {
    match kernel {
        Kernel::Maddubs => tiles::<false>(m, k, n, a.as_ptr(), std::ptr::null(), lda, b, out),
        Kernel::Madd => WIDE_A.with(|w| {
            let mut w = w.borrow_mut();
            w.clear();
            w.resize(m * k, 0);
            for (dst, src) in w.chunks_exact_mut(k).zip(a.chunks(lda)) {
                for (d, &s) in dst.iter_mut().zip(&src[..k]) {
                    *d = s as i16;
                }
            }
            tiles::<true>(m, k, n, std::ptr::null(), w.as_ptr(), k, b, out)
        }),
    }
}

/// Raw sums `c = a · B` for `m` rows of i16 `a` (row stride `lda`), wrapping mod 2³² (each
/// `vpmaddwd` pair of products is exact in i32).
///
/// # Safety
/// The CPU supports AVX2; `b` was packed by [`pack`] with [`Kernel::Madd`] for `k × n`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_i16(m: usize, k: usize, n: usize, a: &[i16], lda: usize, b: &[u8], c: &mut [i32], ldc: usize) {
    tiles::<true>(m, k, n, std::ptr::null(), a.as_ptr(), lda, b, Store::Raw { c: c.as_mut_ptr(), ldc })
}
