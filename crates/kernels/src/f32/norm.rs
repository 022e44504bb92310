//! Row-wise normalisations: softmax and LayerNorm over the last `row_len` elements.

use super::math::{exp_nonpositive, exp_scalar};
use crate::dispatch::simd_dispatch;

/// Reductions run over this many independent lanes, so that they vectorise on every ISA while
/// adding in the same order (and so giving the same bits) on all of them.
const LANES: usize = 16;

#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        acc[i] += f(v);
    }
    acc.iter().sum()
}

/// Replaces every `x` by `f(x)` and returns the sum of the results, added in the order of
/// [`lane_sum`] (so the same bits as mapping, then summing).
#[inline(always)]
fn lane_map_sum(xs: &mut [f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = f(c[i]);
            acc[i] += c[i];
        }
    }
    for (i, v) in chunks.into_remainder().iter_mut().enumerate() {
        *v = f(*v);
        acc[i] += *v;
    }
    acc.iter().sum()
}

#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        acc[i] = if v > acc[i] { v } else { acc[i] };
    }
    acc.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Softmax of every row of `row_len` consecutive elements, in place:
/// `y_i = e^(x_i − max) / Σ_j e^(x_j − max)`.
///
/// With AVX-512 the rows run through [`avx512::softmax_rows`] (as [`softmax_rows_u16`]: masked
/// last vectors, rows interleaved, the same bits as the other tiers).
pub fn softmax_rows(x: &mut [f32], row_len: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::vector_level() == crate::isa::VectorLevel::Avx512 {
        // SAFETY: vector_level() names AVX-512 only when the CPU has AVX-512F.
        return unsafe { avx512::softmax_rows(x, row_len) };
    }
    softmax_rows_lanes(x, row_len);
}

