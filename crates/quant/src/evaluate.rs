//! Measuring a quantized model against its float original on the same samples: the outputs
//! (top-1 agreement, accuracy with labels, cosine, SQNR) and every activation (SQNR per node,
//! how much of it each node loses, and the value histograms behind it).

use std::collections::HashMap;

use octet_graph::{Dim, Error, Graph, QParams, QType, Tensor, ValueId};
use octet_runtime::{Engine, Hooks, Session};
use serde::Serialize;

/// Signal-to-quantization-noise ratios are capped here (identical tensors).
pub const SQNR_CAP_DB: f64 = 200.0;

/// Groups single-sample inputs into batches of up to `batch` (1 when the model's batch axis is
/// fixed), concatenated along the first axis.
pub fn batches(graph: &Graph, samples: &[Vec<Tensor>], batch: usize) -> Result<Vec<Vec<Tensor>>, Error> {
    let symbolic = graph.inputs.iter().all(|i| matches!(i.dims.first(), Some(Dim::Symbol(_))));
    let batch = if symbolic { batch.max(1) } else { 1 };
    samples
        .chunks(batch)
        .map(|chunk| {
            (0..chunk[0].len())
                .map(|i| {
                    let parts: Vec<&Tensor> = chunk.iter().map(|s| &s[i]).collect();
                    Tensor::concat_rows(&parts)
                        .ok_or_else(|| Error::Input(format!("samples of input '{}' differ in shape or type", graph.input_name(i))))
                })
                .collect()
        })
        .collect()
}

/// Runs `session` on every batch and stacks its first float32 output (models may also pass
/// token ids or masks through); `progress(done, total)` after each.
pub fn first_output(session: &Session, batches: &[Vec<Tensor>], progress: &mut dyn FnMut(usize, usize)) -> Result<Tensor, Error> {
    let mut outs = Vec::with_capacity(batches.len());
    let mut which = None;
    for (i, b) in batches.iter().enumerate() {
        let mut out = session.run(b.clone())?;
        let k = *which.get_or_insert_with(|| out.iter().position(|t| t.as_f32().is_some()).unwrap_or(0));
        outs.push(out.swap_remove(k));
        progress(i + 1, batches.len());
    }
    let parts: Vec<&Tensor> = outs.iter().collect();
    Tensor::concat_rows(&parts).ok_or_else(|| Error::Input("the model's outputs differ in shape between batches".into()))
}

/// The index of the largest value of each row of a `[N, …, C]` output (over the last axis).
pub fn top1(t: &Tensor) -> Vec<usize> {
    let xs = t.as_f32().unwrap_or(&[]);
    let c = t.shape().last().copied().unwrap_or(1).max(1);
    xs.chunks(c).map(|row| row.iter().enumerate().fold(0, |best, (i, &x)| if x > row[best] { i } else { best })).collect()
}

/// Share of `predictions` equal to `labels`, in percent.
pub fn accuracy(predictions: &[usize], labels: &[i64]) -> f64 {
    let hits = predictions.iter().zip(labels).filter(|(&p, &l)| p as i64 == l).count();
    100.0 * hits as f64 / predictions.len().max(1) as f64
}

/// `10·log10(Σx² / Σ(x−y)²)` in dB, capped at ±[`SQNR_CAP_DB`] (−cap when the noise is not
/// finite: a NaN or Inf in the quantized model).
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if !noise.is_finite() {
        return -SQNR_CAP_DB;
    }
    if noise <= 0.0 {
        return SQNR_CAP_DB;
    }
    (10.0 * (signal / noise).log10()).min(SQNR_CAP_DB)
}

