//! Normalizations of the ONNX spec's "nn" group besides LayerNormalization: BatchNormalization
//! (inference), InstanceNormalization, GroupNormalization, RMSNormalization, LpNormalization,
//! MeanVarianceNormalization, LRN. Computed in f64, stored in the input's type.

use super::elementwise::from_f64;
use super::reduction::groups;
use crate::error::OpResult;
use crate::op::{norm_axis, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, Tensor};

fn float_input<'a>(inputs: &[Option<&'a Fact>], name: &str) -> OpResult<&'a Fact> {
    let x = required(inputs, 0, "X")?;
    if !x.dtype.is_float() {
        return Err(format!("{name} takes floats, got {}", x.dtype));
    }
    Ok(x)
}

/// Mean and variance (population) of each group of elements that `reduced` axes gather.
fn moments(v: &[f64], shape: &[usize], reduced: &[bool]) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let (group, n) = groups(shape, reduced);
    let (mut sum, mut count) = (vec![0.0; n], vec![0usize; n]);
    for (&g, &e) in group.iter().zip(v) {
        sum[g] += e;
        count[g] += 1;
    }
    let mean: Vec<f64> = sum.iter().zip(&count).map(|(s, &c)| s / c.max(1) as f64).collect();
    let mut var = vec![0.0; n];
    for (&g, &e) in group.iter().zip(v) {
        var[g] += (e - mean[g]) * (e - mean[g]);
    }
    var.iter_mut().zip(&count).for_each(|(s, &c)| *s /= c.max(1) as f64);
    (group, mean, var)
}

/// Per-channel (axis 1) values of an optional operand, broadcast over the other axes.
fn per_channel(t: Option<&Tensor>, channels: usize, default: f64, what: &str) -> OpResult<Vec<f64>> {
    match t {
        Some(t) if t.len() == channels => Ok(t.to_f64_vec()),
        Some(t) => Err(format!("{what} holds {} values for {channels} channels", t.len())),
        None => Ok(vec![default; channels]),
    }
}

fn channel_of(i: usize, shape: &[usize]) -> usize {
    (i / numel(&shape[2.min(shape.len())..])) % shape.get(1).copied().unwrap_or(1)
}

/// The ops here, by which statistics they divide by.
#[derive(Clone, Debug, PartialEq)]
pub enum NormKind {
    /// Running mean and variance from inputs 3 and 4; per-channel scale and bias.
    Batch,
    /// Per (N, C) over the spatial axes; per-channel scale and bias.
    Instance,
    /// Per (N, group) over the group's channels and the spatial axes; scale and bias per
    /// channel (opset 21) or per group (opset 18).
    Group { groups: usize, per_group_affine: bool },
    /// `x / sqrt(mean(x²) + ε) · scale` over the axes from `axis`.
    Rms { axis: i64 },
    /// `(x − mean) / sqrt(var)` over `axes`.
    MeanVariance { axes: Vec<i64> },
}

#[derive(Debug)]
pub struct Normalization {
    pub kind: NormKind,
    pub epsilon: f64,
}

