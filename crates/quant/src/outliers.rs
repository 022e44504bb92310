//! Outlier channels (doc/quantization.md, section 9): pretrained transformers carry a few
//! channels 20–100× larger than the rest in the residual stream and around LayerNorm, and one
//! per-tensor 8-bit grid stretched over them leaves the other channels a handful of levels.
//!
//! Two remedies, both decided from per-channel statistics of a float run:
//! - **smoothing** (SmoothQuant): a LayerNorm whose output feeds only Linears hands a per-channel
//!   factor `s` to them — `γ/s`, `β/s` and `s·W` compute the same function — with
//!   `s_k = max|x_k|^α / max|W_k|^(1−α)`, α chosen per LayerNorm by the quantization error of the
//!   Linear outputs on sampled rows;
//! - **a wider residual stream**: values whose largest channel exceeds the median channel by
//!   [`OUTLIER_RATIO`] or more stay float — the Add, Concat and LayerNorm that produce or read
//!   them run in float (with the data movement around them), and a Linear or Conv that produces
//!   one writes float. The residual stream is what Add and Concat produce or read and what
//!   LayerNorm reads.

use std::collections::HashMap;

use octet_graph::{Error, Graph, QParams, QType, Tensor, ValueId};
use octet_kernels::f32::{matmul, MatLayout, Threads};
use octet_onnx::proto::tensor_proto::DataType;
use octet_onnx::proto::{ModelProto, TensorProto};
use octet_runtime::{Engine, Hooks, Session};
use serde::Serialize;

/// A value whose largest channel maximum is this many times its median channel maximum has
/// outlier channels.
pub const OUTLIER_RATIO: f32 = 10.0;
/// Migration strengths tried per LayerNorm (besides leaving it alone).
pub const ALPHAS: [f32; 8] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
/// Rows of each LayerNorm output kept to choose α: up to [`ROWS_PER_RUN`] evenly spaced rows of
/// each run, [`SAMPLE_ROWS`] in all.
const SAMPLE_ROWS: usize = 1024;
const ROWS_PER_RUN: usize = 32;

/// A Linear input whose 8-bit grid (its range with 0, in 255 steps) keeps less than this SQNR
/// of its values on the calibration samples is *coarse*: the 8-bit grid of a Gaussian-like
/// tensor keeps 38–41 dB, a heavy tail of a few channels costs the rest their levels.
pub const COARSE_GRID_DB: f32 = 35.0;

/// Per-channel statistics over the last axis of one value, and its overall range and energy.
#[derive(Clone, Debug, Default)]
pub struct ChannelStats {
    pub absmax: Vec<f32>,
    /// Sampled rows (for LayerNorm outputs that may be smoothed), `rows × channels`.
    pub rows: Vec<f32>,
    /// The range with 0 (as a grid holds it: `min ≤ 0 ≤ max`), `Σx²` and the element count.
    pub min: f32,
    pub max: f32,
    pub sum_sq: f64,
    pub count: u64,
}

impl ChannelStats {
    /// The SQNR in dB that an 8-bit grid over the value's range keeps of its values:
    /// `E[x²] / (step² / 12)` with `step = (max − min) / 255` (doc/quantization.md, eq. 2).
    pub fn grid_sqnr_8bit(&self) -> f32 {
        let step = (self.max as f64 - self.min as f64) / 255.0;
        let signal = self.sum_sq / self.count.max(1) as f64;
        if step <= 0.0 {
            return f32::INFINITY;
        }
        (10.0 * (signal / (step * step / 12.0)).log10()) as f32
    }

    /// Largest channel maximum over the median channel maximum.
    pub fn outlier_ratio(&self) -> f32 {
        let mut m = self.absmax.clone();
        if m.is_empty() {
            return 1.0;
        }
        m.sort_by(f32::total_cmp);
        m[m.len() - 1] / m[m.len() / 2].max(f32::MIN_POSITIVE)
    }
}

