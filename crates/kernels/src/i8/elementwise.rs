//! Elementwise and row kernels on 8-bit codes. Codes are passed as raw bytes with a `signed`
//! flag (s8 stored two's complement). Dequantize and quantize follow eq. 1 and 5 with the same
//! f32 operations as the reference ops, so results are the reference's bit for bit unless a
//! kernel says otherwise.

use std::mem::MaybeUninit;

pub use crate::affine::Affine;
use crate::dispatch::simd_dispatch;
use crate::f32::exp_nonpositive;

/// `round_half_even(x)` as i32, exact for |x| ≤ 2^22 and saturating beyond (enough for every
/// 8-bit result): adding 1.5·2^23 leaves the rounded integer in the low mantissa bits. Integer
/// operations only, so that loops vectorise on every ISA with identical results.
#[inline(always)]
pub fn round_half_even(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let t = x.clamp(-4_194_304.0, 4_194_304.0);
    ((t + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32)
}

/// The arithmetic of [`binary_same_shape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// `out = q(dq(a) ∘ dq(b))` for equal-length operands.
pub fn binary_same_shape(op: Arith, a: &[u8], pa: Affine, b: &[u8], pb: Affine, out: &mut [u8], po: Affine) {
    match op {
        Arith::Add => add_same_shape(a, pa, b, pb, out, po),
        Arith::Sub => sub_same_shape(a, pa, b, pb, out, po),
        Arith::Mul => mul_same_shape(a, pa, b, pb, out, po),
        Arith::Div => div_same_shape(a, pa, b, pb, out, po),
    }
}

macro_rules! same_shape {
    ($name:ident, $op:tt) => {
        simd_dispatch! {
            fn $name(a: &[u8], pa: Affine, b: &[u8], pb: Affine, out: &mut [u8], po: Affine) {
                let n = out.len().min(a.len()).min(b.len());
                let (a, b, out) = (&a[..n], &b[..n], &mut out[..n]);
                for i in 0..n {
                    out[i] = po.quantize(pa.dequantize(a[i]) $op pb.dequantize(b[i]));
                }
            }
        }
    };
}
same_shape!(add_same_shape, +);
same_shape!(sub_same_shape, -);
same_shape!(mul_same_shape, *);
same_shape!(div_same_shape, /);

macro_rules! float_same_shape {
    ($name:ident, $op:tt) => {
        simd_dispatch! {
            fn $name(a: &[f32], b: &[f32], out: &mut [u8], po: Affine) {
                let n = out.len().min(a.len()).min(b.len());
                let (a, b, out) = (&a[..n], &b[..n], &mut out[..n]);
                for i in 0..n {
                    out[i] = po.quantize(a[i] $op b[i]);
                }
            }
        }
    };
}
float_same_shape!(add_f32, +);
float_same_shape!(sub_f32, -);
float_same_shape!(mul_f32, *);
float_same_shape!(div_f32, /);

/// `out = q(a ∘ b)` for equal-length f32 operands (dequantized activations or constants).
pub fn binary_f32_same_shape(op: Arith, a: &[f32], b: &[f32], out: &mut [u8], po: Affine) {
    match op {
        Arith::Add => add_f32(a, b, out, po),
        Arith::Sub => sub_f32(a, b, out, po),
        Arith::Mul => mul_f32(a, b, out, po),
        Arith::Div => div_f32(a, b, out, po),
    }
}

simd_dispatch! {
    /// `out = q(x)` for f32 input (QuantizeLinear, per tensor).
    pub fn quantize(x: &[f32], p: Affine, out: &mut [u8]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = p.quantize(v);
        }
    }
}

simd_dispatch! {
    /// LayerNorm of f32 rows ([`crate::f32::layer_norm_rows`]) quantized to `p` (eq. 5) row by
    /// row while each normalised row is in L1: the bits of the two in sequence, without an f32
    /// block between them (which at batch 8 of ViT-S, 2.4 MB, no longer fits in L2). Writes
    /// every element of `out` (as many as `x`), which need not be initialised.
    pub fn layer_norm_rows_quantize(x: &[f32], row_len: usize, gamma: &[f32], beta: &[f32], eps: f32, p: Affine, out: &mut [MaybeUninit<u8>]) {
        assert!(out.len() == x.len() && x.len().is_multiple_of(row_len), "layer_norm_rows_quantize: not whole rows");
        if row_len == 0 {
            return;
        }
        let mut y = vec![0.0f32; row_len];
        for (row, q) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
            crate::f32::layer_norm_row(row, &mut y, gamma, beta, eps);
            for (o, &v) in q.iter_mut().zip(&y) {
                o.write(p.quantize(v));
            }
        }
    }
}

simd_dispatch! {
    /// `out = saturate(round_half_even(x / scale) + zero_point)` to uint16 codes (QuantizeLinear
    /// per tensor, eq. 5), for the 16-bit Linear inputs.
    pub fn quantize_u16(x: &[f32], scale: f32, zero_point: i32, out: &mut [u16]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (round_half_even(v / scale) + zero_point).clamp(0, 65535) as u16;
        }
    }
}

