//! Lowering: each QDQ pattern `dq → op → q` with an int8 kernel is replaced by that kernel
//! (doc/quantization.md, section 7). What no rule matches keeps running in float between its
//! DequantizeLinear and QuantizeLinear. The rules are one declared list, [`RULES`]: each names
//! the op types it anchors at, its pattern and its kernel, and the support matrix's int8 column
//! (`octet ops`, [`int8_support`]) is read from it, so that it cannot say more or less than what
//! runs.
//!
//! Then lowered kernels are fused where one feeds the next (see [`fuse_kernels`]): tables and
//! residual Adds into GEMM epilogues, Q·Kᵀ → softmax → P·V into one attention kernel.

pub mod kernels;

use std::sync::Arc;

use octet_graph::attrs::Attrs;
use octet_graph::ops::elementwise::{Binary, BinaryKind, Unary};
use octet_graph::ops::nn::{Conv, Gemm, LayerNorm, Softmax};
use octet_graph::ops::quant::{DequantizeLinear, QuantizeLinear};
use octet_graph::ops::{lookup, BuildCtx, OpDef, QuantRule, OPSETS};
use octet_graph::pattern::Index;
use octet_graph::rewrite::{view_back, Passage};
use octet_graph::{DType, EvalCtx, Node, Op, Tensor, TypedGraph, ValueId};
use octet_kernels::i8::PackedB;
use octet_kernels::Isa;

use kernels::{
    make_epilogue, weights_epilogue, Affine, Operand, OperandRead, Output, QAttention, QBinary, QConv, QGlobalAveragePool, QLayerNorm,
    QLinear, QMatMul, QMove, QSoftmax, QTable, QViews,
};

/// The positive constant scalar a Mul or Div node scales its other input by
/// ([`octet_graph::rewrite::scalar_step`] by a positive finite constant, as a factor).
pub fn scalar_scale(typed: &TypedGraph, node: &octet_graph::Node) -> Option<(ValueId, f32)> {
    let (x, step) = octet_graph::rewrite::scalar_step(typed, node)?;
    let c = step.constant();
    (c > 0.0 && c.is_finite()).then(|| (x, step.factor()))
}

/// Integer parameters of a DequantizeLinear input: codes, scales, zero points, axis.
struct Dq {
    input: ValueId,
    dtype: DType,
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    axis: Option<usize>,
}

impl Dq {
    fn affine(&self) -> Option<Affine> {
        (self.scale.len() == 1 && matches!(self.dtype, DType::U8 | DType::I8)).then(|| Affine {
            scale: self.scale[0],
            zero_point: self.zero_point[0],
            signed: self.dtype == DType::I8,
        })
    }
}

/// The graph a rule matches in, with its index.
struct M<'a> {
    g: &'a TypedGraph,
    ix: &'a Index,
}

impl<'a> M<'a> {
    fn producer(&self, v: ValueId) -> Option<(usize, &'a Node)> {
        self.ix.producer(v).map(|i| (i, &self.g.nodes[i]))
    }

    fn readers(&self, v: ValueId) -> &'a [usize] {
        self.ix.readers(v)
    }

    /// The contents of a constant, or of a DequantizeLinear of constants (deferred at planning).
    fn constant(&self, v: ValueId) -> Option<Tensor> {
        if let Some(t) = &self.g.fact(v).value {
            return Some((**t).clone());
        }
        let (_, n) = self.producer(v)?;
        n.op.downcast::<DequantizeLinear>()?;
        let ins: Vec<Option<Tensor>> = n.inputs.iter().map(|i| i.and_then(|v| self.g.fact(v).value.as_deref().cloned())).collect();
        if n.inputs.iter().zip(&ins).any(|(i, t)| i.is_some() && t.is_none()) {
            return None;
        }
        let refs: Vec<Option<&Tensor>> = ins.iter().map(Option::as_ref).collect();
        n.op.eval(&refs, &EvalCtx::default()).ok()?.into_iter().next()
    }

    fn float_constant(&self, v: ValueId) -> Option<Vec<f32>> {
        self.constant(v).filter(|t| t.dtype() == DType::F32).map(|t| t.as_f32().unwrap().to_vec())
    }

    /// `v` as the output of a DequantizeLinear with constant parameters.
    fn dq(&self, v: ValueId) -> Option<Dq> {
        let (_, n) = self.producer(v)?;
        let op = n.op.downcast::<DequantizeLinear>()?;
        let input = n.inputs[0]?;
        let scale = self.g.fact(n.inputs.get(1).copied().flatten()?).value.as_ref()?.to_f64_vec();
        let zp = match n.inputs.get(2).copied().flatten() {
            Some(z) => self.g.fact(z).value.as_ref()?.to_i64_vec()?,
            None => vec![0; scale.len()],
        };
        if scale.is_empty() || zp.len() != scale.len() {
            return None;
        }
        let rank = self.g.fact(input).shape.len() as i64;
        let axis = (scale.len() > 1).then(|| if op.axis < 0 { op.axis + rank } else { op.axis } as usize);
        Some(Dq {
            input,
            dtype: self.g.fact(input).dtype,
            scale: scale.iter().map(|&s| s as f32).collect(),
            zero_point: zp.iter().map(|&z| z as i32).collect(),
            axis,
        })
    }

    /// An activation input: a per-tensor 8-bit DequantizeLinear of a non-constant value.
    fn dq_activation(&self, v: ValueId) -> Option<(ValueId, Affine)> {
        let d = self.dq(v)?;
        if self.g.fact(d.input).is_constant() {
            return None;
        }
        Some((d.input, d.affine()?))
    }

    /// A Linear's activation input: [`M::dq_activation`], or a per-tensor uint16 DequantizeLinear
    /// (its parameters as an [`Affine`] of those codes, and `true`).
    fn linear_input(&self, v: ValueId) -> Option<(ValueId, Affine, bool)> {
        let d = self.dq(v)?;
        match (d.dtype, &d.scale[..], &d.zero_point[..]) {
            _ if self.g.fact(d.input).is_constant() => None,
            (DType::U16, &[scale], &[zero_point]) => Some((d.input, Affine { scale, zero_point, signed: false }, true)),
            _ => Some((d.input, d.affine()?, false)),
        }
    }

    /// The single QuantizeLinear that reads `v` (and nothing else does), with its parameters.
    fn q_reader(&self, v: ValueId) -> Option<(usize, Affine)> {
        if self.g.outputs.contains(&v) {
            return None;
        }
        let [r] = self.readers(v)[..] else { return None };
        let n = &self.g.nodes[r];
        n.op.downcast::<QuantizeLinear>()?;
        let scale = self.g.fact(n.inputs.get(1).copied().flatten()?).const_scalar()? as f32;
        let (zp, signed) = match n.inputs.get(2).copied().flatten() {
            Some(z) => (self.g.fact(z).const_scalar()? as i32, self.g.fact(z).dtype == DType::I8),
            None => (0, self.g.fact(n.outputs[0]).dtype == DType::I8),
        };
        matches!(self.g.fact(n.outputs[0]).dtype, DType::U8 | DType::I8).then_some((r, Affine { scale, zero_point: zp, signed }))
    }
}