struct Collect<'a> {
    /// Value → keep sampled rows.
    wanted: &'a HashMap<ValueId, bool>,
    stats: &'a mut HashMap<ValueId, ChannelStats>,
}

impl Hooks for Collect<'_> {
    fn value(&mut self, v: ValueId, t: &Tensor) -> octet_graph::Result<()> {
        let (Some(&keep_rows), Some(xs)) = (self.wanted.get(&v), t.as_f32()) else { return Ok(()) };
        let c = *t.shape().last().unwrap_or(&1);
        if c == 0 || t.rank() < 2 {
            return Ok(());
        }
        let s = self.stats.entry(v).or_insert_with(|| ChannelStats { absmax: vec![0.0; c], ..Default::default() });
        for row in xs.chunks_exact(c) {
            for (m, &x) in s.absmax.iter_mut().zip(row) {
                *m = m.max(x.abs());
            }
        }
        let (lo, hi, sq) = xs.iter().fold((0.0f32, 0.0f32, 0.0f64), |(lo, hi, sq), &x| (lo.min(x), hi.max(x), sq + x as f64 * x as f64));
        (s.min, s.max, s.sum_sq, s.count) = (s.min.min(lo), s.max.max(hi), s.sum_sq + sq, s.count + xs.len() as u64);
        if keep_rows {
            let rows = xs.len() / c;
            let step = rows.div_ceil(ROWS_PER_RUN).max(1);
            for row in xs.chunks_exact(c).step_by(step) {
                if s.rows.len() >= SAMPLE_ROWS * c {
                    break;
                }
                s.rows.extend_from_slice(row);
            }
        }
        Ok(())
    }
}

/// The constant behind `v`: an initializer or a Constant node's value, possibly through Identity
/// nodes (exporters deduplicate equal initializers that way).
fn constant(g: &Graph, v: ValueId) -> Option<&Tensor> {
    if let Some(t) = g.constants.get(&v) {
        return Some(t);
    }
    let p = g.nodes.iter().find(|n| n.outputs.contains(&v))?;
    match p.op.name() {
        "Identity" => constant(g, p.inputs.first().copied().flatten()?),
        "Constant" => p.op.downcast::<octet_graph::ops::shape::Constant>().map(|c| &*c.value),
        _ => None,
    }
}

/// A Linear reading a smoothable LayerNorm: its node and constant weight, `[N, K]` when
/// `transposed` (Gemm with transB), else `[K, N]`.
#[derive(Clone, Copy)]
struct Reader {
    node: usize,
    weight: ValueId,
    transposed: bool,
}

/// A LayerNorm whose output only Linears read, directly or through a Gather of tokens (the
/// class token before the head).
struct Smoothable {
    /// The node that produces the normalised output: a LayerNormalization, or the last node of
    /// one spelled out ([`spelled_out_layer_norm`]).
    norm: usize,
    /// Where γ and β are read: (node, input slot).
    gamma: (usize, usize),
    beta: Option<(usize, usize)>,
    output: ValueId,
    linears: Vec<Reader>,
    /// The Gathers between the LayerNorm and Linears: their outputs carry the smoothed values too.
    gathers: Vec<usize>,
}

