//! Resize: nearest, (n-)linear and (n-)cubic interpolation, computed one axis at a time (the
//! ONNX interpolations are separable), with every coordinate transformation mode.

use crate::error::OpResult;
use crate::op::{norm_axis, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, DType, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nearest,
    Linear,
    Cubic,
}

/// Resize with the ONNX attributes (opset 11–19).
#[derive(Debug)]
pub struct Resize {
    pub mode: Mode,
    pub coord: String,
    pub nearest_mode: String,
    pub cubic_a: f32,
    pub exclude_outside: bool,
    pub extrapolation: f32,
    pub antialias: bool,
    pub axes: Option<Vec<i64>>,
    pub aspect_policy: String,
}

/// Output length and scale of every axis.
struct Plan {
    sizes: Vec<usize>,
    scales: Vec<f32>,
}

/// One output coordinate: input taps with weights, or the extrapolation value.
enum Taps {
    Weighted(Vec<(usize, f32)>),
    Outside,
}

/// Resize's optional operands: roi, scales, sizes.
type ResizeOperands = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<i64>>);

impl Resize {
    fn plan(&self, shape: &[usize], scales: Option<Vec<f32>>, sizes: Option<Vec<i64>>) -> OpResult<Plan> {
        let rank = shape.len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&x| norm_axis(x, rank)).collect::<OpResult<_>>()?,
            None => (0..rank).collect(),
        };
        let mut out = Plan { sizes: shape.to_vec(), scales: vec![1.0; rank] };
        match (scales.filter(|s| !s.is_empty()), sizes.filter(|s| !s.is_empty())) {
            (Some(sc), None) => {
                if sc.len() != axes.len() {
                    return Err(format!("{} scales for {} axes", sc.len(), axes.len()));
                }
                for (&a, &s) in axes.iter().zip(&sc) {
                    if !(s.is_finite() && s > 0.0) {
                        return Err(format!("scale {s} must be finite and positive"));
                    }
                    out.scales[a] = s;
                    out.sizes[a] = (shape[a] as f32 * s).floor() as usize;
                }
            }
            (None, Some(sz)) => {
                if sz.len() != axes.len() {
                    return Err(format!("{} sizes for {} axes", sz.len(), axes.len()));
                }
                if let Some(s) = sz.iter().find(|&&s| s < 0) {
                    return Err(format!("size {s} must not be negative"));
                }
                let ratios: Vec<f32> = axes.iter().zip(&sz).map(|(&a, &s)| s as f32 / shape[a] as f32).collect();
                if ratios.iter().any(|r| !r.is_finite()) {
                    return Err(format!("sizes {sz:?} from an input of shape {shape:?}: a ratio is not finite"));
                }
                let fixed = match self.aspect_policy.as_str() {
                    "not_larger" => Some(ratios.iter().cloned().fold(f32::INFINITY, f32::min)),
                    "not_smaller" => Some(ratios.iter().cloned().fold(0.0, f32::max)),
                    _ => None,
                };
                for (i, &a) in axes.iter().enumerate() {
                    match fixed {
                        Some(r) => {
                            out.scales[a] = r;
                            out.sizes[a] = (shape[a] as f32 * r).round() as usize;
                        }
                        None => {
                            out.scales[a] = ratios[i];
                            out.sizes[a] = sz[i].max(0) as usize;
                        }
                    }
                }
            }
            _ => return Err("exactly one of scales and sizes must be given".into()),
        }
        Ok(out)
    }

    fn source_coord(&self, x: usize, len_in: usize, len_out: usize, scale: f32, roi: (f32, f32)) -> f32 {
        let xf = x as f32;
        match self.coord.as_str() {
            "asymmetric" => xf / scale,
            "align_corners" if len_out == 1 => 0.0,
            // The resized length in the formula is `scale · len_in` unrounded, as in the ONNX
            // reference (it equals `len_out` when sizes were given).
            "align_corners" => xf * (len_in as f32 - 1.0) / (scale * len_in as f32 - 1.0),
            "pytorch_half_pixel" if len_out == 1 => 0.0,
            "half_pixel_symmetric" => {
                let adjustment = len_out as f32 / (scale * len_in as f32);
                let center = len_in as f32 / 2.0;
                center * (1.0 - adjustment) + (xf + 0.5) / scale - 0.5
            }
            "tf_crop_and_resize" if len_out == 1 => 0.5 * (roi.0 + roi.1) * (len_in as f32 - 1.0),
            "tf_crop_and_resize" => roi.0 * (len_in as f32 - 1.0) + xf * (roi.1 - roi.0) * (len_in as f32 - 1.0) / (len_out as f32 - 1.0),
            _ => (xf + 0.5) / scale - 0.5,
        }
    }

    fn taps(&self, x: f32, len_in: usize, scale: f32) -> Taps {
        let last = len_in as isize - 1;
        if self.coord == "tf_crop_and_resize" && (x < 0.0 || x > last as f32) {
            return Taps::Outside;
        }
        let clamp = |i: isize| i.clamp(0, last) as usize;
        if self.antialias && scale < 1.0 && self.mode != Mode::Nearest {
            return Taps::Weighted(self.antialias_taps(x, scale).into_iter().map(|(j, w)| (clamp(j), w)).collect());
        }
        match self.mode {
            Mode::Nearest => {
                let i = match self.nearest_mode.as_str() {
                    "floor" => x.floor(),
                    "ceil" => x.ceil(),
                    "round_prefer_ceil" => (x + 0.5).floor(),
                    _ if x == x.floor() + 0.5 => x.floor(),
                    _ => x.round(),
                };
                Taps::Weighted(vec![(clamp(i as isize), 1.0)])
            }
            Mode::Linear => {
                let i = x.floor();
                let r = x - i;
                let i = i as isize;
                Taps::Weighted(vec![(clamp(i), 1.0 - r), (clamp(i + 1), r)])
            }
            Mode::Cubic => {
                let i = x.floor();
                let r = x - i;
                let i = i as isize;
                let a = self.cubic_a;
                let w = [
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                    ((a * (2.0 - r) - 5.0 * a) * (2.0 - r) + 8.0 * a) * (2.0 - r) - 4.0 * a,
                ];
                let mut taps: Vec<(isize, f32)> = (0..4).map(|t| (i - 1 + t as isize, w[t])).collect();
                if self.exclude_outside {
                    taps.retain(|&(j, _)| (0..=last).contains(&j));
                    let sum: f32 = taps.iter().map(|t| t.1).sum();
                    taps.iter_mut().for_each(|t| t.1 /= sum);
                }
                Taps::Weighted(taps.into_iter().map(|(j, w)| (clamp(j), w)).collect())
            }
        }
    }

    /// Downsampling taps with the filter stretched by `1 / scale` (the ONNX `antialias` rule):
    /// the linear or cubic kernel evaluated at `scale · (i − frac(x))`, normalised to sum 1.
    fn antialias_taps(&self, x: f32, scale: f32) -> Vec<(isize, f32)> {
        let base = x.floor();
        let ratio = x - base;
        let support = if self.mode == Mode::Cubic { 2.0 } else { 1.0 };
        let start = (-support / scale).floor() as isize + 1;
        let end = 2 * support as isize - start;
        let a = self.cubic_a;
        let kernel = |t: f32| -> f32 {
            let t = t.abs();
            match self.mode {
                Mode::Cubic if t <= 1.0 => ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0,
                Mode::Cubic if t < 2.0 => ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a,
                Mode::Cubic => 0.0,
                _ => (1.0 - t).clamp(0.0, 1.0),
            }
        };
        let mut taps: Vec<(isize, f32)> = (start..end).map(|i| (base as isize + i, kernel(scale * (i as f32 - ratio)))).collect();
        let sum: f32 = taps.iter().map(|t| t.1).sum();
        taps.iter_mut().for_each(|t| t.1 /= sum);
        taps
    }

    /// Resamples one axis of a float tensor.
    fn resample_axis(&self, x: &[f32], shape: &[usize], axis: usize, len_out: usize, scale: f32, roi: (f32, f32)) -> Vec<f32> {
        let len_in = shape[axis];
        let outer = numel(&shape[..axis]);
        let inner = numel(&shape[axis + 1..]);
        let taps: Vec<Taps> = (0..len_out).map(|o| self.taps(self.source_coord(o, len_in, len_out, scale, roi), len_in, scale)).collect();
        let mut out = vec![0.0f32; outer * len_out * inner];
        for b in 0..outer {
            let src = &x[b * len_in * inner..][..len_in * inner];
            for (o, t) in taps.iter().enumerate() {
                let dst = &mut out[(b * len_out + o) * inner..][..inner];
                match t {
                    Taps::Outside => dst.fill(self.extrapolation),
                    Taps::Weighted(ws) => {
                        for &(i, w) in ws {
                            let row = &src[i * inner..][..inner];
                            dst.iter_mut().zip(row).for_each(|(d, s)| *d += w * s);
                        }
                    }
                }
            }
        }
        out
    }

    /// roi, scales and sizes, each when given.
    fn operands<T>(
        inputs: &[Option<&T>],
        floats: impl Fn(&T) -> Option<Vec<f32>>,
        ints: impl Fn(&T) -> Option<Vec<i64>>,
    ) -> OpResult<ResizeOperands> {
        let roi = optional(inputs, 1).map(|t| floats(t).ok_or("roi must be a constant float tensor")).transpose()?;
        let scales = optional(inputs, 2).map(|t| floats(t).ok_or("scales must be a constant float tensor")).transpose()?;
        let sizes = optional(inputs, 3).map(|t| ints(t).ok_or("sizes must be a constant integer tensor")).transpose()?;
        Ok((roi, scales, sizes))
    }
}

