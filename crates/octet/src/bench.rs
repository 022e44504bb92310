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

/// Times `iters` runs after `warmup` untimed ones. Without an input, a synthetic one with
/// symbolic dims set to `batch` is used.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    model: &Path,
    input: Option<&InputArg>,
    batch: usize,
    threads: usize,
    iters: usize,
    warmup: usize,
    progress: bool,
    profile: bool,
    engine: Engine,
) -> Result<BenchResult> {
    let session = open(model, threads, engine)?;
    let inputs = match input {
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
    })
}