/// Cosine similarity of two vectors given as pairs of elements; 1 when both are zero.
pub fn cosine(pairs: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (p, q) in pairs {
        ab += p * q;
        aa += p * p;
        bb += q * q;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else {
        ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
    }
}

/// How the quantized model's outputs agree with the float model's.
#[derive(Clone, Debug, Serialize)]
pub struct OutputAgreement {
    pub samples: usize,
    /// Share of samples whose top-1 class is the same, in percent.
    pub top1_agreement: f64,
    /// Top-1 accuracy against labels, in percent, when labels are given.
    pub float_accuracy: Option<f64>,
    pub quantized_accuracy: Option<f64>,
    /// Mean over samples of the cosine similarity of the output rows.
    pub cosine: f64,
    pub sqnr_db: f64,
}

/// Compares the stacked outputs of the two models (`[N, …, C]`, equal shapes).
pub fn agreement(float: &Tensor, quantized: &Tensor, labels: Option<&[i64]>) -> Result<OutputAgreement, Error> {
    let (Some(x), Some(y)) = (float.as_f32(), quantized.as_f32()) else {
        return Err(Error::Input("the model has no float32 output to compare".into()));
    };
    if float.shape() != quantized.shape() {
        return Err(Error::Input(format!(
            "the outputs differ in shape: {:?} (float) and {:?} (quantized)",
            float.shape(),
            quantized.shape()
        )));
    }
    let n = float.shape().first().copied().unwrap_or(1).max(1);
    if let Some(l) = labels.filter(|l| l.len() != n) {
        return Err(Error::Input(format!("{} labels for {n} samples", l.len())));
    }
    let (pf, pq) = (top1(float), top1(quantized));
    if labels.is_some() && pf.len() != n {
        return Err(Error::Input(format!(
            "the output {:?} has {} rows of classes for {n} samples; labels need one prediction per sample",
            float.shape(),
            pf.len()
        )));
    }
    let per = x.len() / n;
    if per == 0 {
        return Err(Error::Input(format!("the outputs {:?} are empty", float.shape())));
    }
    let cosine =
        x.chunks(per).zip(y.chunks(per)).map(|(a, b)| cosine(a.iter().zip(b).map(|(&p, &q)| (p as f64, q as f64)))).sum::<f64>() / n as f64;
    let (signal, noise) = x.iter().zip(y).fold((0.0, 0.0), |(s, e), (&a, &b)| (s + a as f64 * a as f64, e + (a as f64 - b as f64).powi(2)));
    let agree = pf.iter().zip(&pq).filter(|(a, b)| a == b).count();
    Ok(OutputAgreement {
        samples: n,
        top1_agreement: 100.0 * agree as f64 / pf.len().max(1) as f64,
        float_accuracy: labels.map(|l| accuracy(&pf, l)),
        quantized_accuracy: labels.map(|l| accuracy(&pq, l)),
        cosine,
        sqnr_db: sqnr_db(signal, noise),
    })
}

/// Float values of one activation binned over the span of its quantization grid and of the
/// first batch's values (later values outside it count in the end bins), with the grid's
/// representable range.
#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u64>,
    /// The smallest and largest value the grid represents.
    pub grid: (f32, f32),
    /// Share of values outside the grid (clipped), in percent.
    pub clipped: f64,
}

const HISTOGRAM_BINS: usize = 64;

/// One node's output in the quantized model against the float model.
#[derive(Clone, Debug, Serialize)]
pub struct NodeError {
    /// Position in the float model's node order.
    pub position: usize,
    pub node: String,
    pub op: String,
    /// The output compared (the float model's name).
    pub value: String,
    /// The output is quantized (read through Q → DQ); the comparison uses the dequantized value.
    pub quantized: bool,
    pub sqnr_db: f64,
    /// SQNR lost in this node: the worst SQNR of its inputs minus its own (≥ 0 unless the node
    /// averages noise away).
    pub loss_db: f64,
    /// For a quantized output: the SQNR of the float model's value put through the output's grid
    /// alone — what quantizing this tensor costs by itself, whatever came before.
    pub grid_sqnr_db: Option<f64>,
    pub histogram: Option<Histogram>,
}

/// The representable range of per-tensor parameters (eq. 1 at the type's limits).
fn grid_range(p: &QParams) -> (f32, f32) {
    let (lo, hi) = p.qtype.range();
    (p.dequantize(lo, 0), p.dequantize(hi, 0))
}

struct Target {
    float: ValueId,
    quantized: bool,
    /// The grid of a quantized value (per tensor).
    grid: Option<QParams>,
}

#[derive(Default, Clone)]
struct Tally {
    signal: f64,
    noise: f64,
    /// Noise of the float value put through its own grid alone.
    own_noise: f64,
    histogram: Option<(f32, f32, Vec<u64>, u64, u64)>,
}

/// The value a QDQ graph's consumers read for `v`: the output of `DequantizeLinear(QuantizeLinear(v))`
/// when there is one, with the grid's representable range.
fn dequantized(qdq: &Graph, readers: &HashMap<ValueId, Vec<usize>>, v: ValueId) -> Option<(ValueId, QParams)> {
    for &q in readers.get(&v)? {
        let qn = &qdq.nodes[q];
        if qn.op.name() != "QuantizeLinear" || qn.inputs.first() != Some(&Some(v)) {
            continue;
        }
        for &d in readers.get(&qn.outputs[0]).into_iter().flatten() {
            let dn = &qdq.nodes[d];
            if dn.op.name() != "DequantizeLinear" {
                continue;
            }
            let constant = |slot: usize| dn.inputs.get(slot).copied().flatten().and_then(|c| qdq.constants.get(&c));
            let scale = constant(1)?.as_f32()?.first().copied()?;
            let (qtype, zp) = match constant(2) {
                Some(t) if t.dtype() == octet_graph::DType::I8 => (QType::S8, t.to_f64_vec()[0] as i32),
                Some(t) if t.dtype() == octet_graph::DType::U16 => (QType::U16, t.to_f64_vec()[0] as i32),
                Some(t) => (QType::U8, t.to_f64_vec()[0] as i32),
                None => (QType::U8, 0),
            };
            return Some((dn.outputs[0], QParams::per_tensor(qtype, scale, zp)));
        }
    }
    None
}

