//! `octet demo`: the whole flow on the Fashion-MNIST ViT that ships with the repository —
//! quantize with the shipped calibration images, compare fp32 and int8 on the shipped test set,
//! count the nodes that run int8, time both, and write the HTML report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use octet_quant::{Method, Options, Preset};
use serde::Serialize;

use crate::calib_data::{Interpolation, Preprocess};
use crate::check::{self, Status};
use crate::compare::{self, load_data};
use crate::{bench, html, quantize};

/// Where the shipped model lives: `tests/fixtures/fashion_vit` under the current folder, else
/// under the source tree this binary was built from.
pub fn default_dir() -> PathBuf {
    let here = PathBuf::from("tests/fixtures/fashion_vit");
    if here.is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fashion_vit")
}

#[derive(Serialize)]
pub struct DemoReport {
    pub model: PathBuf,
    pub quantized_model: PathBuf,
    pub report: PathBuf,
    pub preset: Preset,
    pub calibration_samples: usize,
    pub quantize_seconds: f64,
    pub outputs: octet_quant::evaluate::OutputAgreement,
    /// Nodes of the file computed by int8 kernels (alone or inside a fused kernel).
    pub nodes_int8: usize,
    /// Nodes of the file that compute something at run time: quantized ones (int8 kernel, or
    /// float between dq and q) and float ones; not Q/DQ, folded or fused ones.
    pub nodes_executed: usize,
    pub threads: usize,
    pub fp32_ms: f64,
    pub int8_ms: f64,
    pub seconds: f64,
}

/// Runs the demo on the model in `dir`, writing into `out`.
pub fn demo(dir: &Path, out: &Path, threads: usize, progress: bool) -> Result<DemoReport> {
    let start = Instant::now();
    let [model, calib, test, labels] = ["model.onnx", "calib.npz", "test.npz", "labels.npy"].map(|f| dir.join(f));
    for f in [&model, &calib, &test, &labels] {
        if !f.exists() {
            bail!("'{}' is missing: the demo needs the Fashion-MNIST ViT that ships in tests/fixtures/fashion_vit (pass --dir, or run from the repository)", f.display());
        }
    }
    std::fs::create_dir_all(out)?;
    let quantized = out.join("fashion_vit.int8.onnx");
    let preset = Preset::FullInt8;
    let no_images = Preprocess { size: 28, crop_pct: 1.0, interpolation: Interpolation::Bilinear, mean: [0.0; 3], std: [1.0; 3] };
    let t = Instant::now();
    let q = quantize::quantize(&quantize::Request {
        model: &model,
        calib: crate::quantize::Calibration::Path(&calib),
        output: &quantized,
        options: Options::new(preset),
        method: Method::Auto,
        preprocess: no_images.clone(),
        record_preprocess: false,
        samples: None,
        threads,
        progress,
        target: None,
    })?;
    let quantize_seconds = t.elapsed().as_secs_f64();

    let graph = octet_onnx::load_for_inference(&model)?.graph;
    let data = load_data(&test, Some(&labels), &graph, &no_images, None)?;
    let cmp = compare::compare(&compare::Request {
        float: &model,
        quantized: &quantized,
        data: &data,
        batch: 50,
        node_samples: 128,
        threads,
        progress,
    })?;
    let report = out.join("report.html");
    crate::write_atomically(&report, html::page(&cmp).as_bytes())?;

    let checked = check::check(&quantized, 1)?;
    let count = |s: Status| checked.counts.get(&s).copied().unwrap_or(0);
    let on_int8_kernels = checked.nodes.iter().filter(|n| n.status == Status::Int8 && n.int8 != check::FLOAT_BETWEEN_DQ_AND_Q).count();
    let request = bench::Request { threads, iters: 50, warmup: 5, ..Default::default() };
    let time = |m: &Path| bench::bench(m, &request).map(|r| r.median_ms);
    let (fp32_ms, int8_ms) = (time(&model)?, time(&quantized)?);
    Ok(DemoReport {
        model,
        quantized_model: quantized,
        report,
        preset,
        calibration_samples: q.summary.samples,
        quantize_seconds,
        outputs: cmp.outputs,
        nodes_int8: on_int8_kernels,
        nodes_executed: count(Status::Int8) + count(Status::Float),
        threads,
        fp32_ms,
        int8_ms,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl DemoReport {
    pub fn text(&self) -> String {
        let o = &self.outputs;
        let (f, q) = (o.float_accuracy.unwrap_or(f64::NAN), o.quantized_accuracy.unwrap_or(f64::NAN));
        format!(
            "model: {} (timm ViT trained on Fashion-MNIST)\n\
             quantized ({}, {} calibration images) in {:.1} s → {}\n\
             top-1 on {} test images: fp32 {f:.2} %, int8 {q:.2} % ({:+.2} points); top-1 agreement {:.2} %, output cosine {:.4}\n\
             nodes running int8: {} of {} executed ({:.0} %)\n\
             latency, batch 1, {} thread(s): fp32 {:.2} ms, int8 {:.2} ms ({:.1}× faster)\n\
             report: {}  (done in {:.1} s)\n",
            self.model.display(),
            octet_quant::annotate::preset_name(self.preset),
            self.calibration_samples,
            self.quantize_seconds,
            self.quantized_model.display(),
            o.samples,
            q - f,
            o.top1_agreement,
            o.cosine,
            self.nodes_int8,
            self.nodes_executed,
            100.0 * self.nodes_int8 as f64 / self.nodes_executed.max(1) as f64,
            self.threads,
            self.fp32_ms,
            self.int8_ms,
            self.fp32_ms / self.int8_ms,
            self.report.display(),
            self.seconds
        )
    }
}
