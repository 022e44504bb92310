//! `octet quantize`: calibrate on real data and write a standard ONNX QDQ model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use octet_graph::Tensor;
use octet_quant::evaluate;
use octet_quant::verify::{self, Verification};
use octet_quant::{Method, Options, Summary};
use octet_runtime::Session;
use regex::Regex;
use serde::Serialize;

use crate::calib_data::{self, Preprocess};
use crate::compare::Data;
use crate::run::{self, Engine};

/// Where calibration samples come from.
pub enum Calibration<'a> {
    /// A `.npy`, a `.npz` or a folder of images (`calib_data::load`).
    Path(&'a Path),
    /// Named arrays of samples stacked along the first axis, one per model input.
    Stacks(Vec<(String, Tensor)>),
}

/// What `quantize` was asked to do.
pub struct Request<'a> {
    pub model: &'a Path,
    pub calib: Calibration<'a>,
    pub output: &'a Path,
    pub options: Options,
    pub method: Method,
    /// How a folder of images becomes tensors; recorded in the written file's metadata when the
    /// calibration is such a folder or `record_preprocess` is set.
    pub preprocess: Preprocess,
    /// The calibration arrays are images the caller prepared with `preprocess` (the Python
    /// package's `octet.preprocess`): record it too.
    pub record_preprocess: bool,
    pub samples: Option<usize>,
    pub threads: usize,
    pub progress: bool,
    /// Keep sensitive ops float until top-1 is within this target.
    pub target: Option<Target<'a>>,
}