/// The Linears that read `v` (recording the Gathers passed in `gathers`), or `None` when
/// anything else (that is not shape arithmetic) does.
fn linear_readers(g: &Graph, v: ValueId, gathers: &mut Vec<usize>) -> Option<Vec<Reader>> {
    let mut out = Vec::new();
    for (j, r) in g.nodes.iter().enumerate().filter(|(_, r)| r.inputs.contains(&Some(v))) {
        let matrix = |slot: usize| {
            r.inputs.get(slot).copied().flatten().filter(|&w| constant(g, w).is_some_and(|t| t.rank() == 2 && t.as_f32().is_some()))
        };
        match r.op.name() {
            "Shape" => {}
            "MatMul" if r.inputs[0] == Some(v) => out.push(Reader { node: j, weight: matrix(1)?, transposed: false }),
            "Gemm" if r.inputs[0] == Some(v) => {
                let gemm = r.op.downcast::<octet_graph::ops::nn::Gemm>()?;
                if gemm.trans_a || gemm.alpha != 1.0 {
                    return None;
                }
                out.push(Reader { node: j, weight: matrix(1)?, transposed: gemm.trans_b });
            }
            // A scalar index on axis 1 picks a token (the class token) and keeps the channel axis.
            "Gather"
                if r.inputs[0] == Some(v)
                    && !g.outputs.contains(&r.outputs[0])
                    && r.op.downcast::<octet_graph::ops::shape::Gather>().is_some_and(|x| x.axis == 1)
                    && r.inputs.get(1).copied().flatten().and_then(|i| constant(g, i)).is_some_and(|t| t.rank() == 0) =>
            {
                gathers.push(j);
                out.extend(linear_readers(g, r.outputs[0], gathers)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The (node, slot) of the constant operand of a two-input node, and the other input.
fn constant_operand(g: &Graph, node: usize) -> Option<((usize, usize), ValueId)> {
    match g.nodes[node].inputs.as_slice() {
        [Some(a), Some(b)] if constant(g, *b).is_some() => Some(((node, 1), *a)),
        [Some(a), Some(b)] if constant(g, *a).is_some() => Some(((node, 0), *b)),
        _ => None,
    }
}

/// γ and β of a LayerNorm spelled out as exporters write it (Hugging Face's DINOv2, opset < 17):
/// `Add(Mul(Div(Sub(x, mean), Sqrt(…)), γ), β)` ending at node `add`.
fn spelled_out_layer_norm(g: &Graph, add: usize) -> Option<((usize, usize), (usize, usize))> {
    let producer = |v: ValueId, op: &str| g.nodes.iter().position(|n| n.outputs.contains(&v) && n.op.name() == op);
    let (beta, scaled) = constant_operand(g, add)?;
    let mul = producer(scaled, "Mul")?;
    let (gamma, normalised) = constant_operand(g, mul)?;
    let div = &g.nodes[producer(normalised, "Div")?];
    let (centred, spread) = (div.inputs.first().copied().flatten()?, div.inputs.get(1).copied().flatten()?);
    (producer(centred, "Sub").is_some() && producer(spread, "Sqrt").is_some()).then_some((gamma, beta))
}

fn smoothable(g: &Graph) -> Vec<Smoothable> {
    let mut out = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let (gamma, beta) = match n.op.name() {
            "LayerNormalization" if n.inputs.get(1).copied().flatten().is_some_and(|v| constant(g, v).is_some()) => {
                ((i, 1), n.inputs.get(2).copied().flatten().map(|_| (i, 2)))
            }
            "Add" => match spelled_out_layer_norm(g, i) {
                Some((gamma, beta)) => (gamma, Some(beta)),
                None => continue,
            },
            _ => continue,
        };
        let y = n.outputs[0];
        if g.outputs.contains(&y) {
            continue;
        }
        let mut gathers = Vec::new();
        if let Some(linears) = linear_readers(g, y, &mut gathers).filter(|l| !l.is_empty()) {
            out.push(Smoothable { norm: i, gamma, beta, output: y, linears, gathers });
        }
    }
    out
}

/// One LayerNorm's smoothing decision.
#[derive(Clone, Debug, Serialize)]
pub struct Smoothing {
    pub norm: String,
    /// Largest over median channel maximum of the LayerNorm output, before.
    pub outlier_ratio: f32,
    /// The chosen α, `None` when leaving it alone was best.
    pub alpha: Option<f32>,
    /// Relative squared error of the Linear outputs on the sampled rows, before and after.
    pub error_before: f64,
    pub error_after: f64,
}

/// `round_ties_even(x)` for `|x| ≤ 2²²` by the add-and-subtract of 1.5·2²³, which rounds to even
/// in the default rounding mode and stays a vector instruction (`round_ties_even` is a libm call
/// here).
#[inline(always)]
fn round_to_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Sampled LayerNorm output rows `x` (`m × k`), the reading Linears' weights side by side `w`
/// (`k × n`), and the float product `x·w` they should reproduce.
struct Migration<'a> {
    x: &'a [f32],
    w: &'a [f32],
    k: usize,
    n: usize,
    reference: Vec<f32>,
    /// Largest weight code (eq. 4).
    weight_qmax: f32,
    threads: Threads,
}

impl<'a> Migration<'a> {
    fn new(x: &'a [f32], w: &'a [f32], k: usize, n: usize, weight_qmax: f32, threads: usize) -> Migration<'a> {
        let m = x.len() / k;
        let mut reference = vec![0.0f32; m * n];
        matmul(m, n, k, x, MatLayout::row_major(k), w, MatLayout::row_major(n), &mut reference, false, Threads(threads));
        Migration { x, w, k, n, reference, weight_qmax, threads: Threads(threads) }
    }

    /// Relative squared error of `x·w` computed from 8-bit `x / s` (per tensor, u8 min/max) and
    /// 8-bit `s·w` (per output channel, s8 symmetric in `[−weight_qmax, weight_qmax]`, eq. 4). `wq` is scratch for the weights.
    fn error(&self, s: &[f32], wq: &mut Vec<f32>) -> f64 {
        let (k, n) = (self.k, self.n);
        let xs: Vec<f32> = self.x.chunks_exact(k).flat_map(|r| r.iter().zip(s).map(|(v, s)| v / s)).collect();
        let (lo, hi) = xs.iter().fold((0.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
        let px = QParams::from_range(lo, hi, QType::U8, false);
        let xq: Vec<f32> = xs.iter().map(|&v| px.dequantize(px.quantize(v, 0), 0)).collect();
        let mut amax = vec![0.0f32; n];
        for (row, &sk) in self.w.chunks_exact(n).zip(s) {
            for (m, &v) in amax.iter_mut().zip(row) {
                *m = m.max((v * sk).abs());
            }
        }
        let qmax = self.weight_qmax;
        let scale: Vec<f32> = amax.iter().map(|&a| if a > 0.0 { a / qmax } else { 1.0 }).collect();
        wq.clear();
        for (row, &sk) in self.w.chunks_exact(n).zip(s) {
            wq.extend(row.iter().zip(&scale).map(|(&v, &sc)| round_to_even_small(((v * sk) / sc).clamp(-qmax, qmax)) * sc));
        }
        let mut out = vec![0.0f32; self.reference.len()];
        matmul(xq.len() / k, n, k, &xq, MatLayout::row_major(k), wq, MatLayout::row_major(n), &mut out, false, self.threads);
        let (mut e, mut r) = (0.0f64, 0.0f64);
        for (a, b) in self.reference.iter().zip(&out) {
            e += ((a - b) as f64).powi(2);
            r += (*a as f64).powi(2);
        }
        e / r.max(f64::MIN_POSITIVE)
    }
}

/// The float run's per-channel statistics of the outputs of `smoothable` LayerNorms (with
/// sampled rows) when `smooth`, and of every rank ≥ 2 activation when `all`.
fn collect(
    g: &Graph,
    samples: &[Vec<Tensor>],
    smooth: bool,
    all: bool,
    threads: usize,
) -> Result<(Vec<Smoothable>, HashMap<ValueId, ChannelStats>), Error> {
    let candidates = if smooth { smoothable(g) } else { Vec::new() };
    let mut wanted: HashMap<ValueId, bool> =
        if all { g.nodes.iter().flat_map(|n| n.outputs.iter().map(|&o| (o, false))).collect() } else { HashMap::new() };
    wanted.extend(linear_inputs(g).map(|v| (v, false)));
    for c in &candidates {
        wanted.insert(c.output, true);
    }
    let session = Session::new(g.clone(), threads, Engine::Reference)?;
    let mut stats = HashMap::new();
    for s in samples {
        session.run_hooked(s.clone(), &mut Collect { wanted: &wanted, stats: &mut stats })?;
    }
    Ok((candidates, stats))
}

/// The activations that Linears (a MatMul or Gemm with a constant 2-D weight) read as input.
fn linear_inputs(g: &Graph) -> impl Iterator<Item = ValueId> + '_ {
    g.nodes.iter().filter(|n| matches!(n.op.name(), "MatMul" | "Gemm")).filter_map(move |n| {
        let weight = n.inputs.get(1).copied().flatten().and_then(|w| constant(g, w)).is_some_and(|t| t.rank() == 2);
        n.inputs.first().copied().flatten().filter(|&x| weight && constant(g, x).is_none())
    })
}

/// Makes input `slot` of node `node` read a new float initializer holding `values`.
fn set_input(proto: &mut ModelProto, node: usize, slot: usize, shape: &[usize], values: &[f32]) {
    let g = proto.graph.as_mut().expect("imported models have a graph");
    let name = octet_onnx::scope::FreshNames::of(g).fresh(format!("{}_smoothed", g.node[node].input[slot]));
    g.initializer.push(TensorProto {
        name: Some(name.clone()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    });
    g.node[node].input[slot] = name;
}

/// Gives node `node`'s first output a new name (`…_smoothed`) and makes its readers follow, so
/// that nothing compares the smoothed value with the original of the same name.
fn rename_output(proto: &mut ModelProto, node: usize) {
    let g = proto.graph.as_mut().expect("imported models have a graph");
    let old = g.node[node].output[0].clone();
    let new = octet_onnx::scope::FreshNames::of(g).fresh(format!("{old}_smoothed"));
    octet_onnx::scope::rename_reads(g, &old, &new);
    g.node[node].output[0] = new;
}

/// What the outlier pass found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutlierReport {
    pub smoothing: Vec<Smoothing>,
    /// Values kept float for their outlier channels, with their ratio.
    pub wide_values: Vec<(String, f32)>,
    /// Linear inputs whose 8-bit grid keeps less than [`COARSE_GRID_DB`] of their values, with
    /// that SQNR in dB.
    pub coarse_inputs: Vec<(String, f32)>,
}

/// The model after smoothing (`proto` edited in place; the returned graph is its import) and
/// the names of values that should stay float.
pub fn prepare(
    graph: &Graph,
    proto: &mut ModelProto,
    samples: &[Vec<Tensor>],
    smooth: bool,
    wide_residual: bool,
    weight_qmax: f32,
    threads: usize,
) -> Result<OutlierReport, Error> {
    let (candidates, stats) = collect(graph, samples, smooth, wide_residual, threads)?;
    let mut report = OutlierReport::default();
    if smooth {
        for c in &candidates {
            let Some(st) = stats.get(&c.output).filter(|s| !s.rows.is_empty()) else { continue };
            let norm = &graph.nodes[c.norm];
            let operand = |(node, slot): (usize, usize)| graph.nodes[node].inputs[slot].and_then(|v| constant(graph, v));
            let gamma = operand(c.gamma).expect("checked");
            let beta = c.beta.and_then(operand);
            let k = st.absmax.len();
            // Each reader's weight as a row-major [K, N] matrix, side by side.
            let weights: Vec<Vec<f32>> = c
                .linears
                .iter()
                .map(|r| {
                    let t = constant(graph, r.weight).expect("checked");
                    let (rows, cols) = (t.shape()[0], t.shape()[1]);
                    let x = t.as_f32().expect("checked");
                    if r.transposed {
                        (0..cols * rows).map(|i| x[(i % rows) * cols + i / rows]).collect()
                    } else {
                        x.to_vec()
                    }
                })
                .collect();
            let widths: Vec<usize> = weights.iter().map(|w| w.len() / k.max(1)).collect();
            if weights.iter().any(|w| w.len() % k.max(1) != 0) || gamma.len() != k || beta.is_some_and(|b| b.len() != k) {
                continue;
            }
            if c.linears.iter().any(|r| constant(graph, r.weight).expect("checked").shape()[usize::from(r.transposed)] != k) {
                continue;
            }
            let n_total: usize = widths.iter().sum();
            let mut w = vec![0.0f32; k * n_total];
            let mut col = 0;
            for (t, &n) in weights.iter().zip(&widths) {
                for (r, row) in t.chunks_exact(n).enumerate() {
                    w[r * n_total + col..r * n_total + col + n].copy_from_slice(row);
                }
                col += n;
            }
            let wmax: Vec<f32> = w.chunks_exact(n_total).map(|r| r.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect();
            let ones = vec![1.0f32; k];
            let migration = Migration::new(&st.rows, &w, k, n_total, weight_qmax, threads);
            let mut scratch = Vec::with_capacity(w.len());
            let before = migration.error(&ones, &mut scratch);
            let mut best = (before, None, ones);
            for &alpha in &ALPHAS {
                let s: Vec<f32> = st
                    .absmax
                    .iter()
                    .zip(&wmax)
                    .map(|(&a, &b)| (a.max(1e-5).powf(alpha) / b.max(1e-5).powf(1.0 - alpha)).max(1e-5))
                    .collect();
                let e = migration.error(&s, &mut scratch);
                if e < best.0 {
                    best = (e, Some(alpha), s);
                }
            }
            let (error_after, alpha, s) = best;
            if alpha.is_some() {
                for &node in std::iter::once(&c.norm).chain(&c.gathers) {
                    rename_output(proto, node);
                }
                let divided = |t: &Tensor| -> Vec<f32> {
                    t.as_f32().expect("float LayerNorm parameters").iter().zip(&s).map(|(v, s)| v / s).collect()
                };
                set_input(proto, c.gamma.0, c.gamma.1, gamma.shape(), &divided(gamma));
                if let (Some(b), Some((node, slot))) = (beta, c.beta) {
                    set_input(proto, node, slot, b.shape(), &divided(b));
                }
                for r in &c.linears {
                    let t = constant(graph, r.weight).expect("checked");
                    let cols = t.shape()[1];
                    let scaled: Vec<f32> = t
                        .as_f32()
                        .expect("checked")
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v * s[if r.transposed { i % cols } else { i / cols }])
                        .collect();
                    set_input(proto, r.node, 1, t.shape(), &scaled);
                }
            }
            report.smoothing.push(Smoothing {
                norm: norm.name.clone(),
                outlier_ratio: st.outlier_ratio(),
                alpha,
                error_before: before,
                error_after,
            });
        }
    }
    for v in linear_inputs(graph) {
        if let Some(db) = stats.get(&v).map(ChannelStats::grid_sqnr_8bit).filter(|&db| db < COARSE_GRID_DB) {
            if !report.coarse_inputs.iter().any(|(n, _)| *n == graph.names[v]) {
                report.coarse_inputs.push((graph.names[v].clone(), db));
            }
        }
    }
    if wide_residual {
        let read_by_stream = |v: ValueId| {
            graph.nodes.iter().any(|r| {
                r.inputs.contains(&Some(v))
                    && (r.op.name() == "LayerNormalization" && r.inputs[0] == Some(v) || matches!(r.op.name(), "Add" | "Concat"))
            })
        };
        for n in &graph.nodes {
            let stream = matches!(n.op.name(), "Add" | "Concat");
            for &o in n.outputs.iter().filter(|&&o| stream || read_by_stream(o)) {
                if let Some(st) = stats.get(&o).filter(|s| s.absmax.len() >= 8) {
                    let r = st.outlier_ratio();
                    if r >= OUTLIER_RATIO {
                        report.wide_values.push((graph.names[o].clone(), r));
                    }
                }
            }
        }
    }
    Ok(report)
}