simd_dispatch! {
    /// `out = dq(q)` (DequantizeLinear, per tensor).
    pub fn dequantize(q: &[u8], p: Affine, out: &mut [f32]) {
        for (o, &b) in out.iter_mut().zip(q) {
            *o = p.dequantize(b);
        }
    }
}

simd_dispatch! {
    /// LayerNorm of rows of `c` codes: exact integer mean and variance of the codes, then
    /// `y = (q − mean) · s / √(s²·var + eps) · γ + β` in f32, quantized to `po` (one multiply by
    /// `1/s_out`) or written to `out_f32` when `po` is None. Within one output step of the
    /// reference. Rows up to 32768 codes (i32 sums of squares). Writes every element of the
    /// output it fills (as many as `x`), which need not be initialised.
    pub fn layer_norm_rows_q8(
        x: &[u8],
        px: Affine,
        c: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        po: Option<Affine>,
        out_q: &mut [MaybeUninit<u8>],
        out_f32: &mut [MaybeUninit<f32>],
    ) {
        let out_len = if po.is_some() { out_q.len() } else { out_f32.len() };
        assert!(out_len == x.len() && x.len().is_multiple_of(c), "layer_norm_rows_q8: not whole rows");
        if c == 0 {
            return;
        }
        assert!(c <= 32768, "LayerNorm rows of {c} codes exceed the i32 sums");
        let mut y = vec![0.0f32; c];
        for (r, row) in x.chunks_exact(c).enumerate() {
            let mut sum = 0i32;
            let mut sq = 0i32;
            for &b in row {
                let v = px.code(b);
                sum += v;
                sq += v * v;
            }
            let mean = sum as f64 / c as f64;
            let var = (sq as f64 / c as f64 - mean * mean).max(0.0);
            let s = px.scale as f64;
            let inv = (s / (s * s * var + eps as f64).sqrt()) as f32;
            let mean = mean as f32;
            for j in 0..c {
                y[j] = (px.code(row[j]) as f32 - mean) * inv * gamma[j] + beta[j];
            }
            match po {
                Some(p) => {
                    let k = 1.0 / p.scale;
                    let lo = -((p.signed as i32) << 7);
                    for (o, &v) in out_q[r * c..(r + 1) * c].iter_mut().zip(&y) {
                        o.write((round_half_even(v * k) + p.zero_point).clamp(lo, lo + 255) as u8);
                    }
                }
                None => {
                    for (o, &v) in out_f32[r * c..(r + 1) * c].iter_mut().zip(&y) {
                        o.write(v);
                    }
                }
            }
        }
    }
}

/// Largest row [`mean_rows_q8`] takes: its code sums are i32.
pub const MEAN_ROW_MAX: usize = (i32::MAX / 256) as usize;

simd_dispatch! {
    /// Mean of each row of `n` 8-bit codes (GlobalAveragePool over the spatial axes): the exact
    /// integer sum of the codes, then `(sum / n − zp) · s` in f64, quantized to `po` (eq. 5).
    /// Within one output step of the reference, which sums dequantized values in floating point.
    /// Rows up to [`MEAN_ROW_MAX`] codes.
    pub fn mean_rows_q8(x: &[u8], px: Affine, n: usize, po: Affine, out: &mut [u8]) {
        if n == 0 {
            return;
        }
        assert!(n <= MEAN_ROW_MAX, "rows of {n} codes exceed the i32 sums");
        for (row, o) in x.chunks_exact(n).zip(out.iter_mut()) {
            let sum: i32 = row.iter().map(|&b| px.code(b)).sum();
            let mean = (sum as f64 / n as f64 - px.zero_point as f64) * px.scale as f64;
            *o = po.quantize(mean as f32);
        }
    }
}

simd_dispatch! {
    /// Softmax over rows of `n` 8-bit logits of scale `px.scale`, quantized to `po`:
    /// `e = exp(−s·(q_max − q))` on integer differences. Within one output step of the reference.
    pub fn softmax_rows_q8(x: &[u8], px: Affine, n: usize, po: Affine, out: &mut [u8]) {
        if n == 0 {
            return;
        }
        // Whole vectors only: the padding's argument −1000 gives e = 0, which adds nothing.
        let padded = n.next_multiple_of(16);
        let mut e = vec![-1000.0f32; padded];
        let lo = -((po.signed as i32) << 7);
        for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let max = row.iter().fold(i32::MIN, |m, &b| m.max(px.code(b)));
            for (ei, &b) in e.iter_mut().zip(row) {
                *ei = -(px.scale * (max - px.code(b)) as f32);
            }
            e[n..].fill(-1000.0);
            for v in e.iter_mut() {
                *v = exp_nonpositive(*v);
            }
            let k = 1.0 / (lane_sum(&e) * po.scale);
            for (o, &ei) in dst.iter_mut().zip(&e) {
                *o = (round_half_even(ei * k) + po.zero_point).clamp(lo, lo + 255) as u8;
            }
        }
    }
}

/// A sum over 16 independent lanes (vectorises; the same order on every ISA).
#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        acc[i] += v;
    }
    acc.iter().sum()
}

