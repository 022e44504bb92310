//! Elementwise functions written with arithmetic and bit operations only, so that loops over
//! slices vectorise. Each scalar function has a slice twin that applies it in place with
//! run-time ISA dispatch.

use crate::dispatch::simd_dispatch;

/// `ln 2` in two parts for [`exp_scalar`]'s argument reduction (`LN2_HI` exact in few bits).
pub(crate) const EXP_LN2_HI: f32 = 0.693_359_4;
pub(crate) const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// [`exp_scalar`] is 0 below this and +inf above [`EXP_HI`].
pub(crate) const EXP_LO: f32 = -87.33;
pub(crate) const EXP_HI: f32 = 88.72;
/// [`exp_scalar`]'s polynomial by Horner's rule, highest degree first.
pub(crate) const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// `e^x` with a relative error below 3e-7 on the normal float range; 0 below −87.33, +inf above 88.72.
#[inline(always)]
pub fn exp_scalar(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    let xc = x.clamp(EXP_LO, EXP_HI);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * EXP_LN2_HI - n * EXP_LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    // The low mantissa bits of `t` hold n; integer ops only, so that the loop vectorises.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = e * scale;
    let y = if x < EXP_LO { 0.0 } else { y };
    if x > EXP_HI {
        f32::INFINITY
    } else {
        y
    }
}

/// `e^x` for `x ≤ 0`, relative error below 1e-5 (0 below −87): `2^(x·log2 e)` split into an
/// integer power (exponent bits) and `2^f`, `|f| ≤ 1/2`, by its degree-5 Taylor polynomial.
/// Cheaper than [`exp_scalar`]; for softmax outputs that are quantized (8-bit, or the 16-bit
/// probability codes of int8 attention), whose steps are coarser than its error.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let t = x.max(-126.0) * std::f32::consts::LOG2_E;
    let r = t + MAGIC;
    let n = r - MAGIC;
    let f = t - n;
    let p = 1.0 + f * (std::f32::consts::LN_2 + f * (0.240_226_5 + f * (0.055_504_11 + f * (0.009_618_129 + f * 0.001_333_355))));
    let scale = f32::from_bits(((r.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32).wrapping_add(127) << 23) as u32);
    let y = p * scale;
    if x < -87.0 {
        0.0
    } else {
        y
    }
}

/// Hyperbolic tangent, absolute error below 3e-7.
#[inline(always)]
pub fn tanh_scalar(x: f32) -> f32 {
    let a = x.abs().min(9.0);
    let t = 1.0 - 2.0 / (exp_scalar(2.0 * a) + 1.0);
    t.copysign(x)
}

/// Logistic sigmoid `1 / (1 + e^−x)`.
#[inline(always)]
pub fn sigmoid_scalar(x: f32) -> f32 {
    1.0 / (1.0 + exp_scalar(-x))
}

/// Error function: a rational approximation `x·P(x²)/Q(x²)` on [−4, 4] (the one used by Eigen and
/// XLA), absolute error below 5e-7 (largest near ±4); ±1 outside.
#[inline(always)]
pub fn erf_scalar(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_3e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// GELU with the exact (erf) form: `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_erf_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_scalar(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU with the tanh approximation: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
#[inline(always)]
pub fn gelu_tanh_scalar(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh_scalar(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

macro_rules! slice_twin {
    ($(#[$meta:meta])* $name:ident = $scalar:ident) => {
        simd_dispatch! {
            $(#[$meta])*
            pub fn $name(xs: &mut [f32]) {
                for x in xs.iter_mut() {
                    *x = $scalar(*x);
                }
            }
        }
    };
}

slice_twin!(/// Applies [`exp_scalar`] in place.
    exp = exp_scalar);
slice_twin!(/// Applies [`tanh_scalar`] in place.
    tanh = tanh_scalar);
slice_twin!(/// Applies [`sigmoid_scalar`] in place.
    sigmoid = sigmoid_scalar);
slice_twin!(/// Applies [`erf_scalar`] in place.
    erf = erf_scalar);
slice_twin!(/// Applies [`gelu_erf_scalar`] in place.
    gelu_erf = gelu_erf_scalar);
slice_twin!(/// Applies [`gelu_tanh_scalar`] in place.
    gelu_tanh = gelu_tanh_scalar);

simd_dispatch! {
    /// `ys[i] += xs[i]` over the shorter of the two.
    pub fn add_assign(ys: &mut [f32], xs: &[f32]) {
        for (y, &x) in ys.iter_mut().zip(xs) {
            *y += x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series in f64 (|x| ≤ 3) or the asymptotic continued fraction.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            return x.signum() * (1.0 - (-(x * x)).exp() / (x.abs() * std::f64::consts::PI.sqrt()) * (1.0 - 0.5 / (x * x)));
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid() -> impl Iterator<Item = f32> {
        (-20000..=20000).map(|i| i as f32 * 0.001)
    }

    #[test]
    fn exp_nonpositive_is_accurate() {
        for i in 0..=86_999 {
            let x = -(i as f32) * 0.001;
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 1e-5, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp_nonpositive(-200.0), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn exp_relative_error() {
        for x in grid().map(|x| x * 4.0) {
            let want = (x as f64).exp();
            let got = exp_scalar(x) as f64;
            assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp_scalar(-1000.0), 0.0);
        assert_eq!(exp_scalar(1000.0), f32::INFINITY);
    }

    #[test]
    fn tanh_sigmoid_erf_absolute_error() {
        for x in grid() {
            let xd = x as f64;
            assert!((tanh_scalar(x) as f64 - xd.tanh()).abs() < 4e-7, "tanh({x})");
            assert!((sigmoid_scalar(x) as f64 - 1.0 / (1.0 + (-xd).exp())).abs() < 3e-7, "sigmoid({x})");
            let (got, want) = (erf_scalar(x) as f64, erf_f64(xd));
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn slice_twins_equal_scalar_bits() {
        let xs: Vec<f32> = grid().collect();
        let mut ys = xs.clone();
        gelu_erf(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            assert_eq!(y.to_bits(), gelu_erf_scalar(*x).to_bits());
        }
    }
}