struct StoreFloat<'a> {
    wanted: &'a HashMap<ValueId, ()>,
    values: HashMap<ValueId, Tensor>,
}

impl Hooks for StoreFloat<'_> {
    fn value(&mut self, v: ValueId, t: &Tensor) -> octet_graph::Result<()> {
        if self.wanted.contains_key(&v) && t.as_f32().is_some() {
            self.values.insert(v, t.clone());
        }
        Ok(())
    }
}

struct CompareQuantized<'a> {
    targets: &'a HashMap<ValueId, Target>,
    float: &'a HashMap<ValueId, Tensor>,
    tallies: &'a mut HashMap<ValueId, Tally>,
}

impl Hooks for CompareQuantized<'_> {
    fn value(&mut self, v: ValueId, t: &Tensor) -> octet_graph::Result<()> {
        let Some(target) = self.targets.get(&v) else { return Ok(()) };
        let (Some(f), Some(y)) = (self.float.get(&target.float), t.as_f32()) else { return Ok(()) };
        let x = f.as_f32().expect("stored float values are f32");
        if x.len() != y.len() {
            return Ok(());
        }
        let tally = self.tallies.entry(target.float).or_default();
        for (&a, &b) in x.iter().zip(y) {
            tally.signal += a as f64 * a as f64;
            tally.noise += (a as f64 - b as f64).powi(2);
        }
        if let Some(grid) = &target.grid {
            tally.own_noise += x.iter().map(|&a| (a as f64 - grid.dequantize(grid.quantize(a, 0), 0) as f64).powi(2)).sum::<f64>();
            let (glo, ghi) = grid_range(grid);
            let (lo, hi, counts, clipped, total) = tally.histogram.get_or_insert_with(|| {
                let (mn, mx) = x.iter().fold((glo, ghi), |(a, b), &v| (a.min(v), b.max(v)));
                (mn, mx, vec![0; HISTOGRAM_BINS], 0, 0)
            });
            let k = HISTOGRAM_BINS as f32 / (*hi - *lo).max(f32::MIN_POSITIVE);
            for &a in x {
                counts[(((a - *lo) * k).max(0.0) as usize).min(HISTOGRAM_BINS - 1)] += 1;
                *clipped += u64::from(a < glo || a > ghi);
            }
            *total += x.len() as u64;
        }
        Ok(())
    }
}

/// Values read only by Softmax, directly or through a multiply or divide by a constant.
fn softmax_inputs(g: &Graph) -> std::collections::HashSet<ValueId> {
    let mut out = std::collections::HashSet::new();
    for n in g.nodes.iter().rev() {
        for &o in &n.outputs {
            let mut readers = g.nodes.iter().filter(|r| r.inputs.contains(&Some(o))).peekable();
            let all = readers.peek().is_some()
                && readers.all(|r| match r.op.name() {
                    "Softmax" => true,
                    "Mul" | "Div" => {
                        r.inputs.iter().flatten().any(|i| g.constants.contains_key(i)) && r.outputs.iter().all(|x| out.contains(x))
                    }
                    _ => false,
                });
            if all {
                out.insert(o);
            }
        }
    }
    out
}