/// A replacement: node `at` becomes `node`; `removed` (later) nodes are deleted.
struct Rewrite {
    at: usize,
    node: Node,
    removed: Vec<usize>,
}

fn new_node(name: &str, op: impl Op, inputs: Vec<ValueId>, outputs: Vec<ValueId>) -> Node {
    Node { name: name.to_string(), op: Arc::new(op), inputs: inputs.into_iter().map(Some).collect(), outputs, fused: vec![] }
}

/// The output side of a pattern ending at value `end` (produced by node `end_node`): quantized
/// when a lone QuantizeLinear reads it, else f32 in place.
fn output_of(m: &M, end: ValueId) -> (Output, Vec<ValueId>, Vec<usize>) {
    match m.q_reader(end) {
        Some((q, p)) => (Output::Quantized(p), m.g.nodes[q].outputs.clone(), vec![q]),
        None => (Output::F32, vec![end], vec![]),
    }
}

/// An i32 bias for accumulators of scale `acc[j]` from a bias value (int32 DQ or float).
fn bias_codes(m: &M, v: ValueId, acc: &[f32], n: usize) -> Option<Vec<i32>> {
    let real = m.constant(v)?;
    let real = real.as_f32()?;
    if real.len() != n {
        return None;
    }
    Some(
        (0..n)
            .map(|j| (real[j] / acc[if acc.len() == 1 { 0 } else { j }]).round_ties_even().clamp(i32::MIN as f32, i32::MAX as f32) as i32)
            .collect(),
    )
}

/// Weights `W[k][j]` as s8 with zero point 0, per column scales (`transposed`: stored `[N, K]`).
fn weights(m: &M, v: ValueId, transposed: bool, isa: Isa) -> Option<(PackedB, Vec<f32>)> {
    let d = m.dq(v)?;
    let codes = m.g.fact(d.input).value.as_ref()?;
    let shape = codes.shape();
    if shape.len() != 2 || codes.dtype() != DType::I8 || d.zero_point.iter().any(|&z| z != 0) {
        return None;
    }
    let (k, n) = if transposed { (shape[1], shape[0]) } else { (shape[0], shape[1]) };
    let col_axis = if transposed { 0 } else { 1 };
    if d.axis.is_some_and(|a| a != col_axis) {
        return None;
    }
    let octet_graph::Data::I8(w) = codes.data() else { return None };
    let packed = if transposed { PackedB::from_cols(isa, k, n, 0, w, k) } else { PackedB::from_rows(isa, k, n, 0, w, n) };
    Some((packed, d.scale))
}

fn linear(m: &M, at: usize, isa: Isa) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    let (a, w, transposed, mut bias, mut end) = match t.op.name() {
        "MatMul" => (t.inputs[0]?, t.inputs[1]?, false, None, t.outputs[0]),
        "Gemm" => {
            let g = t.op.downcast::<Gemm>()?;
            if g.trans_a || g.alpha != 1.0 || (t.inputs.get(2).copied().flatten().is_some() && g.beta != 1.0) {
                return None;
            }
            (t.inputs[0]?, t.inputs[1]?, g.trans_b, t.inputs.get(2).copied().flatten(), t.outputs[0])
        }
        _ => return None,
    };
    let (x, xp, wide_input) = m.linear_input(a)?;
    let (packed, ws) = weights(m, w, transposed, isa)?;
    if m.g.fact(a).shape.last() != Some(&packed.k) || packed.k == 0 || packed.n == 0 {
        return None;
    }
    let n = packed.n;
    let acc: Vec<f32> = ws.iter().map(|s| s * xp.scale).collect();
    let mut bias_add = None;
    if bias.is_none() && t.op.name() == "MatMul" {
        if let [r] = m.readers(end)[..] {
            let add = &m.g.nodes[r];
            if add.op.downcast::<Binary>().is_some_and(|b| b.0 == BinaryKind::Add) && !m.g.outputs.contains(&end) {
                let other = add.inputs.iter().flatten().copied().find(|&v| v != end)?;
                if m.constant(other).is_some_and(|c| c.len() == n && c.shape().last() == Some(&n)) {
                    bias = Some(other);
                    end = add.outputs[0];
                    bias_add = Some(r);
                }
            }
        }
    }
    let bias = match bias {
        Some(b) => Some(bias_codes(m, b, &acc, n)?),
        None => None,
    };
    let (output, outputs, mut removed) = output_of(m, end);
    removed.extend(bias_add);
    let epilogue = if wide_input { make_epilogue(&acc, bias, output) } else { weights_epilogue(xp, &packed, &acc, bias, output) };
    let node = new_node(&t.name, QLinear { input: xp, wide_input, weights: packed, epilogue, output, sum_f32: false }, vec![x], outputs);
    Some(Rewrite { at, node, removed })
}

fn conv(m: &M, at: usize, isa: Isa) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    let c = t.op.downcast::<Conv>()?;
    if c.group != 1 || !matches!(c.auto_pad.as_str(), "NOTSET" | "VALID" | "") {
        return None;
    }
    let (x, xp) = m.dq_activation(t.inputs[0]?)?;
    let d = m.dq(t.inputs[1]?)?;
    let wt = m.g.fact(d.input).value.as_ref()?;
    let ws = wt.shape().to_vec();
    if ws.len() != 4 || wt.dtype() != DType::I8 || d.zero_point.iter().any(|&z| z != 0) || d.axis.is_some_and(|a| a != 0) {
        return None;
    }
    let (m_out, kdim) = (ws[0], ws[1] * ws[2] * ws[3]);
    if m_out == 0 || kdim == 0 {
        return None;
    }
    let octet_graph::Data::I8(w) = wt.data() else { return None };
    let packed = PackedB::from_cols(isa, kdim, m_out, 0, w, kdim);
    let acc: Vec<f32> = d.scale.iter().map(|s| s * xp.scale).collect();
    let bias = match t.inputs.get(2).copied().flatten() {
        Some(b) => Some(bias_codes(m, b, &acc, m_out)?),
        None => None,
    };
    let get = |v: &Option<Vec<i64>>, i: usize, dflt: i64| v.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(dflt) as usize;
    let pads =
        if c.auto_pad == "VALID" { [0; 4] } else { [get(&c.pads, 0, 0), get(&c.pads, 1, 0), get(&c.pads, 2, 0), get(&c.pads, 3, 0)] };
    let (output, outputs, removed) = output_of(m, t.outputs[0]);
    let op = QConv {
        input: xp,
        epilogue: weights_epilogue(xp, &packed, &acc, bias, output),
        weights: packed,
        output,
        kernel: [ws[2], ws[3]],
        stride: [get(&c.strides, 0, 1), get(&c.strides, 1, 1)],
        pad: pads,
        dilation: [get(&c.dilations, 0, 1), get(&c.dilations, 1, 1)],
        pixels_major: false,
    };
    Some(Rewrite { at, node: new_node(&t.name, op, vec![x], outputs), removed })
}