/// What was written.
#[derive(Serialize)]
pub struct Report {
    pub output: PathBuf,
    pub ranges: PathBuf,
    pub input_bytes: u64,
    pub output_bytes: u64,
    #[serde(flatten)]
    pub summary: Summary,
    /// The check the file passed before it was written.
    pub verification: Verification,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// The ranges file next to the output: `m.int8.onnx` → `m.int8.ranges.json`.
pub fn ranges_path(output: &Path) -> PathBuf {
    output.with_extension("ranges.json")
}

fn model_bytes(model: &Path) -> u64 {
    let own = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
    let data = model.with_extension("onnx.data");
    own + std::fs::metadata(data).map(|m| m.len()).unwrap_or(0)
}

/// Sets `key` in the model's metadata (`metadata_props`), replacing an earlier value.
fn record_metadata(model: &mut octet_onnx::proto::ModelProto, key: &str, value: &str) {
    model.metadata_props.retain(|e| e.key.as_deref() != Some(key));
    model.metadata_props.push(octet_onnx::proto::StringStringEntryProto { key: Some(key.into()), value: Some(value.into()) });
}

pub fn quantize(r: &Request) -> Result<Report> {
    if r.output.extension().and_then(|e| e.to_str()) != Some("onnx") {
        bail!("the output '{}' must end in .onnx", r.output.display());
    }
    let model = octet_onnx::load(r.model)?;
    let loaded = r.samples.map(|n| n + verify::HELD_BACK);
    let samples = match &r.calib {
        Calibration::Path(p) => calib_data::load(p, &model.graph, &r.preprocess, loaded)?,
        Calibration::Stacks(stacks) => calib_data::from_stacks(stacks, &model.graph, loaded, "the calibration data")?,
    };
    let (samples, check, held_back) = verify::hold_back(samples, r.samples);
    let bar = if r.progress { ProgressBar::new(samples.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} runs [{elapsed} < {eta}]").expect("template"));
    let (q, fallback) = match &r.target {
        None => {
            let q = octet_quant::quantize(&model, &samples, &r.options, r.method, r.threads, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            (q, None)
        }
        Some(target) => {
            let spinner = if r.progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
            spinner.enable_steady_tick(std::time::Duration::from_millis(200));
            let (q, fb) =
                keep_float_until(&model, &samples, &r.options, r.method, r.threads, target, &|m: &str| spinner.set_message(m.to_string()))?;
            spinner.finish_and_clear();
            (q, Some(fb))
        }
    };
    bar.finish_and_clear();
    let mut q = q;
    let folder = matches!(&r.calib, Calibration::Path(p) if p.is_dir());
    if folder || r.record_preprocess {
        record_metadata(&mut q.model, Preprocess::METADATA_KEY, &r.preprocess.to_json());
    }
    let verification = verify::verify(&q.model, &model.base, &model.graph, &check, held_back, r.threads)?;
    octet_onnx::save(&q.model, r.output)?;
    let ranges = ranges_path(r.output);
    let json = serde_json::json!({ "summary": q.summary, "values": q.values, "ops": q.annotation.units });
    crate::write_atomically(&ranges, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(Report {
        output: r.output.to_path_buf(),
        ranges,
        input_bytes: model_bytes(r.model),
        output_bytes: model_bytes(r.output),
        summary: q.summary,
        verification,
        fallback,
    })
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = self.summary_text();
        if let Some(f) = &self.fallback {
            out += &format!(
                "target: top-1 within {:.2} points of float ({:.2} %) on {} samples: {} — int8 {:.2} % ({:+.2}) with {} op(s) kept float{}{}\n",
                f.target_drop,
                f.float_accuracy,
                f.eval_samples,
                if f.met { "met" } else { "NOT met" },
                f.accuracy,
                f.accuracy - f.float_accuracy,
                f.kept_float.len(),
                if f.kept_float.is_empty() { "" } else { ": " },
                f.kept_float.join(", ")
            );
        }
        out += &self.verification.text();
        let smoothed = self.summary.outliers.smoothing.iter().filter(|s| s.alpha.is_some()).count();
        if smoothed > 0 || !self.summary.outliers.wide_values.is_empty() {
            out += &format!(
                "outliers: {smoothed} LayerNorm(s) smoothed into their Linears; {} residual value(s) kept float for outlier channels\n",
                self.summary.outliers.wide_values.len()
            );
        }
        if self.summary.uint16_activations > 0 {
            let raised = self
                .summary
                .opset_raised_from
                .map(|f| format!("; opset raised from {f} to {}, which 16-bit Q/DQ need", octet_onnx::opset::SIXTEEN_BIT_QDQ))
                .unwrap_or_default();
            let coarse = &self.summary.outliers.coarse_inputs;
            let measured = if coarse.is_empty() {
                String::new()
            } else {
                format!(
                    "; calibration measured {} Linear input(s) below {} dB on an 8-bit grid",
                    coarse.len(),
                    octet_quant::outliers::COARSE_GRID_DB
                )
            };
            out += &format!(
                "16-bit: {} Linear input(s) stored as uint16 (their Linears run two bytes per input){measured}{raised}\n",
                self.summary.uint16_activations
            );
        }
        if let Some(why) = &self.summary.uint16_skipped {
            out += &format!("warning: 16-bit Linear inputs need opset {}: {why}; they stay 8-bit\n", octet_onnx::opset::SIXTEEN_BIT_QDQ);
        }
        out
    }

    fn summary_text(&self) -> String {
        let s = &self.summary;
        let types: Vec<String> = s.quantized_op_types.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        format!(
            "wrote {} ({:.1} MB, was {:.1} MB)\n{} preset, {:?} observer, {} calibration samples\n\
             quantized {} of {} ops ({} of {} nodes): {}; {} more run float inside int8 kernels, {} in the float residual stream, {} that no int8 op reads\n\
             {} activations in {} parameter groups, {} weights, {} biases; ranges in {}\n",
            self.output.display(),
            self.output_bytes as f64 / 1e6,
            self.input_bytes as f64 / 1e6,
            octet_quant::annotate::preset_name(s.preset),
            s.observer,
            s.samples,
            s.ops_quantized,
            s.ops_total,
            s.nodes_quantized,
            s.nodes_total,
            types.join(", "),
            s.ops_in_kernels,
            s.ops_residual_float,
            s.ops_unread_float,
            s.activations,
            s.groups,
            s.weights,
            s.biases,
            self.ranges.display()
        )
    }
}

/// `--target-drop`: how many points of top-1 accuracy the int8 model may lose, measured on
/// labelled evaluation data.
pub struct Target<'a> {
    pub drop: f64,
    pub data: &'a Data,
}

/// One quantization tried by the fallback search.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub kept_float: usize,
    pub accuracy: f64,
}

/// What the fallback search found.
#[derive(Clone, Debug, Serialize)]
pub struct Fallback {
    pub target_drop: f64,
    pub float_accuracy: f64,
    pub accuracy: f64,
    pub eval_samples: usize,
    /// The ops kept float, most sensitive first.
    pub kept_float: Vec<String>,
    pub met: bool,
    pub attempts: Vec<Attempt>,
}

/// Top-1 accuracy of `session` on the labelled data.
fn accuracy(session: &Session, graph: &octet_graph::Graph, data: &Data) -> Result<f64> {
    let Some(labels) = data.labels.as_deref() else { bail!("--target-drop needs labels for its evaluation data") };
    let batches = evaluate::batches(graph, &data.samples, 50)?;
    let out = evaluate::first_output(session, &batches, &mut |_, _| {})?;
    let predictions = evaluate::top1(&out);
    if predictions.len() != labels.len() {
        bail!(
            "the model's output {:?} holds {} predictions for {} labels; --target-drop needs one class vector per sample",
            out.shape(),
            predictions.len(),
            labels.len()
        );
    }
    Ok(evaluate::accuracy(&predictions, labels))
}

/// The quantized model as octet imports it.
fn import(proto: &octet_onnx::proto::ModelProto, base: &Path) -> Result<octet_graph::Graph> {
    Ok(octet_onnx::load_bytes(&prost::Message::encode_to_vec(proto), Path::new("(quantized model)"), base)?.graph)
}

/// Quantizes, then keeps the fewest, most harmful ops float until the int8 model's top-1 is
/// within `target.drop` points of the float model's. Ops are ranked by what their output grid
/// alone costs (SQNR of the float value through it, on up to 128 evaluation samples), then by
/// the SQNR they lose; each is kept float with the
/// quantized ops that read it (its output's quantization is part of its loss). The search
/// doubles the number of ranked ops kept float until the target is met, then bisects down to
/// the fewest that meet it.
pub fn keep_float_until(
    model: &octet_onnx::OnnxModel,
    samples: &[Vec<Tensor>],
    opts: &Options,
    method: Method,
    threads: usize,
    target: &Target,
    progress: &dyn Fn(&str),
) -> Result<(octet_quant::Quantized, Fallback)> {
    let float = Session::new(model.graph.clone(), threads, Engine::Reference)?;
    let float_accuracy = accuracy(&float, &model.graph, target.data)?;
    let prepared = octet_quant::prepare(model, samples, opts, threads)?;
    let attempt = |keep: &[String]| -> Result<(octet_quant::Quantized, f64)> {
        let mut o = opts.clone();
        o.exclude.extend(keep.iter().map(|n| Regex::new(&format!("^{}$", regex::escape(n))).expect("escaped")));
        let q = octet_quant::quantize_prepared(model, &prepared, samples, &o, method, threads, &mut |_, _| {})?;
        let graph = import(&q.model, &model.base)?;
        let acc = accuracy(&run::session(graph.clone(), threads, Engine::Int8)?, &graph, target.data)?;
        progress(&format!("{} op(s) float: top-1 {acc:.2} % (float {float_accuracy:.2} %)", keep.len()));
        Ok((q, acc))
    };
    let (first, acc0) = attempt(&[])?;
    let mut attempts = vec![Attempt { kept_float: 0, accuracy: acc0 }];
    let within = |acc: f64| float_accuracy - acc <= target.drop;
    if within(acc0) {
        let fb = Fallback {
            target_drop: target.drop,
            float_accuracy,
            accuracy: acc0,
            eval_samples: target.data.samples.len(),
            kept_float: vec![],
            met: true,
            attempts,
        };
        return Ok((first, fb));
    }

    let qgraph = import(&first.model, &model.base)?;
    let n = target.data.samples.len().min(128);
    let batches = evaluate::batches(&model.graph, &target.data.samples[..n], 32)?;
    let nodes = evaluate::node_errors(&model.graph, &qgraph, &batches, threads, &mut |_, _| {})?;
    let unit_of_node: std::collections::HashMap<&str, usize> = model
        .graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| first.annotation.unit_of.get(i).copied().flatten().map(|u| (n.name.as_str(), u)))
        .collect();
    // Quantized outputs whose grid alone costs the most SQNR first (keeping the node and its
    // readers float removes exactly that), then nodes by the SQNR they lose, then by their own.
    let (mut gridded, mut rest): (Vec<&evaluate::NodeError>, Vec<&evaluate::NodeError>) =
        nodes.iter().partition(|e| e.grid_sqnr_db.is_some());
    gridded.sort_by(|a, b| a.grid_sqnr_db.unwrap_or(0.0).total_cmp(&b.grid_sqnr_db.unwrap_or(0.0)));
    rest.sort_by(|a, b| b.loss_db.total_cmp(&a.loss_db).then(a.sqnr_db.total_cmp(&b.sqnr_db)));
    // A node's loss includes the quantization of its output, which its readers do: keeping the
    // node float keeps its quantized readers float too.
    let units = &first.annotation.units;
    let name_of = |u: &octet_quant::annotate::Unit| model.graph.nodes[u.nodes[0]].name.clone();
    let mut ranked: Vec<String> = Vec::new();
    let mut entries: Vec<usize> = Vec::new();
    // The units that read `outputs`, through data movement (whose outputs share the grid).
    let readers_of = |outputs: &[octet_graph::ValueId]| {
        let mut found: Vec<&octet_quant::annotate::Unit> = Vec::new();
        let mut frontier = outputs.to_vec();
        while let Some(v) = frontier.pop() {
            for r in units.iter().filter(|r| r.selected && r.inputs.contains(&v)) {
                if !found.iter().any(|f| std::ptr::eq(*f, r)) {
                    found.push(r);
                    if r.rule == octet_graph::ops::QuantRule::SharesInput {
                        frontier.extend(&r.outputs);
                    }
                }
            }
        }
        found
    };
    let mut take = |unit: &octet_quant::annotate::Unit, ranked: &mut Vec<String>| {
        if !unit.selected || ranked.contains(&name_of(unit)) {
            return;
        }
        ranked.push(name_of(unit));
        for reader in readers_of(&unit.outputs) {
            if !ranked.contains(&name_of(reader)) {
                ranked.push(name_of(reader));
            }
        }
        entries.push(ranked.len());
    };
    for e in gridded.into_iter().chain(rest) {
        if let Some(&u) = unit_of_node.get(e.node.as_str()) {
            take(&units[u], &mut ranked);
        }
    }
    // Units with no comparable output (a smoothed LayerNorm's is renamed) come last.
    for unit in units {
        take(unit, &mut ranked);
    }
    // The search is over entries (a node and its readers); `ends[k - 1]` names kept for k entries.
    let ends = entries;
    let mut best: Option<(usize, octet_quant::Quantized, f64)> = None;
    let mut last = None;
    let (mut lo, mut k) = (0, 1);
    let kept = |k: usize| &ranked[..ends[k - 1]];
    while k <= ends.len() {
        let (q, acc) = attempt(kept(k))?;
        attempts.push(Attempt { kept_float: kept(k).len(), accuracy: acc });
        if within(acc) {
            best = Some((k, q, acc));
            break;
        }
        last = Some((q, acc));
        lo = k;
        k = if k == ends.len() { k + 1 } else { (k * 2).min(ends.len()) };
    }
    let Some((mut hi, mut q, mut acc)) = best else {
        let (q, acc) = match last {
            Some(l) => l,
            None => (first, acc0),
        };
        let fb = Fallback {
            target_drop: target.drop,
            float_accuracy,
            accuracy: acc,
            eval_samples: target.data.samples.len(),
            kept_float: ranked,
            met: false,
            attempts,
        };
        return Ok((q, fb));
    };
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let (qm, am) = attempt(kept(mid))?;
        attempts.push(Attempt { kept_float: kept(mid).len(), accuracy: am });
        if within(am) {
            (hi, q, acc) = (mid, qm, am);
        } else {
            lo = mid;
        }
    }
    let fb = Fallback {
        target_drop: target.drop,
        float_accuracy,
        accuracy: acc,
        eval_samples: target.data.samples.len(),
        kept_float: kept(hi).to_vec(),
        met: true,
        attempts,
    };
    Ok((q, fb))
}
