//! Ops that move or describe data without arithmetic: Reshape, Flatten, Squeeze, Unsqueeze,
//! Transpose, Slice, Split, Concat, Gather, Expand, Shape, ConstantOfShape, Constant, Identity.

use std::sync::Arc;

use super::broadcast::broadcast_shapes;
use super::view::View;
use crate::error::OpResult;
use crate::op::{norm_axis, norm_index, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, strides, DType, Data, Tensor};

/// Integer contents of a constant operand, or an error saying it must be constant.
pub(crate) fn const_ints(f: &Fact, what: &str) -> OpResult<Vec<i64>> {
    f.const_ints().ok_or_else(|| format!("the {what} operand must be a constant integer tensor (it is computed at run time)"))
}

pub(crate) fn tensor_ints(t: &Tensor, what: &str) -> OpResult<Vec<i64>> {
    t.to_i64_vec().ok_or_else(|| format!("the {what} operand must be an integer tensor, got {}", t.dtype()))
}

/// An op whose output shape follows from input shapes and constant operands alone, and whose
/// evaluation is a function of that shape computation.
macro_rules! same_dtype_infer {
    () => {
        fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
            let x = required(inputs, 0, "data")?;
            Ok(vec![Fact::new(x.dtype, self.out_shape(inputs)?)])
        }
    };
}

// ---------------------------------------------------------------- Reshape, Flatten, (Un)Squeeze

/// Reinterprets the data under a new shape (`0` copies the input dim unless `allowzero`, `-1` is
/// inferred).
#[derive(Debug)]
pub struct Reshape {
    pub allow_zero: bool,
}

/// Slice's operands: starts, ends, axes and steps (the last two when given).
type SliceOperands = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);

impl Reshape {
    fn resolve(&self, input: &[usize], spec: &[i64]) -> OpResult<Vec<usize>> {
        let mut out = Vec::with_capacity(spec.len());
        let mut infer_at = None;
        for (i, &d) in spec.iter().enumerate() {
            match d {
                -1 if infer_at.is_none() => {
                    infer_at = Some(i);
                    out.push(1);
                }
                0 if !self.allow_zero => {
                    out.push(*input.get(i).ok_or_else(|| format!("shape {spec:?}: dim {i} is 0 but the input {input:?} has no such dim"))?)
                }
                d if d >= 0 => out.push(d as usize),
                _ => return Err(format!("invalid target shape {spec:?}")),
            }
        }
        let total = numel(input);
        let cannot = || format!("cannot reshape {input:?} ({total} elements) to {spec:?}");
        if let Some(i) = infer_at {
            let rest =
                out.iter().enumerate().filter(|(j, _)| *j != i).try_fold(1usize, |p, (_, &d)| p.checked_mul(d)).ok_or_else(cannot)?;
            if rest == 0 || !total.is_multiple_of(rest) {
                return Err(cannot());
            }
            out[i] = total / rest;
        }
        if crate::tensor::checked_numel(&out) != Some(total) {
            return Err(format!("cannot reshape {input:?} ({total} elements) to {spec:?}"));
        }
        Ok(out)
    }
}

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "Reshape"
    }
    fn is_view(&self) -> bool {
        true
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        let spec = const_ints(required(inputs, 1, "shape")?, "shape")?;
        Ok(vec![Fact::new(x.dtype, self.resolve(&x.shape, &spec)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let spec = tensor_ints(required(inputs, 1, "shape")?, "shape")?;
        Ok(vec![x.clone().reshaped(self.resolve(x.shape(), &spec)?)])
    }
    op_any!();
}

/// Flattens to 2-D around `axis`.
#[derive(Debug)]
pub struct Flatten {
    pub axis: i64,
}

impl Flatten {
    fn out_shape(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<usize>> {
        self.shape_of(&required(inputs, 0, "input")?.shape)
    }
    fn shape_of(&self, s: &[usize]) -> OpResult<Vec<usize>> {
        let axis = if self.axis == s.len() as i64 { s.len() } else { norm_axis(self.axis, s.len())? };
        Ok(vec![numel(&s[..axis]), numel(&s[axis..])])
    }
}

impl Op for Flatten {
    fn name(&self) -> &'static str {
        "Flatten"
    }
    fn is_view(&self) -> bool {
        true
    }
    same_dtype_infer!();
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![x.clone().reshaped(self.shape_of(x.shape())?)])
    }
    op_any!();
}

