//! AVX-512 VNNI: `vpdpbusd` adds four u8×s8 products into each i32 lane, `vpdpwssd` two
//! i16×i16 products.
//!
//! B is packed in panels of 16 columns; within a panel, for every group of k, the 16 columns'
//! group follows each other (64 bytes, one zmm): 4 bytes per column for u8 left operands, 2
//! 16-bit words for i16 ones. The microkernel keeps 6 rows × 64 columns of accumulators (24 zmm)
//! and broadcasts one 32-bit group of A per row: 4 loads of B and 6 broadcasts feed 24 products.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Store;

const NR: usize = 16;
const MR: usize = 6;

/// Rows of the left operand one tile computes.
pub(crate) const TILE_ROWS: usize = MR;
/// Panels per tile.
const NP: usize = 4;

pub fn pack(k: usize, n: usize, get: impl Fn(usize, usize) -> i8) -> Vec<u8> {
    super::pack_panels(k, n, NR, 4, |kk, j| get(kk, j) as u8)
}

/// [`pack`] for a row-major source (row stride `ld`), for right operands packed at run time
/// (attention): full 4-row × 16-column blocks are interleaved with SSE2 byte unpacks.
pub fn pack_rows(k: usize, n: usize, b: &[i8], ld: usize) -> Vec<u8> {
    let (panels, k4) = (n.div_ceil(NR), k.div_ceil(4));
    let mut out = vec![0u8; panels * k4 * NR * 4];
    for p in 0..panels {
        let (c0, cols) = (p * NR, (n - p * NR).min(NR));
        for g in 0..k4 {
            let dst = &mut out[(p * k4 + g) * NR * 4..][..NR * 4];
            let rows = 4.min(k - g * 4);
            #[cfg(target_arch = "x86_64")]
            if rows == 4 && cols == NR {
                // SAFETY: four rows of 16 bytes lie inside `b` (checked by the slicing below),
                // and `dst` holds 64 bytes.
                unsafe {
                    let r: [&[i8]; 4] = std::array::from_fn(|kk| &b[(g * 4 + kk) * ld + c0..][..NR]);
                    let l = |kk: usize| _mm_loadu_si128(r[kk].as_ptr() as *const __m128i);
                    let (r01l, r01h) = (_mm_unpacklo_epi8(l(0), l(1)), _mm_unpackhi_epi8(l(0), l(1)));
                    let (r23l, r23h) = (_mm_unpacklo_epi8(l(2), l(3)), _mm_unpackhi_epi8(l(2), l(3)));
                    let d = dst.as_mut_ptr() as *mut __m128i;
                    _mm_storeu_si128(d, _mm_unpacklo_epi16(r01l, r23l));
                    _mm_storeu_si128(d.add(1), _mm_unpackhi_epi16(r01l, r23l));
                    _mm_storeu_si128(d.add(2), _mm_unpacklo_epi16(r01h, r23h));
                    _mm_storeu_si128(d.add(3), _mm_unpackhi_epi16(r01h, r23h));
                }
                continue;
            }
            for kk in 0..rows {
                let src = &b[(g * 4 + kk) * ld + c0..][..cols];
                for (j, &v) in src.iter().enumerate() {
                    dst[j * 4 + kk] = v as u8;
                }
            }
        }
    }
    out
}

