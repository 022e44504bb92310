//! Reductions (the ONNX spec's "reduction" group): ReduceSum, ReduceMean, ReduceMax, ReduceMin,
//! ReduceProd, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, ArgMax, ArgMin.

use crate::error::OpResult;
use crate::op::{norm_axis, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{strides, DType, Data, Tensor};

/// What a `Reduce*` op folds its elements with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl ReduceKind {
    pub fn onnx_name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
            ReduceKind::SumSquare => "ReduceSumSquare",
        }
    }

    /// The opset from which `axes` is an input instead of an attribute.
    pub fn axes_input_since(self) -> u32 {
        if self == ReduceKind::Sum {
            13
        } else {
            18
        }
    }

    /// Folds the values of one output element (in f64; `values` may be empty).
    fn fold(self, values: impl Iterator<Item = f64>) -> f64 {
        let (mut acc, mut n) = (0.0f64, 0usize);
        let mut extreme = match self {
            ReduceKind::Max => f64::NEG_INFINITY,
            ReduceKind::Min => f64::INFINITY,
            _ => 0.0,
        };
        let mut prod = 1.0;
        for v in values {
            n += 1;
            match self {
                ReduceKind::Sum | ReduceKind::Mean | ReduceKind::LogSum => acc += v,
                ReduceKind::Max => extreme = if v.is_nan() || extreme.is_nan() { f64::NAN } else { extreme.max(v) },
                ReduceKind::Min => extreme = if v.is_nan() || extreme.is_nan() { f64::NAN } else { extreme.min(v) },
                ReduceKind::Prod => prod *= v,
                ReduceKind::L1 => acc += v.abs(),
                ReduceKind::L2 | ReduceKind::SumSquare => acc += v * v,
                ReduceKind::LogSumExp => acc += v.exp(),
            }
        }
        match self {
            ReduceKind::Sum | ReduceKind::L1 | ReduceKind::SumSquare => acc,
            ReduceKind::Mean => acc / n as f64,
            ReduceKind::Max | ReduceKind::Min => extreme,
            ReduceKind::Prod => prod,
            ReduceKind::L2 => acc.sqrt(),
            ReduceKind::LogSum | ReduceKind::LogSumExp => acc.ln(),
        }
    }

    /// Exact integer folding where the result is an integer of the same type.
    fn fold_integer(self, mut values: impl Iterator<Item = i64>, unsigned: bool) -> Option<i64> {
        let it = &mut values;
        Some(match self {
            ReduceKind::Sum => it.fold(0i64, i64::wrapping_add),
            ReduceKind::Prod => it.fold(1i64, i64::wrapping_mul),
            ReduceKind::L1 => it.fold(0i64, |a, v| a.wrapping_add(v.wrapping_abs())),
            ReduceKind::SumSquare => it.fold(0i64, |a, v| a.wrapping_add(v.wrapping_mul(v))),
            ReduceKind::Max if unsigned => it.map(|v| v as u64).max()? as i64,
            ReduceKind::Min if unsigned => it.map(|v| v as u64).min()? as i64,
            ReduceKind::Max => it.max()?,
            ReduceKind::Min => it.min()?,
            _ => return None,
        })
    }
}

