//! Rewrite passes over a [`TypedGraph`]. A pass looks at every node in order and may replace a
//! matched subgraph ending at some node by one node with the same outputs; the nodes it leaves
//! unused are removed afterwards and the verifier runs after every pass.

use std::sync::Arc;

use octet_kernels::f32::PanelMatrix;

use crate::error::Result;
use crate::graph::{Graph, Node, ValueId};
use crate::op::Op;
use crate::ops::attention::{FusedAttention, OperandView, ScalarStep};
use crate::ops::elementwise::{Unary, UnaryKind};
use crate::ops::nn::{LayerNorm, PackedMatMul, Softmax};
use crate::ops::reduction::{Reduce, ReduceKind};
use crate::ops::shape::Transpose;
use crate::pattern::Index;
use crate::tensor::Tensor;
use crate::typed::TypedGraph;

/// One rewrite rule.
pub trait Pass: Sync {
    fn name(&self) -> &'static str;
    /// The pattern, one line, e.g. `Mul(x, 0.5, Add(Erf(Div(x, √2)), 1)) → Gelu(x)`.
    fn pattern(&self) -> &'static str;
    /// Tries to rewrite the subgraph around node `at` (`ix` indexes `g` as it is); true when the
    /// graph changed.
    fn rewrite(&self, g: &mut TypedGraph, ix: &Index, at: usize) -> bool;
}

/// Runs one pass over every node, then drops what it left dead; the graph is verified after it
/// in debug builds and tests. Which passes run, and in which order, is the runtime's pass list.
pub fn apply(g: &mut TypedGraph, pass: &dyn Pass) -> Result<()> {
    let mut ix = Index::of_typed(g);
    let mut i = 0;
    while i < g.nodes.len() {
        if pass.rewrite(g, &ix, i) {
            ix = Index::of_typed(g);
        }
        i += 1;
    }
    g.remove_dead_nodes();
    g.verify_in_debug(pass.name())
}

/// Read-only matching helpers.
struct Matcher<'a> {
    g: &'a TypedGraph,
    ix: &'a Index,
}

impl<'a> Matcher<'a> {
    fn node(&self, v: ValueId) -> Option<&'a Node> {
        self.ix.producer(v).map(|i| &self.g.nodes[i])
    }

    /// The producer of `v` when it is an `op` node whose output is read only once.
    fn single_use(&self, v: ValueId, op: &str) -> Option<&'a Node> {
        self.node(v).filter(|n| n.op.name() == op && self.ix.uses(v) == 1)
    }

    fn inputs(&self, n: &Node) -> Option<(ValueId, ValueId)> {
        match n.inputs.as_slice() {
            [Some(a), Some(b)] => Some((*a, *b)),
            _ => None,
        }
    }

    fn scalar(&self, v: ValueId) -> Option<f64> {
        self.g.fact(v).const_scalar()
    }

    fn is_scalar(&self, v: ValueId, want: f64) -> bool {
        self.scalar(v).is_some_and(|s| (s - want).abs() <= 1e-4 * want.abs())
    }

    /// For a commutative binary node: (the operand that is the scalar `want`, the other).
    fn with_scalar(&self, n: &Node, want: f64) -> Option<ValueId> {
        let (a, b) = self.inputs(n)?;
        if self.is_scalar(b, want) {
            Some(a)
        } else if self.is_scalar(a, want) {
            Some(b)
        } else {
            None
        }
    }

    /// Does this ReduceMean node average over exactly the last axis, keeping dims?
    fn mean_over_last(&self, n: &Node) -> bool {
        let Some(op) = n.op.downcast::<Reduce>().filter(|r| r.kind == ReduceKind::Mean) else { return false };
        let Some(x) = n.inputs[0] else { return false };
        let rank = self.g.fact(x).shape.len() as i64;
        let axes = match n.inputs.get(1).copied().flatten() {
            Some(a) => self.g.fact(a).const_ints(),
            None => op.axes.clone(),
        };
        op.keepdims && matches!(axes.as_deref(), Some([a]) if *a == -1 || *a == rank - 1)
    }
}

/// `Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(Sub(..), 2)), eps)))` [`· γ`] [`+ β`] →
/// `LayerNormalization(x, γ, β)` over the last axis.
pub struct FuseLayerNorm;