fn matmul_activations(m: &M, at: usize, isa: Isa) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    if t.op.name() != "MatMul" {
        return None;
    }
    let (a, ap) = m.dq_activation(t.inputs[0]?)?;
    let (b, bp) = m.dq_activation(t.inputs[1]?)?;
    let (sa, sb) = (&m.g.fact(a).shape, &m.g.fact(b).shape);
    if sa.len() < 2 || sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2] {
        return None;
    }
    let (output, outputs, removed) = output_of(m, t.outputs[0]);
    Some(Rewrite { at, node: new_node(&t.name, QMatMul { a: ap, b: bp, output, isa }, vec![a, b], outputs), removed })
}

/// Data-movement ops on 8-bit data when every output is requantized with the input's parameters.
fn moves_data(m: &M, at: usize) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    if lookup(t.op.name())?.quant != QuantRule::SharesInput || t.op.name() == "Concat" {
        return None;
    }
    let (x, xp) = m.dq_activation(t.inputs[0]?)?;
    if t.inputs[1..].iter().flatten().any(|&v| !m.g.fact(v).is_constant()) {
        return None;
    }
    let mut outputs = Vec::new();
    let mut removed = Vec::new();
    for &o in &t.outputs {
        let (q, p) = m.q_reader(o)?;
        if p != xp {
            return None;
        }
        outputs.push(m.g.nodes[q].outputs[0]);
        removed.push(q);
    }
    let mut inputs = t.inputs.clone();
    inputs[0] = Some(x);
    Some(Rewrite { at, node: Node { name: t.name.clone(), op: Arc::new(QMove(t.op.clone())), inputs, outputs, fused: vec![] }, removed })
}

/// Elementwise ops of one activation (unary, or with constant scalars) as a table.
fn table(m: &M, at: usize) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    let unary = t.op.downcast::<Unary>().is_some_and(|u| u.0.is_float_valued());
    let scalar_binary = t.op.downcast::<Binary>().is_some_and(|b| b.0.is_arithmetic());
    if !unary && !scalar_binary {
        return None;
    }
    let mut act = None;
    let mut consts: Vec<Option<Tensor>> = Vec::new();
    for (slot, v) in t.inputs.iter().enumerate() {
        let v = (*v)?;
        match m.constant(v) {
            Some(c) if c.len() == 1 && c.dtype() == DType::F32 => consts.push(Some(c)),
            Some(_) => return None,
            None => {
                if act.is_some() {
                    return None;
                }
                act = Some((slot, m.dq_activation(v)?));
                consts.push(None);
            }
        }
    }
    let (slot, (x, xp)) = act?;
    let (q, op_) = m.q_reader(t.outputs[0])?;
    let op = t.op.clone();
    let what = if t.fused.is_empty() { t.op.name().to_string() } else { format!("{}, fused", t.op.name()) };
    let table = QTable::build(xp, op_, what, |x| {
        let ins: Vec<Option<&Tensor>> = consts.iter().enumerate().map(|(i, c)| if i == slot { Some(&x) } else { c.as_ref() }).collect();
        op.eval(&ins, &EvalCtx::default()).map(|mut o| o.remove(0))
    })
    .ok()?;
    Some(Rewrite { at, node: new_node(&t.name, table, vec![x], m.g.nodes[q].outputs.clone()), removed: vec![q] })
}

fn binary(m: &M, at: usize) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    let kind = t.op.downcast::<Binary>()?.0;
    if !matches!(kind, BinaryKind::Add | BinaryKind::Sub | BinaryKind::Mul | BinaryKind::Div) {
        return None;
    }
    let mut inputs = Vec::new();
    let mut operands = Vec::new();
    for v in &t.inputs {
        let v = (*v)?;
        if let Some((x, p)) = m.dq_activation(v) {
            inputs.push(x);
            operands.push(Operand::Quantized(p));
        } else {
            m.g.fact(v).value.as_ref().filter(|c| c.dtype() == DType::F32)?;
            inputs.push(v);
            operands.push(Operand::Float);
        }
    }
    if !operands.iter().any(|o| matches!(o, Operand::Quantized(_))) {
        return None;
    }
    let (q, output) = m.q_reader(t.outputs[0])?;
    let op = QBinary { kind, operands: [operands[0].clone(), operands[1].clone()], output };
    Some(Rewrite { at, node: new_node(&t.name, op, inputs, m.g.nodes[q].outputs.clone()), removed: vec![q] })
}

/// Whether node `n` is a Softmax (not LogSoftmax or Hardmax) over the last axis.
fn softmax_over_last_axis(g: &TypedGraph, n: &Node) -> bool {
    let rank = n.outputs.first().map_or(0, |&o| g.fact(o).shape.len());
    n.op.downcast::<Softmax>().is_some_and(|s| s.is_softmax_over_last_axis(rank))
}

fn softmax(m: &M, at: usize) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    if !softmax_over_last_axis(m.g, t) {
        return None;
    }
    let (x, xp) = m.dq_activation(t.inputs[0]?)?;
    let (q, output) = m.q_reader(t.outputs[0])?;
    Some(Rewrite { at, node: new_node(&t.name, QSoftmax { input: xp, output }, vec![x], m.g.nodes[q].outputs.clone()), removed: vec![q] })
}

fn global_average_pool(m: &M, at: usize) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    let (x, input) = m.dq_activation(t.inputs[0]?)?;
    let (q, output) = m.q_reader(t.outputs[0])?;
    Some(Rewrite {
        at,
        node: new_node(&t.name, QGlobalAveragePool { input, output }, vec![x], m.g.nodes[q].outputs.clone()),
        removed: vec![q],
    })
}

