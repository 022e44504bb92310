//! QuantizeLinear and DequantizeLinear, per tensor and per axis:
//! `q = saturate(round_half_even(x / scale) + zero_point)`, `x = (q − zero_point) · scale`.

use crate::error::OpResult;
use crate::op::{norm_axis, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, DType, Data, Tensor};
use octet_kernels::i8::elementwise::{self as ew, Affine};

/// Index into the scale / zero-point vector for every element of `shape`: 0 for per-tensor
/// parameters, the coordinate along `axis` for per-axis ones.
fn param_index(shape: &[usize], params: &[usize], axis: i64) -> OpResult<Vec<usize>> {
    let n = numel(shape);
    if numel(params) == 1 {
        return Ok(vec![0; n]);
    }
    if params.len() != 1 {
        return Err(format!("blocked quantization (scale shape {params:?}) is not supported"));
    }
    let a = norm_axis(axis, shape.len())?;
    if shape[a] != params[0] {
        return Err(format!("scale has {} values but axis {a} of {shape:?} has {}", params[0], shape[a]));
    }
    let inner: usize = shape[a + 1..].iter().product();
    Ok((0..n).map(|i| (i / inner) % shape[a]).collect())
}

fn zero_points(zp: Option<&Tensor>, len: usize) -> OpResult<Vec<i64>> {
    match zp {
        Some(z) => {
            let z = z.to_i64_vec().ok_or_else(|| format!("zero point must be an integer tensor, got {}", z.dtype()))?;
            if z.len() != len {
                return Err(format!("{} zero point(s) for {len} scale(s)", z.len()));
            }
            Ok(z)
        }
        None => Ok(vec![0; len]),
    }
}

/// Float → 8-, 16- or 32-bit integers (uint8 unless the zero point or `output_dtype` says another).
#[derive(Debug)]
pub struct QuantizeLinear {
    pub axis: i64,
    pub output_dtype: Option<DType>,
}

impl QuantizeLinear {
    fn out_dtype(&self, zp: Option<DType>) -> OpResult<DType> {
        let dt = zp.or(self.output_dtype).unwrap_or(DType::U8);
        match dt {
            DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32 => Ok(dt),
            other => Err(format!("quantizing to {other} is not supported")),
        }
    }
}

impl Op for QuantizeLinear {
    fn name(&self) -> &'static str {
        "QuantizeLinear"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "x")?;
        required(inputs, 1, "y_scale")?;
        Ok(vec![Fact::new(self.out_dtype(optional(inputs, 2).map(|f| f.dtype))?, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, scale) = (required(inputs, 0, "x")?, required(inputs, 1, "y_scale")?);
        let zp = optional(inputs, 2);
        let dtype = self.out_dtype(zp.map(|z| z.dtype()))?;
        let s = scale.to_f64_vec();
        let z = zero_points(zp, s.len())?;
        if let (Some(xs), 1, DType::U8 | DType::I8) = (x.as_f32(), s.len(), dtype) {
            let p = Affine { scale: s[0] as f32, zero_point: z[0] as i32, signed: dtype == DType::I8 };
            let mut out = vec![0u8; xs.len()];
            ew::quantize(xs, p, &mut out);
            let data = if p.signed { Data::I8(out.into_iter().map(|b| b as i8).collect()) } else { Data::U8(out) };
            return Ok(vec![Tensor::from_parts(x.shape().to_vec(), data)]);
        }
        if let (Some(xs), 1, DType::U16) = (x.as_f32(), s.len(), dtype) {
            let mut out = vec![0u16; xs.len()];
            ew::quantize_u16(xs, s[0] as f32, z[0] as i32, &mut out);
            return Ok(vec![Tensor::from_parts(x.shape().to_vec(), Data::U16(out))]);
        }
        let idx = param_index(x.shape(), scale.shape(), self.axis)?;
        let (lo, hi) = match dtype {
            DType::U8 => (0.0, 255.0),
            DType::I8 => (-128.0, 127.0),
            DType::U16 => (0.0, 65535.0),
            DType::I16 => (-32768.0, 32767.0),
            _ => (i32::MIN as f64, i32::MAX as f64),
        };
        let q = x.to_f64_vec().into_iter().zip(&idx).map(|(v, &i)| {
            let r = (v as f32 / s[i] as f32).round_ties_even() as f64 + z[i] as f64;
            r.clamp(lo, hi)
        });
        let data = Data::from_i64s(dtype, &q.map(|v| v as i64).collect::<Vec<_>>());
        Ok(vec![Tensor::from_parts(x.shape().to_vec(), data)])
    }
    op_any!();
}