impl FuseLayerNorm {
    /// A constant γ or β as a vector over the last axis of `c` elements.
    fn affine(g: &TypedGraph, v: ValueId, c: usize) -> Option<Tensor> {
        let t = g.fact(v).value.as_ref()?;
        let vals = t.as_f32()?;
        match vals.len() {
            1 => Some(Tensor::f32(vec![c], vec![vals[0]; c])),
            n if n == c && t.shape().last() == Some(&c) => Some(Tensor::f32(vec![c], vals.to_vec())),
            _ => None,
        }
    }
}

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layer-norm"
    }
    fn pattern(&self) -> &'static str {
        "Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(Sub, 2)), eps))) [· γ] [+ β] → LayerNormalization(x, γ, β)"
    }
    fn rewrite(&self, g: &mut TypedGraph, ix: &Index, at: usize) -> bool {
        let m = Matcher { g, ix };
        let div = &g.nodes[at];
        if div.op.name() != "Div" {
            return false;
        }
        let Some((d, s)) = m.inputs(div) else { return false };
        let Some(sub) = m.node(d).filter(|n| n.op.name() == "Sub" && ix.uses(d) == 2) else { return false };
        let Some((x, mean)) = m.inputs(sub) else { return false };
        if m.single_use(mean, "ReduceMean").filter(|n| n.inputs[0] == Some(x) && m.mean_over_last(n)).is_none() {
            return false;
        };
        let Some(sqrt) = m.single_use(s, "Sqrt") else { return false };
        let Some(add_eps) = sqrt.inputs[0].and_then(|v| m.single_use(v, "Add")) else { return false };
        let Some((var, eps)) = m.inputs(add_eps) else { return false };
        let Some(eps) = m.scalar(eps) else { return false };
        let Some(var_node) = m.single_use(var, "ReduceMean").filter(|n| m.mean_over_last(n)) else { return false };
        let Some(pow) = var_node.inputs[0].and_then(|v| m.single_use(v, "Pow")) else { return false };
        if pow.inputs[0] != Some(d) || !pow.inputs.get(1).copied().flatten().is_some_and(|e| m.is_scalar(e, 2.0)) {
            return false;
        }
        let c = *g.fact(x).shape.last().unwrap_or(&0);
        // Extend over an affine Mul and Add by constants when each is the only reader.
        let mut end = at;
        let mut gamma = None;
        let mut beta = None;
        let only_reader = |v: ValueId, op: &str| -> Option<usize> {
            if ix.uses(v) != 1 || ix.is_output(v) {
                return None;
            }
            let i = g.nodes.iter().position(|n| n.inputs.contains(&Some(v)))?;
            (g.nodes[i].op.name() == op).then_some(i)
        };
        let other = |n: &Node, v: ValueId| m.inputs(n).map(|(a, b)| if a == v { b } else { a });
        if let Some(i) = only_reader(div.outputs[0], "Mul") {
            if let Some(t) = other(&g.nodes[i], div.outputs[0]).and_then(|w| Self::affine(g, w, c)) {
                gamma = Some(t);
                end = i;
                if let Some(j) = only_reader(g.nodes[i].outputs[0], "Add") {
                    if let Some(t) = other(&g.nodes[j], g.nodes[i].outputs[0]).and_then(|w| Self::affine(g, w, c)) {
                        beta = Some(t);
                        end = j;
                    }
                }
            }
        }
        let name = g.nodes[end].name.clone();
        let outputs = g.nodes[end].outputs.clone();
        let gamma = gamma.unwrap_or_else(|| Tensor::f32(vec![c], vec![1.0; c]));
        let beta = beta.unwrap_or_else(|| Tensor::f32(vec![c], vec![0.0; c]));
        let gv = g.add_constant(&format!("{name}.gamma"), gamma);
        let bv = g.add_constant(&format!("{name}.beta"), beta);
        let op = Arc::new(LayerNorm { axis: -1, epsilon: eps as f32, stats: false });
        g.replace_node(end, Node { name, op, inputs: vec![Some(x), Some(gv), Some(bv)], outputs, fused: vec![] });
        true
    }
}