impl Op for Normalization {
    fn name(&self) -> &'static str {
        match self.kind {
            NormKind::Batch => "BatchNormalization",
            NormKind::Instance => "InstanceNormalization",
            NormKind::Group { .. } => "GroupNormalization",
            NormKind::Rms { .. } => "RMSNormalization",
            NormKind::MeanVariance { .. } => "MeanVarianceNormalization",
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = float_input(inputs, self.name())?;
        if !matches!(self.kind, NormKind::Rms { .. } | NormKind::MeanVariance { .. }) && x.shape.len() < 2 {
            return Err(format!("{} needs N and C axes, got {:?}", self.name(), x.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let v = x.to_f64_vec();
        let eps = self.epsilon;
        let c = s.get(1).copied().unwrap_or(1);
        let out: Vec<f64> = match &self.kind {
            NormKind::Batch => {
                let scale = per_channel(optional(inputs, 1), c, 1.0, "scale")?;
                let bias = per_channel(optional(inputs, 2), c, 0.0, "B")?;
                let mean = per_channel(optional(inputs, 3), c, 0.0, "input_mean")?;
                let var = per_channel(optional(inputs, 4), c, 1.0, "input_var")?;
                v.iter()
                    .enumerate()
                    .map(|(i, &e)| {
                        let ch = channel_of(i, s);
                        (e - mean[ch]) / (var[ch] + eps).sqrt() * scale[ch] + bias[ch]
                    })
                    .collect()
            }
            NormKind::Instance => {
                let scale = per_channel(optional(inputs, 1), c, 1.0, "scale")?;
                let bias = per_channel(optional(inputs, 2), c, 0.0, "B")?;
                let reduced: Vec<bool> = (0..s.len()).map(|a| a >= 2).collect();
                let (group, mean, var) = moments(&v, s, &reduced);
                v.iter()
                    .enumerate()
                    .map(|(i, &e)| {
                        let (g, ch) = (group[i], channel_of(i, s));
                        (e - mean[g]) / (var[g] + eps).sqrt() * scale[ch] + bias[ch]
                    })
                    .collect()
            }
            &NormKind::Group { groups: ng, per_group_affine } => {
                if ng == 0 || c % ng != 0 {
                    return Err(format!("{c} channels do not split into {ng} groups"));
                }
                let affine = if per_group_affine { ng } else { c };
                let scale = per_channel(optional(inputs, 1), affine, 1.0, "scale")?;
                let bias = per_channel(optional(inputs, 2), affine, 0.0, "bias")?;
                let grouped: Vec<usize> = [s[0], ng, numel(&s[1..]) / ng].to_vec();
                let (group, mean, var) = moments(&v, &grouped, &[false, false, true]);
                v.iter()
                    .enumerate()
                    .map(|(i, &e)| {
                        let (g, ch) = (group[i], channel_of(i, s));
                        let a = if per_group_affine { ch / (c / ng) } else { ch };
                        (e - mean[g]) / (var[g] + eps).sqrt() * scale[a] + bias[a]
                    })
                    .collect()
            }
            &NormKind::Rms { axis } => {
                let axis = norm_axis(axis, s.len())?;
                let block = numel(&s[axis..]);
                let scale = required(inputs, 1, "scale")?;
                let sv = scale.to_f64_vec();
                if block == 0 || sv.is_empty() || !block.is_multiple_of(sv.len()) {
                    return Err(format!("scale {:?} does not broadcast over {:?}", scale.shape(), &s[axis..]));
                }
                v.chunks(block)
                    .flat_map(|row| {
                        let ms = row.iter().map(|e| e * e).sum::<f64>() / block as f64;
                        let inv = 1.0 / (ms + eps).sqrt();
                        row.iter().map(move |e| e * inv).collect::<Vec<_>>()
                    })
                    .enumerate()
                    .map(|(i, e)| e * sv[i % block % sv.len()])
                    .collect()
            }
            NormKind::MeanVariance { axes } => {
                let mut reduced = vec![false; s.len()];
                for &a in axes {
                    reduced[norm_axis(a, s.len())?] = true;
                }
                let (group, mean, var) = moments(&v, s, &reduced);
                v.iter().enumerate().map(|(i, &e)| (e - mean[group[i]]) / (var[group[i]].sqrt() + 1e-9)).collect()
            }
        };
        Ok(vec![Tensor::from_parts(s.to_vec(), from_f64(x.dtype(), out))])
    }
    op_any!();
}

/// `x / ‖x‖_p` along `axis` (p = 1 or 2).
#[derive(Debug)]
pub struct LpNormalization {
    pub axis: i64,
    pub p: i64,
}

impl Op for LpNormalization {
    fn name(&self) -> &'static str {
        "LpNormalization"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = float_input(inputs, "LpNormalization")?;
        if !matches!(self.p, 1 | 2) {
            return Err(format!("p = {} (only 1 and 2 are defined)", self.p));
        }
        norm_axis(self.axis, x.shape.len())?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let s = x.shape();
        let axis = norm_axis(self.axis, s.len())?;
        let reduced: Vec<bool> = (0..s.len()).map(|a| a == axis).collect();
        let (group, n) = groups(s, &reduced);
        let v = x.to_f64_vec();
        let mut norm = vec![0.0f64; n];
        for (&g, &e) in group.iter().zip(&v) {
            norm[g] += if self.p == 1 { e.abs() } else { e * e };
        }
        if self.p == 2 {
            norm.iter_mut().for_each(|e| *e = e.sqrt());
        }
        let out = v.iter().zip(&group).map(|(&e, &g)| if norm[g] == 0.0 { 0.0 } else { e / norm[g] }).collect();
        Ok(vec![Tensor::from_parts(s.to_vec(), from_f64(x.dtype(), out))])
    }
    op_any!();
}

/// Local response normalization across channels.
#[derive(Debug)]
pub struct Lrn {
    pub alpha: f64,
    pub beta: f64,
    pub bias: f64,
    pub size: usize,
}

impl Op for Lrn {
    fn name(&self) -> &'static str {
        "LRN"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = float_input(inputs, "LRN")?;
        if x.shape.len() < 2 || self.size == 0 {
            return Err(format!("LRN needs N and C axes and a positive size, got {:?}", x.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let (c, plane) = (s[1], numel(&s[2..]));
        let v = x.to_f64_vec();
        let (before, after) = ((self.size - 1) / 2, self.size.div_ceil(2) - 1);
        let out = (0..v.len())
            .map(|i| {
                let (ch, n, p) = ((i / plane) % c, i / (plane * c), i % plane);
                let lo = ch.saturating_sub(before);
                let hi = (ch + after).min(c - 1);
                let sq: f64 = (lo..=hi).map(|k| v[(n * c + k) * plane + p].powi(2)).sum();
                v[i] / (self.bias + self.alpha / self.size as f64 * sq).powf(self.beta)
            })
            .collect();
        Ok(vec![Tensor::from_parts(s.to_vec(), from_f64(x.dtype(), out))])
    }
    op_any!();
}

/// Dropout in inference (or in training with ratio 0, which keeps everything): the input
/// unchanged, and an all-true mask when asked for.
#[derive(Debug)]
pub struct Dropout {
    pub mask: bool,
}

impl Op for Dropout {
    fn name(&self) -> &'static str {
        "Dropout"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        let mut out = vec![Fact::new(x.dtype, x.shape.clone())];
        if self.mask {
            out.push(Fact::new(crate::tensor::DType::Bool, x.shape.clone()));
        }
        Ok(out)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let training = optional(inputs, 2).and_then(|t| t.scalar_value()).is_some_and(|v| v != 0.0);
        let ratio = optional(inputs, 1).and_then(|t| t.scalar_value()).unwrap_or(0.5);
        if training && ratio != 0.0 {
            return Err("Dropout in training mode drops at random: only ratio 0 is supported".into());
        }
        let mut out = vec![x.clone()];
        if self.mask {
            out.push(Tensor::from_parts(x.shape().to_vec(), crate::tensor::Data::Bool(vec![true; x.len()])));
        }
        Ok(out)
    }
    op_any!();
}

/// BatchNormalization with `training_mode = 1`: normalises with the batch's own statistics and
/// also returns the running mean and variance updated with `momentum`.
#[derive(Debug)]
pub struct BatchNormTraining {
    pub epsilon: f64,
    pub momentum: f64,
    pub outputs: usize,
}

impl Op for BatchNormTraining {
    fn name(&self) -> &'static str {
        "BatchNormalization"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = float_input(inputs, "BatchNormalization")?;
        if x.shape.len() < 2 {
            return Err(format!("BatchNormalization needs N and C axes, got {:?}", x.shape));
        }
        let mut out = vec![Fact::new(x.dtype, x.shape.clone()), Fact::new(x.dtype, vec![x.shape[1]]), Fact::new(x.dtype, vec![x.shape[1]])];
        out.truncate(self.outputs.max(1));
        Ok(out)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let c = s[1];
        let scale = per_channel(optional(inputs, 1), c, 1.0, "scale")?;
        let bias = per_channel(optional(inputs, 2), c, 0.0, "B")?;
        let run_mean = per_channel(optional(inputs, 3), c, 0.0, "input_mean")?;
        let run_var = per_channel(optional(inputs, 4), c, 1.0, "input_var")?;
        let v = x.to_f64_vec();
        let reduced: Vec<bool> = (0..s.len()).map(|a| a != 1).collect();
        let (_, mean, var) = moments(&v, s, &reduced);
        let y = v.iter().enumerate().map(|(i, &e)| {
            let ch = channel_of(i, s);
            (e - mean[ch]) / (var[ch] + self.epsilon).sqrt() * scale[ch] + bias[ch]
        });
        let m = self.momentum;
        let new_mean = run_mean.iter().zip(&mean).map(|(r, b)| r * m + b * (1.0 - m)).collect();
        let new_var = run_var.iter().zip(&var).map(|(r, b)| r * m + b * (1.0 - m)).collect();
        let dtype = x.dtype();
        let mut out = vec![
            Tensor::from_parts(s.to_vec(), from_f64(dtype, y.collect())),
            Tensor::from_parts(vec![c], from_f64(dtype, new_mean)),
            Tensor::from_parts(vec![c], from_f64(dtype, new_var)),
        ];
        out.truncate(self.outputs.max(1));
        Ok(out)
    }
    op_any!();
}
