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
    /// The timed runs' time grouped as `profile` asks, largest first (empty without it).
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
    /// Time the plan's nodes and group their times so (`None`: no profile).
    pub profile: Option<ProfileBy>,
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
            profile: None,
            peak: false,
            engine: Engine::Int8,
        }
    }
}

/// How a profile groups the time of the plan's nodes (the nodes octet runs: a lowered kernel
/// carries the name of the node it was anchored at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileBy {
    /// By op type.
    Ops,
    /// Each node.
    Nodes,
    /// Nodes whose names differ only in their outermost layer index summed ([`layer_pattern`]):
    /// `/blocks/blocks.3/mlp/fc1/MatMul` and `/blocks/blocks.4/mlp/fc1/MatMul` are one line.
    Layers,
}

impl std::str::FromStr for ProfileBy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<ProfileBy> {
        match s {
            "ops" => Ok(ProfileBy::Ops),
            "nodes" => Ok(ProfileBy::Nodes),
            "layers" => Ok(ProfileBy::Layers),
            _ => anyhow::bail!("unknown profile grouping '{s}': expected ops, nodes or layers"),
        }
    }
}

/// One line of a profile.
#[derive(Serialize, Debug)]
pub struct OpTime {
    /// The op type (of every node in the line).
    pub op: String,
    /// The node's name, or the layer pattern (not with `ProfileBy::Ops`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How many of the plan's nodes the line sums.
    pub nodes: usize,
    /// The kernel the nodes run on, as `octet check` names it (lowered int8 ops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    pub ms_per_run: f64,
    pub share: f64,
}

/// `name` with its outermost layer index read as `*`: the first path component but the last
/// that ends in a number after `.` or `_` (or is a number), that number. Only the first: inner
/// numbers name different layers of a block (`mlp.0` and `mlp.3`). Names without `/` are kept.
pub fn layer_pattern(name: &str) -> String {
    let parts: Vec<&str> = name.split('/').collect();
    let numbered = |part: &&str| {
        let stem = part.trim_end_matches(|c: char| c.is_ascii_digit());
        stem.len() < part.len() && (stem.is_empty() || stem.ends_with(['.', '_']))
    };
    let Some(at) = parts[..parts.len() - 1].iter().position(numbered) else { return name.to_string() };
    let mut parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
    parts[at] = format!("{}*", parts[at].trim_end_matches(|c: char| c.is_ascii_digit()));
    parts.join("/")
}

/// Adds up the time of each node of the plan, by node index.
#[derive(Default)]
struct NodeTimes {
    ms: Vec<f64>,
    /// Each node's (name, op type, kernel), from the plan.
    nodes: Vec<(String, &'static str, Option<String>)>,
}

impl Hooks for NodeTimes {
    fn observes_values(&self) -> bool {
        false
    }
    fn node_done(&mut self, plan: &Plan, node: usize, time: Duration) {
        if self.nodes.is_empty() {
            self.nodes = plan.graph.nodes.iter().map(|n| (n.name.clone(), n.op.name(), n.op.kernel())).collect();
            self.ms = vec![0.0; self.nodes.len()];
        }
        self.ms[node] += time.as_secs_f64() * 1e3;
    }
}

impl NodeTimes {
    /// The lines of a profile over `runs` runs, largest first.
    fn lines(self, by: ProfileBy, runs: usize) -> Vec<OpTime> {
        let total: f64 = self.ms.iter().sum();
        let mut lines: Vec<OpTime> = Vec::new();
        let mut index: HashMap<(String, &'static str), usize> = HashMap::new();
        for ((name, op, kernel), ms) in self.nodes.into_iter().zip(self.ms) {
            let key = match by {
                ProfileBy::Ops => String::new(),
                ProfileBy::Nodes => name,
                ProfileBy::Layers => layer_pattern(&name),
            };
            let at = *index.entry((key.clone(), op)).or_insert_with(|| {
                let name = (by != ProfileBy::Ops).then_some(key);
                lines.push(OpTime { op: op.to_string(), name, nodes: 0, kernel: kernel.clone(), ms_per_run: 0.0, share: 0.0 });
                lines.len() - 1
            });
            let line = &mut lines[at];
            line.nodes += 1;
            line.ms_per_run += ms / runs as f64;
            line.share += if total > 0.0 { ms / total } else { 0.0 };
            if line.kernel != kernel {
                line.kernel = None;
            }
        }
        lines.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
        lines
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
    let mut node_times = NodeTimes::default();
    for _ in 0..iters.max(1) {
        let t = inputs.clone();
        let start = Instant::now();
        if profile.is_some() {
            session.run_hooked(t, &mut node_times)?;
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
    let profile = profile.map_or_else(Vec::new, |by| node_times.lines(by, times.len()));
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

#[cfg(test)]
mod tests {
    use super::layer_pattern;

    #[test]
    fn layer_patterns_read_block_indices_as_stars() {
        for (name, want) in [
            ("/blocks/blocks.3/mlp/fc1/MatMul", "/blocks/blocks.*/mlp/fc1/MatMul"),
            ("/blocks/blocks.11/attn/MatMul_1", "/blocks/blocks.*/attn/MatMul_1"),
            ("/encoder/layers/encoder_layer_3/mlp/mlp.0/Gemm", "/encoder/layers/encoder_layer_*/mlp/mlp.0/Gemm"),
            ("/layers/0/mlp/3/Gemm", "/layers/*/mlp/3/Gemm"),
            ("/encoder/layer.0/attention/self/query/MatMul", "/encoder/layer.*/attention/self/query/MatMul"),
            ("/h.2/attn/c_attn/MatMul", "/h.*/attn/c_attn/MatMul"),
            ("/fc1/MatMul", "/fc1/MatMul"),
            ("node_MatMul_15", "node_MatMul_15"),
            ("", ""),
        ] {
            assert_eq!(layer_pattern(name), want, "{name}");
        }
    }
}