/// `x · 0.5 · (1 + Erf(x / √2))` → `Gelu(x)`, and the tanh form
/// `x · 0.5 · (1 + Tanh(√(2/π) · (x + 0.044715 · x³)))` → `Gelu(x, approximate=tanh)`, in any
/// association and operand order of the products.
pub struct FuseGelu;

impl FuseGelu {
    /// The leaves of a product tree rooted at `n`, expanding Mul nodes read only once.
    fn factors(m: &Matcher, n: &Node, out: &mut Vec<ValueId>, depth: usize) {
        for v in n.inputs.iter().flatten() {
            match m.single_use(*v, "Mul") {
                Some(inner) if depth < 3 => Self::factors(m, inner, out, depth + 1),
                _ => out.push(*v),
            }
        }
    }

    /// `Erf(x/√2)` or `Erf(x·(1/√2))`: returns x.
    fn erf_arg(m: &Matcher, v: ValueId) -> Option<ValueId> {
        let erf = m.single_use(v, "Erf")?;
        let t = erf.inputs[0]?;
        if let Some(div) = m.single_use(t, "Div") {
            let (x, c) = m.inputs(div)?;
            return m.is_scalar(c, std::f64::consts::SQRT_2).then_some(x);
        }
        m.with_scalar(m.single_use(t, "Mul")?, std::f64::consts::FRAC_1_SQRT_2)
    }

    /// Is `v` the cube of `x`: `Pow(x, 3)`, `Mul(x, Mul(x, x))` or `Mul(Mul(x, x), x)`?
    fn is_cube(m: &Matcher, v: ValueId, x: ValueId) -> bool {
        if let Some(pow) = m.single_use(v, "Pow") {
            return pow.inputs[0] == Some(x) && pow.inputs.get(1).copied().flatten().is_some_and(|e| m.is_scalar(e, 3.0));
        }
        let Some((a, b)) = m.single_use(v, "Mul").and_then(|n| m.inputs(n)) else { return false };
        let square = |s: ValueId| m.single_use(s, "Mul").and_then(|n| m.inputs(n)) == Some((x, x));
        (a == x && square(b)) || (b == x && square(a))
    }

    /// `Tanh(√(2/π)·(x + 0.044715·x³))`: returns x.
    fn tanh_arg(m: &Matcher, v: ValueId) -> Option<ValueId> {
        let tanh = m.single_use(v, "Tanh")?;
        let inner = m.with_scalar(m.single_use(tanh.inputs[0]?, "Mul")?, (2.0 / std::f64::consts::PI).sqrt())?;
        let (a, b) = m.inputs(m.single_use(inner, "Add")?)?;
        for (x, cubic) in [(a, b), (b, a)] {
            let Some(cube) = m.single_use(cubic, "Mul").and_then(|n| m.with_scalar(n, 0.044715)) else { continue };
            if Self::is_cube(m, cube, x) {
                return Some(x);
            }
        }
        None
    }
}

impl Pass for FuseGelu {
    fn name(&self) -> &'static str {
        "fuse-gelu"
    }
    fn pattern(&self) -> &'static str {
        "Mul(x, 0.5, Add(Erf(Div(x, √2)) | Tanh(√(2/π)·(x + 0.044715·x³)), 1)) → Gelu(x)"
    }
    fn rewrite(&self, g: &mut TypedGraph, ix: &Index, at: usize) -> bool {
        let m = Matcher { g, ix };
        let anchor = &g.nodes[at];
        if anchor.op.name() != "Mul" {
            return false;
        }
        let mut leaves = Vec::new();
        Self::factors(&m, anchor, &mut leaves, 0);
        if leaves.len() != 3 {
            return false;
        }
        let Some(half) = leaves.iter().position(|&v| m.is_scalar(v, 0.5)) else { return false };
        leaves.remove(half);
        for (x, e) in [(leaves[0], leaves[1]), (leaves[1], leaves[0])] {
            let Some(one_plus) = m.single_use(e, "Add") else { continue };
            let Some(f) = m.with_scalar(one_plus, 1.0) else { continue };
            let kind = if Self::erf_arg(&m, f) == Some(x) {
                UnaryKind::GeluErf
            } else if Self::tanh_arg(&m, f) == Some(x) {
                UnaryKind::GeluTanh
            } else {
                continue;
            };
            let node = Node {
                name: anchor.name.clone(),
                op: Arc::new(Unary(kind)),
                inputs: vec![Some(x)],
                outputs: anchor.outputs.clone(),
                fused: vec![],
            };
            g.replace_node(at, node);
            return true;
        }
        false
    }
}

