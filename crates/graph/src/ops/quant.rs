//! QuantizeLinear and DequantizeLinear, per tensor and per axis:
//! `q = saturate(round_half_even(x / scale) + zero_point)`, `x = (q − zero_point) · scale`.

use crate::error::OpResult;
use crate::op::{norm_axis, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use octet_kernels::i8::elementwise::{self as ew, Q8};
use crate::tensor::{numel, DType, Data, Tensor};

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
        Some(z) => z.to_i64_vec().ok_or_else(|| format!("zero point must be an integer tensor, got {}", z.dtype())),
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
            let p = Q8 { scale: s[0] as f32, zero_point: z[0] as i32, signed: dtype == DType::I8 };
            let mut out = vec![0u8; xs.len()];
            ew::quantize(xs, p, &mut out);
            let data = if p.signed { Data::I8(out.into_iter().map(|b| b as i8).collect()) } else { Data::U8(out) };
            return Ok(vec![Tensor::from_parts(x.shape().to_vec(), data)]);
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
                let p = Q8 { scale: s[0], zero_point: z[0] as i32, signed: x.dtype() == DType::I8 };
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