/// The axes an op reduces: every one unless `axes` names some (or, with
/// `noop_with_empty_axes`, none), and the output shape.
fn plan(shape: &[usize], axes: Option<Vec<i64>>, keepdims: bool, noop_with_empty_axes: bool) -> OpResult<(Vec<bool>, Vec<usize>)> {
    let axes = axes.unwrap_or_default();
    let mut reduced = vec![axes.is_empty() && !noop_with_empty_axes; shape.len()];
    for a in axes {
        reduced[norm_axis(a, shape.len())?] = true;
    }
    let out = shape
        .iter()
        .zip(&reduced)
        .filter_map(|(&d, &r)| match (r, keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok((reduced, out))
}

/// For each input element (row-major), the index of the output element it folds into; and the
/// number of output elements.
pub(crate) fn groups(shape: &[usize], reduced: &[bool]) -> (Vec<usize>, usize) {
    let kept: Vec<usize> = shape.iter().zip(reduced).map(|(&d, &r)| if r { 1 } else { d }).collect();
    let ost = strides(&kept);
    let n_out: usize = kept.iter().product();
    let n_in: usize = shape.iter().product();
    let mut index = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(n_in);
    let mut o = 0usize;
    for _ in 0..n_in {
        out.push(o);
        for a in (0..shape.len()).rev() {
            index[a] += 1;
            if !reduced[a] {
                o += ost[a];
            }
            if index[a] < shape[a] {
                break;
            }
            if !reduced[a] {
                o -= ost[a] * shape[a];
            }
            index[a] = 0;
        }
    }
    (out, n_out)
}

/// `Reduce*` over `axes` (attribute before [`ReduceKind::axes_input_since`], input from it).
#[derive(Debug)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
    pub noop_with_empty_axes: bool,
}

impl Reduce {
    fn axes<T>(&self, inputs: &[Option<&T>], ints: impl Fn(&T) -> Option<Vec<i64>>) -> OpResult<Option<Vec<i64>>> {
        match optional(inputs, 1) {
            Some(t) => ints(t).map(Some).ok_or_else(|| "axes must be a constant integer tensor".to_string()),
            None => Ok(self.axes.clone()),
        }
    }
}

impl Op for Reduce {
    fn name(&self) -> &'static str {
        self.kind.onnx_name()
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        if x.dtype == DType::Bool && !matches!(self.kind, ReduceKind::Max | ReduceKind::Min) {
            return Err(format!("{} is not defined for bool", self.name()));
        }
        let axes = self.axes(inputs, |f| f.const_ints())?;
        Ok(vec![Fact::new(x.dtype, plan(&x.shape, axes, self.keepdims, self.noop_with_empty_axes)?.1)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let axes = self.axes(inputs, |t| t.to_i64_vec())?;
        let (reduced, out_shape) = plan(x.shape(), axes, self.keepdims, self.noop_with_empty_axes)?;
        let (group, n_out) = groups(x.shape(), &reduced);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_out];
        for (i, &o) in group.iter().enumerate() {
            members[o].push(i);
        }
        let dtype = x.dtype();
        let unsigned = dtype.is_unsigned_integer();
        if !dtype.is_float() {
            let v = x.to_i64_vec().expect("integer");
            let exact: Option<Vec<i64>> = members.iter().map(|m| self.kind.fold_integer(m.iter().map(|&i| v[i]), unsigned)).collect();
            if let Some(exact) = exact {
                return Ok(vec![Tensor::from_parts(out_shape, Data::from_i64s(dtype, &exact))]);
            }
        }
        let v = x.to_f64_vec();
        let mut out: Vec<f64> = members.iter().map(|m| self.kind.fold(m.iter().map(|&i| v[i]))).collect();
        if dtype == DType::Bool {
            out.iter_mut().for_each(|e| *e = if *e > 0.5 { 1.0 } else { 0.0 });
        }
        Ok(vec![Tensor::from_parts(out_shape, super::elementwise::from_f64(dtype, out))])
    }
    op_any!();
}

/// ArgMax or ArgMin along `axis`: int64 indices of the first (or, with `select_last_index`,
/// the last) extreme element.
#[derive(Debug)]
pub struct ArgExtreme {
    pub max: bool,
    pub axis: i64,
    pub keepdims: bool,
    pub select_last_index: bool,
}

impl ArgExtreme {
    fn out_shape(&self, s: &[usize]) -> OpResult<(usize, Vec<usize>)> {
        let axis = norm_axis(self.axis, s.len())?;
        if s.get(axis) == Some(&0) {
            return Err("cannot take the index of an extreme along an empty axis".into());
        }
        Ok((axis, plan(s, Some(vec![axis as i64]), self.keepdims, false)?.1))
    }
}

impl Op for ArgExtreme {
    fn name(&self) -> &'static str {
        if self.max {
            "ArgMax"
        } else {
            "ArgMin"
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        Ok(vec![Fact::new(DType::I64, self.out_shape(&x.shape)?.1)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let s = x.shape();
        let (axis, out_shape) = self.out_shape(s)?;
        let (n, inner) = (s[axis], s[axis + 1..].iter().product::<usize>());
        let outer: usize = s[..axis].iter().product();
        let v = x.to_f64_vec();
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for j in 0..inner {
                let mut best = 0usize;
                for i in 1..n {
                    let (cand, cur) = (v[(o * n + i) * inner + j], v[(o * n + best) * inner + j]);
                    let better = if self.max { cand > cur } else { cand < cur };
                    if better || (self.select_last_index && cand == cur) {
                        best = i;
                    }
                }
                out.push(best as i64);
            }
        }
        Ok(vec![Tensor::i64(out_shape, out)])
    }
    op_any!();
}