/// Removes size-1 axes (all of them when no axes are given). Axes come from the attribute
/// (opset < 13) or the second input.
#[derive(Debug)]
pub struct Squeeze {
    pub axes: Option<Vec<i64>>,
}

impl Squeeze {
    fn shape_of(&self, s: &[usize], axes: Option<Vec<i64>>) -> OpResult<Vec<usize>> {
        match axes {
            None => Ok(s.iter().copied().filter(|&d| d != 1).collect()),
            Some(axes) => {
                let axes = axes.iter().map(|&a| norm_axis(a, s.len())).collect::<OpResult<Vec<_>>>()?;
                if let Some(&a) = axes.iter().find(|&&a| s[a] != 1) {
                    return Err(format!("cannot squeeze axis {a} of size {} in {s:?}", s[a]));
                }
                Ok(s.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect())
            }
        }
    }
    fn out_shape(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<usize>> {
        let axes = match optional(inputs, 1) {
            Some(f) => Some(const_ints(f, "axes")?),
            None => self.axes.clone(),
        };
        self.shape_of(&required(inputs, 0, "data")?.shape, axes)
    }
}

impl Op for Squeeze {
    fn name(&self) -> &'static str {
        "Squeeze"
    }
    fn is_view(&self) -> bool {
        true
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    same_dtype_infer!();
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let axes = match optional(inputs, 1) {
            Some(t) => Some(tensor_ints(t, "axes")?),
            None => self.axes.clone(),
        };
        Ok(vec![x.clone().reshaped(self.shape_of(x.shape(), axes)?)])
    }
    op_any!();
}

/// Inserts size-1 axes at the given output positions.
#[derive(Debug)]
pub struct Unsqueeze {
    pub axes: Option<Vec<i64>>,
}

impl Unsqueeze {
    fn shape_of(s: &[usize], axes: &[i64]) -> OpResult<Vec<usize>> {
        let rank = s.len() + axes.len();
        let mut axes = axes.iter().map(|&a| norm_axis(a, rank)).collect::<OpResult<Vec<_>>>()?;
        axes.sort_unstable();
        if axes.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("repeated axis in {axes:?}"));
        }
        let mut src = s.iter();
        Ok((0..rank).map(|i| if axes.contains(&i) { 1 } else { *src.next().unwrap() }).collect())
    }
    fn axes_from(&self, second: Option<OpResult<Vec<i64>>>) -> OpResult<Vec<i64>> {
        match second {
            Some(a) => a,
            None => self.axes.clone().ok_or_else(|| "missing axes".to_string()),
        }
    }
    fn out_shape(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<usize>> {
        let axes = self.axes_from(optional(inputs, 1).map(|f| const_ints(f, "axes")))?;
        Self::shape_of(&required(inputs, 0, "data")?.shape, &axes)
    }
}

impl Op for Unsqueeze {
    fn name(&self) -> &'static str {
        "Unsqueeze"
    }
    fn is_view(&self) -> bool {
        true
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    same_dtype_infer!();
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let axes = self.axes_from(optional(inputs, 1).map(|t| tensor_ints(t, "axes")))?;
        Ok(vec![x.clone().reshaped(Self::shape_of(x.shape(), &axes)?)])
    }
    op_any!();
}

// ---------------------------------------------------------------- Transpose, Slice, Split, Expand

/// Permutes axes (`perm` defaults to reversing them).
#[derive(Debug)]
pub struct Transpose {
    pub perm: Option<Vec<i64>>,
}

impl Transpose {
    /// The permutation for a given rank, validated.
    pub fn perm_for(&self, rank: usize) -> OpResult<Vec<usize>> {
        let perm: Vec<usize> = match &self.perm {
            Some(p) => p.iter().map(|&a| norm_axis(a, rank)).collect::<OpResult<_>>()?,
            None => (0..rank).rev().collect(),
        };
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&a| std::mem::replace(&mut seen[a], true)) {
            return Err(format!("perm {:?} is not a permutation of {rank} axes", self.perm));
        }
        Ok(perm)
    }
    /// Whether this Transpose of a rank-`rank` tensor swaps axes `axis` and `axis + 1` and keeps
    /// every other.
    pub fn swaps_neighbours(&self, rank: usize, axis: usize) -> bool {
        let Ok(perm) = self.perm_for(rank) else { return false };
        let swapped = (0..rank).map(|x| match x {
            _ if x == axis => axis + 1,
            _ if x == axis + 1 => axis,
            _ => x,
        });
        perm.iter().copied().eq(swapped)
    }
    fn view(&self, s: &[usize]) -> OpResult<View> {
        let perm = self.perm_for(s.len())?;
        let st = strides(s);
        Ok(View { base: 0, shape: perm.iter().map(|&a| s[a]).collect(), strides: perm.iter().map(|&a| st[a] as isize).collect() })
    }
    fn out_shape(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<usize>> {
        Ok(self.view(&required(inputs, 0, "data")?.shape)?.shape)
    }
}

