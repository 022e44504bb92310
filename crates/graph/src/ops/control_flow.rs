//! Control flow with subgraphs (ONNX "controlflow" group): If, Loop, Scan.
//!
//! A subgraph is a [`Body`]: its facts are inferred by the main specialisation (folding what is
//! constant, size limits naming the body's node). In a session a body runs as a plan of its own,
//! through the runtime's pass list ([`crate::op::Subgraphs`]); constant folding runs its nodes in
//! order ([`Body::run`]). Values of enclosing graphs that a body reads
//! are *captured*: the importer appends them to the node's inputs, after the ONNX inputs, so the
//! outer plan sees every value the node depends on.

use std::sync::Arc;

use crate::error::OpResult;

use crate::op::{EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{DType, Data, Tensor};
use crate::typed::TypedGraph;

pub use crate::graph::Body;

impl Body {
    /// Runs the body on its formal inputs and captured values, node by node (constant folding
    /// does; sessions run bodies as plans through [`EvalCtx::run_body`]).
    pub fn run(&self, formal: Vec<Tensor>, captured: &[&Tensor]) -> OpResult<Vec<Tensor>> {
        if formal.len() != self.formal.len() {
            return Err(format!("the body takes {} inputs, got {}", self.formal.len(), formal.len()));
        }
        let mut values: Vec<Option<Arc<Tensor>>> = vec![None; self.graph.names.len()];
        for (&v, t) in self.graph.constants.iter() {
            values[v] = Some(t.clone());
        }
        for (&v, t) in self.formal.iter().zip(formal) {
            values[v] = Some(Arc::new(t));
        }
        for (&v, &t) in self.captured.iter().zip(captured) {
            values[v] = Some(Arc::new(t.clone()));
        }
        for node in &self.graph.nodes {
            let inputs: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|v| {
                    v.map(|v| {
                        values[v]
                            .as_deref()
                            .ok_or_else(|| format!("node '{}' reads '{}', which nothing computed", node.name, self.graph.names[v]))
                    })
                    .transpose()
                })
                .collect::<OpResult<_>>()?;
            let outputs =
                node.op.eval(&inputs, &EvalCtx::default()).map_err(|e| format!("node '{}' ({}): {e}", node.name, node.op.name()))?;
            for (&v, t) in node.outputs.iter().zip(outputs) {
                values[v] = Some(Arc::new(t));
            }
        }
        self.graph
            .outputs
            .iter()
            .map(|&v| {
                values[v].take().map(Arc::unwrap_or_clone).ok_or_else(|| format!("body output '{}' is not computed", self.graph.names[v]))
            })
            .collect()
    }

    /// Output facts from the formal inputs' and captured values' facts, by the main
    /// specialisation ([`TypedGraph::specialize_facts`]): constants folded, every node's output
    /// checked against the size limit, and an error naming the body's node.
    pub fn infer(&self, formal: Vec<Fact>, captured: &[&Fact]) -> OpResult<Vec<Fact>> {
        let mut facts: Vec<Option<Fact>> = vec![None; self.graph.names.len()];
        for (&v, t) in self.graph.constants.iter() {
            facts[v] = Some(Fact::constant(t.clone()));
        }
        for (&v, f) in self.formal.iter().zip(formal) {
            facts[v] = Some(f);
        }
        for (&v, &f) in self.captured.iter().zip(captured) {
            facts[v] = Some(f.clone());
        }
        let typed = TypedGraph::specialize_facts(&self.graph, facts, &|_, _| false).map_err(|e| e.to_string())?;
        Ok(typed.outputs.iter().map(|&v| typed.fact(v).clone()).collect())
    }

    /// The body with the captured values at the positions where `values` holds one bound as
    /// its own constants, and those positions no longer captured.
    pub fn bind_captured(&self, values: &[Option<Arc<Tensor>>]) -> Body {
        let mut graph = self.graph.clone();
        let mut captured = Vec::with_capacity(self.captured.len());
        for (k, &v) in self.captured.iter().enumerate() {
            match values.get(k).cloned().flatten() {
                Some(t) => {
                    graph.constants.insert(v, t);
                }
                None => captured.push(v),
            }
        }
        Body { graph, formal: self.formal.clone(), captured }
    }
}

