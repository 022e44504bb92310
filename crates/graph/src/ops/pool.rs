//! Pooling ops of the ONNX spec's "nn" group: MaxPool, AveragePool, LpPool (any number of spatial
//! axes, explicit or `auto_pad` padding, dilations, `ceil_mode`) and their Global forms.

use super::layout::unravel;
use crate::error::OpResult;
use crate::op::{required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{strides, DType, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolKind {
    Max,
    Average { count_include_pad: bool },
    Lp { p: f64 },
}

/// The window attributes shared by the pooling ops.
#[derive(Debug)]
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: Vec<i64>,
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub auto_pad: String,
    pub ceil_mode: bool,
    /// MaxPool's Indices output: flattened over spatial axes in column-major order when true.
    pub storage_order_col: bool,
    pub outputs: usize,
}

/// Per spatial axis: input size, kernel, stride, dilation, padding before and after, output size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    pub(crate) size: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) dilation: usize,
    pub(crate) pad_begin: usize,
    pub(crate) pad_end: usize,
    pub(crate) out: usize,
}

/// The window attributes shared by convolutions and pools, borrowed from the op.
pub(crate) struct WindowAttrs<'a> {
    pub(crate) strides: Option<&'a [i64]>,
    pub(crate) dilations: Option<&'a [i64]>,
    pub(crate) pads: Option<&'a [i64]>,
    pub(crate) auto_pad: &'a str,
    pub(crate) ceil_mode: bool,
}

/// The geometry of a sliding window of `kernel` over the spatial axes `spatial` (explicit pads,
/// `auto_pad` SAME_UPPER/SAME_LOWER/VALID, dilations, `ceil_mode`), with checked arithmetic:
/// the attributes come from untrusted files.
pub(crate) fn window_geometry(spatial: &[usize], kernel: &[usize], a: &WindowAttrs) -> OpResult<Vec<Axis>> {
    let n = spatial.len();
    let get = |v: Option<&[i64]>, i: usize, d: i64| v.and_then(|v| v.get(i).copied()).unwrap_or(d);
    let at_least_one =
        |v: i64, what: &str| usize::try_from(v).ok().filter(|&u| u >= 1).ok_or_else(|| format!("{what} {v} must be at least 1"));
    (0..n)
        .map(|i| {
            let (size, kernel_size) = (spatial[i], kernel[i]);
            let stride = at_least_one(get(a.strides, i, 1), "stride")?;
            let dilation = at_least_one(get(a.dilations, i, 1), "dilation")?;
            let too_large = || format!("kernel {kernel:?} with dilations {:?} and pads {:?} is too large", a.dilations, a.pads);
            let eff = kernel_size
                .checked_sub(1)
                .ok_or_else(|| format!("kernel {kernel:?} has an empty spatial axis"))?
                .checked_mul(dilation)
                .and_then(|e| e.checked_add(1))
                .ok_or_else(too_large)?;
            let (pad_begin, pad_end) = match a.auto_pad {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let out = size.div_ceil(stride);
                    let total = out
                        .saturating_sub(1)
                        .checked_mul(stride)
                        .and_then(|v| v.checked_add(eff))
                        .ok_or_else(too_large)?
                        .saturating_sub(size);
                    let small = total / 2;
                    if a.auto_pad == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    }
                }
                "VALID" => (0, 0),
                _ => {
                    let nonneg = |v: i64| usize::try_from(v).map_err(|_| format!("pad {v} must not be negative"));
                    (nonneg(get(a.pads, i, 0))?, nonneg(get(a.pads, i + n, 0))?)
                }
            };
            let padded = size.checked_add(pad_begin).and_then(|v| v.checked_add(pad_end)).ok_or_else(too_large)?;
            if padded < eff {
                return Err(format!("kernel {kernel:?} is larger than the padded input {spatial:?}"));
            }
            let span = padded - eff;
            let mut out = if a.ceil_mode { span.div_ceil(stride) + 1 } else { span / stride + 1 };
            if a.ceil_mode && (out - 1) * stride >= size + pad_begin {
                out -= 1;
            }
            Ok(Axis { size, kernel: kernel_size, stride, dilation, pad_begin, pad_end, out })
        })
        .collect()
}

impl Pool {
    fn geometry(&self, x: &[usize]) -> OpResult<Vec<Axis>> {
        let spatial = x.len().checked_sub(2).filter(|&s| s > 0).ok_or_else(|| format!("pooling needs N, C and spatial axes, got {x:?}"))?;
        if self.kernel.len() != spatial {
            return Err(format!("kernel_shape {:?} does not match {spatial} spatial axes", self.kernel));
        }
        let kernel = self
            .kernel
            .iter()
            .map(|&k| usize::try_from(k).map_err(|_| format!("kernel size {k} must not be negative")))
            .collect::<OpResult<Vec<_>>>()?;
        let attrs = WindowAttrs {
            strides: self.strides.as_deref(),
            dilations: self.dilations.as_deref(),
            pads: self.pads.as_deref(),
            auto_pad: &self.auto_pad,
            ceil_mode: self.ceil_mode,
        };
        window_geometry(&x[2..], &kernel, &attrs)
    }
}