/// Packs the weights of every MatMul whose `B` is a 2-D float32 initializer read by that node
/// alone into panels ([`PackedMatMul`]), once per session, and drops the row-major copy: the
/// values the graph computes stay the same (up to float rounding order), and its memory does not
/// grow.
pub fn pack_matmul_weights(graph: &mut Graph) {
    let ix = Index::of_graph(graph);
    for node in &mut graph.nodes {
        if node.op.downcast::<crate::ops::nn::MatMul>().is_none() {
            continue;
        }
        let (Some(a), Some(Some(b))) = (node.inputs.first().copied().flatten(), node.inputs.get(1).copied()) else { continue };
        let Some(w) = graph.constants.get(&b) else { continue };
        let (Some(data), [k, n]) = (w.as_f32(), w.shape()) else { continue };
        if ix.uses(b) != 1 || *k == 0 || *n == 0 {
            continue;
        }
        let packed = PanelMatrix::pack(data, *k, *n);
        graph.constants.remove(&b);
        node.op = Arc::new(PackedMatMul { b: Arc::new(packed), bias: false, activation: None, residual: false });
        node.inputs = vec![Some(a)];
    }
}

/// `Add(PackedMatMul(a), bias)` → `PackedMatMul(a, bias)` for a constant bias that
/// varies along the last axis only: the bias goes into the matmul's output before the products
/// are summed into it, saving a pass over the output.
pub struct FuseMatMulBias;

impl Pass for FuseMatMulBias {
    fn name(&self) -> &'static str {
        "fuse-matmul-bias"
    }
    fn pattern(&self) -> &'static str {
        "Add(PackedMatMul(a), bias[n]) → PackedMatMul(a, bias), bias constant"
    }
    fn rewrite(&self, g: &mut TypedGraph, ix: &Index, at: usize) -> bool {
        let m = Matcher { g, ix };
        let add = &g.nodes[at];
        if add.op.name() != "Add" {
            return false;
        }
        let Some((x, y)) = m.inputs(add) else { return false };
        let out_shape = &g.fact(add.outputs[0]).shape;
        for (mm_out, bias) in [(x, y), (y, x)] {
            let Some(mm) = m.single_use(mm_out, "PackedMatMul").filter(|_| !g.outputs.contains(&mm_out)) else { continue };
            let Some(op) = mm.op.downcast::<PackedMatMul>().filter(|op| !op.bias && op.activation.is_none() && !op.residual) else {
                continue;
            };
            let bf = g.fact(bias);
            let along_last = bf.shape.last() == Some(&op.b.n()) && bf.shape.iter().rev().skip(1).all(|&d| d == 1);
            if !bf.is_constant() || bf.dtype != crate::tensor::DType::F32 || !along_last || bf.shape.len() > out_shape.len() {
                continue;
            }
            if &g.fact(mm_out).shape != out_shape {
                continue;
            }
            let node = Node {
                name: add.name.clone(),
                op: Arc::new(PackedMatMul { b: op.b.clone(), bias: true, activation: None, residual: false }),
                inputs: vec![mm.inputs[0], Some(bias)],
                outputs: add.outputs.clone(),
                fused: vec![],
            };
            g.replace_node(at, node);
            return true;
        }
        false
    }
}

/// `Unary(PackedMatMul(…))` → `PackedMatMul(…)` with the unary op applied to each block of
/// output rows while it is in cache, for the unary ops with a vectorised float kernel (GELU,
/// Erf, Tanh, Sigmoid).
pub struct FuseMatMulActivation;