/// Every input index, for ops whose inputs all decide their outputs' shapes.
const ALL: &[usize] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
];

fn present<'a, T>(inputs: &[Option<&'a T>], range: std::ops::Range<usize>, what: &str) -> OpResult<Vec<&'a T>> {
    range.map(|i| inputs.get(i).copied().flatten().ok_or_else(|| format!("missing {what} {i}"))).collect()
}

/// Stacks equally shaped tensors along a new axis `axis`.
fn stack(parts: &[Tensor], axis: usize, empty: &Fact) -> OpResult<Tensor> {
    let Some(first) = parts.first() else {
        let mut shape = empty.shape.clone();
        shape.insert(axis.min(shape.len()), 0);
        return Ok(Tensor::zeros(empty.dtype, shape));
    };
    let s = first.shape().to_vec();
    if parts.iter().any(|p| p.shape() != s.as_slice() || p.dtype() != first.dtype()) {
        return Err("scan outputs differ in shape or type between iterations".into());
    }
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis..].iter().product();
    let mut data = Data::with_capacity(first.dtype(), outer * inner * parts.len());
    for o in 0..outer {
        for p in parts {
            data.extend_from(p.data(), o * inner..(o + 1) * inner);
        }
    }
    let mut shape = s;
    shape.insert(axis, parts.len());
    Ok(Tensor::from_parts(shape, data))
}

/// Slice `i` of `t` along `axis` (the axis removed).
fn slice(t: &Tensor, axis: usize, i: usize) -> Tensor {
    let s = t.shape();
    let (outer, n, inner): (usize, usize, usize) = (s[..axis].iter().product(), s[axis], s[axis + 1..].iter().product());
    let idx = (0..outer).flat_map(|o| (0..inner).map(move |j| (o * n + i) * inner + j));
    let mut shape = s.to_vec();
    shape.remove(axis);
    Tensor::from_parts(shape, t.data().gather(idx.collect::<Vec<_>>().into_iter()))
}

fn bool_scalar(t: &Tensor, what: &str) -> OpResult<bool> {
    t.scalar_value().map(|v| v != 0.0).ok_or_else(|| format!("{what} must hold one value"))
}

// ---------------------------------------------------------------- If

/// Runs one of two subgraphs on the condition.
#[derive(Clone, Debug)]
pub struct If {
    pub then_branch: Arc<Body>,
    pub else_branch: Arc<Body>,
}

impl If {
    fn captures<'a, T>(&self, inputs: &[Option<&'a T>]) -> OpResult<(Vec<&'a T>, Vec<&'a T>)> {
        let n = self.then_branch.captured.len();
        Ok((
            present(inputs, 1..1 + n, "captured value")?,
            present(inputs, 1 + n..1 + n + self.else_branch.captured.len(), "captured value")?,
        ))
    }
}

impl Op for If {
    fn name(&self) -> &'static str {
        "If"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let cond = crate::op::required(inputs, 0, "cond")?;
        let (tc, ec) = self.captures(inputs)?;
        if let Some(c) = cond.const_scalar() {
            return if c != 0.0 { self.then_branch.infer(vec![], &tc) } else { self.else_branch.infer(vec![], &ec) };
        }
        let (t, e) = (self.then_branch.infer(vec![], &tc)?, self.else_branch.infer(vec![], &ec)?);
        if t.len() != e.len() || t.iter().zip(&e).any(|(a, b)| a.dtype != b.dtype || a.shape != b.shape) {
            return Err("the branches produce outputs of different types or shapes and the condition is computed at run time; octet plans static shapes".into());
        }
        Ok(t.into_iter().map(|f| Fact::new(f.dtype, f.shape)).collect())
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let cond = bool_scalar(crate::op::required(inputs, 0, "cond")?, "cond")?;
        let (tc, ec) = self.captures(inputs)?;
        if cond {
            ctx.run_body(&self.then_branch, vec![], &tc)
        } else {
            ctx.run_body(&self.else_branch, vec![], &ec)
        }
    }
    fn subgraphs(&self) -> Vec<&Arc<Body>> {
        vec![&self.then_branch, &self.else_branch]
    }
    fn with_subgraphs(&self, bodies: Vec<Arc<Body>>) -> Option<Arc<dyn Op>> {
        let [then_branch, else_branch] = <[Arc<Body>; 2]>::try_from(bodies).ok()?;
        Some(Arc::new(If { then_branch, else_branch }))
    }
    op_any!();
}

