//! Ops of the ONNX spec's "generator" group besides Constant and ConstantOfShape: Range, EyeLike.

use crate::error::OpResult;
use crate::op::{required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{DType, Data, Tensor};

/// `start, start + delta, …` up to (not including) `limit`; the length depends on the values,
/// so the operands must be constants (or graph inputs, planned by value).
#[derive(Debug)]
pub struct Range;

fn range_len(start: f64, limit: f64, delta: f64) -> OpResult<usize> {
    if delta == 0.0 || !(start.is_finite() && limit.is_finite() && delta.is_finite()) {
        return Err(format!("Range({start}, {limit}, {delta}) has no finite length"));
    }
    let n = ((limit - start) / delta).ceil().max(0.0);
    if n > 1e10 {
        return Err(format!("Range({start}, {limit}, {delta}) has {n} elements"));
    }
    Ok(n as usize)
}

fn scalars(inputs: &[Option<&Tensor>]) -> OpResult<[f64; 3]> {
    let get = |i, what| required(inputs, i, what)?.scalar_value().ok_or_else(|| format!("{what} must be a scalar"));
    Ok([get(0, "start")?, get(1, "limit")?, get(2, "delta")?])
}

impl Op for Range {
    fn name(&self) -> &'static str {
        "Range"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0, 1, 2]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let start = required(inputs, 0, "start")?;
        let get = |i, what| required(inputs, i, what)?.const_scalar().ok_or_else(|| format!("{what} must be a constant scalar (it is computed at run time)"));
        let n = range_len(get(0, "start")?, get(1, "limit")?, get(2, "delta")?)?;
        Ok(vec![Fact::new(start.dtype, vec![n])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let dtype = required(inputs, 0, "start")?.dtype();
        let [start, limit, delta] = scalars(inputs)?;
        let n = range_len(start, limit, delta)?;
        crate::limits::check_tensor(dtype, &[n]).map_err(|m| format!("output {m}"))?;
        let data = if dtype.is_float() {
            Data::from_fn(dtype, n, |i| start + i as f64 * delta)
        } else {
            let (s, d) = (start as i64, delta as i64);
            Data::from_i64s(dtype, &(0..n as i64).map(|i| s.wrapping_add(i.wrapping_mul(d))).collect::<Vec<_>>())
        };
        Ok(vec![Tensor::from_parts(vec![n], data)])
    }
    op_any!();
}

/// A 2-D tensor shaped like the input with ones on diagonal `k`, of `dtype` (default: the
/// input's).
#[derive(Debug)]
pub struct EyeLike {
    pub dtype: Option<DType>,
    pub k: i64,
}

impl Op for EyeLike {
    fn name(&self) -> &'static str {
        "EyeLike"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        if x.shape.len() != 2 {
            return Err(format!("EyeLike takes a 2-D input, got {:?}", x.shape));
        }
        Ok(vec![Fact::new(self.dtype.unwrap_or(x.dtype), x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let [r, c] = x.shape() else { return Err(format!("EyeLike takes a 2-D input, got {:?}", x.shape())) };
        let (r, c, k) = (*r, *c, self.k);
        let data = Data::from_fn(self.dtype.unwrap_or(x.dtype()), r * c, |i| f64::from(u8::from((i % c) as i64 - (i / c) as i64 == k)));
        Ok(vec![Tensor::from_parts(vec![r, c], data)])
    }
    op_any!();
}