impl Op for Transpose {
    fn name(&self) -> &'static str {
        "Transpose"
    }
    same_dtype_infer!();
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        Ok(vec![self.view(x.shape())?.copy_on(x, ctx.threads)])
    }
    op_any!();
}

/// One axis of a slice after ONNX clamping rules: `count` elements from `start` by `step`.
fn clamp_slice(dim: usize, start: i64, end: i64, step: i64) -> (i64, usize) {
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v + d } else { v };
    let (s, e) =
        if step > 0 { (fix(start).clamp(0, d), fix(end).clamp(0, d)) } else { (fix(start).clamp(0, d - 1), fix(end).clamp(-1, d - 1)) };
    let count = if step > 0 { (e - s + step - 1) / step } else { (s - e + (-step) - 1) / (-step) };
    (s, count.max(0) as usize)
}

/// Extracts a strided slice (starts, ends, axes and steps are inputs, as from opset 10).
#[derive(Debug)]
pub struct Slice {
    /// Before opset 10, starts, ends and axes were attributes.
    pub attrs: Option<SliceAttrs>,
}

/// Slice's starts, ends and optional axes as attributes (opsets 1 to 9).
pub type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

impl Slice {
    fn view(&self, s: &[usize], starts: Vec<i64>, ends: Vec<i64>, axes: Option<Vec<i64>>, steps: Option<Vec<i64>>) -> OpResult<View> {
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(format!("starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"));
        }
        let mut view = View::of(s);
        for i in 0..starts.len() {
            let a = norm_axis(axes[i], s.len())?;
            if steps[i] == 0 {
                return Err("slice step 0".into());
            }
            let (start, count) = clamp_slice(s[a], starts[i], ends[i], steps[i]);
            view.base += start as isize * view.strides[a];
            view.strides[a] *= steps[i] as isize;
            view.shape[a] = count;
        }
        Ok(view)
    }
    fn operands<T>(&self, inputs: &[Option<&T>], ints: impl Fn(&T, &str) -> OpResult<Vec<i64>>) -> OpResult<SliceOperands> {
        if let Some((s, e, a)) = &self.attrs {
            return Ok((s.clone(), e.clone(), a.clone(), None));
        }
        Ok((
            ints(required(inputs, 1, "starts")?, "starts")?,
            ints(required(inputs, 2, "ends")?, "ends")?,
            optional(inputs, 3).map(|t| ints(t, "axes")).transpose()?,
            optional(inputs, 4).map(|t| ints(t, "steps")).transpose()?,
        ))
    }
    fn out_shape(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<usize>> {
        let (s, e, a, st) = self.operands(inputs, const_ints)?;
        Ok(self.view(&required(inputs, 0, "data")?.shape, s, e, a, st)?.shape)
    }
}

impl Op for Slice {
    fn name(&self) -> &'static str {
        "Slice"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1, 2, 3, 4]
    }
    same_dtype_infer!();
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let (s, e, a, st) = self.operands(inputs, tensor_ints)?;
        Ok(vec![self.view(x.shape(), s, e, a, st)?.copy_on(x, ctx.threads)])
    }
    op_any!();
}

/// Splits along `axis` into `outputs` parts: sizes from the `split` input/attribute, or equal
/// parts (the last one smaller when uneven, as opset 18 specifies).
#[derive(Debug)]
pub struct Split {
    pub axis: i64,
    pub split: Option<Vec<i64>>,
    pub outputs: usize,
}