// ---------------------------------------------------------------- Loop

/// Runs a body while the trip count and the condition allow, carrying state and stacking the
/// per-iteration scan outputs. Its output sizes can depend on values: with every input known
/// when the model is planned it is evaluated then; otherwise it is planned when its loop-carried
/// values keep their types and shapes from one iteration to the next, and its scan outputs (if
/// any) have a trip count known when the model is planned and a condition that stays true.
#[derive(Clone, Debug)]
pub struct Loop {
    pub body: Arc<Body>,
    /// The ONNX inputs (M, cond, then the loop-carried values), before the captured values.
    pub declared_inputs: usize,
}

impl Loop {
    /// Output facts without the inputs' values: the body inferred once on the loop-carried
    /// values' types and shapes.
    fn infer_static(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let n_state = self.declared_inputs.checked_sub(2).ok_or("Loop takes M and cond before its loop-carried values")?;
        let states = present(inputs, 2..2 + n_state, "loop-carried value")?;
        let captured = present(inputs, self.declared_inputs..self.declared_inputs + self.body.captured.len(), "captured value")?;
        let mut formal = vec![Fact::new(DType::I64, vec![]), Fact::new(DType::Bool, vec![])];
        formal.extend(states.iter().map(|f| Fact::new(f.dtype, f.shape.clone())));
        let out = self.body.infer(formal, &captured)?;
        if out.len() < 1 + n_state {
            return Err("the body must return cond and every loop-carried value".into());
        }
        for (k, (before, after)) in states.iter().zip(&out[1..1 + n_state]).enumerate() {
            if before.dtype != after.dtype || before.shape != after.shape {
                return Err(format!(
                    "loop-carried value {k} goes from {} {:?} to {} {:?} in one iteration",
                    before.dtype, before.shape, after.dtype, after.shape
                ));
            }
        }
        let mut result: Vec<Fact> = states.iter().map(|f| Fact::new(f.dtype, f.shape.clone())).collect();
        if out.len() > 1 + n_state {
            let trips = inputs
                .first()
                .copied()
                .flatten()
                .and_then(|f| f.const_scalar())
                .ok_or("its scan outputs' length depends on a trip count computed at run time")?;
            let stays_true = |f: Option<&Fact>| f.is_none_or(|f| f.const_scalar().is_some_and(|c| c != 0.0));
            if !stays_true(inputs.get(1).copied().flatten()) || !stays_true(Some(&out[0])) {
                return Err("its scan outputs' length depends on a condition computed at run time".into());
            }
            let trips = usize::try_from(trips as i64).unwrap_or(0);
            for f in &out[1 + n_state..] {
                let mut shape = vec![trips];
                shape.extend(&f.shape);
                result.push(Fact::new(f.dtype, shape));
            }
        }
        Ok(result)
    }
}