/// 8-, 16- or 32-bit integers → float32.
#[derive(Debug)]
pub struct DequantizeLinear {
    pub axis: i64,
}

impl Op for DequantizeLinear {
    fn name(&self) -> &'static str {
        "DequantizeLinear"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "x")?;
        if !matches!(x.dtype, DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32) {
            return Err(format!("cannot dequantize {}", x.dtype));
        }
        Ok(vec![Fact::new(DType::F32, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, scale) = (required(inputs, 0, "x")?, required(inputs, 1, "x_scale")?);
        let s: Vec<f32> = scale.to_f64_vec().into_iter().map(|v| v as f32).collect();
        let z = zero_points(optional(inputs, 2), s.len())?;
        if s.len() == 1 {
            let bytes: Option<&[u8]> = match x.data() {
                Data::U8(v) => Some(v),
                // SAFETY: i8 and u8 have the same layout.
                Data::I8(v) => Some(unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len()) }),
                _ => None,
            };
            if let Some(b) = bytes {
                let p = Affine { scale: s[0], zero_point: z[0] as i32, signed: x.dtype() == DType::I8 };
                let mut out = vec![0.0f32; b.len()];
                ew::dequantize(b, p, &mut out);
                return Ok(vec![Tensor::f32(x.shape().to_vec(), out)]);
            }
        }
        let idx = param_index(x.shape(), scale.shape(), self.axis)?;
        let q = x.to_i64_vec().ok_or_else(|| format!("cannot dequantize {}", x.dtype()))?;
        let out = q.iter().zip(&idx).map(|(&v, &i)| (v - z[i]) as f32 * s[i]).collect();
        Ok(vec![Tensor::f32(x.shape().to_vec(), out)])
    }
    op_any!();
}

// ---------------------------------------------------------------- integer matmul and conv

/// Zero points of an integer operand: one per tensor, or one per row (`per` elements).
fn shifts(zp: Option<&Tensor>, per: usize, what: &str) -> OpResult<Vec<i64>> {
    let z = match zp {
        Some(z) => integers(z, &format!("{what} zero point"))?,
        None => vec![0],
    };
    match z.len() {
        1 => Ok(vec![z[0]; per.max(1)]),
        n if n == per => Ok(z),
        n => Err(format!("{what} zero point has {n} values; expected 1 or {per}")),
    }
}

fn integers(t: &Tensor, what: &str) -> OpResult<Vec<i64>> {
    if t.dtype().is_float() {
        return Err(format!("{what} must be an integer tensor, got {}", t.dtype()));
    }
    Ok(t.to_i64_vec().expect("integer"))
}

/// `A − a_zero_point` (per tensor, or per row of the last-but-one axis) and `B − b_zero_point`
/// (per tensor, or per column).
fn shifted_operands(a: &Tensor, azp: Option<&Tensor>, b: &Tensor, bzp: Option<&Tensor>) -> OpResult<(Vec<i64>, Vec<i64>)> {
    let (sa, sb) = (a.shape(), b.shape());
    let rows = if sa.len() >= 2 { sa[sa.len() - 2] } else { 1 };
    let cols = *sb.last().unwrap_or(&1);
    let (za, zb) = (shifts(azp, rows, "A")?, shifts(bzp, cols, "B")?);
    let k = *sa.last().unwrap_or(&1);
    let av: Vec<i64> = integers(a, "A")?.iter().enumerate().map(|(i, &v)| v - za[(i / k.max(1)) % za.len()]).collect();
    let bv: Vec<i64> = integers(b, "B")?.iter().enumerate().map(|(i, &v)| v - zb[i % zb.len()]).collect();
    Ok((av, bv))
}

/// MatMulInteger: `(A − a_zp) · (B − b_zp)` in int32.
#[derive(Debug)]
pub struct MatMulInteger;