impl Split {
    fn sizes(&self, s: &[usize], split: Option<Vec<i64>>) -> OpResult<(usize, Vec<usize>)> {
        let axis = norm_axis(self.axis, s.len())?;
        let dim = s[axis];
        let sizes: Vec<usize> = match split.or_else(|| self.split.clone()) {
            Some(v) => v.iter().map(|&x| x.max(0) as usize).collect(),
            None => {
                let part = dim.div_ceil(self.outputs.max(1));
                (0..self.outputs).map(|i| part.min(dim.saturating_sub(i * part))).collect()
            }
        };
        if sizes.len() != self.outputs || sizes.iter().try_fold(0usize, |t, &n| t.checked_add(n)) != Some(dim) {
            return Err(format!("split sizes {sizes:?} do not divide axis {axis} of {s:?} into {} outputs", self.outputs));
        }
        Ok((axis, sizes))
    }
    fn views(&self, s: &[usize], split: Option<Vec<i64>>) -> OpResult<Vec<View>> {
        let (axis, sizes) = self.sizes(s, split)?;
        let mut start = 0;
        Ok(sizes
            .iter()
            .map(|&n| {
                let mut v = View::of(s);
                v.base = (start * v.strides[axis] as usize) as isize;
                v.shape[axis] = n;
                start += n;
                v
            })
            .collect())
    }
}

impl Op for Split {
    fn name(&self) -> &'static str {
        "Split"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        let split = optional(inputs, 1).map(|f| const_ints(f, "split")).transpose()?;
        Ok(self.views(&x.shape, split)?.into_iter().map(|v| Fact::new(x.dtype, v.shape)).collect())
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let split = optional(inputs, 1).map(|t| tensor_ints(t, "split")).transpose()?;
        Ok(self.views(x.shape(), split)?.iter().map(|v| v.copy_on(x, ctx.threads)).collect())
    }
    op_any!();
}

/// Broadcasts the input to a shape (numpy rules, both ways).
#[derive(Debug)]
pub struct Expand;

impl Expand {
    fn shape_of(s: &[usize], spec: &[i64]) -> OpResult<Vec<usize>> {
        if spec.iter().any(|&d| d < 0) {
            return Err(format!("invalid expand shape {spec:?}"));
        }
        let target: Vec<usize> = spec.iter().map(|&d| d as usize).collect();
        broadcast_shapes(&[s, &target])
    }
    fn out_shape(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<usize>> {
        Self::shape_of(&required(inputs, 0, "input")?.shape, &const_ints(required(inputs, 1, "shape")?, "shape")?)
    }
}

impl Op for Expand {
    fn name(&self) -> &'static str {
        "Expand"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    same_dtype_infer!();
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let out = Self::shape_of(x.shape(), &tensor_ints(required(inputs, 1, "shape")?, "shape")?)?;
        let st = super::broadcast::broadcast_strides(x.shape(), &out);
        Ok(vec![View { base: 0, shape: out, strides: st.into_iter().map(|s| s as isize).collect() }.copy_on(x, ctx.threads)])
    }
    op_any!();
}

// ---------------------------------------------------------------- Concat, Gather

/// Joins inputs along `axis`.
#[derive(Debug)]
pub struct Concat {
    pub axis: i64,
}

impl Concat {
    fn shape_of(&self, shapes: &[&[usize]]) -> OpResult<(usize, Vec<usize>)> {
        let first = shapes.first().ok_or("Concat needs at least one input")?;
        let axis = norm_axis(self.axis, first.len())?;
        let mut out = first.to_vec();
        out[axis] = 0;
        for s in shapes {
            if s.len() != first.len() || s.iter().zip(first.iter()).enumerate().any(|(i, (a, b))| i != axis && a != b) {
                return Err(format!("inputs {shapes:?} differ outside axis {axis}"));
            }
            out[axis] += s[axis];
        }
        Ok((axis, out))
    }
}