/// [`pack`] for the transpose of a row-major source: `B[k][j] = bt[j * ld + k]`. The four k of
/// a group are contiguous in `bt`, so they move as one 32-bit word: blocks of 4 columns × 4
/// groups as 4 × 4 transposes of words (SSE2 unpacks), the rest word by word.
pub fn pack_cols(k: usize, n: usize, bt: &[i8], ld: usize) -> Vec<u8> {
    let (panels, k4) = (n.div_ceil(NR), k.div_ceil(4));
    let full = k / 4;
    let mut out = vec![0u8; panels * k4 * NR * 4];
    for p in 0..panels {
        let panel = &mut out[p * k4 * NR * 4..][..k4 * NR * 4];
        let cols = (n - p * NR).min(NR);
        let (block_cols, block_groups) = if cfg!(target_arch = "x86_64") { (cols / 4 * 4, full / 4 * 4) } else { (0, 0) };
        #[cfg(target_arch = "x86_64")]
        for j in (0..block_cols).step_by(4) {
            for g in (0..block_groups).step_by(4) {
                let rows: [&[i8]; 4] = std::array::from_fn(|r| &bt[(p * NR + j + r) * ld + g * 4..][..16]);
                let dst = &mut panel[(g * NR + j) * 4..][..(3 * NR + 4) * 4];
                // SAFETY: each row holds 16 bytes and `dst` the four 16-byte stores at group
                // offsets 0..3 (both sliced above).
                unsafe {
                    let l = |r: usize| _mm_loadu_si128(rows[r].as_ptr() as *const __m128i);
                    let (r01l, r01h) = (_mm_unpacklo_epi32(l(0), l(1)), _mm_unpackhi_epi32(l(0), l(1)));
                    let (r23l, r23h) = (_mm_unpacklo_epi32(l(2), l(3)), _mm_unpackhi_epi32(l(2), l(3)));
                    let base = dst.as_mut_ptr();
                    let d = |gg: usize| base.add(gg * NR * 4) as *mut __m128i;
                    _mm_storeu_si128(d(0), _mm_unpacklo_epi64(r01l, r23l));
                    _mm_storeu_si128(d(1), _mm_unpackhi_epi64(r01l, r23l));
                    _mm_storeu_si128(d(2), _mm_unpacklo_epi64(r01h, r23h));
                    _mm_storeu_si128(d(3), _mm_unpackhi_epi64(r01h, r23h));
                }
            }
        }
        for j in 0..cols {
            let src = &bt[(p * NR + j) * ld..][..k];
            let moved = if j < block_cols { block_groups } else { 0 };
            for (g, word) in src.chunks_exact(4).enumerate().skip(moved) {
                let at = (g * NR + j) * 4;
                panel[at..at + 4].copy_from_slice(&[word[0] as u8, word[1] as u8, word[2] as u8, word[3] as u8]);
            }
            for (kk, &v) in src[full * 4..].iter().enumerate() {
                panel[(full * NR + j) * 4 + kk] = v as u8;
            }
        }
    }
    out
}

/// B as 16-bit words `b − zero_point` for i16 left operands ([`gemm_words_to`]): panels of 16
/// columns, k in pairs (the two words of a column side by side, 64 bytes per panel and pair),
/// from a row-major source (row stride `ld`). Full 2-row × 16-column blocks are widened and
/// interleaved with SSE2.
pub fn pack_rows_words(k: usize, n: usize, b: &[i8], ld: usize, zero_point: i8) -> Vec<u8> {
    let (panels, k2) = (n.div_ceil(NR), k.div_ceil(2));
    let mut out = vec![0u8; panels * k2 * NR * 4];
    for p in 0..panels {
        let (c0, cols) = (p * NR, (n - p * NR).min(NR));
        for g in 0..k2 {
            let dst = &mut out[(p * k2 + g) * NR * 4..][..NR * 4];
            let rows = 2.min(k - g * 2);
            #[cfg(target_arch = "x86_64")]
            if rows == 2 && cols == NR {
                let (r0, r1) = (&b[g * 2 * ld + c0..][..NR], &b[(g * 2 + 1) * ld + c0..][..NR]);
                // SAFETY: `r0` and `r1` hold 16 bytes each, and `dst` 64.
                unsafe {
                    let z = _mm_set1_epi16(zero_point as i16);
                    let (x0, x1) = (_mm_loadu_si128(r0.as_ptr() as *const __m128i), _mm_loadu_si128(r1.as_ptr() as *const __m128i));
                    // Each byte unpacked with itself and shifted right arithmetically: sign-extended.
                    let lo = |x| _mm_sub_epi16(_mm_srai_epi16::<8>(_mm_unpacklo_epi8(x, x)), z);
                    let hi = |x| _mm_sub_epi16(_mm_srai_epi16::<8>(_mm_unpackhi_epi8(x, x)), z);
                    let d = dst.as_mut_ptr() as *mut __m128i;
                    _mm_storeu_si128(d, _mm_unpacklo_epi16(lo(x0), lo(x1)));
                    _mm_storeu_si128(d.add(1), _mm_unpackhi_epi16(lo(x0), lo(x1)));
                    _mm_storeu_si128(d.add(2), _mm_unpacklo_epi16(hi(x0), hi(x1)));
                    _mm_storeu_si128(d.add(3), _mm_unpackhi_epi16(hi(x0), hi(x1)));
                }
                continue;
            }
            for kk in 0..rows {
                for (j, &v) in b[(g * 2 + kk) * ld + c0..][..cols].iter().enumerate() {
                    dst[(j * 2 + kk) * 2..][..2].copy_from_slice(&(v as i16 - zero_point as i16).to_le_bytes());
                }
            }
        }
    }
    out
}

