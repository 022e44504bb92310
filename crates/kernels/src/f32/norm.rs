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

simd_dispatch! {
    /// Softmax of every row of `row_len` consecutive elements, in place:
    /// `y_i = e^(x_i − max) / Σ_j e^(x_j − max)`.
    pub fn softmax_rows(x: &mut [f32], row_len: usize) {
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

simd_dispatch! {
    /// Softmax of every row of `row_len` elements of `x` as 16-bit codes
    /// `c = round_half_even(65535 · p)`, written centred on zero (`c − 32768` as i16, the form
    /// [`crate::i8::gemm_i16s8_epilogue`] multiplies) into `codes` (`x` is left holding
    /// `e^(x − max)`). A row's codes sum to 65535 within `row_len / 2`.
    pub fn softmax_rows_u16(x: &mut [f32], row_len: usize, codes: &mut [i16]) {
        // y + 1.5·2²³ rounds y ∈ [0, 2²²) half to even into the low mantissa bits.
        const MAGIC: f32 = 12_582_912.0;
        if row_len == 0 {
            return;
        }
        for (row, out) in x.chunks_exact_mut(row_len).zip(codes.chunks_exact_mut(row_len)) {
            let max = lane_max(row);
            let k = 65535.0 / lane_map_sum(row, |v| exp_nonpositive(v - max));
            for (&e, c) in row.iter().zip(out.iter_mut()) {
                let code = (((e * k).clamp(0.0, 65535.0) + MAGIC).to_bits() & 0x3f_ffff) as i32;
                *c = (code - 32768) as i16;
            }
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
        let n = row_len as f32;
        for (row, dst) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
            let mean = lane_sum(row, |v| v) / n;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
            let inv = 1.0 / (var + eps).sqrt();
            match (gamma.len() == row_len, beta.len() == row_len) {
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
