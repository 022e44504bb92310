//! Quantization parameters and the affine mapping of doc/quantization.md:
//! `real = scale · (q − zero_point)` (eq. 1).

use serde::Serialize;

/// Largest weight code: s8 weights use `[−127, 127]` (eq. 4).
pub const WEIGHT_QMAX: f32 = 127.0;
/// Largest weight code of 7-bit ("reduce-range") weights, `[−64, 64]`: any two products with a
/// u8 activation then sum inside i16 (255 · 128 < 2¹⁵), so `vpmaddubsw` kernels (octet's AVX2
/// tier, ONNX Runtime's U8S8 kernels on CPUs without VNNI) cannot saturate.
pub const REDUCED_WEIGHT_QMAX: f32 = 64.0;

/// The integer type of a quantized tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    U8,
    S8,
    /// 16-bit activation codes (QuantizeLinear/DequantizeLinear take them from opset 21).
    U16,
    I32,
}

impl QType {
    pub fn range(self) -> (i64, i64) {
        match self {
            QType::U8 => (0, 255),
            QType::S8 => (-128, 127),
            QType::U16 => (0, 65535),
            QType::I32 => (i32::MIN as i64, i32::MAX as i64),
        }
    }
}

/// Scale and zero point, per tensor (one value) or per channel along `axis`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QParams {
    pub qtype: QType,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    pub axis: Option<usize>,
}

impl QParams {
    pub fn per_tensor(qtype: QType, scale: f32, zero_point: i32) -> QParams {
        QParams { qtype, scale: vec![scale], zero_point: vec![zero_point], axis: None }
    }

    /// Parameters covering `[min, max]`, widened to contain 0 so that real 0 is exact (eq. 2 and 3).
    ///
    /// Asymmetric (eq. 2): `scale = (max − min) / (qmax − qmin)`, `zero_point = round(qmin − min / scale)`.
    /// Symmetric (eq. 3): `scale = max(|min|, |max|) / qmax`, `zero_point = 0` (S8 only).
    /// A zero range gets scale 1, a valid grid on which 0 is exact.
    pub fn from_range(min: f32, max: f32, qtype: QType, symmetric: bool) -> QParams {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let (qmin, qmax) = qtype.range();
        let (qmin, qmax) = (qmin as f32, qmax as f32);
        if symmetric {
            let amax = min.abs().max(max.abs());
            let scale = if amax > 0.0 { amax / qmax } else { 1.0 };
            return QParams::per_tensor(qtype, scale, 0);
        }
        if max - min <= 0.0 {
            let zp = if qmin < 0.0 { 0 } else { qmin as i32 };
            return QParams::per_tensor(qtype, 1.0, zp);
        }
        let scale = (max - min) / (qmax - qmin);
        let zp = (qmin - min / scale).round_ties_even().clamp(qmin, qmax) as i32;
        QParams::per_tensor(qtype, scale, zp)
    }

    /// Symmetric s8 parameters for a weight tensor of `shape`, per channel along `axis` or per
    /// tensor (eq. 4): `scale_c = max |w_c| / qmax`, so codes lie in `[−qmax, qmax]`
    /// ([`WEIGHT_QMAX`], or [`REDUCED_WEIGHT_QMAX`] for 7-bit weights).
    pub fn symmetric_weights(w: &[f32], shape: &[usize], axis: Option<usize>, qmax: f32) -> QParams {
        let (channels, inner) = match axis {
            Some(a) => (shape[a], shape[a + 1..].iter().product()),
            None => (1, 1),
        };
        let mut amax = vec![0.0f32; channels];
        for (i, v) in w.iter().enumerate() {
            let c = (i / inner) % channels;
            amax[c] = amax[c].max(v.abs());
        }
        QParams {
            qtype: QType::S8,
            scale: amax.iter().map(|&a| if a > 0.0 { a / qmax } else { 1.0 }).collect(),
            zero_point: vec![0; channels],
            axis,
        }
    }

    /// These parameters with every scale multiplied by `factor > 0` (eq. 6: `x · c` on a
    /// quantized tensor only changes its scale).
    pub fn scaled(&self, factor: f32) -> QParams {
        QParams { scale: self.scale.iter().map(|s| s * factor).collect(), ..self.clone() }
    }

    /// `q = saturate(round_half_even(x / scale) + zero_point)` for channel `c` (eq. 5).
    pub fn quantize(&self, x: f32, c: usize) -> i64 {
        let (lo, hi) = self.qtype.range();
        let c = if self.scale.len() == 1 { 0 } else { c };
        ((x / self.scale[c]).round_ties_even() as i64 + self.zero_point[c] as i64).clamp(lo, hi)
    }

    /// `x = (q − zero_point) · scale` for channel `c` (eq. 1).
    pub fn dequantize(&self, q: i64, c: usize) -> f32 {
        let c = if self.scale.len() == 1 { 0 } else { c };
        (q - self.zero_point[c] as i64) as f32 * self.scale[c]
    }

    /// Quantizes a whole tensor of `shape` (channels along `axis` when per channel).
    pub fn quantize_all(&self, x: &[f32], shape: &[usize]) -> Vec<i64> {
        let inner: usize = self.axis.map(|a| shape[a + 1..].iter().product()).unwrap_or(1);
        let channels = self.scale.len();
        x.iter().enumerate().map(|(i, &v)| self.quantize(v, (i / inner) % channels)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_exact_and_range_is_covered() {
        let p = QParams::from_range(-1.0, 3.0, QType::U8, false);
        assert_eq!(p.quantize(0.0, 0), p.zero_point[0] as i64);
        assert_eq!(p.quantize(-1.0, 0), 0);
        assert_eq!(p.quantize(3.0, 0), 255);
        let s = QParams::from_range(-2.0, 0.5, QType::S8, true);
        assert_eq!((s.zero_point[0], s.quantize(-2.0, 0), s.quantize(2.0, 0)), (0, -127, 127));
        let positive = QParams::from_range(2.0, 5.0, QType::U8, false);
        assert_eq!(positive.zero_point[0], 0);
        let constant = QParams::from_range(0.0, 0.0, QType::U8, false);
        assert_eq!((constant.scale[0], constant.zero_point[0]), (1.0, 0));
    }

    #[test]
    fn per_channel_weights() {
        let w = [1.0, -2.0, 0.5, 0.0, 0.0, 0.0];
        let p = QParams::symmetric_weights(&w, &[2, 3], Some(0), WEIGHT_QMAX);
        assert_eq!(p.scale, vec![2.0 / 127.0, 1.0]);
        assert_eq!(p.quantize_all(&w, &[2, 3]), vec![64, -127, 32, 0, 0, 0]);
        let reduced = QParams::symmetric_weights(&w, &[2, 3], Some(0), REDUCED_WEIGHT_QMAX);
        assert_eq!(reduced.quantize_all(&w, &[2, 3]), vec![32, -64, 16, 0, 0, 0]);
        let per_tensor = QParams::symmetric_weights(&w, &[2, 3], None, WEIGHT_QMAX);
        assert_eq!((per_tensor.scale.clone(), per_tensor.axis), (vec![2.0 / 127.0], None));
    }
}