impl Op for Concat {
    fn name(&self) -> &'static str {
        "Concat"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let facts: Vec<&Fact> = inputs.iter().flatten().copied().collect();
        let shapes: Vec<&[usize]> = facts.iter().map(|f| f.shape.as_slice()).collect();
        let dtype = facts.first().ok_or("Concat needs at least one input")?.dtype;
        if let Some(f) = facts.iter().find(|f| f.dtype != dtype) {
            return Err(format!("inputs mix {dtype} and {}", f.dtype));
        }
        Ok(vec![Fact::new(dtype, self.shape_of(&shapes)?.1)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
        let (axis, out) = self.shape_of(&shapes)?;
        let outer = numel(&out[..axis]);
        let mut data = Data::with_capacity(ts[0].dtype(), numel(&out));
        for o in 0..outer {
            for t in &ts {
                let inner = numel(&t.shape()[axis..]);
                if !data.extend_from(t.data(), o * inner..(o + 1) * inner) {
                    return Err("inputs have different element types".into());
                }
            }
        }
        Ok(vec![Tensor::from_parts(out, data)])
    }
    op_any!();
}

/// Takes entries along `axis` at the given (possibly negative) indices.
#[derive(Debug)]
pub struct Gather {
    pub axis: i64,
}

impl Gather {
    fn out_shape(&self, data: &[usize], idx: &[usize]) -> OpResult<(usize, Vec<usize>)> {
        let axis = norm_axis(self.axis, data.len())?;
        let mut out = data[..axis].to_vec();
        out.extend_from_slice(idx);
        out.extend_from_slice(&data[axis + 1..]);
        Ok((axis, out))
    }
}

impl Op for Gather {
    fn name(&self) -> &'static str {
        "Gather"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, i) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?);
        Ok(vec![Fact::new(x.dtype, self.out_shape(&x.shape, &i.shape)?.1)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, i) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?);
        let (axis, out) = self.out_shape(x.shape(), i.shape())?;
        let dim = x.shape()[axis] as i64;
        let idx = tensor_ints(i, "indices")?;
        let idx =
            idx.iter().map(|&j| norm_index(j, dim as usize).map_err(|e| format!("{e} (axis {axis})"))).collect::<OpResult<Vec<_>>>()?;
        let outer = numel(&x.shape()[..axis]);
        let inner = numel(&x.shape()[axis + 1..]);
        let positions = (0..outer).flat_map(|o| idx.iter().flat_map(move |&k| (0..inner).map(move |e| (o * dim as usize + k) * inner + e)));
        Ok(vec![Tensor::from_parts(out, x.data().gather(positions))])
    }
    op_any!();
}

// ---------------------------------------------------------------- Shape, ConstantOfShape, Constant, Identity

/// The input's shape as int64, optionally the `[start, end)` part of it (opset 15).
#[derive(Debug)]
pub struct Shape {
    pub start: i64,
    pub end: Option<i64>,
}

impl Shape {
    fn value(&self, s: &[usize]) -> Tensor {
        let r = s.len() as i64;
        let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (a, b) = (fix(self.start), fix(self.end.unwrap_or(r)));
        let dims: Vec<i64> = s[a..b.max(a)].iter().map(|&d| d as i64).collect();
        Tensor::i64(vec![dims.len()], dims)
    }
}

impl Op for Shape {
    fn name(&self) -> &'static str {
        "Shape"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        Ok(vec![Fact::constant(Arc::new(self.value(&required(inputs, 0, "data")?.shape)))])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        Ok(vec![self.value(required(inputs, 0, "data")?.shape())])
    }
    op_any!();
}

/// A tensor of the given shape filled with one value (float32 0 by default).
#[derive(Debug)]
pub struct ConstantOfShape {
    pub value: Tensor,
}

impl ConstantOfShape {
    fn make(&self, spec: &[i64]) -> OpResult<Tensor> {
        if spec.iter().any(|&d| d < 0) {
            return Err(format!("negative dim in shape {spec:?}"));
        }
        let shape: Vec<usize> = spec.iter().map(|&d| d as usize).collect();
        crate::limits::check_tensor(self.value.dtype(), &shape).map_err(|m| format!("output {m}"))?;
        let n = numel(&shape);
        Ok(Tensor::from_parts(shape, self.value.data().gather(std::iter::repeat_n(0, n))))
    }
}

impl Op for ConstantOfShape {
    fn name(&self) -> &'static str {
        "ConstantOfShape"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let spec = const_ints(required(inputs, 0, "input")?, "shape")?;
        Ok(vec![Fact::constant(Arc::new(self.make(&spec)?))])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        Ok(vec![self.make(&tensor_ints(required(inputs, 0, "input")?, "shape")?)?])
    }
    op_any!();
}

/// A constant from the node's attributes.
#[derive(Debug)]
pub struct Constant {
    pub value: Arc<Tensor>,
}

impl Op for Constant {
    fn name(&self) -> &'static str {
        "Constant"
    }
    fn infer(&self, _: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        Ok(vec![Fact::constant(self.value.clone())])
    }
    fn eval(&self, _: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        Ok(vec![(*self.value).clone()])
    }
    op_any!();
}

/// Passes its input through (also what Dropout is in inference).
#[derive(Debug)]
pub struct Identity;

impl Op for Identity {
    fn name(&self) -> &'static str {
        "Identity"
    }
    fn is_view(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        Ok(vec![required(inputs, 0, "input")?.clone()])
    }
    op_any!();
}

/// The ONNX default for ConstantOfShape's value.
pub fn zero_f32() -> Tensor {
    Tensor::zeros(DType::F32, vec![1])
}