/// `out[i] = table[x[i]]`.
pub fn lookup(x: &[u8], table: &[u8; 256], out: &mut [u8]) {
    let n = x.len().min(out.len());
    // SAFETY: both ranges hold n bytes.
    unsafe { lookup_raw(Rows { x: x.as_ptr(), ld: n, out: out.as_mut_ptr(), rows: 1, n }, table) }
}

/// `buf[i] = table[buf[i]]`.
pub fn lookup_in_place(buf: &mut [u8], table: &[u8; 256]) {
    let (p, n) = (buf.as_mut_ptr(), buf.len());
    // SAFETY: reading and writing the same n bytes, each read before it is written.
    unsafe { lookup_raw(Rows { x: p, ld: n, out: p, rows: 1, n }, table) }
}

/// `out[r·cols + c] = table[x[r·ld + c]]` for `rows` rows of `cols` bytes of `x` (row stride
/// `ld`): a strided block gathered through a table in one call.
pub fn lookup_rows(x: &[u8], ld: usize, rows: usize, cols: usize, table: &[u8; 256], out: &mut [u8]) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(x.len() >= (rows - 1) * ld + cols && out.len() >= rows * cols, "lookup_rows: buffers too short");
    // SAFETY: the assert bounds every row read and written.
    unsafe { lookup_raw(Rows { x: x.as_ptr(), ld, out: out.as_mut_ptr(), rows, n: cols }, table) }
}

/// `rows` rows of `n` bytes at `x` (row stride `ld`) looked up into `out` (row stride `n`).
#[derive(Clone, Copy)]
struct Rows {
    x: *const u8,
    ld: usize,
    out: *mut u8,
    rows: usize,
    n: usize,
}

/// Table lookup of [`Rows`] (`out` may be `x` when `ld == n`): 64 bytes at a time with AVX-512
/// VBMI byte permutes where the CPU has them (and `OCTET_ISA` allows AVX-512), else 32 at a time
/// with AVX2 byte shuffles; the table is loaded into registers once for all rows.
///
/// # Safety
/// `x` and `out` address the rows' bytes.
unsafe fn lookup_raw(b: Rows, table: &[u8; 256]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use crate::isa::{vector_level, VectorLevel};
        if vector_level() == VectorLevel::Avx512 && std::is_x86_feature_detected!("avx512vbmi") {
            done = lookup_vbmi(b, table);
        } else if vector_level() != VectorLevel::Baseline {
            done = lookup_avx2(b, table);
        }
    }
    for r in 0..b.rows {
        let (x, out) = (b.x.add(r * b.ld), b.out.add(r * b.n));
        for i in done..b.n {
            *out.add(i) = table[*x.add(i) as usize];
        }
    }
}

/// The 32-byte blocks of each row of [`lookup_raw`] on AVX2; returns how many bytes of a row it
/// did. `vpshufb` looks up 16 entries, so each of the table's 16 rows of 16 is looked up by the
/// low nibbles and kept where the high nibble names that row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lookup_avx2(b: Rows, table: &[u8; 256]) -> usize {
    use std::arch::x86_64::*;
    let rows: [__m256i; 16] =
        std::array::from_fn(|r| _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().add(16 * r) as *const __m128i)));
    let nibble = _mm256_set1_epi8(0x0f);
    let whole = b.n / 32 * 32;
    for r in 0..b.rows {
        let (x, out) = (b.x.add(r * b.ld), b.out.add(r * b.n));
        for i in (0..whole).step_by(32) {
            let idx = _mm256_loadu_si256(x.add(i) as *const __m256i);
            let (lo, hi) = (_mm256_and_si256(idx, nibble), _mm256_and_si256(_mm256_srli_epi16(idx, 4), nibble));
            let mut v = _mm256_setzero_si256();
            for (row, &t) in rows.iter().enumerate() {
                let here = _mm256_cmpeq_epi8(hi, _mm256_set1_epi8(row as i8));
                v = _mm256_or_si256(v, _mm256_and_si256(here, _mm256_shuffle_epi8(t, lo)));
            }
            _mm256_storeu_si256(out.add(i) as *mut __m256i, v);
        }
    }
    whole
}

/// The 64-byte blocks of each row of [`lookup_raw`]; returns how many bytes of a row it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn lookup_vbmi(b: Rows, table: &[u8; 256]) -> usize {
    use std::arch::x86_64::*;
    let t: [__m512i; 4] = std::array::from_fn(|q| _mm512_loadu_si512(table.as_ptr().add(q * 64) as *const __m512i));
    let whole = b.n / 64 * 64;
    for r in 0..b.rows {
        let (x, out) = (b.x.add(r * b.ld), b.out.add(r * b.n));
        for i in (0..whole).step_by(64) {
            let idx = _mm512_loadu_si512(x.add(i) as *const __m512i);
            // Bits 0–6 pick one of 128 bytes in each half; bit 7 picks the half.
            let lo = _mm512_permutex2var_epi8(t[0], idx, t[1]);
            let hi = _mm512_permutex2var_epi8(t[2], idx, t[3]);
            _mm512_storeu_si512(out.add(i) as *mut __m512i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi));
        }
    }
    whole
}