impl Op for Loop {
    fn name(&self) -> &'static str {
        "Loop"
    }
    fn value_operands(&self) -> &'static [usize] {
        ALL
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        if inputs.iter().flatten().all(|f| f.is_constant()) {
            return super::layout::infer_by_value(self, inputs);
        }
        self.infer_static(inputs).map_err(|why| format!("{why}, and its inputs are computed at run time; octet plans such a Loop when its loop-carried values keep their types and shapes and its scan outputs have a trip count known when the model is planned"))
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let n_state = self.declared_inputs.checked_sub(2).ok_or("Loop takes M and cond before its loop-carried values")?;
        let trip = inputs
            .first()
            .copied()
            .flatten()
            .map(|t| t.to_i64_vec().and_then(|v| v.first().copied()).ok_or("M must be an integer scalar"))
            .transpose()?;
        let mut cond = inputs.get(1).copied().flatten().map(|t| bool_scalar(t, "cond")).transpose()?.unwrap_or(true);
        let mut state: Vec<Tensor> = present(inputs, 2..2 + n_state, "loop-carried value")?.into_iter().cloned().collect();
        let captured = present(inputs, self.declared_inputs..self.declared_inputs + self.body.captured.len(), "captured value")?;
        let n_scan =
            self.body.graph.outputs.len().checked_sub(1 + n_state).ok_or("the body must return cond and every loop-carried value")?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); n_scan];
        let mut i = 0i64;
        while cond && trip.is_none_or(|m| i < m) {
            if i >= 1 << 24 {
                return Err("Loop ran 2^24 iterations without stopping".into());
            }
            let mut formal = vec![Tensor::i64(vec![], vec![i]), Tensor::from_parts(vec![], Data::Bool(vec![cond]))];
            formal.extend(state.iter().cloned());
            let mut out = ctx.run_body(&self.body, formal, &captured)?.into_iter();
            cond = bool_scalar(&out.next().expect("checked count"), "the body's cond")?;
            state = out.by_ref().take(n_state).collect();
            for (s, t) in scans.iter_mut().zip(out) {
                s.push(t);
            }
            i += 1;
        }
        let mut result = state;
        for s in scans {
            let empty = Fact::new(DType::F32, vec![]);
            result.push(stack(&s, 0, &empty)?);
        }
        Ok(result)
    }
    fn subgraphs(&self) -> Vec<&Arc<Body>> {
        vec![&self.body]
    }
    fn with_subgraphs(&self, bodies: Vec<Arc<Body>>) -> Option<Arc<dyn Op>> {
        let [body] = <[Arc<Body>; 1]>::try_from(bodies).ok()?;
        Some(Arc::new(Loop { body, ..self.clone() }))
    }
    op_any!();
}

// ---------------------------------------------------------------- Scan

/// Iterates a body over slices of the scan inputs, carrying state and stacking scan outputs
/// (opset 9 and later; opset 8's batched form with `sequence_lens` too).
#[derive(Clone, Debug)]
pub struct Scan {
    pub body: Arc<Body>,
    pub num_scan_inputs: usize,
    pub input_axes: Vec<i64>,
    pub output_axes: Vec<i64>,
    pub input_reverse: Vec<bool>,
    pub output_reverse: Vec<bool>,
    /// Opset 8: a leading batch axis on every input and output, and an optional first input
    /// `sequence_lens` (which must cover the whole sequence).
    pub batched: bool,
    pub declared_inputs: usize,
}

impl Scan {
    fn counts(&self) -> OpResult<(usize, usize, usize)> {
        let first = usize::from(self.batched);
        let n_state = self.declared_inputs.checked_sub(first + self.num_scan_inputs).ok_or("Scan has fewer inputs than num_scan_inputs")?;
        let n_scan_out = self.body.graph.outputs.len().checked_sub(n_state).ok_or("the body must return every state")?;
        Ok((first, n_state, n_scan_out))
    }

    fn axis(list: &[i64], k: usize, rank: usize) -> OpResult<usize> {
        crate::op::norm_axis(list.get(k).copied().unwrap_or(0), rank)
    }

    /// One unbatched scan: states and scan inputs in, final states and stacked scan outputs out.
    fn scan(&self, states: Vec<Tensor>, scan_in: &[&Tensor], captured: &[&Tensor], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (_, n_state, n_scan_out) = self.counts()?;
        let axes: Vec<usize> =
            scan_in.iter().enumerate().map(|(k, t)| Self::axis(&self.input_axes, k, t.rank())).collect::<OpResult<_>>()?;
        let len = scan_in.first().map(|t| t.shape()[axes[0]]).unwrap_or(0);
        if scan_in.iter().zip(&axes).any(|(t, &a)| t.shape()[a] != len) {
            return Err("scan inputs differ in sequence length".into());
        }
        let mut state = states;
        let mut outs: Vec<Vec<Tensor>> = vec![Vec::new(); n_scan_out];
        for step in 0..len {
            let mut formal = state.clone();
            for (k, t) in scan_in.iter().enumerate() {
                let i = if self.input_reverse.get(k).copied().unwrap_or(false) { len - 1 - step } else { step };
                formal.push(slice(t, axes[k], i));
            }
            let mut out = ctx.run_body(&self.body, formal, captured)?.into_iter();
            state = out.by_ref().take(n_state).collect();
            for (o, t) in outs.iter_mut().zip(out) {
                o.push(t);
            }
        }
        let mut result = state;
        for (k, mut o) in outs.into_iter().enumerate() {
            if self.output_reverse.get(k).copied().unwrap_or(false) {
                o.reverse();
            }
            let rank = o.first().map_or(0, |t| t.rank()) + 1;
            let axis = Self::axis(&self.output_axes, k, rank)?;
            result.push(stack(&o, axis, &Fact::new(DType::F32, vec![]))?);
        }
        Ok(result)
    }
}