simd_dispatch! {
    /// [`softmax_rows`] on 16-lane arrays, auto-vectorised.
    fn softmax_rows_lanes(x: &mut [f32], row_len: usize) {
        if row_len == 0 {
            return;
        }
        for row in x.chunks_exact_mut(row_len) {
            let max = lane_max(row);
            let inv = 1.0 / lane_map_sum(row, |v| exp_scalar(v - max));
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Softmax of every row of `row_len` elements of `x` as 16-bit codes
/// `c = round_half_even(65535 · p)`, written centred on zero (`c − 32768` as i16, the form
/// [`crate::i8::gemm_i16s8_epilogue`] multiplies) into `codes` (`x` is left holding
/// `e^(x − max)`). A row's codes sum to 65535 within `row_len / 2`.
///
/// With AVX-512 the rows run through [`avx512::softmax_rows_u16`], written with intrinsics so
/// that a row's last partial vector is a masked one rather than scalar code; it performs the
/// same operations in the same order as the auto-vectorised copies, so every tier gives the
/// same bits.
pub fn softmax_rows_u16(x: &mut [f32], row_len: usize, codes: &mut [i16]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::vector_level() == crate::isa::VectorLevel::Avx512 {
        // SAFETY: vector_level() names AVX-512 only when the CPU has AVX-512F.
        return unsafe { avx512::softmax_rows_u16(x, row_len, codes) };
    }
    softmax_rows_u16_lanes(x, row_len, codes);
}

/// `y + 1.5·2²³` rounds `|y| < 2²²` half to even into the low mantissa bits (the codes of
/// [`softmax_rows_u16`], and the exponent of `exp_nonpositive`).
const ROUNDING: f32 = 12_582_912.0;

/// The code of probability `e · k` (`k = 65535 / Σe`), centred on zero.
#[inline(always)]
fn centred_code(e: f32, k: f32) -> i16 {
    let code = (((e * k).clamp(0.0, 65535.0) + ROUNDING).to_bits() & 0x3f_ffff) as i32;
    (code - 32768) as i16
}

simd_dispatch! {
    /// [`softmax_rows_u16`] on 16-lane arrays, auto-vectorised.
    fn softmax_rows_u16_lanes(x: &mut [f32], row_len: usize, codes: &mut [i16]) {
        if row_len == 0 {
            return;
        }
        for (row, out) in x.chunks_exact_mut(row_len).zip(codes.chunks_exact_mut(row_len)) {
            let max = lane_max(row);
            let k = 65535.0 / lane_map_sum(row, |v| exp_nonpositive(v - max));
            for (&e, c) in row.iter().zip(out.iter_mut()) {
                *c = centred_code(e, k);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::math::{EXP_HI, EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_POLY};
    use super::{LANES, ROUNDING};
    use std::arch::x86_64::*;

    /// `exp_nonpositive` on 16 lanes: the same operations in the same order (`2ⁿ` built from
    /// exponent bits, as the scalar does, so that even inputs it does not define, NaN, give the
    /// same bits).
    #[inline(always)]
    unsafe fn exp_nonpositive(x: __m512) -> __m512 {
        let c = _mm512_set1_ps;
        // max_ps(x, c) returns c when x is NaN, as f32::max does.
        let t = _mm512_mul_ps(_mm512_max_ps(x, c(-126.0)), c(std::f32::consts::LOG2_E));
        let r = _mm512_add_ps(t, c(ROUNDING));
        let f = _mm512_sub_ps(t, _mm512_sub_ps(r, c(ROUNDING)));
        // Horner's rule from the innermost term out, as the scalar expression evaluates.
        let mut a = _mm512_mul_ps(f, c(0.001_333_355));
        for coefficient in [0.009_618_129, 0.055_504_11, 0.240_226_5, std::f32::consts::LN_2] {
            a = _mm512_mul_ps(f, _mm512_add_ps(c(coefficient), a));
        }
        let exponent = _mm512_sub_epi32(_mm512_castps_si512(r), _mm512_set1_epi32(ROUNDING.to_bits() as i32 - 127));
        let y = _mm512_mul_ps(_mm512_add_ps(c(1.0), a), _mm512_castsi512_ps(_mm512_slli_epi32::<23>(exponent)));
        _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, c(-87.0)), _mm512_setzero_ps())
    }

    /// `exp_scalar` on 16 lanes: the same operations in the same order.
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        let c = _mm512_set1_ps;
        let (lo, hi) = (c(EXP_LO), c(EXP_HI));
        // clamp: max_ps(lo, x) and min_ps(hi, x) return x when it is NaN, as f32::clamp does.
        let xc = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
        let t = _mm512_add_ps(_mm512_mul_ps(xc, c(std::f32::consts::LOG2_E)), c(ROUNDING));
        let n = _mm512_sub_ps(t, c(ROUNDING));
        let r = _mm512_sub_ps(_mm512_sub_ps(xc, _mm512_mul_ps(n, c(EXP_LN2_HI))), _mm512_mul_ps(n, c(EXP_LN2_LO)));
        let mut p = c(EXP_POLY[0]);
        for coefficient in &EXP_POLY[1..] {
            p = _mm512_add_ps(_mm512_mul_ps(p, r), c(*coefficient));
        }
        let e = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), c(1.0));
        let n_bits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(ROUNDING.to_bits() as i32));
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n_bits, _mm512_set1_epi32(127))));
        let y = _mm512_mask_mov_ps(_mm512_mul_ps(e, scale), _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo), _mm512_setzero_ps());
        _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi), c(f32::INFINITY))
    }

    /// What a softmax writes from the exponentials of a row: probabilities or 16-bit codes.
    trait Output {
        /// `e^x` on 16 lanes, as the scalar kernel's exponential.
        unsafe fn exp(x: __m512) -> __m512;
        /// The factor on the exponentials of a row whose exponentials sum to `sum`.
        fn factor(sum: f32) -> f32;
        /// Writes the `mask`ed lanes of `e · k` (`e` exponentials of row `row`, from element `at`).
        unsafe fn write(&self, row: usize, at: usize, e: __m512, k: __m512, mask: __mmask16);
    }

    /// [`super::softmax_rows`]: the probabilities in place of the inputs.
    struct Probabilities {
        x: *mut f32,
        row_len: usize,
    }

    impl Output for Probabilities {
        #[inline(always)]
        unsafe fn exp(x: __m512) -> __m512 {
            exp(x)
        }
        #[inline(always)]
        fn factor(sum: f32) -> f32 {
            1.0 / sum
        }
        #[inline(always)]
        unsafe fn write(&self, row: usize, at: usize, e: __m512, k: __m512, mask: __mmask16) {
            _mm512_mask_storeu_ps(self.x.add(row * self.row_len + at), mask, _mm512_mul_ps(e, k));
        }
    }

    /// [`super::softmax_rows_u16`]: codes `round_half_even(65535 · p) − 32768`.
    struct Codes {
        o: *mut i16,
        row_len: usize,
    }

    impl Output for Codes {
        #[inline(always)]
        unsafe fn exp(x: __m512) -> __m512 {
            exp_nonpositive(x)
        }
        #[inline(always)]
        fn factor(sum: f32) -> f32 {
            65535.0 / sum
        }
        #[inline(always)]
        unsafe fn write(&self, row: usize, at: usize, e: __m512, k: __m512, mask: __mmask16) {
            let y = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(e, k), _mm512_setzero_ps()), _mm512_set1_ps(65535.0));
            let bits = _mm512_and_si512(_mm512_castps_si512(_mm512_add_ps(y, _mm512_set1_ps(ROUNDING))), _mm512_set1_epi32(0x3f_ffff));
            _mm512_mask_cvtepi32_storeu_epi16(self.o.add(row * self.row_len + at), mask, _mm512_sub_epi32(bits, _mm512_set1_epi32(32768)));
        }
    }

    /// [`super::softmax_rows`] with AVX-512F (see [`softmax_rows_u16`]).
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_rows(x: &mut [f32], row_len: usize) {
        if row_len == 0 {
            return;
        }
        let out = Probabilities { x: x.as_mut_ptr(), row_len };
        all_rows(x.as_mut_ptr(), x.len() / row_len, row_len, &out);
    }

    /// [`super::softmax_rows_u16`] with AVX-512F: [`ROWS`] rows at a time, each step of the rows
    /// interleaved (a row's exponentials are chains of dependent operations that one row alone
    /// did not overlap enough: 197-element rows ran 18 % faster four at a time on Zen 4), every
    /// row computed exactly as alone, in the order of the lane arrays of the other tiers.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_rows_u16(x: &mut [f32], row_len: usize, codes: &mut [i16]) {
        if row_len == 0 {
            return;
        }
        let out = Codes { o: codes.as_mut_ptr(), row_len };
        all_rows(x.as_mut_ptr(), x.len().min(codes.len()) / row_len, row_len, &out);
    }

    /// Rows a softmax interleaves.
    pub(super) const ROWS: usize = 4;

    /// The softmax of `rows` rows of `row_len` elements at `x`, through `out`.
    #[inline(always)]
    unsafe fn all_rows<O: Output>(x: *mut f32, rows: usize, row_len: usize, out: &O) {
        let mut r = 0;
        while r + ROWS <= rows {
            some_rows::<ROWS, O>(x, r, row_len, out);
            r += ROWS;
        }
        while r < rows {
            some_rows::<1, O>(x, r, row_len, out);
            r += 1;
        }
    }

    /// The softmax of rows `first .. first + R` of `row_len` elements at `x`, through `out`
    /// (`x` left holding the exponentials).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn some_rows<const R: usize, O: Output>(x: *mut f32, first: usize, row_len: usize, out: &O) {
        let (full, tail) = (row_len / LANES, row_len % LANES);
        let tail_mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
        let tail_at = full * LANES;
        let p: [*mut f32; R] = std::array::from_fn(|i| x.add((first + i) * row_len));
        // max: (v > acc) ? v : acc per lane, which is max_ps(v, acc); the lanes' maximum is
        // the same whatever order they are folded in.
        let mut acc = [_mm512_set1_ps(f32::NEG_INFINITY); R];
        for c in 0..full {
            for i in 0..R {
                acc[i] = _mm512_max_ps(_mm512_loadu_ps(p[i].add(c * LANES)), acc[i]);
            }
        }
        let mut max = [_mm512_setzero_ps(); R];
        for i in 0..R {
            acc[i] = _mm512_mask_max_ps(acc[i], tail_mask, _mm512_maskz_loadu_ps(tail_mask, p[i].add(tail_at)), acc[i]);
            max[i] = _mm512_set1_ps(_mm512_reduce_max_ps(acc[i]));
        }
        // e^(v − max) stored back, summed per lane, then the lanes added in order.
        let mut sums = [_mm512_setzero_ps(); R];
        for c in 0..full {
            for i in 0..R {
                let e = O::exp(_mm512_sub_ps(_mm512_loadu_ps(p[i].add(c * LANES)), max[i]));
                _mm512_storeu_ps(p[i].add(c * LANES), e);
                sums[i] = _mm512_add_ps(sums[i], e);
            }
        }
        let mut k = [_mm512_setzero_ps(); R];
        for i in 0..R {
            let e = O::exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail_mask, p[i].add(tail_at)), max[i]));
            _mm512_mask_storeu_ps(p[i].add(tail_at), tail_mask, e);
            sums[i] = _mm512_mask_add_ps(sums[i], tail_mask, sums[i], e);
            let mut lanes = [0.0f32; LANES];
            _mm512_storeu_ps(lanes.as_mut_ptr(), sums[i]);
            k[i] = _mm512_set1_ps(O::factor(lanes.iter().sum::<f32>()));
        }
        for c in 0..full {
            for i in 0..R {
                out.write(first + i, c * LANES, _mm512_loadu_ps(p[i].add(c * LANES)), k[i], u16::MAX);
            }
        }
        for i in 0..R {
            out.write(first + i, tail_at, _mm512_maskz_loadu_ps(tail_mask, p[i].add(tail_at)), k[i], tail_mask);
        }
    }
}