fn fact_floats(f: &Fact) -> Option<Vec<f32>> {
    f.value.as_ref().filter(|t| t.dtype().is_float()).map(|t| t.to_f64_vec().into_iter().map(|v| v as f32).collect())
}

impl Op for Resize {
    fn name(&self) -> &'static str {
        "Resize"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1, 2, 3]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        if x.dtype != DType::F32 {
            return Err(format!("X must be float32, got {}", x.dtype));
        }
        let (_, scales, sizes) = Self::operands(inputs, fact_floats, |f| f.const_ints())?;
        Ok(vec![Fact::new(DType::F32, self.plan(&x.shape, scales, sizes)?.sizes)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let floats = |t: &Tensor| t.dtype().is_float().then(|| t.to_f64_vec().into_iter().map(|v| v as f32).collect());
        let (roi, scales, sizes) = Self::operands(inputs, floats, |t| t.to_i64_vec())?;
        let plan = self.plan(x.shape(), scales, sizes)?;
        if numel(&plan.sizes) == 0 {
            return Ok(vec![Tensor::f32(plan.sizes, Vec::new())]);
        }
        if let Some(a) = (0..x.rank()).find(|&a| x.shape()[a] == 0) {
            return Err(format!("axis {a} of X {:?} is empty: there is nothing to resample to {} elements", x.shape(), plan.sizes[a]));
        }
        let rank = x.rank();
        let roi = roi.filter(|r| !r.is_empty());
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&v| norm_axis(v, rank)).collect::<OpResult<_>>()?,
            None => (0..rank).collect(),
        };
        let mut shape = x.shape().to_vec();
        let mut data = x.as_f32().ok_or("X must be float32")?.to_vec();
        for axis in 0..rank {
            let identity = plan.sizes[axis] == shape[axis] && plan.scales[axis] == 1.0 && self.coord != "tf_crop_and_resize";
            if identity {
                continue;
            }
            let roi_axis = match &roi {
                Some(r) => {
                    let k = axes.iter().position(|&a| a == axis).unwrap_or(axis);
                    let n = r.len() / 2;
                    (r[k], r[n + k])
                }
                None => (0.0, 1.0),
            };
            let mut next = shape.clone();
            next[axis] = plan.sizes[axis];
            crate::limits::check_tensor(DType::F32, &next).map_err(|m| format!("resampling axis {axis}: intermediate {m}"))?;
            data = self.resample_axis(&data, &shape, axis, plan.sizes[axis], plan.scales[axis], roi_axis);
            shape = next;
        }
        Ok(vec![Tensor::f32(shape, data)])
    }
    op_any!();
}
