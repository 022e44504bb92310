//! Adaptive weight rounding (doc/quantization.md, section 9): each output channel's integer
//! weights are chosen to minimise the error of the Linear's output on the calibration inputs,
//! not each weight's own rounding error.
//!
//! For one output channel with float weights `w`, scale `s` and codes `q`, the output error on
//! input rows `x` is `x·e` with `e = w − s·q`; its mean square over the calibration rows is
//! `eᵀ H e` with `H` the inputs' second moment (their covariance when bias correction removes the
//! mean error). Starting from round-to-nearest, coordinate descent moves one code by ±1 whenever
//! that lowers `eᵀ H e` (the change is `2·Δ·(He)_k + Δ²·H_kk` for `Δ = ∓s` on weight `k`), until no
//! single move does. `H` gets a damping of [`DAMPING`] × its mean diagonal, so directions the
//! calibration data hardly spans do not pull codes away from their nearest values: a few
//! calibration images give fewer rows than a wide Linear has inputs.

use octet_graph::QParams;
use octet_kernels::f32::{matmul, MatLayout, Threads};
use rayon::prelude::*;

/// Damping added to `H`'s diagonal, relative to its mean diagonal. Measured on DINOv2-S with 8
/// calibration photos (doc/quantization.md, section 9): at 0.01–0.3 the codes fit the calibration
/// rows and lose on other photos; at 1 they gain there (the weights-only error falls by a third).
pub const DAMPING: f64 = 1.0;
/// Most sweeps over a channel's weights.
const MAX_SWEEPS: usize = 8;

/// Sums over rows of one Linear input: `XᵀX` (`k × k`, row-major), the rows and their count.
#[derive(Clone, Debug)]
pub struct SecondMoment {
    pub k: usize,
    pub xtx: Vec<f32>,
    pub sum: Vec<f64>,
    pub rows: u64,
}

impl SecondMoment {
    pub fn new(k: usize) -> SecondMoment {
        SecondMoment { k, xtx: vec![0.0; k * k], sum: vec![0.0; k], rows: 0 }
    }

    /// Adds the `rows.len() / k` rows of `rows` (row-major).
    pub fn add_rows(&mut self, rows: &[f32], threads: usize) {
        let k = self.k;
        let r = rows.len() / k;
        if r == 0 {
            return;
        }
        matmul(k, k, r, rows, MatLayout::transposed(k), rows, MatLayout::row_major(k), &mut self.xtx, true, Threads(threads));
        for row in rows.chunks_exact(k) {
            for (s, &x) in self.sum.iter_mut().zip(row) {
                *s += x as f64;
            }
        }
        self.rows += r as u64;
    }

    /// `H` in f64: the rows' mean second moment, or their covariance when `centred`, damped.
    fn hessian(&self, centred: bool) -> Vec<f64> {
        let k = self.k;
        let n = self.rows.max(1) as f64;
        let mut h: Vec<f64> = self.xtx.iter().map(|&v| v as f64 / n).collect();
        if centred {
            let m: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] -= m[i] * m[j];
                }
            }
        }
        let mean_diag = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k.max(1) as f64;
        let damp = (DAMPING * mean_diag).max(f64::MIN_POSITIVE);
        for i in 0..k {
            h[i * k + i] = h[i * k + i].max(0.0) + damp;
        }
        h
    }
}