simd_dispatch! {
    /// LayerNorm of every row of `row_len` elements of `x` into `out`:
    /// `y = (x − mean) / √(var + eps) · gamma + beta`, with the biased variance.
    /// `gamma` and `beta` hold `row_len` values each, or are empty for 1 and 0.
    pub fn layer_norm_rows(x: &[f32], out: &mut [f32], row_len: usize, gamma: &[f32], beta: &[f32], eps: f32) {
        if row_len == 0 {
            return;
        }
        for (row, dst) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
            layer_norm_row(row, dst, gamma, beta, eps);
        }
    }
}

/// The body of [`layer_norm_rows`] for one row (inlined into each caller's instruction set, so
/// that every caller gives the same bits).
#[inline(always)]
pub(crate) fn layer_norm_row(row: &[f32], dst: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row, |v| v) / n;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    match (gamma.len() == row.len(), beta.len() == row.len()) {
        (true, true) => {
            for (((d, v), g), b) in dst.iter_mut().zip(row).zip(gamma).zip(beta) {
                *d = (v - mean) * inv * g + b;
            }
        }
        _ => {
            for (d, v) in dst.iter_mut().zip(row) {
                *d = (v - mean) * inv;
            }
            if !gamma.is_empty() {
                for (d, g) in dst.iter_mut().zip(gamma) {
                    *d *= g;
                }
            }
            if !beta.is_empty() {
                for (d, b) in dst.iter_mut().zip(beta) {
                    *d += b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_sum_to_one_and_match_f64() {
        let mut x: Vec<f32> = (0..3 * 17).map(|i| ((i * 37) % 23) as f32 * 0.7 - 8.0).collect();
        let orig = x.clone();
        softmax_rows(&mut x, 17);
        for (row, src) in x.chunks(17).zip(orig.chunks(17)) {
            let max = src.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let sum: f64 = src.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (y, v) in row.iter().zip(src) {
                let want = (*v as f64 - max).exp() / sum;
                assert!((*y as f64 - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn softmax_codes_are_sixteen_bit_probabilities() {
        let n = 257;
        let mut x: Vec<f32> = (0..3 * n).map(|i| ((i * 37) % 23) as f32 * 1.3 - 12.0 + if i % n == 5 { 30.0 } else { 0.0 }).collect();
        let orig = x.clone();
        let mut codes = vec![0i16; 3 * n];
        softmax_rows_u16(&mut x, n, &mut codes);
        for r in 0..3 {
            let src = &orig[r * n..(r + 1) * n];
            let max = src.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let total: f64 = src.iter().map(|&v| (v as f64 - max).exp()).sum();
            let mut sum = 0;
            for j in 0..n {
                let code = codes[r * n + j] as i32 + 32768;
                let want = (src[j] as f64 - max).exp() / total * 65535.0;
                assert!((code as f64 - want).abs() <= 1.0, "row {r} col {j}: {code} vs {want}");
                sum += code;
            }
            assert!((sum - 65535).abs() <= n as i32 / 2);
        }
    }

    #[test]
    fn avx512_softmax_is_the_bits_of_the_lane_arrays() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            let mut seed = 0x9e37_79b9_u32;
            let mut next = move || {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                seed
            };
            let special = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -90.0, 88.0, 1e-30];
            for row_len in (1..=70).chain([197, 257]) {
                for case in 0..6 {
                    // Interleaved groups of rows and single rows after them.
                    let rows = 2 * avx512::ROWS + 1;
                    let x: Vec<f32> = (0..rows * row_len)
                        .map(|_| {
                            let r = next();
                            match (case, r % 17) {
                                (4 | 5, 0) => special[(r >> 8) as usize % special.len()],
                                _ => ((r >> 8) as f32 / (1 << 24) as f32 - 0.5) * [4.0, 30.0, 200.0, 1.0, 20.0, 300.0][case],
                            }
                        })
                        .collect();
                    let (mut xa, mut xb) = (x.clone(), x.clone());
                    let (mut ca, mut cb) = (vec![0i16; x.len()], vec![0i16; x.len()]);
                    softmax_rows_u16_lanes(&mut xa, row_len, &mut ca);
                    // SAFETY: checked above that the CPU has AVX-512F.
                    unsafe { avx512::softmax_rows_u16(&mut xb, row_len, &mut cb) };
                    assert_eq!(ca, cb, "codes, row length {row_len}, case {case}");
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&xa), bits(&xb), "exponentials, row length {row_len}, case {case}");
                    let (mut pa, mut pb) = (x.clone(), x.clone());
                    softmax_rows_lanes(&mut pa, row_len);
                    // SAFETY: as above.
                    unsafe { avx512::softmax_rows(&mut pb, row_len) };
                    // A NaN's sign is whichever operand's NaN the compiler's operand order
                    // passes on (rows holding NaN or ±∞ give NaN): any NaN for any NaN.
                    let values = |v: &[f32]| v.iter().map(|f| if f.is_nan() { u32::MAX } else { f.to_bits() }).collect::<Vec<_>>();
                    assert_eq!(values(&pa), values(&pb), "probabilities, row length {row_len}, case {case}");
                }
            }
        }
    }

    #[test]
    fn layer_norm_matches_f64() {
        let x: Vec<f32> = (0..2 * 10).map(|i| (i as f32).sin() * 3.0 + 1.0).collect();
        let gamma: Vec<f32> = (0..10).map(|i| 0.5 + i as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..10).map(|i| i as f32 * -0.2).collect();
        let mut y = vec![0.0; 20];
        layer_norm_rows(&x, &mut y, 10, &gamma, &beta, 1e-5);
        for r in 0..2 {
            let row = &x[r * 10..r * 10 + 10];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 10.0;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 10.0;
            for i in 0..10 {
                let want = (row[i] as f64 - mean) / (var + 1e-5).sqrt() * gamma[i] as f64 + beta[i] as f64;
                assert!((y[r * 10 + i] as f64 - want).abs() < 1e-5);
            }
        }
    }
}
