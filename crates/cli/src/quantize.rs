//! `octet quantize`: calibrate on real data and write a standard ONNX QDQ model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use octet_quant::{Method, Options, Summary};
use serde::Serialize;

use crate::calib_data::{self, Preprocess};

/// What `quantize` was asked to do.
pub struct Request<'a> {
    pub model: &'a Path,
    pub calib: &'a Path,
    pub output: &'a Path,
    pub options: Options,
    pub method: Method,
    pub preprocess: Preprocess,
    pub samples: Option<usize>,
    pub threads: usize,
    pub progress: bool,
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

pub fn quantize(r: &Request) -> Result<Report> {
    if r.output.extension().and_then(|e| e.to_str()) != Some("onnx") {
        bail!("the output '{}' must end in .onnx", r.output.display());
    }
    let model = octet_onnx::load(r.model)?;
    let samples = calib_data::load(r.calib, &model.graph, &r.preprocess, r.samples)?;
    let bar = if r.progress { ProgressBar::new(samples.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} runs [{elapsed} < {eta}]").expect("template"));
    let q = octet_quant::quantize(&model, &samples, &r.options, r.method, r.threads, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    octet_onnx::save(&q.model, r.output)?;
    let ranges = ranges_path(r.output);
    let json = serde_json::json!({ "summary": q.summary, "values": q.values, "ops": q.annotation.units });
    let tmp = ranges.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&json)?)?;
    std::fs::rename(&tmp, &ranges)?;
    Ok(Report { output: r.output.to_path_buf(), ranges, input_bytes: model_bytes(r.model), output_bytes: model_bytes(r.output), summary: q.summary })
}

impl Report {
    pub fn text(&self) -> String {
        let s = &self.summary;
        let types: Vec<String> = s.quantized_op_types.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        format!(
            "wrote {} ({:.1} MB, was {:.1} MB)\n{} preset, {:?} observer, {} calibration samples\n\
             quantized {} of {} ops ({} of {} nodes): {}\n\
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
            s.activations,
            s.groups,
            s.weights,
            s.biases,
            self.ranges.display()
        )
    }
}
