//! Observers: what range of an activation to quantize, from calibration data
//! (doc/quantization.md, section 4).
//!
//! Every observer first records the minimum and maximum. Percentile, entropy and MSE
//! observers then need a second pass that fills a histogram over that range (over `|x|` for
//! symmetric tensors) and choose the clipping range from it.

use serde::Serialize;

/// How the clipping range is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The observed minimum and maximum.
    MinMax,
    /// The given percentile of the values (of `|x|` when symmetric), e.g. 99.99.
    Percentile(f64),
    /// The clipping that minimises the KL divergence between the histogram and its quantized form.
    Entropy,
    /// The clipping that minimises the mean squared quantization error over the histogram.
    Mse,
    /// The observed maximum and the given percentile from below (for softmax inputs, whose small
    /// values only feed `exp` of a large negative number), e.g. 1.
    Floor(f64),
    /// Chosen per tensor kind ([`Method::for_kind`]), from the measurements in
    /// doc/quantization.md, section 9.
    Auto,
}

impl Method {
    pub fn needs_histogram(self) -> bool {
        self != Method::MinMax
    }

    /// The method a tensor of `kind` gets: itself, or for [`Method::Auto`] the per-kind choice.
    pub fn for_kind(self, kind: crate::annotate::TensorKind) -> Method {
        use crate::annotate::TensorKind::*;
        match (self, kind) {
            (Method::Auto, Logits) => Method::Floor(LOGIT_FLOOR_PERCENTILE),
            (Method::Auto, Elementwise) => Method::Mse,
            (Method::Auto, Input | Residual | Norm | Matmul | Scaled | Probabilities) => Method::MinMax,
            (m, _) => m,
        }
    }
}

const BINS: usize = 2048;

/// The share of softmax inputs (in percent) clipped from below under [`Method::Auto`].
pub const LOGIT_FLOOR_PERCENTILE: f64 = 1.0;

/// Statistics of one group of values that share quantization parameters.
#[derive(Clone, Debug)]
pub struct Observer {
    pub symmetric: bool,
    pub min: f32,
    pub max: f32,
    pub count: u64,
    hist: Vec<u64>,
    /// The histogram spans `[lo, hi]`: `[min, max]`, or `[0, max |x|]` when symmetric.
    lo: f32,
    hi: f32,
}

impl Observer {
    pub fn new(symmetric: bool) -> Observer {
        Observer { symmetric, min: f32::INFINITY, max: f32::NEG_INFINITY, count: 0, hist: Vec::new(), lo: 0.0, hi: 0.0 }
    }

    /// Pass 1: records min and max. Values are multiplied by `factor` first (members of a group
    /// that differ by a constant scale). Returns the first non-finite value's index, if any.
    pub fn observe_range(&mut self, xs: &[f32], factor: f32) -> Result<(), usize> {
        for (i, &x) in xs.iter().enumerate() {
            if !x.is_finite() {
                return Err(i);
            }
            let v = x * factor;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += xs.len() as u64;
        Ok(())
    }

    /// Between the passes: fixes the histogram range from the recorded min and max.
    pub fn start_histogram(&mut self) {
        if self.symmetric {
            self.lo = 0.0;
            self.hi = self.min.abs().max(self.max.abs());
        } else {
            self.lo = self.min.min(0.0);
            self.hi = self.max.max(0.0);
        }
        self.hist = vec![0; BINS];
    }

    /// Pass 2: adds values to the histogram.
    pub fn observe_histogram(&mut self, xs: &[f32], factor: f32) {
        let width = self.hi - self.lo;
        if width <= 0.0 {
            self.hist[0] += xs.len() as u64;
            return;
        }
        let k = BINS as f32 / width;
        for &x in xs {
            let v = if self.symmetric { (x * factor).abs() } else { x * factor };
            let b = (((v - self.lo) * k) as usize).min(BINS - 1);
            self.hist[b] += 1;
        }
    }

    fn bin_center(&self, b: usize) -> f32 {
        self.lo + (b as f32 + 0.5) * (self.hi - self.lo) / BINS as f32
    }

    /// The value below which a share `q` of the histogram lies.
    fn quantile(&self, q: f64) -> f32 {
        let total: u64 = self.hist.iter().sum();
        let target = (q * total as f64).ceil() as u64;
        let mut acc = 0;
        for (b, &c) in self.hist.iter().enumerate() {
            acc += c;
            if acc >= target.max(1) {
                return self.lo + (b + 1) as f32 * (self.hi - self.lo) / BINS as f32;
            }
        }
        self.hi
    }

    /// The chosen range `(min, max)` (for symmetric tensors `(−a, a)`).
    pub fn range(&self, method: Method) -> (f32, f32) {
        if self.count == 0 {
            return (0.0, 0.0);
        }
        let full = if self.symmetric {
            let a = self.min.abs().max(self.max.abs());
            (-a, a)
        } else {
            (self.min, self.max)
        };
        if self.hist.is_empty() || self.hi <= self.lo {
            return full;
        }
        match method {
            Method::MinMax | Method::Auto => full,
            Method::Percentile(p) => {
                let p = (p / 100.0).clamp(0.0, 1.0);
                if self.symmetric {
                    let a = self.quantile(p);
                    (-a, a)
                } else {
                    (self.quantile(1.0 - p).min(0.0).max(self.min), self.quantile(p).max(0.0).min(self.max))
                }
            }
            Method::Floor(p) if !self.symmetric => (self.quantile(p / 100.0).min(0.0).max(self.min), self.max),
            Method::Floor(_) => full,
            Method::Mse | Method::Entropy => {
                // Candidates shrink the full range geometrically from 1 down to 1 %.
                let mut best = (f64::INFINITY, full);
                for k in 0..100 {
                    let t = 0.955f32.powi(k);
                    let cand = (full.0 * t, full.1 * t);
                    let loss = if method == Method::Mse { self.mse(cand) } else { self.kl(cand) };
                    if loss < best.0 {
                        best = (loss, cand);
                    }
                }
                best.1
            }
        }
    }

    /// The quantization grid `(scale, zero point, qmin, qmax)` a candidate range implies.
    fn grid(&self, (lo, hi): (f32, f32)) -> (f32, f32, f32, f32) {
        if self.symmetric {
            let s = hi.max(f32::MIN_POSITIVE) / 127.0;
            (s, 0.0, -127.0, 127.0)
        } else {
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            let s = ((hi - lo) / 255.0).max(f32::MIN_POSITIVE);
            (s, (-lo / s).round(), 0.0, 255.0)
        }
    }

    /// Expected squared error of quantizing the histogram on the candidate grid.
    fn mse(&self, cand: (f32, f32)) -> f64 {
        let (s, z, qmin, qmax) = self.grid(cand);
        let mut err = 0.0f64;
        for (b, &c) in self.hist.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let x = self.bin_center(b);
            let q = ((x / s).round() + z).clamp(qmin, qmax);
            let d = (x - (q - z) * s) as f64;
            err += c as f64 * d * d;
        }
        err
    }