fn layer_norm(m: &M, at: usize) -> Option<Rewrite> {
    let t = &m.g.nodes[at];
    let ln = t.op.downcast::<LayerNorm>()?;
    let shape = &m.g.fact(t.outputs[0]).shape;
    if ln.stats || !(ln.axis == -1 || ln.axis == shape.len() as i64 - 1) {
        return None;
    }
    let c = *shape.last()?;
    let x0 = t.inputs[0]?;
    let (x, xp) = match m.dq_activation(x0) {
        Some((x, xp)) => (x, Some(xp)),
        None if m.g.fact(x0).dtype == DType::F32 => (x0, None),
        None => return None,
    };
    let vec_of = |slot: usize, dflt: f32| -> Option<Vec<f32>> {
        match t.inputs.get(slot).copied().flatten() {
            None => Some(vec![dflt; c]),
            Some(v) => m.float_constant(v).filter(|g| g.len() == c),
        }
    };
    let (gamma, beta) = (vec_of(1, 1.0)?, vec_of(2, 0.0)?);
    let (output, outputs, removed) = output_of(m, t.outputs[0]);
    if xp.is_none() && matches!(output, Output::F32) {
        return None;
    }
    let op = QLayerNorm { input: xp, output, gamma, beta, epsilon: ln.epsilon };
    Some(Rewrite { at, node: new_node(&t.name, op, vec![x], outputs), removed })
}

/// A node that an int8 rule lowered or a kernel fusion made: its name (a later fusion may absorb
/// it) and the pattern that matched ([`Rule::pattern`], [`Fusion::pattern`]).
pub struct Matched {
    pub node: String,
    pub pattern: &'static str,
}

/// One int8 rule: a QDQ pattern anchored at a node of certain op types, and the kernel that
/// replaces it.
pub struct Rule {
    /// The pattern (doc/quantization.md, section 7).
    pub pattern: &'static str,
    /// What runs instead, as the support matrix says it.
    pub kernel: &'static str,
    /// Whether the rule may anchor at a node whose op type (`Op::name`) is this: a necessary
    /// condition, checked before `apply`, which then matches the whole pattern.
    pub anchors: fn(&str) -> bool,
    apply: fn(&M, usize, Isa) -> Option<Rewrite>,
}

/// Op types whose registry builder, with default attributes and one or two inputs, gives an op
/// that `accepts` (ops whose attributes only tune them, like LeakyRelu's alpha).
fn builds(op_type: &str, accepts: fn(&dyn Op) -> bool) -> bool {
    let Some(def) = lookup(op_type) else { return false };
    let attrs = Attrs::default();
    (1..=2).any(|num_inputs| {
        let ctx = BuildCtx { attrs: &attrs, opset: OPSETS.1, num_inputs, num_outputs: 1 };
        (def.build)(&ctx).is_ok_and(|op| op.name() == op_type && accepts(&*op))
    })
}

fn is_table_op(op: &dyn Op) -> bool {
    op.downcast::<Unary>().is_some_and(|u| u.0.is_float_valued()) || op.downcast::<Binary>().is_some_and(|b| b.0.is_arithmetic())
}

fn is_two_operand_arithmetic(op: &dyn Op) -> bool {
    op.downcast::<Binary>().is_some_and(|b| matches!(b.0, BinaryKind::Add | BinaryKind::Sub | BinaryKind::Mul | BinaryKind::Div))
}

/// Max of codes commutes with a monotonic dequantization: the max pools run on 8-bit data.
const MAX_POOLS: [&str; 2] = ["MaxPool", "GlobalMaxPool"];

/// The int8 rules, tried in this order at every node; the first whose pattern matches wins.
pub static RULES: &[Rule] = &[
    Rule {
        pattern: "DQ(x), DQ(W)[, DQ(b)] → MatMul|Gemm [→ Add(b)] → Q (x 8-bit, or uint16 as two bytes; f32 out without Q)",
        kernel: "u8×s8 GEMM (weights packed; Q·Kᵀ → softmax → P·V fused)",
        anchors: |t| matches!(t, "MatMul" | "Gemm"),
        apply: linear,
    },
    Rule {
        pattern: "DQ(x), DQ(W)[, DQ(b)] → Conv → Q",
        kernel: "im2col + u8×s8 GEMM (2-D, group 1)",
        anchors: |t| t == "Conv",
        apply: conv,
    },
    Rule {
        pattern: "DQ(a), DQ(b) → MatMul → Q (Q·Kᵀ, P·V)",
        kernel: "u8×s8 GEMM (weights packed; Q·Kᵀ → softmax → P·V fused)",
        anchors: |t| t == "MatMul",
        apply: matmul_activations,
    },
    Rule {
        pattern: "DQ(x) → MaxPool|GlobalMaxPool → Q (same parameters)",
        kernel: "max of 8-bit codes (same parameters in and out)",
        anchors: |t| MAX_POOLS.contains(&t),
        apply: |m, at, _| moves_data(m, at),
    },
    Rule {
        pattern: "DQ(x) → Reshape|Transpose|Split|… → Q (same parameters)",
        kernel: "moves 8-bit data (same parameters in and out)",
        anchors: |t| t != "Concat" && !MAX_POOLS.contains(&t) && lookup(t).is_some_and(|d| d.quant == QuantRule::SharesInput),
        apply: |m, at, _| moves_data(m, at),
    },
    Rule {
        pattern: "DQ(x) → unary op | op with constant scalars → Q",
        kernel: "256-entry table (in the epilogue of a GEMM before it, if any)",
        anchors: |t| builds(t, is_table_op),
        apply: |m, at, _| table(m, at),
    },
    Rule {
        pattern: "DQ(a), DQ(b)|constant → Add|Sub|Mul|Div → Q",
        kernel: "dq ∘ op ∘ q in one pass",
        anchors: |t| builds(t, is_two_operand_arithmetic),
        apply: |m, at, _| binary(m, at),
    },
    Rule {
        pattern: "DQ(x) → GlobalAveragePool → Q",
        kernel: "integer sum of each channel's codes, one requantization",
        anchors: |t| t == "GlobalAveragePool",
        apply: |m, at, _| global_average_pool(m, at),
    },
    Rule {
        pattern: "DQ(x) → Softmax (last axis) → Q",
        kernel: "exp of integer logit differences (last axis)",
        anchors: |t| t == "Softmax",
        apply: |m, at, _| softmax(m, at),
    },
    Rule {
        pattern: "DQ(x) → LayerNormalization (last axis) [→ Q]",
        kernel: "integer mean and variance, f32 normalise (last axis)",
        anchors: |t| t == "LayerNormalization",
        apply: |m, at, _| layer_norm(m, at),
    },
];