/// Integer codes for a `[K, N]` (`out_axis` 1) or `[N, K]` (`out_axis` 0) weight `w` quantized
/// symmetrically with `params` (per output channel or per tensor) to `[−qmax, qmax]`, chosen by
/// coordinate descent on the output error under `moment` (its covariance when `centred`: a bias
/// correction removes the mean error). Returns the codes in `w`'s layout.
#[allow(clippy::too_many_arguments)]
pub fn round_adaptively(
    w: &[f32],
    shape: &[usize],
    out_axis: usize,
    params: &QParams,
    qmax: f32,
    moment: &SecondMoment,
    centred: bool,
    threads: usize,
) -> Vec<i64> {
    let (k, n) = if out_axis == 1 { (shape[0], shape[1]) } else { (shape[1], shape[0]) };
    assert_eq!(moment.k, k, "round_adaptively: the second moment is {0}×{0} for a weight of {k} inputs", moment.k);
    let at = |kk: usize, nn: usize| if out_axis == 1 { kk * n + nn } else { nn * k + kk };
    let h = moment.hessian(centred);
    let hf: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    let scale = |nn: usize| params.scale[if params.scale.len() == 1 { 0 } else { nn }] as f64;
    let qmax = qmax as i64;
    // Round-to-nearest codes and their errors, one row per output channel.
    let mut codes = vec![0i64; n * k];
    let mut errors = vec![0.0f32; n * k];
    for nn in 0..n {
        for kk in 0..k {
            let q = params.quantize(w[at(kk, nn)], nn);
            codes[nn * k + kk] = q;
            errors[nn * k + kk] = (w[at(kk, nn)] as f64 - q as f64 * scale(nn)) as f32;
        }
    }
    // G = E·H: each channel's gradient of eᵀHe, up to the factor 2.
    let mut g = vec![0.0f32; n * k];
    matmul(n, k, k, &errors, MatLayout::row_major(k), &hf, MatLayout::row_major(k), &mut g, false, Threads(threads));
    let descend = |(nn, (q, g)): (usize, (&mut [i64], &mut [f32]))| {
        let s = scale(nn);
        if s == 0.0 {
            return;
        }
        let mut g: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        for _ in 0..MAX_SWEEPS {
            let mut moved = false;
            for kk in 0..k {
                let hkk = h[kk * k + kk];
                for step in [1i64, -1] {
                    let next = q[kk] + step;
                    if next.abs() > qmax {
                        continue;
                    }
                    let de = -(step as f64) * s;
                    if 2.0 * de * g[kk] + de * de * hkk < -1e-12 * hkk * s * s {
                        q[kk] = next;
                        let row = &h[kk * k..(kk + 1) * k];
                        for (gj, &hj) in g.iter_mut().zip(row) {
                            *gj += de * hj;
                        }
                        moved = true;
                        break;
                    }
                }
            }
            if !moved {
                break;
            }
        }
    };
    if threads > 1 {
        codes.par_chunks_mut(k).zip(g.par_chunks_mut(k)).enumerate().for_each(descend);
    } else {
        codes.chunks_mut(k).zip(g.chunks_mut(k)).enumerate().for_each(descend);
    }
    let mut out = vec![0i64; n * k];
    for nn in 0..n {
        for kk in 0..k {
            out[at(kk, nn)] = codes[nn * k + kk];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_graph::QType;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Output error on `x` of weights `w` (`[K, N]`) against codes `q` with per-channel `scale`.
    fn output_error(x: &[f32], w: &[f32], q: &[i64], scale: &[f32], k: usize, n: usize) -> f64 {
        let rows = x.len() / k;
        let mut e = 0.0;
        for r in 0..rows {
            for nn in 0..n {
                let (mut a, mut b) = (0.0f64, 0.0f64);
                for kk in 0..k {
                    a += x[r * k + kk] as f64 * w[kk * n + nn] as f64;
                    b += x[r * k + kk] as f64 * q[kk * n + nn] as f64 * scale[nn] as f64;
                }
                e += (a - b) * (a - b);
            }
        }
        e
    }

    #[test]
    fn adaptive_codes_lower_the_output_error_of_correlated_inputs() {
        let (k, n, rows) = (48, 8, 512);
        let mut seed = 7;
        // Inputs with a few strong, correlated directions (as activations have).
        let basis: Vec<f32> = (0..4 * k).map(|_| lcg(&mut seed)).collect();
        let mut x = Vec::with_capacity(rows * k);
        for _ in 0..rows {
            let c: Vec<f32> = (0..4).map(|_| lcg(&mut seed) * 3.0).collect();
            for j in 0..k {
                x.push((0..4).map(|i| c[i] * basis[i * k + j]).sum::<f32>() + lcg(&mut seed) * 0.1);
            }
        }
        let w: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed) * 0.2).collect();
        let params = QParams::symmetric_weights(&w, &[k, n], Some(1), 127.0);
        assert_eq!(params.qtype, QType::S8);
        let mut moment = SecondMoment::new(k);
        moment.add_rows(&x, 1);
        let nearest = params.quantize_all(&w, &[k, n]);
        let adaptive = round_adaptively(&w, &[k, n], 1, &params, 127.0, &moment, false, 1);
        let threaded = round_adaptively(&w, &[k, n], 1, &params, 127.0, &moment, false, 2);
        assert_eq!(adaptive, threaded, "threads change nothing");
        assert!(adaptive.iter().all(|q| q.abs() <= 127));
        let (before, after) = (output_error(&x, &w, &nearest, &params.scale, k, n), output_error(&x, &w, &adaptive, &params.scale, k, n));
        assert!(after < 0.7 * before, "output error {after} vs round-to-nearest {before}");
        assert!(nearest.iter().zip(&adaptive).all(|(a, b)| (a - b).abs() <= 3), "codes stay near their nearest values");

        // The [N, K] layout gives the same codes, transposed.
        let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
        let pt = QParams { axis: Some(0), ..params.clone() };
        let transposed = round_adaptively(&wt, &[n, k], 0, &pt, 127.0, &moment, false, 1);
        assert!((0..n * k).all(|i| transposed[i] == adaptive[(i % k) * n + i / k]));
    }
}