impl Op for Pool {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Average { .. } => "AveragePool",
            PoolKind::Lp { .. } => "LpPool",
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        let max_of_bytes = self.kind == PoolKind::Max && matches!(x.dtype, DType::U8 | DType::I8);
        if !x.dtype.is_float() && !max_of_bytes {
            return Err(format!("{} takes floats, got {}", self.name(), x.dtype));
        }
        let g = self.geometry(&x.shape)?;
        let shape: Vec<usize> = x.shape[..2].iter().copied().chain(g.iter().map(|a| a.out)).collect();
        let mut out = vec![Fact::new(x.dtype, shape.clone())];
        if self.outputs > 1 {
            out.push(Fact::new(DType::I64, shape));
        }
        Ok(out)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let g = self.geometry(s)?;
        let shape: Vec<usize> = s[..2].iter().copied().chain(g.iter().map(|a| a.out)).collect();
        let spatial_in: Vec<usize> = s[2..].to_vec();
        let in_st = strides(&spatial_in);
        let plane: usize = spatial_in.iter().product();
        let out_spatial: Vec<usize> = g.iter().map(|a| a.out).collect();
        let out_plane: usize = out_spatial.iter().product();
        let kernel: Vec<usize> = g.iter().map(|a| a.kernel).collect();
        let k_count: usize = kernel.iter().product();
        let v = x.to_f64_vec();
        let (mut values, mut indices) = (Vec::with_capacity(s[0] * s[1] * out_plane), Vec::new());
        let (mut o_idx, mut k_idx) = (vec![0usize; g.len()], vec![0usize; g.len()]);
        for nc in 0..s[0] * s[1] {
            let base = nc * plane;
            for op in 0..out_plane {
                unravel(op, &out_spatial, &mut o_idx);
                let (mut acc, mut best, mut best_at, mut inside, mut padded) = (0.0f64, f64::NEG_INFINITY, None, 0usize, 0usize);
                for kp in 0..k_count {
                    unravel(kp, &kernel, &mut k_idx);
                    let mut off = 0usize;
                    let (mut valid, mut in_pads) = (true, true);
                    for (a, ax) in g.iter().enumerate() {
                        let p = (o_idx[a] * ax.stride + k_idx[a] * ax.dilation) as i64 - ax.pad_begin as i64;
                        if p < 0 || p >= ax.size as i64 {
                            valid = false;
                            in_pads &= p < (ax.size + ax.pad_end) as i64;
                        } else {
                            off += p as usize * in_st[a];
                        }
                    }
                    if in_pads {
                        padded += 1;
                    }
                    if !valid {
                        continue;
                    }
                    inside += 1;
                    let e = v[base + off];
                    match self.kind {
                        PoolKind::Max => {
                            if e > best || best_at.is_none() || e.is_nan() {
                                best = e;
                                best_at = Some(off);
                            }
                        }
                        PoolKind::Average { .. } => acc += e,
                        PoolKind::Lp { p } => acc += e.abs().powf(p),
                    }
                }
                values.push(match self.kind {
                    PoolKind::Max => best,
                    PoolKind::Average { count_include_pad } => acc / (if count_include_pad { padded } else { inside }).max(1) as f64,
                    PoolKind::Lp { p } => acc.powf(1.0 / p),
                });
                if self.outputs > 1 {
                    let off = best_at.unwrap_or(0);
                    let idx = if self.storage_order_col {
                        let mut pos = vec![0usize; g.len()];
                        unravel(off, &spatial_in, &mut pos);
                        let mut col = 0usize;
                        let mut mul = 1usize;
                        for (a, &p) in pos.iter().enumerate() {
                            col += p * mul;
                            mul *= spatial_in[a];
                        }
                        base + col
                    } else {
                        base + off
                    };
                    indices.push(idx as i64);
                }
            }
        }
        let mut out = vec![Tensor::from_parts(shape.clone(), super::elementwise::from_f64(x.dtype(), values))];
        if self.outputs > 1 {
            out.push(Tensor::i64(shape, indices));
        }
        Ok(out)
    }
    op_any!();
}

/// GlobalMaxPool, GlobalAveragePool, GlobalLpPool: one value per (N, C) over every spatial axis.
#[derive(Debug)]
pub struct GlobalPool {
    pub kind: PoolKind,
}

impl Op for GlobalPool {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "GlobalMaxPool",
            PoolKind::Average { .. } => "GlobalAveragePool",
            PoolKind::Lp { .. } => "GlobalLpPool",
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        let max_of_bytes = self.kind == PoolKind::Max && matches!(x.dtype, DType::U8 | DType::I8);
        if x.shape.len() < 2 || !(x.dtype.is_float() || max_of_bytes) {
            return Err(format!("{} takes a float N×C×… tensor, got {} {:?}", self.name(), x.dtype, x.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let plane: usize = s[2..].iter().product();
        let v = x.to_f64_vec();
        let out: Vec<f64> = (0..s[0] * s[1])
            .map(|nc| {
                let row = &v[nc * plane..(nc + 1) * plane];
                match self.kind {
                    PoolKind::Max => row.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    PoolKind::Average { .. } => row.iter().sum::<f64>() / plane.max(1) as f64,
                    PoolKind::Lp { p } => row.iter().map(|e| e.abs().powf(p)).sum::<f64>().powf(1.0 / p),
                }
            })
            .collect();
        let shape = s.iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect();
        Ok(vec![Tensor::from_parts(shape, super::elementwise::from_f64(x.dtype(), out))])
    }
    op_any!();
}