/// How an op runs once a model is quantized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Int8Support {
    /// No int8 rule anchors at it: it runs in float between DequantizeLinear and QuantizeLinear.
    FloatBetweenDqQ,
    /// The op is itself a quantization boundary.
    QdqBoundary,
    /// The kernels of the rules anchored at it; where no pattern matches (other parameters,
    /// shapes), it runs in float between dq and q.
    Kernels(Vec<&'static str>),
}

impl Int8Support {
    pub fn describe(&self) -> String {
        match self {
            Int8Support::FloatBetweenDqQ => "float between dq and q".into(),
            Int8Support::QdqBoundary => "quantization boundary".into(),
            Int8Support::Kernels(k) => k.join("; "),
        }
    }
}

/// The support matrix's int8 column for a registry op, read from [`RULES`].
pub fn int8_support(def: &OpDef) -> Int8Support {
    if matches!(def.name, "QuantizeLinear" | "DequantizeLinear") {
        return Int8Support::QdqBoundary;
    }
    let mut kernels: Vec<&'static str> = Vec::new();
    for r in RULES.iter().filter(|r| (r.anchors)(def.name)) {
        if !kernels.contains(&r.kernel) {
            kernels.push(r.kernel);
        }
    }
    if kernels.is_empty() {
        Int8Support::FloatBetweenDqQ
    } else {
        Int8Support::Kernels(kernels)
    }
}

/// Applies the first matching rule of [`RULES`] at every node, in order, then fuses kernels
/// ([`FUSIONS`]). Returns the nodes it lowered and fused, each with its pattern, in that order.
pub fn lower(g: &mut TypedGraph, isa: Isa) -> Vec<Matched> {
    let mut matched = Vec::new();
    let mut anchored: std::collections::HashMap<&'static str, Vec<&'static Rule>> = std::collections::HashMap::new();
    let mut ix = Index::of_typed(g);
    let mut i = 0;
    while i < g.nodes.len() {
        let rewrite = {
            let m = M { g, ix: &ix };
            let op_type = g.nodes[i].op.name();
            let rules = anchored.entry(op_type).or_insert_with(|| RULES.iter().filter(|r| (r.anchors)(op_type)).collect());
            rules.iter().find_map(|&r| (r.apply)(&m, i, isa).map(|rw| (r, rw)))
        };
        if let Some((rule, r)) = rewrite {
            matched.push(Matched { node: g.nodes[i].name.clone(), pattern: rule.pattern });
            let consumed: Vec<ValueId> =
                std::iter::once(r.at).chain(r.removed.iter().copied()).flat_map(|n| g.nodes[n].inputs.iter().flatten().copied()).collect();
            let removed_names: Vec<String> = r.removed.iter().map(|&q| g.nodes[q].name.clone()).collect();
            g.replace_node(r.at, r.node);
            g.nodes[r.at].fused.extend(removed_names);
            let mut k = 0;
            g.nodes.retain(|_| {
                k += 1;
                !r.removed.contains(&(k - 1))
            });
            ix = Index::of_typed(g);
            release_packed_constants(g, &ix, &consumed);
        }
        i += 1;
    }
    g.remove_dead_nodes();
    matched.extend(fuse_kernels(g));
    matched
}

/// Frees the integer weights and biases that a rewrite packed into its kernel: the constants
/// behind the DequantizeLinear nodes whose outputs the replaced nodes read, once nothing live
/// reads them (see `TypedGraph::release_constant`; sessions that move their weights into plans
/// then hold each weight once).
fn release_packed_constants(g: &mut TypedGraph, ix: &Index, consumed: &[ValueId]) {
    for &v in consumed {
        let Some(p) = ix.producer(v) else { continue };
        let Some(c) = g.nodes[p].inputs.first().copied().flatten().filter(|_| g.nodes[p].op.downcast::<DequantizeLinear>().is_some())
        else {
            continue;
        };
        if g.fact(c).is_constant() {
            g.release_constant(c);
        }
    }
}

/// One fusion between lowered kernels: a pattern over kernels and what it makes of them.
pub struct Fusion {
    /// The pattern and its result.
    pub pattern: &'static str,
    /// Matches at node `i`; the node index to replace and its replacement.
    apply: fn(&TypedGraph, &Index, usize) -> Option<(usize, Node)>,
}

/// The fusions between lowered kernels, in order of priority (each is applied wherever it
/// matches before the next is tried, so that an attention reads its operands in place before the
/// data movement they pass through is fused on its own), after the
/// `QMove → QTable` reordering (tables commute with data movement: `QMove → QTable` becomes
/// `QTable → QMove`, which brings a table next to the GEMM that feeds it and a Transpose next to
/// the attention that reads it).
pub static FUSIONS: &[Fusion] = &[
    Fusion { pattern: "QLinear|QConv → QTable: the table in the GEMM's epilogue", apply: epilogue_table },
    Fusion { pattern: "QLinear|QConv (f32 out) → GELU|Erf|Tanh|Sigmoid [→ Q]: the f32 activation in the GEMM's epilogue", apply: epilogue_activation },
    Fusion {
        pattern: "QLinear → QBinary(Add, same shape), or QLinear (f32 out) → Add(f32 of the same shape): the residual in the GEMM's epilogue",
        apply: epilogue_residual,
    },
    Fusion {
        pattern: "QConv → Reshape([N, M, OH·OW]) → Transpose(0, 2, 1): the convolution writes [N, pixels, channels] as its GEMM makes them (a patch embedding's tokens)",
        apply: conv_pixels_major,
    },
    Fusion { pattern: "QMatMul(Q, Kᵀ) → QSoftmax → QMatMul(·, V): one attention kernel per (batch, head)", apply: attention },
    Fusion {
        pattern: "QMatMul(Q, Kᵀ) (f32 out) → [scale] → Softmax → MatMul(·, DQ(V)): one attention kernel per (batch, head), f32 softmax and 16-bit probabilities",
        apply: attention_float_softmax,
    },
    Fusion {
        pattern: "QAttention → Transpose of heads and rows on 8-bit data: the attention writes each head's rows in place",
        apply: attention_heads_interleaved,
    },
    Fusion {
        pattern: "Transpose|Split|Squeeze|Reshape … [→ QTable] → QAttention on 8-bit data: the attention reads its operands in place (and through the table) as it packs each head",
        apply: attention_in_place,
    },
    Fusion { pattern: "Transpose → Split on 8-bit data: one strided copy per output", apply: transpose_split },
];