/// A left operand's element type: how many k one 32-bit broadcast holds, and the VNNI product
/// that adds them into each i32 lane.
trait Lhs: Copy {
    const PER_WORD: usize;
    /// The `valid` (1..=PER_WORD) elements at `p` as one 32-bit word, the rest zero.
    unsafe fn word(p: *const Self, valid: usize) -> i32;
    unsafe fn dot(acc: __m512i, a: __m512i, b: __m512i) -> __m512i;
}

impl Lhs for u8 {
    const PER_WORD: usize = 4;
    #[inline(always)]
    unsafe fn word(p: *const u8, valid: usize) -> i32 {
        super::a_word(p, valid)
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, a, b)
    }
}

impl Lhs for i16 {
    const PER_WORD: usize = 2;
    #[inline(always)]
    unsafe fn word(p: *const i16, valid: usize) -> i32 {
        if valid == 2 {
            (p as *const i32).read_unaligned()
        } else {
            p.read() as u16 as i32
        }
    }
    /// In asm: LLVM rewrites the `vpdpwssd` intrinsic into `vpmaddwd` + `vpaddd`, twice the
    /// instructions in the loop (doc/kernels.md).
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dot(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        std::arch::asm!("vpdpwssd {acc}, {a}, {b}", acc = inout(zmm_reg) acc, a = in(zmm_reg) a, b = in(zmm_reg) b, options(pure, nomem, nostack));
        acc
    }
}

/// Stores one accumulator vector of row `r`, columns `start .. start + valid`.
#[inline(always)]
unsafe fn store(s: Store, r: usize, start: usize, valid: usize, acc: __m512i) {
    let mask = if valid == NR { u16::MAX } else { ((1u32 << valid) - 1) as u16 };
    match s {
        Store::Raw { c, ldc } => _mm512_mask_storeu_epi32(c.add(r * ldc + start), mask, acc),
        Store::Requant { q, ldq, bias, scale, zero_point, signed } => {
            let v = _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(mask, bias.add(start)));
            let x = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(mask, scale.add(start)));
            // Round half to even with the default MXCSR mode, after capping to ±2^30: once the
            // zero point is added and the 8-bit clamp applied, this equals
            // elementwise::round_half_even (which caps at ±2^22) for every input.
            const CAP: f32 = 1_073_741_824.0;
            let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-CAP)), _mm512_set1_ps(CAP));
            let r_i = _mm512_cvtps_epi32(x);
            let lo = if signed { -128 } else { 0 };
            let y = _mm512_add_epi32(r_i, _mm512_set1_epi32(zero_point));
            let y = _mm512_min_epi32(_mm512_max_epi32(y, _mm512_set1_epi32(lo)), _mm512_set1_epi32(lo + 255));
            _mm_mask_storeu_epi8(q.add(r * ldq + start) as *mut i8, mask, _mm512_cvtepi32_epi8(y));
        }
        Store::Float { f, ldf, bias, scale, sum } => {
            let v = _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(mask, bias.add(start)));
            let x = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(mask, scale.add(start)));
            let x = if sum.is_null() { x } else { _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, sum.add(r * ldf + start))) };
            _mm512_mask_storeu_ps(f.add(r * ldf + start), mask, x);
        }
    }
}

/// Adds k group `g` (its first `valid` k) of `R` rows × `P` panels into `acc`.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn group<L: Lhs, const R: usize, const P: usize>(
    acc: &mut [[__m512i; P]; R],
    a: *const L,
    lda: usize,
    b: *const u8,
    groups: usize,
    g: usize,
    valid: usize,
) {
    let bv: [__m512i; P] = std::array::from_fn(|p| _mm512_loadu_si512(b.add((p * groups + g) * NR * 4) as *const __m512i));
    for r in 0..R {
        let av = _mm512_set1_epi32(L::word(a.add(r * lda + g * L::PER_WORD), valid));
        for p in 0..P {
            acc[r][p] = L::dot(acc[r][p], av, bv[p]);
        }
    }
}