impl Op for Scan {
    fn name(&self) -> &'static str {
        "Scan"
    }
    fn value_operands(&self) -> &'static [usize] {
        if self.batched {
            ALL
        } else {
            &[]
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        if self.batched {
            return super::layout::infer_by_value(self, inputs);
        }
        let (_, n_state, _) = self.counts()?;
        let states = present(inputs, 0..n_state, "state")?;
        let scan_in = present(inputs, n_state..n_state + self.num_scan_inputs, "scan input")?;
        let captured = present(inputs, self.declared_inputs..self.declared_inputs + self.body.captured.len(), "captured value")?;
        let mut formal: Vec<Fact> = states.iter().map(|f| Fact::new(f.dtype, f.shape.clone())).collect();
        let mut len = 0;
        for (k, f) in scan_in.iter().enumerate() {
            let a = Self::axis(&self.input_axes, k, f.shape.len())?;
            len = f.shape[a];
            let mut s = f.shape.clone();
            s.remove(a);
            formal.push(Fact::new(f.dtype, s));
        }
        let out = self.body.infer(formal, &captured)?;
        let mut result: Vec<Fact> = out[..n_state].iter().map(|f| Fact::new(f.dtype, f.shape.clone())).collect();
        for (k, f) in out[n_state..].iter().enumerate() {
            let axis = Self::axis(&self.output_axes, k, f.shape.len() + 1)?;
            let mut s = f.shape.clone();
            s.insert(axis, len);
            result.push(Fact::new(f.dtype, s));
        }
        Ok(result)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (first, n_state, _) = self.counts()?;
        let captured = present(inputs, self.declared_inputs..self.declared_inputs + self.body.captured.len(), "captured value")?;
        let states = present(inputs, first..first + n_state, "state")?;
        let scan_in = present(inputs, first + n_state..first + n_state + self.num_scan_inputs, "scan input")?;
        if !self.batched {
            return self.scan(states.into_iter().cloned().collect(), &scan_in, &captured, ctx);
        }
        let batch = states.first().or(scan_in.first()).map_or(0, |t| t.shape().first().copied().unwrap_or(0));
        if let Some(lens) = inputs.first().copied().flatten() {
            let full = scan_in.first().map_or(0, |t| t.shape().get(1).copied().unwrap_or(0)) as i64;
            if lens.to_i64_vec().is_some_and(|l| l.iter().any(|&v| v != full)) {
                return Err("Scan (opset 8) with sequence_lens shorter than the sequence is not supported".into());
            }
        }
        let mut per_batch: Vec<Vec<Tensor>> = Vec::new();
        for b in 0..batch {
            let st: Vec<Tensor> = states.iter().map(|t| slice(t, 0, b)).collect();
            let sc: Vec<Tensor> = scan_in.iter().map(|t| slice(t, 0, b)).collect();
            let sc_refs: Vec<&Tensor> = sc.iter().collect();
            per_batch.push(self.scan(st, &sc_refs, &captured, ctx)?);
        }
        let n_out = per_batch.first().map_or(0, |o| o.len());
        (0..n_out).map(|k| stack(&per_batch.iter().map(|o| o[k].clone()).collect::<Vec<_>>(), 0, &Fact::new(DType::F32, vec![]))).collect()
    }
    fn subgraphs(&self) -> Vec<&Arc<Body>> {
        vec![&self.body]
    }
    fn with_subgraphs(&self, bodies: Vec<Arc<Body>>) -> Option<Arc<dyn Op>> {
        let [body] = <[Arc<Body>; 1]>::try_from(bodies).ok()?;
        Some(Arc::new(Scan { body, ..self.clone() }))
    }
    op_any!();
}