/// Applies [`FUSIONS`] until none matches; returns the fused nodes, each with its pattern.
fn fuse_kernels(g: &mut TypedGraph) -> Vec<Matched> {
    let mut ix = Index::of_typed(g);
    let mut i = 0;
    while i < g.nodes.len() {
        if table_before_move(g, &ix, i) {
            ix = Index::of_typed(g);
        } else {
            i += 1;
        }
    }
    let mut matched = Vec::new();
    'fuse: loop {
        for fusion in FUSIONS {
            if let Some((at, node)) = (0..g.nodes.len()).find_map(|i| (fusion.apply)(g, &ix, i)) {
                matched.push(Matched { node: node.name.clone(), pattern: fusion.pattern });
                g.replace_node(at, node);
                g.remove_dead_nodes();
                ix = Index::of_typed(g);
                continue 'fuse;
            }
        }
        return matched;
    }
}

/// Rewrites `QMove(x) → QTable` (the table the move's only reader) as `QTable(x) → QMove`.
fn table_before_move(g: &mut TypedGraph, ix: &Index, i: usize) -> bool {
    let n = g.nodes[i].clone();
    if n.op.downcast::<QTable>().is_none() {
        return false;
    }
    let Some(x) = n.inputs[0] else { return false };
    let Some(m) = ix.producer(x) else { return false };
    let mv = &g.nodes[m];
    if mv.op.downcast::<QMove>().is_none() || mv.outputs.len() != 1 || ix.sole_reader(x) != Some(i) {
        return false;
    }
    let src = mv.inputs[0].expect("a move has a data input");
    let mut fact = g.fact(src).clone();
    fact.dtype = g.fact(n.outputs[0]).dtype;
    let mid = g.add_value(&format!("{}.before_move", g.names[n.outputs[0]]), fact);
    let table = Node { inputs: vec![Some(src)], outputs: vec![mid], ..n };
    let mut moved = g.nodes[m].clone();
    moved.inputs[0] = Some(mid);
    moved.outputs = g.nodes[i].outputs.clone();
    g.nodes[m] = table;
    g.nodes[i] = moved;
    true
}

fn epilogue_table(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let n = &g.nodes[i];
    let r = ix.sole_reader(n.outputs[0])?;
    let table = g.nodes[r].op.downcast::<QTable>()?;
    let with_table = |e: &octet_kernels::i8::Epilogue, out: Output| -> Option<octet_kernels::i8::Epilogue> {
        match out {
            Output::Quantized(p) if p == table.input && e.table.is_none() => {
                let mut e = e.clone();
                e.table = Some(Box::new(*table.table));
                Some(e)
            }
            _ => None,
        }
    };
    let op: Arc<dyn Op> = if let Some(l) = n.op.downcast::<QLinear>() {
        Arc::new(QLinear { epilogue: with_table(&l.epilogue, l.output)?, output: Output::Quantized(table.output), ..l.clone() })
    } else if let Some(c) = n.op.downcast::<QConv>() {
        Arc::new(QConv { epilogue: with_table(&c.epilogue, c.output)?, output: Output::Quantized(table.output), ..c.clone() })
    } else {
        return None;
    };
    Some((r, Node { name: n.name.clone(), op, inputs: n.inputs.clone(), outputs: g.nodes[r].outputs.clone(), fused: vec![] }))
}

/// `QLinear|QConv (f32 out) → float activation [→ Q]` → the activation in the GEMM's epilogue:
/// quantized once, after it, when an 8-bit Q reads it (annotate::activation_inputs), else
/// written f32 (int8-gemm's GELU before a 16-bit Linear input).
fn epilogue_activation(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let n = &g.nodes[i];
    let r = ix.sole_reader(n.outputs[0])?;
    let kind = g.nodes[r].op.downcast::<Unary>()?.0;
    let f = kind.f32_kernel()?;
    let (output, outputs, removed) = output_of(&M { g, ix }, g.nodes[r].outputs[0]);
    let with_activation = |e: &octet_kernels::i8::Epilogue, out: Output| -> Option<octet_kernels::i8::Epilogue> {
        if !matches!(out, Output::F32) || e.table.is_some() || e.residual.is_some() || e.activation.is_some() {
            return None;
        }
        let (out, out_scale) = match output {
            Output::Quantized(p) => (p.out_type(), p.scale),
            Output::F32 => (octet_kernels::i8::OutType::F32, 1.0),
        };
        Some(octet_kernels::i8::Epilogue { out, activation: Some(octet_kernels::i8::Activation { f, out_scale }), ..e.clone() })
    };
    let op: Arc<dyn Op> = if let Some(l) = n.op.downcast::<QLinear>().filter(|l| !l.sum_f32) {
        Arc::new(QLinear { epilogue: with_activation(&l.epilogue, l.output)?, output, ..l.clone() })
    } else if let Some(c) = n.op.downcast::<QConv>() {
        Arc::new(QConv { epilogue: with_activation(&c.epilogue, c.output)?, output, ..c.clone() })
    } else {
        return None;
    };
    let at = removed.first().copied().unwrap_or(r);
    Some((at, Node { name: n.name.clone(), op, inputs: n.inputs.clone(), outputs, fused: vec![] }))
}

/// `QLinear → Add(·, r)` with `r` of the output's shape → the residual in the GEMM's epilogue:
/// a `QBinary` Add of 8-bit codes (`Epilogue::residual`), or with an f32 output the float Add
/// of the f32 residual stream (`QLinear::sum_f32`).
fn epilogue_residual(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let n = &g.nodes[i];
    let l = n.op.downcast::<QLinear>()?;
    if l.epilogue.residual.is_some() || l.sum_f32 || n.inputs.len() != 1 {
        return None;
    }
    let r = ix.sole_reader(n.outputs[0])?;
    let add = &g.nodes[r];
    let mine = add.inputs.iter().position(|&v| v == Some(n.outputs[0]))?;
    let other = add.inputs.get(1 - mine).copied().flatten()?;
    let y = g.fact(n.outputs[0]);
    if add.inputs.len() != 2 || g.fact(other).shape != y.shape || g.fact(add.outputs[0]).shape != y.shape {
        return None;
    }
    let op = match (l.output, add.op.downcast::<QBinary>(), add.op.downcast::<Binary>()) {
        (Output::Quantized(y), Some(b), _) if b.kind == BinaryKind::Add => {
            let (Operand::Quantized(py), Operand::Quantized(pr)) = (&b.operands[mine], &b.operands[1 - mine]) else { return None };
            if *py != y {
                return None;
            }
            let mut epilogue = l.epilogue.clone();
            epilogue.residual = Some(octet_kernels::i8::Residual { y, r: *pr, out: b.output });
            QLinear { epilogue, output: Output::Quantized(b.output), ..l.clone() }
        }
        (Output::F32, _, Some(b)) if b.0 == BinaryKind::Add && g.fact(other).dtype == DType::F32 => QLinear { sum_f32: true, ..l.clone() },
        _ => return None,
    };
    let fused = n.fused.iter().chain(std::iter::once(&add.name)).chain(&add.fused).cloned().collect();
    Some((r, Node { name: n.name.clone(), op: Arc::new(op), inputs: vec![n.inputs[0], Some(other)], outputs: add.outputs.clone(), fused }))
}