    /// KL(P ‖ Q): P is the histogram with the clipped tails folded into the edge bins, Q is P
    /// merged per quantization level and spread evenly over the level's non-empty bins.
    fn kl(&self, cand: (f32, f32)) -> f64 {
        let (s, z, qmin, qmax) = self.grid(cand);
        let level = |b: usize| ((self.bin_center(b) / s).round() + z).clamp(qmin, qmax) as i64;
        let total: f64 = self.hist.iter().sum::<u64>() as f64;
        let mut mass: std::collections::BTreeMap<i64, (f64, usize)> = Default::default();
        for (b, &c) in self.hist.iter().enumerate() {
            if c > 0 {
                let e = mass.entry(level(b)).or_default();
                e.0 += c as f64;
                e.1 += 1;
            }
        }
        let mut kl = 0.0;
        for (b, &c) in self.hist.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let p = c as f64 / total;
            let (m, n) = mass[&level(b)];
            let q = m / n as f64 / total;
            kl += p * (p / q).ln();
        }
        kl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(xs: &[f32], symmetric: bool, method: Method) -> (f32, f32) {
        let mut o = Observer::new(symmetric);
        o.observe_range(xs, 1.0).unwrap();
        if method.needs_histogram() {
            o.start_histogram();
            o.observe_histogram(xs, 1.0);
        }
        o.range(method)
    }

    /// A bulk of small values plus rare large outliers.
    fn with_outliers() -> Vec<f32> {
        let mut v: Vec<f32> = (0..100_000).map(|i| ((i * 7919 % 2001) as f32 - 1000.0) / 1000.0).collect();
        v.extend([60.0, -55.0, 80.0]);
        v
    }

    #[test]
    fn minmax_is_the_extremes() {
        assert_eq!(observed(&[-1.0, 2.0, 0.5], false, Method::MinMax), (-1.0, 2.0));
        assert_eq!(observed(&[-1.0, 2.0, 0.5], true, Method::MinMax), (-2.0, 2.0));
    }

    #[test]
    fn histogram_methods_clip_outliers() {
        let v = with_outliers();
        for m in [Method::Percentile(99.9), Method::Mse, Method::Entropy] {
            let (lo, hi) = observed(&v, false, m);
            assert!((0.9..80.0 * 0.9).contains(&hi), "{m:?}: {lo}..{hi}");
            let (_, a) = observed(&v, true, m);
            assert!((0.9..80.0 * 0.9).contains(&a), "{m:?} symmetric: {a}");
        }
    }

    #[test]
    fn non_finite_values_are_reported() {
        let mut o = Observer::new(false);
        assert_eq!(o.observe_range(&[1.0, f32::NAN], 1.0), Err(1));
        assert_eq!(o.observe_range(&[f32::INFINITY], 1.0), Err(0));
    }

    #[test]
    fn constant_tensor_gets_a_range() {
        assert_eq!(observed(&[0.0; 10], false, Method::Entropy), (0.0, 0.0));
        assert_eq!(observed(&[3.0; 10], false, Method::Mse).1, 3.0);
    }
}