impl Pass for FuseMatMulActivation {
    fn name(&self) -> &'static str {
        "fuse-matmul-activation"
    }
    fn pattern(&self) -> &'static str {
        "Gelu(PackedMatMul(a, …)) → PackedMatMul(a, …) with a GELU epilogue (also Erf, Tanh, Sigmoid)"
    }
    fn rewrite(&self, g: &mut TypedGraph, ix: &Index, at: usize) -> bool {
        let m = Matcher { g, ix };
        let act = &g.nodes[at];
        let Some(kind) = act.op.downcast::<Unary>().map(|u| u.0).filter(|k| k.f32_kernel().is_some()) else { return false };
        let Some(x) = act.inputs.first().copied().flatten() else { return false };
        if g.outputs.contains(&x) || g.fact(x).dtype != crate::tensor::DType::F32 {
            return false;
        }
        let Some(mm) = m.single_use(x, "PackedMatMul") else { return false };
        let Some(op) = mm.op.downcast::<PackedMatMul>().filter(|op| op.activation.is_none() && !op.residual) else { return false };
        let node = Node {
            name: act.name.clone(),
            op: Arc::new(PackedMatMul { b: op.b.clone(), bias: op.bias, activation: Some(kind), residual: false }),
            inputs: mm.inputs.clone(),
            outputs: act.outputs.clone(),
            fused: vec![],
        };
        g.replace_node(at, node);
        true
    }
}

/// `Add(PackedMatMul(…), r)` → `PackedMatMul(…, r)` for an f32 `r` of the output's shape (a
/// transformer's residual Add after its projections): the sum is taken on each block of output
/// rows while it is in cache, after the bias and the activation, saving a pass over the output.
/// The same bits: the Add's one addition, of the same two values.
pub struct FuseMatMulResidual;

impl Pass for FuseMatMulResidual {
    fn name(&self) -> &'static str {
        "fuse-matmul-residual"
    }
    fn pattern(&self) -> &'static str {
        "Add(PackedMatMul(a, …), r) → PackedMatMul(a, …, r), r of the output's shape"
    }
    fn rewrite(&self, g: &mut TypedGraph, ix: &Index, at: usize) -> bool {
        let m = Matcher { g, ix };
        let add = &g.nodes[at];
        if add.op.name() != "Add" {
            return false;
        }
        let Some((x, y)) = m.inputs(add) else { return false };
        let out = g.fact(add.outputs[0]);
        for (mm_out, r) in [(x, y), (y, x)] {
            let Some(mm) = m.single_use(mm_out, "PackedMatMul").filter(|_| !g.outputs.contains(&mm_out)) else { continue };
            let Some(op) = mm.op.downcast::<PackedMatMul>().filter(|op| !op.residual) else { continue };
            let (rf, mf) = (g.fact(r), g.fact(mm_out));
            if rf.dtype != crate::tensor::DType::F32 || rf.shape != out.shape || mf.shape != out.shape || r == mm_out {
                continue;
            }
            let mut inputs = mm.inputs.clone();
            inputs.push(Some(r));
            let node = Node {
                name: add.name.clone(),
                op: Arc::new(PackedMatMul { b: op.b.clone(), bias: op.bias, activation: op.activation, residual: true }),
                inputs,
                outputs: add.outputs.clone(),
                fused: vec![],
            };
            g.replace_node(at, node);
            return true;
        }
        false
    }
}

/// `MatMul(Q, Kᵀ) → [Mul|Div by a scalar] → Softmax(last axis) → MatMul(·, V)` →
/// [`FusedAttention`], in f32, with every value between read once; a scalar Mul or Div of Q and
/// of Kᵀ before the product is applied per head; Q, Kᵀ and V are read in place through the data
/// movement that made them (`Kᵀ = Transpose(K)`, the Transpose and Split of a QKV projection:
/// [`view_back`]); and a Transpose of heads and rows after it (`[.., H, S, Dv] →
/// [.., S, H, Dv]`, before the heads are merged) is written by the op itself.
pub struct FuseAttention;

impl FuseAttention {
    /// `v`'s scalar step ([`scalar_step`]) when `v` is read once and is not an output: (the
    /// step's input, the step, its node's name).
    fn scale_of(m: &Matcher, v: ValueId) -> Option<(ValueId, ScalarStep, String)> {
        let n = m.node(v).filter(|_| m.ix.uses(v) == 1 && !m.ix.is_output(v))?;
        let (x, step) = scalar_step(m.g, n)?;
        Some((x, step, n.name.clone()))
    }
}