/// The data movement an 8-bit move node performs.
fn eight_bit_move(n: &Node) -> Option<&dyn Op> {
    n.op.downcast::<QMove>().map(|m| m.0.as_ref())
}

/// The data movement op of a node: the op an 8-bit move wraps, or the node's own op (on f32 data).
fn movement_op(n: &Node) -> &dyn Op {
    eight_bit_move(n).unwrap_or(n.op.as_ref())
}

fn conv_pixels_major(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let n = &g.nodes[i];
    let c = n.op.downcast::<QConv>().filter(|c| !c.pixels_major)?;
    let r = ix.sole_reader(n.outputs[0])?;
    let (x, y) = (&g.fact(n.outputs[0]).shape, &g.fact(g.nodes[r].outputs[0]).shape);
    if movement_op(&g.nodes[r]).name() != "Reshape" || x.len() != 4 || y[..] != [x[0], x[1], x[2] * x[3]] {
        return None;
    }
    let t = ix.sole_reader(g.nodes[r].outputs[0])?;
    let swaps = movement_op(&g.nodes[t]).downcast::<octet_graph::ops::shape::Transpose>().is_some_and(|tr| tr.swaps_neighbours(3, 1));
    if !swaps {
        return None;
    }
    let op = QConv { pixels_major: true, ..c.clone() };
    Some((t, Node { name: n.name.clone(), op: Arc::new(op), inputs: n.inputs.clone(), outputs: g.nodes[t].outputs.clone(), fused: vec![] }))
}

fn transpose_split(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    use octet_graph::ops::shape::{Split, Transpose};
    use octet_graph::ops::view::View;
    let n = &g.nodes[i];
    let split = n.op.downcast::<QMove>()?.0.downcast::<Split>()?;
    let t = ix.producer(n.inputs[0]?)?;
    let tr = g.nodes[t].op.downcast::<QMove>()?.0.downcast::<Transpose>()?;
    if ix.sole_reader(g.nodes[t].outputs[0]) != Some(i) {
        return None;
    }
    let x = g.nodes[t].inputs[0]?;
    let xs = &g.fact(x).shape;
    let perm = tr.perm_for(xs.len()).ok()?;
    let base = View::of(xs);
    let whole = View { base: 0, shape: perm.iter().map(|&a| xs[a]).collect(), strides: perm.iter().map(|&a| base.strides[a]).collect() };
    let axis = octet_graph::op::norm_axis(split.axis, whole.shape.len()).ok()?;
    let mut views = Vec::new();
    let mut start = 0isize;
    for &o in &n.outputs {
        let size = g.fact(o).shape[axis];
        let mut v = whole.clone();
        v.base = start * whole.strides[axis];
        v.shape[axis] = size;
        views.push(v);
        start += size as isize;
    }
    Some((
        i,
        Node { name: n.name.clone(), op: Arc::new(QViews { views }), inputs: vec![Some(x)], outputs: n.outputs.clone(), fused: vec![] },
    ))
}

/// What an 8-bit plan's node does to the values an attention reads: an 8-bit move, a table.
fn eight_bit_passage(n: &Node) -> Option<Passage<'_>> {
    match eight_bit_move(n) {
        Some(op) => Some(Passage::Move(op)),
        None => n.op.downcast::<QTable>().map(|_| Passage::Elementwise),
    }
}

/// `QAttention` whose operands were made by 8-bit data movement and tables ([`view_back`]: the
/// Transpose, Split and Squeezes that cut Q, K and V out of a QKV projection, the tables of the
/// scalar steps on Q and K) → the attention reading each operand in place, through the tables
/// (composed into one; an operand whose tables do not chain is left as it is). A Split is passed
/// only when the attention reads every output of it.
fn attention_in_place(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let n = &g.nodes[i];
    let a = n.op.downcast::<QAttention>()?;
    if a.reads.iter().any(|r| r.view.is_some() || r.table.is_some()) || n.inputs.len() != 3 {
        return None;
    }
    let mut walks: Vec<Option<(ValueId, octet_graph::ops::attention::OperandView, Vec<usize>)>> =
        n.inputs.iter().map(|&x| view_back(g, ix, x?, eight_bit_passage)).collect();
    for (s, split) in g.nodes.iter().enumerate().filter(|(_, s)| s.op.name() == "Split") {
        let through = |w: &Option<(ValueId, _, Vec<usize>)>| w.as_ref().is_some_and(|(_, _, p)| p.contains(&s));
        if walks.iter().filter(|w| through(w)).count() < split.outputs.len() {
            walks.iter_mut().filter(|w| through(w)).for_each(|w| *w = None);
        }
    }
    if walks.iter().all(Option::is_none) {
        return None;
    }
    let mut inputs = n.inputs.clone();
    let mut reads: [OperandRead; 3] = Default::default();
    for (j, walk) in walks.into_iter().enumerate() {
        let Some((source, view, passed)) = walk else { continue };
        let tables: Vec<&QTable> = passed.iter().filter_map(|&p| g.nodes[p].op.downcast::<QTable>()).collect();
        let table = QTable::compose(&tables);
        if table.is_none() && !tables.is_empty() {
            continue;
        }
        reads[j] = OperandRead { view: Some(view), table };
        inputs[j] = Some(source);
    }
    let op = QAttention { reads, ..a.clone() };
    let facts: Vec<Option<&octet_graph::Fact>> = inputs.iter().map(|v| v.map(|v| g.fact(v))).collect();
    op.infer(&facts).ok()?;
    Some((i, Node { name: n.name.clone(), op: Arc::new(op), inputs, outputs: n.outputs.clone(), fused: vec![] }))
}

