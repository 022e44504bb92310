//! `octet bench`: latency of one model on one input, as medians over repeated runs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use octet_runtime::{Hooks, Plan};
use serde::Serialize;

use crate::inputs::{bind, synthetic, InputArg};
use crate::run::{open, Engine};

#[derive(Serialize, Debug)]
pub struct BenchResult {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub images_per_s: f64,
    pub threads: usize,
    pub batch: usize,
    pub iters: usize,
    /// Share of the timed runs spent in each op type, largest first (with `profile`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<OpTime>,
    /// The model's operations against this CPU's int8 peak (with `peak`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak: Option<Peak>,
}

/// A run measured against the int8 peak: `operations / median / (gops · threads)`.
#[derive(Serialize, Debug)]
pub struct Peak {
    /// Two per multiply-add of the model's matrix products and convolutions, at this input.
    pub operations: u64,
    /// The int8 tier running the kernels.
    pub tier: &'static str,
    /// The tier's fastest microkernel, and its peak in GOP/s on one thread of this CPU (`None`
    /// on the scalar tier, which has no instruction mix to time).
    pub kernel: Option<&'static str>,
    pub gops: Option<f64>,
    /// Every microkernel of the tier with its peak.
    pub kernels: Vec<(&'static str, f64)>,
    /// The median run's share of `gops · threads`.
    pub share: Option<f64>,
}

/// What to time and how.
#[derive(Clone, Debug)]
pub struct Request {
    /// An input file; without it a synthetic input with symbolic dims set to `batch`.
    pub input: Option<InputArg>,
    pub batch: usize,
    pub threads: usize,
    pub iters: usize,
    pub warmup: usize,
    pub progress: bool,
    /// Time each op type.
    pub profile: bool,
    /// Measure the int8 peak and the run's share of it.
    pub peak: bool,
    pub engine: Engine,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            input: None,
            batch: 1,
            threads: 1,
            iters: 20,
            warmup: 3,
            progress: false,
            profile: false,
            peak: false,
            engine: Engine::Int8,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct OpTime {
    pub op: String,
    pub ms_per_run: f64,
    pub share: f64,
}

/// Adds up node times per op type.
struct OpTimes<'a>(&'a mut HashMap<&'static str, f64>);

impl Hooks for OpTimes<'_> {
    fn observes_values(&self) -> bool {
        false
    }
    fn node_done(&mut self, plan: &Plan, node: usize, time: Duration) {
        *self.0.entry(plan.graph.nodes[node].op.name()).or_default() += time.as_secs_f64() * 1e3;
    }
}

/// Times `iters` runs after `warmup` untimed ones.
pub fn bench(model: &Path, r: &Request) -> Result<BenchResult> {
    let Request { batch, threads, iters, warmup, progress, profile, .. } = *r;
    let session = open(model, threads, r.engine)?;
    let inputs = match &r.input {
        Some(a) => bind(session.graph(), std::slice::from_ref(a))?,
        None => synthetic(session.graph(), batch)?,
    };
    let batch = inputs.first().and_then(|t| t.shape().first().copied()).unwrap_or(1).max(1);
    let bar = if progress { ProgressBar::new((warmup + iters) as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed}]").expect("template"));
    bar.set_message("warming up");
    for _ in 0..warmup {
        session.run(inputs.clone())?;
        bar.inc(1);
    }
    bar.set_message("timing");
    let mut times = Vec::with_capacity(iters);
    let mut per_op: HashMap<&'static str, f64> = HashMap::new();
    for _ in 0..iters.max(1) {
        let t = inputs.clone();
        let start = Instant::now();
        if profile {
            session.run_hooked(t, &mut OpTimes(&mut per_op))?;
        } else {
            session.run(t)?;
        }
        times.push(start.elapsed().as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish_and_clear();
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let median = at(0.5);
    let total: f64 = per_op.values().sum();
    let mut profile: Vec<OpTime> =
        per_op.into_iter().map(|(op, ms)| OpTime { op: op.to_string(), ms_per_run: ms / times.len() as f64, share: ms / total }).collect();
    profile.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
    Ok(BenchResult {
        median_ms: median,
        p90_ms: at(0.9),
        min_ms: times[0],
        images_per_s: batch as f64 * 1e3 / median,
        threads,
        batch,
        iters: times.len(),
        profile,
        peak: if r.peak { Some(peak(model, &inputs, median, threads)?) } else { None },
    })
}

/// The model's operations at `inputs` (counted on the model as written, however octet runs it)
/// against the int8 peak of the tier in use.
fn peak(model: &Path, inputs: &[octet_graph::Tensor], median_ms: f64, threads: usize) -> Result<Peak> {
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let typed = octet_runtime::specialize(&octet_onnx::load_for_inference(model)?.graph, &shapes, Engine::Reference)?;
    let operations = typed
        .nodes
        .iter()
        .map(|n| {
            let facts: Vec<Option<&octet_graph::Fact>> = n.inputs.iter().map(|v| v.and_then(|v| typed.facts[v].as_ref())).collect();
            2 * n.op.multiply_adds(&facts)
        })
        .sum();
    let isa = octet_kernels::Isa::selected().map_err(anyhow::Error::msg)?;
    let kernels: Vec<(&'static str, f64)> =
        octet_kernels::i8::tier_kernels(isa).iter().filter_map(|&k| octet_kernels::i8::peak(k).map(|p| (k, p / 1e9))).collect();
    let best = kernels.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
    let share = best.map(|(_, gops)| operations as f64 / (median_ms * 1e-3) / (gops * 1e9 * threads as f64));
    Ok(Peak { operations, tier: isa.name(), kernel: best.map(|b| b.0), gops: best.map(|b| b.1), kernels, share })
}
