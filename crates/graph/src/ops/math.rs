//! Non-elementwise ops of the ONNX spec's "math" group: CumSum, CumProd, TopK.

use crate::error::OpResult;
use crate::op::{norm_axis, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, Data, DType, Tensor};

/// Running sum or product along an axis (`exclusive`: shifted by one; `reverse`: from the end).
#[derive(Debug)]
pub struct Cumulative {
    pub product: bool,
    pub exclusive: bool,
    pub reverse: bool,
}

impl Op for Cumulative {
    fn name(&self) -> &'static str {
        if self.product {
            "CumProd"
        } else {
            "CumSum"
        }
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "x")?;
        if x.dtype == DType::Bool {
            return Err(format!("{} is not defined for bool", self.name()));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "x")?;
        let axis = required(inputs, 1, "axis")?.to_i64_vec().and_then(|v| v.first().copied()).ok_or("axis must be an integer scalar")?;
        let s = x.shape();
        let axis = norm_axis(axis, s.len())?;
        let (n, inner) = (s[axis], numel(&s[axis + 1..]));
        let outer = numel(&s[..axis]);
        let identity = if self.product { 1.0 } else { 0.0 };
        let combine = |a: f64, b: f64| if self.product { a * b } else { a + b };
        let v = x.to_f64_vec();
        let mut out = vec![0.0; v.len()];
        for o in 0..outer {
            for j in 0..inner {
                let mut acc = identity;
                for step in 0..n {
                    let i = if self.reverse { n - 1 - step } else { step };
                    let at = (o * n + i) * inner + j;
                    if self.exclusive {
                        out[at] = acc;
                        acc = combine(acc, v[at]);
                    } else {
                        acc = combine(acc, v[at]);
                        out[at] = acc;
                    }
                }
            }
        }
        Ok(vec![Tensor::from_parts(s.to_vec(), super::elementwise::from_f64(x.dtype(), out))])
    }
    op_any!();
}

/// The `k` largest (or smallest) elements along an axis, sorted, and their int64 indices; ties
/// keep the lower index first.
#[derive(Debug)]
pub struct TopK {
    pub axis: i64,
    pub largest: bool,
    /// Before opset 10, `k` was an attribute.
    pub k_attr: Option<i64>,
}

impl TopK {
    fn shape(&self, s: &[usize], k: i64) -> OpResult<(usize, usize, Vec<usize>)> {
        let axis = norm_axis(self.axis, s.len())?;
        if k < 0 || k as usize > s[axis] {
            return Err(format!("k = {k} is out of range for an axis of {}", s[axis]));
        }
        let mut out = s.to_vec();
        out[axis] = k as usize;
        Ok((axis, k as usize, out))
    }
}

impl Op for TopK {
    fn name(&self) -> &'static str {
        "TopK"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        let k = match self.k_attr {
            Some(k) => k,
            None => required(inputs, 1, "K")?.const_ints().and_then(|v| v.first().copied()).ok_or("K must be a constant")?,
        };
        let (_, _, shape) = self.shape(&x.shape, k)?;
        Ok(vec![Fact::new(x.dtype, shape.clone()), Fact::new(DType::I64, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let k = match self.k_attr {
            Some(k) => k,
            None => required(inputs, 1, "K")?.to_i64_vec().and_then(|v| v.first().copied()).ok_or("K must be an integer")?,
        };
        let s = x.shape();
        let (axis, k, shape) = self.shape(s, k)?;
        let (n, inner, outer) = (s[axis], numel(&s[axis + 1..]), numel(&s[..axis]));
        let v = x.to_f64_vec();
        let mut picks = Vec::with_capacity(outer * k * inner);
        let mut idx_out = vec![0i64; outer * k * inner];
        let mut order: Vec<usize> = Vec::with_capacity(n);
        for o in 0..outer {
            for j in 0..inner {
                order.clear();
                order.extend(0..n);
                let at = |i: usize| v[(o * n + i) * inner + j];
                order.sort_by(|&a, &b| {
                    let c = at(a).partial_cmp(&at(b)).unwrap_or(std::cmp::Ordering::Equal);
                    let c = if self.largest { c.reverse() } else { c };
                    c.then(a.cmp(&b))
                });
                for (r, &i) in order[..k].iter().enumerate() {
                    idx_out[(o * k + r) * inner + j] = i as i64;
                }
            }
        }
        for o in 0..outer {
            for r in 0..k {
                for j in 0..inner {
                    let i = idx_out[(o * k + r) * inner + j] as usize;
                    picks.push((o * n + i) * inner + j);
                }
            }
        }
        let gathered: Data = x.data().gather(picks.into_iter());
        Ok(vec![Tensor::from_parts(shape.clone(), gathered), Tensor::i64(shape, idx_out)])
    }
    op_any!();
}