fn attention(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let a = &g.nodes[i];
    let scores = a.op.downcast::<QMatMul>()?;
    let s = ix.sole_reader(a.outputs[0])?;
    let softmax = g.nodes[s].op.downcast::<QSoftmax>()?;
    let b = ix.sole_reader(g.nodes[s].outputs[0])?;
    let context = g.nodes[b].op.downcast::<QMatMul>()?;
    if g.nodes[b].inputs[0] != Some(g.nodes[s].outputs[0]) || !matches!(scores.output, Output::Quantized(p) if p == softmax.input) {
        return None;
    }
    let kt = a.inputs[1]?;
    let keys = keys_of(g, ix, kt, i);
    let op = QAttention {
        scores: scores.clone(),
        softmax: Some(softmax.clone()),
        context: context.clone(),
        keys_as_rows: keys.is_some(),
        logit_scale: 1.0,
        heads_interleaved: false,
        reads: Default::default(),
    };
    let inputs = vec![a.inputs[0], Some(keys.unwrap_or(kt)), g.nodes[b].inputs[1]];
    Some((b, Node { name: g.nodes[b].name.clone(), op: Arc::new(op), inputs, outputs: g.nodes[b].outputs.clone(), fused: vec![] }))
}

/// `QAttention → QMove(Transpose)` swapping the heads and rows axes (`[.., H, S, D] → [.., S, H,
/// D]`, as attention does before merging the heads) → QAttention writing that layout.
fn attention_heads_interleaved(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let n = &g.nodes[i];
    let a = n.op.downcast::<QAttention>()?;
    let r = ix.sole_reader(n.outputs[0])?;
    let t = &g.nodes[r];
    let rank = g.fact(n.outputs[0]).shape.len();
    if a.heads_interleaved || rank < 3 || !swaps_axes(t, rank, rank - 3) {
        return None;
    }
    let op = QAttention { heads_interleaved: true, ..a.clone() };
    let fused = n.fused.iter().chain(std::iter::once(&t.name)).chain(&t.fused).cloned().collect();
    Some((r, Node { name: n.name.clone(), op: Arc::new(op), inputs: n.inputs.clone(), outputs: t.outputs.clone(), fused }))
}

/// K itself when `kt` (read by node `reader` alone) is an 8-bit Transpose of K's last two axes.
fn keys_of(g: &TypedGraph, ix: &Index, kt: ValueId, reader: usize) -> Option<ValueId> {
    let t = ix.producer(kt).map(|t| &g.nodes[t]).filter(|_| ix.sole_reader(kt) == Some(reader))?;
    let rank = g.fact(kt).shape.len();
    (rank >= 2 && swaps_axes(t, rank, rank - 2)).then_some(t.inputs[0]?)
}

/// Whether `node` is an 8-bit Transpose of a rank-`rank` tensor that swaps axes `axis` and
/// `axis + 1` and keeps every other.
fn swaps_axes(node: &Node, rank: usize, axis: usize) -> bool {
    eight_bit_move(node).and_then(|op| op.downcast::<octet_graph::ops::shape::Transpose>()).is_some_and(|t| t.swaps_neighbours(rank, axis))
}

/// `QMatMul(Q, Kᵀ) → [Mul|Div by a scalar] → Softmax → MatMul(·, DQ(V)) [→ Q]` with float
/// logits and probabilities (octet's default attention core, annotate::attention_core) →
/// QAttention with 16-bit probabilities. Node `i` is the second product.
fn attention_float_softmax(g: &TypedGraph, ix: &Index, i: usize) -> Option<(usize, Node)> {
    let m = M { g, ix };
    let pv = &g.nodes[i];
    if pv.op.name() != "MatMul" {
        return None;
    }
    let (v, vp) = m.dq_activation(pv.inputs[1]?)?;
    let p = pv.inputs[0]?;
    let s = ix.producer(p).filter(|&s| ix.sole_reader(p) == Some(i) && softmax_over_last_axis(g, &g.nodes[s]))?;
    let (mut logits, mut reader, mut logit_scale) = (g.nodes[s].inputs[0]?, s, 1.0f32);
    let a = loop {
        let at = ix.producer(logits).filter(|_| ix.sole_reader(logits) == Some(reader))?;
        let n = &g.nodes[at];
        if n.op.downcast::<QMatMul>().is_some() {
            break at;
        }
        let (x, k) = scalar_scale(g, n)?;
        logit_scale *= k;
        (logits, reader) = (x, at);
    };
    let scores = g.nodes[a].op.downcast::<QMatMul>()?;
    if !matches!(scores.output, Output::F32) || g.fact(v).shape.len() != g.fact(p).shape.len() {
        return None;
    }
    let (output, outputs, removed) = output_of(&m, pv.outputs[0]);
    let context = QMatMul { a: kernels::PROBABILITY_CODES, b: vp, output, isa: scores.isa };
    let kt = g.nodes[a].inputs[1]?;
    let keys = keys_of(g, ix, kt, a);
    let op = QAttention {
        scores: scores.clone(),
        softmax: None,
        context,
        keys_as_rows: keys.is_some(),
        logit_scale,
        heads_interleaved: false,
        reads: Default::default(),
    };
    let inputs = vec![g.nodes[a].inputs[0], Some(keys.unwrap_or(kt)), Some(v)];
    let at = removed.first().copied().unwrap_or(i);
    Some((at, Node { name: pv.name.clone(), op: Arc::new(op), inputs, outputs, fused: vec![] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(op: &str) -> String {
        int8_support(lookup(op).expect("a registry op")).describe()
    }

    #[test]
    fn the_int8_column_is_read_from_the_rules() {
        assert_eq!(column("QuantizeLinear"), "quantization boundary");
        assert!(column("MatMul").contains("GEMM"), "{}", column("MatMul"));
        assert!(column("Gelu").contains("256-entry table"), "{}", column("Gelu"));
        assert!(column("Mul").contains("table") && column("Mul").contains("one pass"), "{}", column("Mul"));
        assert!(column("Transpose").contains("moves 8-bit data"), "{}", column("Transpose"));
        assert!(column("MaxPool").contains("max of 8-bit codes"), "{}", column("MaxPool"));
        // Clip is its own op, not a table the lowering builds: the column must not claim one.
        assert_eq!(column("Clip"), "float between dq and q");
        assert_eq!(column("Concat"), "float between dq and q");
        for r in RULES {
            assert!(registry_ops().any(|op| (r.anchors)(op)), "the rule for {} anchors at no registry op", r.pattern);
        }
    }

    fn registry_ops() -> impl Iterator<Item = &'static str> {
        octet_graph::ops::REGISTRY.iter().map(|d| d.name)
    }
}