/// The sums of `R` rows (≤ MR) × `P` panels (≤ NP) over all of k.
#[inline(always)]
unsafe fn accumulate<L: Lhs, const R: usize, const P: usize>(
    k: usize,
    a: *const L,
    lda: usize,
    b: *const u8,
    groups: usize,
) -> [[__m512i; P]; R] {
    let mut acc = [[_mm512_setzero_si512(); P]; R];
    // The full groups of k, then the partial one: a loop whose every A word is a plain
    // 4-byte load (with the partial group's test inside it, K = 197 ran 25 % slower than 200).
    let full = k / L::PER_WORD;
    for g in 0..full {
        group::<L, R, P>(&mut acc, a, lda, b, groups, g, L::PER_WORD);
    }
    if full < groups {
        group::<L, R, P>(&mut acc, a, lda, b, groups, full, k % L::PER_WORD);
    }
    acc
}

/// `R` rows (≤ MR) × `P` panels (≤ NP): accumulate, then store through `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<L: Lhs, const R: usize, const P: usize>(
    k: usize,
    a: *const L,
    lda: usize,
    b: *const u8,
    groups: usize,
    out: Store,
    cols: usize,
) {
    // Accumulated apart from the stores: the store loop indexes the tile at run time, and when
    // the zeroed accumulators shared its array LLVM kept them in memory and cleared it with a
    // call to memset per tile (2 % of ViT-S int8).
    let acc = accumulate::<L, R, P>(k, a, lda, b, groups);
    for (r, row) in acc.iter().enumerate() {
        for (p, &v) in row.iter().enumerate() {
            let start = p * NR;
            if start >= cols {
                break;
            }
            store(out, r, start, (cols - start).min(NR), v);
        }
    }
}

/// Raw sums `c = a · B` for `m` rows.
///
/// # Safety
/// The CPU supports AVX-512F, BW and VNNI; `b` was packed by [`pack`] for `k × n`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(m: usize, k: usize, n: usize, a: &[u8], lda: usize, b: &[u8], c: &mut [i32], ldc: usize) {
    gemm_to(m, k, n, a, lda, b, Store::Raw { c: c.as_mut_ptr(), ldc });
}

/// `a · B` for `m` rows through `out` (positioned at row 0, column 0).
///
/// # Safety
/// As [`gemm`]; `out` addresses `m` rows of `n` columns (and `n` biases and scales).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl")]
pub unsafe fn gemm_to(m: usize, k: usize, n: usize, a: &[u8], lda: usize, b: &[u8], out: Store) {
    tiles(m, k, n, a.as_ptr(), lda, b, out)
}

/// `Σ_k a[i][k] · w[k][j]` for `m` rows of i16 `a` through `out`, wrapping mod 2³², where `b`
/// holds the words `w` ([`pack_rows_words`]).
///
/// # Safety
/// The CPU supports AVX-512F, BW and VNNI; `b` was packed by [`pack_rows_words`] for `k × n`;
/// `a` holds `m` rows of `k` values; `out` addresses `m` rows of `n` columns (and `n` biases and
/// scales).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl")]
pub unsafe fn gemm_words_to(m: usize, k: usize, n: usize, a: &[i16], lda: usize, b: &[u8], out: Store) {
    tiles(m, k, n, a.as_ptr(), lda, b, out)
}

#[inline(always)]
unsafe fn tiles<L: Lhs>(m: usize, k: usize, n: usize, a: *const L, lda: usize, b: &[u8], out: Store) {
    let groups = k.div_ceil(L::PER_WORD);
    let panels = n.div_ceil(NR);
    let b = b.as_ptr();
    let mut p = 0;
    while p < panels {
        let np = super::block_panels(panels - p, NP);
        let cols = (n - p * NR).min(np * NR);
        let bp = b.add(p * groups * NR * 4);
        let next = std::slice::from_raw_parts(bp.add(np * groups * NR * 4), super::block_panels(panels - p - np, NP) * groups * NR * 4);
        let mut i = 0;
        while i < m {
            super::prefetch_share(next, i / MR, m.div_ceil(MR));
            let rows = (m - i).min(MR);
            let (ai, ci) = (a.add(i * lda), out.at(i, p * NR));
            macro_rules! go {
                ($($r:literal)*) => {
                    match (rows, np) {
                        $(($r, 4) => tile::<L, $r, 4>(k, ai, lda, bp, groups, ci, cols),
                          ($r, 3) => tile::<L, $r, 3>(k, ai, lda, bp, groups, ci, cols),
                          ($r, 2) => tile::<L, $r, 2>(k, ai, lda, bp, groups, ci, cols),
                          ($r, _) => tile::<L, $r, 1>(k, ai, lda, bp, groups, ci, cols),)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(1 2 3 4 5 6);
            i += MR;
        }
        p += np;
    }
}