/// What a node does to the values [`view_back`] walks back through.
pub enum Passage<'n> {
    /// Data movement: this op (a Transpose, Split, Squeeze, Unsqueeze or Reshape).
    Move(&'n dyn Op),
    /// A map of each element that keeps the shape, which the reader of the view applies itself.
    Elementwise,
}

/// `v` read in place from the value its data movement started from: back through single-use
/// Transposes, Split outputs, and Squeeze, Unsqueeze and Reshape that only add or drop axes of
/// size 1, and elementwise maps, as `passage` classes each node (the node's own op in float
/// plans; the op an int8 plan's 8-bit move wraps, and its tables; `None` stops the walk). `None`
/// when `v` is not made so. Also returns the nodes passed, from `v`'s producer on.
pub fn view_back(
    g: &TypedGraph,
    ix: &Index,
    v: ValueId,
    passage: impl for<'n> Fn(&'n Node) -> Option<Passage<'n>>,
) -> Option<(ValueId, OperandView, Vec<usize>)> {
    let shape = g.fact(v).shape.clone();
    // Operand axis a is axis `map[a]` of the current value (None: an axis of size 1), and
    // the operand's element 0 sits at index `start` of the current value.
    let mut map: Vec<Option<usize>> = (0..shape.len()).map(Some).collect();
    let (mut cur, mut start, mut passed) = (v, vec![0usize; shape.len()], Vec::new());
    while let Some(at) = ix.producer(cur).filter(|_| ix.uses(cur) == 1 && !ix.is_output(cur)) {
        let n = &g.nodes[at];
        let (Some(u), Some(passage)) = (n.inputs.first().copied().flatten(), passage(n)) else { break };
        let (us, vs) = (&g.fact(u).shape, &g.fact(cur).shape);
        let op = match passage {
            Passage::Move(op) => op,
            Passage::Elementwise if us == vs => {
                passed.push(at);
                cur = u;
                continue;
            }
            Passage::Elementwise => break,
        };
        let axis_of: Vec<Option<usize>> = match op.name() {
            "Transpose" => match op.downcast::<Transpose>().and_then(|t| t.perm_for(vs.len()).ok()) {
                Some(perm) => perm.into_iter().map(Some).collect(),
                None => break,
            },
            "Split" if us.len() == vs.len() => {
                let Some(j) = n.outputs.iter().position(|&o| o == cur) else { break };
                if let Some(axis) = (0..us.len()).find(|&a| us[a] != vs[a]) {
                    start[axis] += n.outputs[..j].iter().map(|&o| g.fact(o).shape.get(axis).copied().unwrap_or(0)).sum::<usize>();
                }
                (0..vs.len()).map(Some).collect()
            }
            "Squeeze" | "Unsqueeze" | "Reshape" => {
                let (un, vn): (Vec<usize>, Vec<usize>) =
                    ((0..us.len()).filter(|&a| us[a] != 1).collect(), (0..vs.len()).filter(|&a| vs[a] != 1).collect());
                if un.len() != vn.len() || un.iter().zip(&vn).any(|(&a, &b)| us[a] != vs[b]) {
                    break;
                }
                (0..vs.len()).map(|b| vn.iter().position(|&x| x == b).map(|k| un[k])).collect()
            }
            _ => break,
        };
        let mut start_u = vec![0usize; us.len()];
        for (b, a) in axis_of.iter().enumerate() {
            if let Some(a) = *a {
                start_u[a] = start[b];
            }
        }
        map = map.iter().map(|a| a.and_then(|a| axis_of[a])).collect();
        (cur, start) = (u, start_u);
        passed.push(at);
    }
    if passed.is_empty() {
        return None;
    }
    let st = crate::tensor::strides(&g.fact(cur).shape);
    let base = start.iter().zip(&st).map(|(i, s)| i * s).sum();
    let strides = map.iter().map(|a| a.map_or(0, |a| st[a])).collect();
    Some((cur, OperandView { shape, base, strides }, passed))
}

