//! `octet compare`: how far a quantized model is from its float original, on real data — the
//! outputs (top-1, accuracy, cosine, SQNR) and every node's activations, most harmful first.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use octet_graph::Tensor;
use octet_quant::evaluate::{self, NodeError, OutputAgreement};
use serde::Serialize;

use crate::calib_data::{self, Preprocess};
use crate::npy;
use crate::run::{open, session, Engine};

/// Evaluation data: samples (each the model's inputs at batch 1) and optional labels.
pub struct Data {
    pub samples: Vec<Vec<Tensor>>,
    pub labels: Option<Vec<i64>>,
}

/// Reads the samples (as `--calib` does) and a 1-D integer `.npy` of labels: the first label
/// belongs to the first sample, and so on (extra labels are ignored).
pub fn load_data(data: &Path, labels: Option<&Path>, graph: &octet_graph::Graph, pre: &Preprocess, limit: Option<usize>) -> Result<Data> {
    let samples = calib_data::load(data, graph, pre, limit)?;
    let labels = match labels {
        None => None,
        Some(p) => {
            let t = npy::read(p)?;
            let l = t.to_i64_vec().filter(|_| t.rank() == 1).with_context(|| {
                format!("'{}' must be a 1-D array of integer class labels, it is {} {:?}", p.display(), t.dtype(), t.shape())
            })?;
            if l.len() < samples.len() {
                bail!("'{}' holds {} labels for {} samples", p.display(), l.len(), samples.len());
            }
            Some(l[..samples.len()].to_vec())
        }
    };
    Ok(Data { samples, labels })
}

/// What `compare` was asked to do.
pub struct Request<'a> {
    pub float: &'a Path,
    pub quantized: &'a Path,
    pub data: &'a Data,
    /// Samples per run.
    pub batch: usize,
    /// Samples used for the per-node comparison (the first ones).
    pub node_samples: usize,
    pub threads: usize,
    pub progress: bool,
}

#[derive(Serialize)]
pub struct Report {
    pub float_model: PathBuf,
    pub quantized_model: PathBuf,
    /// Outputs of the float model against the quantized model on octet's int8 kernels.
    pub outputs: OutputAgreement,
    /// Samples behind `nodes`.
    pub node_samples: usize,
    /// Every compared node output, most harmful (largest SQNR loss) first.
    pub nodes: Vec<NodeError>,
}

fn bar(progress: bool, what: &'static str) -> ProgressBar {
    let b = if progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
    b.set_style(ProgressStyle::with_template("{msg:>22} {bar:30} {pos}/{len} batches [{elapsed}]").expect("template"));
    b.set_message(what);
    b
}

/// A progress callback `(done, total)` that moves `b`.
fn follow(b: &ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    }
}

/// Runs both models on the data and compares them.
pub fn compare(r: &Request) -> Result<Report> {
    let float = open(r.float, r.threads, Engine::Reference)?;
    // The per-node comparison plans the quantized graph again: it needs its weights.
    let quantized_graph = octet_onnx::load_for_inference(r.quantized)?.graph;
    let quantized = session(quantized_graph.clone(), r.threads, Engine::Int8)?;
    let batches = evaluate::batches(float.graph(), &r.data.samples, r.batch)?;
    let mut outputs = Vec::new();
    for (session, what, path) in [(&float, "float model", r.float), (&quantized, "quantized model", r.quantized)] {
        let b = bar(r.progress, what);
        let out = evaluate::first_output(session, &batches, &mut follow(&b));
        b.finish_and_clear();
        outputs.push(out.with_context(|| format!("running the {what} '{}' on the data", path.display()))?);
    }
    let agreement = evaluate::agreement(&outputs[0], &outputs[1], r.data.labels.as_deref())?;
    let node_samples = r.node_samples.min(r.data.samples.len());
    let node_batches = evaluate::batches(float.graph(), &r.data.samples[..node_samples], r.batch)?;
    let b = bar(r.progress, "per-node comparison");
    let mut nodes = evaluate::node_errors(float.graph(), &quantized_graph, &node_batches, r.threads, &mut follow(&b))?;
    b.finish_and_clear();
    nodes.sort_by(|a, b| b.loss_db.total_cmp(&a.loss_db));
    Ok(Report { float_model: r.float.to_path_buf(), quantized_model: r.quantized.to_path_buf(), outputs: agreement, node_samples, nodes })
}

impl Report {
    /// The summary and the `top` most harmful nodes as text.
    pub fn text(&self, top: usize) -> String {
        let o = &self.outputs;
        let mut s = String::new();
        if let (Some(f), Some(q)) = (o.float_accuracy, o.quantized_accuracy) {
            s += &format!("top-1 accuracy: float {f:.2} %, quantized {q:.2} % ({:+.2} points) on {} labelled samples\n", q - f, o.samples);
        }
        s += &format!(
            "top-1 agreement {:.2} %, output cosine {:.5}, output SQNR {:.1} dB ({} samples; quantized model on the int8 kernels)\n",
            o.top1_agreement, o.cosine, o.sqnr_db, o.samples
        );
        s += &format!(
            "per node: SQNR of each output against the float model over {} samples (quantized model in float between dq and q), \
             most harmful first; loss = worst input SQNR − own SQNR; grid = SQNR of the float value through its own grid alone (8 or 16 bits)\n",
            self.node_samples
        );
        s += &format!("  {:>8} {:>8} {:>8}  {:<22} node\n", "loss dB", "SQNR dB", "grid dB", "op");
        for n in self.nodes.iter().take(top) {
            let grid = n.grid_sqnr_db.map(|g| format!("{g:.1}")).unwrap_or_else(|| "float".into());
            s += &format!("  {:>8.1} {:>8.1} {:>8}  {:<22} {}\n", n.loss_db, n.sqnr_db, grid, n.op, n.node);
        }
        if self.nodes.len() > top {
            s += &format!("  … {} more (--top N, --json, or --html for all)\n", self.nodes.len() - top);
        }
        s
    }
}