/// SQNR of every float node output of `float` against the same value in `qdq` (its QDQ version,
/// run in float between dq and q — the reference semantics), over `batches`, in `float`'s node
/// order. Values with no counterpart of the same name are skipped.
pub fn node_errors(
    float: &Graph,
    qdq: &Graph,
    batches: &[Vec<Tensor>],
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<NodeError>, Error> {
    let by_name: HashMap<&str, ValueId> = qdq.names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut readers: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in qdq.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            readers.entry(*v).or_default().push(i);
        }
    }
    // Softmax inputs are skipped: their grids clip the low end on purpose (exp of a large negative
    // number is ~0), so their SQNR says nothing; the Softmax output shows the effect.
    let logits = softmax_inputs(float);
    let compared = float
        .inputs
        .iter()
        .map(|i| i.value)
        .chain(float.nodes.iter().flat_map(|n| n.outputs.iter().copied()))
        .filter(|v| !logits.contains(v));
    let mut targets: HashMap<ValueId, Target> = HashMap::new();
    for v in compared {
        let Some(&q) = by_name.get(float.names[v].as_str()) else { continue };
        match dequantized(qdq, &readers, q) {
            Some((d, grid)) => targets.insert(d, Target { float: v, quantized: true, grid: Some(grid) }),
            None => targets.insert(q, Target { float: v, quantized: false, grid: None }),
        };
    }
    let wanted: HashMap<ValueId, ()> = targets.values().map(|t| (t.float, ())).collect();
    let float_session = Session::new(float.clone(), threads, Engine::Reference)?;
    let qdq_session = Session::new(qdq.clone(), threads, Engine::Reference)?;
    let mut tallies: HashMap<ValueId, Tally> = HashMap::new();
    for (i, b) in batches.iter().enumerate() {
        let mut store = StoreFloat { wanted: &wanted, values: HashMap::new() };
        float_session.run_hooked(b.clone(), &mut store)?;
        let mut compare = CompareQuantized { targets: &targets, float: &store.values, tallies: &mut tallies };
        qdq_session.run_hooked(b.clone(), &mut compare)?;
        progress(i + 1, batches.len());
    }

    let target_of: HashMap<ValueId, &Target> = targets.values().map(|t| (t.float, t)).collect();
    let sqnr = |v: ValueId| tallies.get(&v).map(|t| sqnr_db(t.signal, t.noise));
    // The SQNR reaching a value: its own when measured, else (inside a fused pattern, or
    // folded) the worst of what reaches its producer's inputs.
    let mut reaching: HashMap<ValueId, f64> = HashMap::new();
    for n in &float.nodes {
        let worst = n
            .inputs
            .iter()
            .flatten()
            .map(|i| reaching.get(i).copied().or_else(|| sqnr(*i)).unwrap_or(SQNR_CAP_DB))
            .fold(SQNR_CAP_DB, f64::min);
        for &o in &n.outputs {
            reaching.insert(o, sqnr(o).unwrap_or(worst));
        }
    }
    let reaching_input = |n: &octet_graph::Node| {
        n.inputs.iter().flatten().map(|i| reaching.get(i).copied().or_else(|| sqnr(*i)).unwrap_or(SQNR_CAP_DB)).fold(SQNR_CAP_DB, f64::min)
    };
    let mut out = Vec::new();
    for (position, n) in float.nodes.iter().enumerate() {
        for &o in &n.outputs {
            let Some(own) = sqnr(o) else { continue };
            let worst_input = reaching_input(n);
            let histogram = tallies[&o].histogram.as_ref().map(|(lo, hi, counts, clipped, total)| Histogram {
                lo: *lo,
                hi: *hi,
                counts: counts.clone(),
                grid: grid_range(target_of[&o].grid.as_ref().expect("histograms are kept for quantized values")),
                clipped: 100.0 * *clipped as f64 / (*total).max(1) as f64,
            });
            out.push(NodeError {
                position,
                node: n.name.clone(),
                op: n.op.name().to_string(),
                value: float.names[o].clone(),
                quantized: target_of[&o].quantized,
                sqnr_db: own,
                loss_db: worst_input - own,
                grid_sqnr_db: target_of[&o].grid.as_ref().map(|_| sqnr_db(tallies[&o].signal, tallies[&o].own_noise)),
                histogram,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_agreement_counts_top1_and_noise() {
        let f = Tensor::f32(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 2.0, 1.0]);
        let q = Tensor::f32(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 2.0]);
        let a = agreement(&f, &q, Some(&[0, 1, 1])).unwrap();
        assert!((a.top1_agreement - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(a.float_accuracy.unwrap().round(), 67.0);
        assert_eq!(a.quantized_accuracy, Some(100.0));
        assert!((a.cosine - (1.0 + 1.0 + 0.8) / 3.0).abs() < 1e-9);
        assert!((a.sqnr_db - 10.0 * (7.0f64 / 2.0).log10()).abs() < 1e-9);
        assert_eq!(agreement(&f, &f, None).unwrap().sqnr_db, SQNR_CAP_DB);
    }

    #[test]
    fn batches_concatenate_samples() {
        let mut g = Graph::default();
        g.names.push("x".into());
        g.inputs.push(octet_graph::Input { value: 0, dtype: octet_graph::DType::F32, dims: vec![Dim::Symbol("n".into()), Dim::Fixed(2)] });
        let samples: Vec<Vec<Tensor>> = (0..5).map(|i| vec![Tensor::f32(vec![1, 2], vec![i as f32, -(i as f32)])]).collect();
        let b = batches(&g, &samples, 2).unwrap();
        assert_eq!(b.iter().map(|b| b[0].shape()[0]).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(b[1][0].as_f32().unwrap(), &[2.0, -2.0, 3.0, -3.0]);
        g.inputs[0].dims[0] = Dim::Fixed(1);
        assert_eq!(batches(&g, &samples, 2).unwrap().len(), 5);
    }
}