/// `node`'s step when it is a Mul of one input by a scalar constant (either side) or a Div of
/// one by a scalar constant: (that input, the step).
pub fn scalar_step(g: &TypedGraph, node: &Node) -> Option<(ValueId, ScalarStep)> {
    let m = |v: ValueId| g.fact(v).const_scalar().map(|c| c as f32);
    let (a, b) = match node.inputs.as_slice() {
        [Some(a), Some(b)] => (*a, *b),
        _ => return None,
    };
    match (node.op.name(), m(a), m(b)) {
        ("Mul", None, Some(c)) => Some((a, ScalarStep::Mul(c))),
        ("Mul", Some(c), None) => Some((b, ScalarStep::Mul(c))),
        ("Div", None, Some(c)) => Some((a, ScalarStep::Div(c))),
        _ => None,
    }
}

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "fuse-attention"
    }
    fn pattern(&self) -> &'static str {
        "MatMul([c·]Q, [c·]Kᵀ) [→ Mul|Div(scalar)] → Softmax(last axis) → MatMul(·, V) [→ Transpose(heads, rows)] → FusedAttention, Q, Kᵀ and V read through the Transposes, Split and Squeezes that made them"
    }
    fn rewrite(&self, g: &mut TypedGraph, ix: &Index, at: usize) -> bool {
        let m = Matcher { g, ix };
        let pv = &g.nodes[at];
        if pv.op.downcast::<crate::ops::nn::MatMul>().is_none() {
            return false;
        }
        let Some((p, v)) = m.inputs(pv) else { return false };
        let rank = g.fact(p).shape.len();
        let Some(softmax) = m
            .single_use(p, "Softmax")
            .filter(|n| !ix.is_output(p) && n.op.downcast::<Softmax>().is_some_and(|s| s.is_softmax_over_last_axis(rank)))
        else {
            return false;
        };
        let Some(mut logits) = softmax.inputs.first().copied().flatten() else { return false };
        let mut fused = vec![softmax.name.clone()];
        let mut scale = None;
        if let Some((x, step, name)) = Self::scale_of(&m, logits) {
            (logits, scale) = (x, Some(step));
            fused.push(name);
        }
        let Some(qk) = m.single_use(logits, "MatMul").filter(|_| !ix.is_output(logits)) else { return false };
        let Some((mut q, mut k)) = m.inputs(qk) else { return false };
        fused.push(qk.name.clone());
        let mut q_scale = None;
        if let Some((x, step, name)) = Self::scale_of(&m, q) {
            (q, q_scale) = (x, Some(step));
            fused.push(name);
        }
        let mut k_scale = None;
        if let Some((x, step, name)) = Self::scale_of(&m, k) {
            (k, k_scale) = (x, Some(step));
            fused.push(name);
        }
        let mut views = [None, None, None];
        let mut inputs = [q, k, v];
        for (which, input) in inputs.iter_mut().enumerate() {
            if let Some((source, view, passed)) = view_back(g, ix, *input, |n| Some(Passage::Move(n.op.as_ref()))) {
                (*input, views[which]) = (source, Some(view));
                fused.extend(passed.iter().map(|&p| g.nodes[p].name.clone()));
            }
        }
        let mut op = FusedAttention { views, q_scale, k_scale, scale, heads_interleaved: false };
        let facts = inputs.map(|x| g.fact(x));
        if facts.iter().any(|f| f.dtype != crate::tensor::DType::F32) || op.infer(&facts.map(Some)).is_err() {
            return false;
        }
        let out = pv.outputs[0];
        let (mut end, mut outputs) = (at, pv.outputs.clone());
        if rank >= 3 && !ix.is_output(out) {
            if let Some(r) = ix.sole_reader(out) {
                let t = &g.nodes[r];
                if t.op.downcast::<Transpose>().is_some_and(|t| t.swaps_neighbours(rank, rank - 3)) {
                    op.heads_interleaved = true;
                    fused.push(t.name.clone());
                    (end, outputs) = (r, t.outputs.clone());
                }
            }
        }
        let node = Node { name: pv.name.clone(), op: Arc::new(op), inputs: inputs.map(Some).to_vec(), outputs, fused };
        g.replace_node(end, node);
        true
    }
}