impl Op for MatMulInteger {
    fn name(&self) -> &'static str {
        "MatMulInteger"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        Ok(vec![Fact::new(DType::I32, super::nn::matmul_dims(&a.shape, &b.shape)?.out)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let (av, bv) = shifted_operands(a, optional(inputs, 2), b, optional(inputs, 3))?;
        let (c, shape) = super::nn::integer_matmul(&av, a.shape(), &bv, b.shape())?;
        Ok(vec![Tensor::from_parts(shape, Data::from_i64s(DType::I32, &c))])
    }
    op_any!();
}

/// Requantizes exact integer accumulators: `saturate(round_half_even(acc · scale / y_scale) + y_zp)`.
fn requantize(acc: &[f64], scale: impl Fn(usize) -> f64, y_scale: f64, y_zp: &Tensor) -> OpResult<Data> {
    let z = zero_points(Some(y_zp), 1)?[0];
    let (lo, hi) = if y_zp.dtype() == DType::I8 { (-128.0, 127.0) } else { (0.0, 255.0) };
    let q: Vec<i64> =
        acc.iter().enumerate().map(|(i, &a)| ((a * scale(i) / y_scale).round_ties_even() + z as f64).clamp(lo, hi) as i64).collect();
    Ok(Data::from_i64s(y_zp.dtype(), &q))
}

fn scalar(t: &Tensor, what: &str) -> OpResult<f64> {
    t.scalar_value().ok_or_else(|| format!("{what} must hold one value"))
}

/// QLinearMatMul: quantized A and B in, quantized Y out (per-tensor or per-column B scale).
#[derive(Debug)]
pub struct QLinearMatMul;

impl Op for QLinearMatMul {
    fn name(&self) -> &'static str {
        "QLinearMatMul"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (a, b, yz) = (required(inputs, 0, "a")?, required(inputs, 3, "b")?, required(inputs, 7, "y_zero_point")?);
        Ok(vec![Fact::new(yz.dtype, super::nn::matmul_dims(&a.shape, &b.shape)?.out)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let r = |i, w| required(inputs, i, w);
        let (a, a_s, a_z, b, b_s, b_z, y_s, y_z) = (
            r(0, "a")?,
            r(1, "a_scale")?,
            r(2, "a_zero_point")?,
            r(3, "b")?,
            r(4, "b_scale")?,
            r(5, "b_zero_point")?,
            r(6, "y_scale")?,
            r(7, "y_zero_point")?,
        );
        let (av, bv) = shifted_operands(a, Some(a_z), b, Some(b_z))?;
        let (c, shape) = super::nn::integer_matmul(&av, a.shape(), &bv, b.shape())?;
        let (sa, sb) = (scalar(a_s, "a_scale")?, b_s.to_f64_vec());
        let n = *shape.last().unwrap_or(&1);
        let acc: Vec<f64> = c.iter().map(|&v| v as f64).collect();
        let data = requantize(&acc, |i| sa * sb[(i % n.max(1)) % sb.len()], scalar(y_s, "y_scale")?, y_z)?;
        Ok(vec![Tensor::from_parts(shape, data)])
    }
    op_any!();
}

/// The convolution attributes ConvInteger and QLinearConv share, over any number of spatial axes.
#[derive(Debug)]
pub struct IntegerConv {
    pub qlinear: bool,
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub auto_pad: String,
    pub group: usize,
}

impl IntegerConv {
    fn geometry(&self, x: &[usize], w: &[usize]) -> OpResult<Vec<super::pool::Axis>> {
        let attrs = super::pool::WindowAttrs {
            strides: self.strides.as_deref(),
            dilations: self.dilations.as_deref(),
            pads: self.pads.as_deref(),
            auto_pad: &self.auto_pad,
            ceil_mode: false,
        };
        super::pool::window_geometry(&x[2..], &w[2..], &attrs)
    }
    fn out_shape(&self, x: &[usize], w: &[usize]) -> OpResult<Vec<usize>> {
        let g = self.group.max(1);
        if w.len() != x.len() || x.len() < 3 || x[1] != w[1] * g || !w[0].is_multiple_of(g) {
            return Err(format!("W {w:?} does not fit X {x:?} with group {g}"));
        }
        let geo = self.geometry(x, w)?;
        Ok([x[0], w[0]].into_iter().chain(geo.iter().map(|a| a.out)).collect())
    }
    /// Exact accumulators of the convolution of shifted operands.
    fn accumulate(&self, x: &[i64], xs: &[usize], w: &[i64], ws: &[usize]) -> OpResult<(Vec<f64>, Vec<usize>)> {
        let shape = self.out_shape(xs, ws)?;
        let geo = self.geometry(xs, ws)?;
        let g = self.group.max(1);
        let (cg, mg) = (ws[1], ws[0] / g);
        let (in_sp, k_sp, out_sp) = (&xs[2..], &ws[2..], &shape[2..]);
        let (in_plane, k_plane, out_plane) = (numel(in_sp), numel(k_sp), numel(out_sp));
        let ist = crate::tensor::strides(in_sp);
        let mut acc = vec![0.0f64; numel(&shape)];
        let (mut op, mut kp) = (vec![0usize; out_sp.len()], vec![0usize; k_sp.len()]);
        for o in 0..out_plane {
            super::layout::unravel(o, out_sp, &mut op);
            for k in 0..k_plane {
                super::layout::unravel(k, k_sp, &mut kp);
                let mut off = Some(0usize);
                for (a, ax) in geo.iter().enumerate() {
                    let p = (op[a] * ax.stride + kp[a] * ax.dilation) as i64 - ax.pad_begin as i64;
                    if p < 0 || p >= ax.size as i64 {
                        off = None;
                        break;
                    }
                    off = off.map(|f| f + p as usize * ist[a]);
                }
                let Some(off) = off else { continue };
                for n in 0..xs[0] {
                    for m in 0..ws[0] {
                        let grp = m / mg;
                        let mut sum = 0i64;
                        for c in 0..cg {
                            sum += x[(n * xs[1] + grp * cg + c) * in_plane + off] * w[(m * cg + c) * k_plane + k];
                        }
                        acc[(n * ws[0] + m) * out_plane + o] += sum as f64;
                    }
                }
            }
        }
        Ok((acc, shape))
    }
}

impl Op for IntegerConv {
    fn name(&self) -> &'static str {
        if self.qlinear {
            "QLinearConv"
        } else {
            "ConvInteger"
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, w) = if self.qlinear {
            (required(inputs, 0, "x")?, required(inputs, 3, "w")?)
        } else {
            (required(inputs, 0, "x")?, required(inputs, 1, "w")?)
        };
        let dtype = if self.qlinear { required(inputs, 7, "y_zero_point")?.dtype } else { DType::I32 };
        Ok(vec![Fact::new(dtype, self.out_shape(&x.shape, &w.shape)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let r = |i, w| required(inputs, i, w);
        let (x, xz, w, wz) = if self.qlinear {
            (r(0, "x")?, Some(r(2, "x_zero_point")?), r(3, "w")?, Some(r(5, "w_zero_point")?))
        } else {
            (r(0, "x")?, optional(inputs, 2), r(1, "w")?, optional(inputs, 3))
        };
        let xzv = shifts(xz, 1, "x")?[0];
        let m = w.shape()[0];
        let wzv = shifts(wz, m, "w")?;
        let per_m = numel(&w.shape()[1..]);
        let xv: Vec<i64> = integers(x, "x")?.into_iter().map(|v| v - xzv).collect();
        let wv: Vec<i64> = integers(w, "w")?.into_iter().enumerate().map(|(i, v)| v - wzv[(i / per_m.max(1)) % wzv.len()]).collect();
        let (acc, shape) = self.accumulate(&xv, x.shape(), &wv, w.shape())?;
        if !self.qlinear {
            let ints: Vec<i64> = acc.iter().map(|&a| a as i64).collect();
            return Ok(vec![Tensor::from_parts(shape, Data::from_i64s(DType::I32, &ints))]);
        }
        let (xs, ws) = (scalar(r(1, "x_scale")?, "x_scale")?, r(4, "w_scale")?.to_f64_vec());
        let bias = optional(inputs, 8).map(|b| b.to_f64_vec());
        let plane = numel(&shape[2..]);
        let acc: Vec<f64> = acc.iter().enumerate().map(|(i, &a)| a + bias.as_ref().map_or(0.0, |b| b[(i / plane.max(1)) % m])).collect();
        let data = requantize(
            &acc,
            |i| xs * ws[((i / plane.max(1)) % m) % ws.len()],
            scalar(r(6, "y_scale")?, "y_scale")?,
            r(7, "y_zero_point")?,
        )?;
        Ok(vec![Tensor::from_parts(shape, data)])
    }
    op_any!();
}

/// DynamicQuantizeLinear: uint8 with a scale and zero point chosen from the input's range
/// (which always includes 0).
#[derive(Debug)]
pub struct DynamicQuantizeLinear;

impl Op for DynamicQuantizeLinear {
    fn name(&self) -> &'static str {
        "DynamicQuantizeLinear"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "x")?;
        Ok(vec![Fact::new(DType::U8, x.shape.clone()), Fact::new(DType::F32, vec![]), Fact::new(DType::U8, vec![])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "x")?;
        let v: Vec<f32> = x.to_f64_vec().into_iter().map(|e| e as f32).collect();
        let lo = v.iter().copied().fold(0.0f32, f32::min);
        let hi = v.iter().copied().fold(0.0f32, f32::max);
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
        let q: Vec<u8> = v.iter().map(|&e| ((e / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8).collect();
        Ok(vec![
            Tensor::from_parts(x.shape().to_vec(), Data::U8(q)),
            Tensor::scalar_f32(scale),
            Tensor::from_parts(vec![], Data::U8(vec![zp as u8])),
        ])
    }
    op_any!();
}
