//! Post-training quantization to the standard ONNX QDQ form (doc/quantization.md):
//! annotate (which ops a preset quantizes and which values share parameters), calibrate
//! (observers over real data), convert (parameters, then Q/DQ inserted into the model).

pub mod annotate;
pub mod calibrate;
pub mod convert;
pub mod evaluate;
pub mod observer;
pub mod outliers;
pub mod rounding;
pub mod verify;

use octet_graph::{Error, Tensor};
use octet_onnx::proto::ModelProto;
use octet_onnx::OnnxModel;
use octet_runtime::{Engine, Session};
use serde::Serialize;

pub use annotate::{Annotation, Options, Preset};
pub use convert::ValueRecord;
pub use observer::Method;

/// A quantized model and how it was made.
pub struct Quantized {
    pub model: ModelProto,
    pub annotation: Annotation,
    pub values: Vec<ValueRecord>,
    pub summary: Summary,
}

/// Counts for reports and `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub preset: Preset,
    pub observer: Method,
    pub samples: usize,
    /// Ops (units) quantized, of all that run.
    pub ops_quantized: usize,
    /// Ops left float in the file that octet runs inside int8 kernels (the softmax of int8
    /// attention, activations in GEMM epilogues).
    pub ops_in_kernels: usize,
    /// Ops of the residual stream, float by default (`Options::int8_residual`).
    pub ops_residual_float: usize,
    /// Ops left float because no int8 op reads their outputs.
    pub ops_unread_float: usize,
    pub ops_total: usize,
    /// Imported nodes inside quantized ops.
    pub nodes_quantized: usize,
    pub nodes_total: usize,
    /// Quantized activations, parameter groups and stored constants.
    pub activations: usize,
    pub groups: usize,
    pub weights: usize,
    pub biases: usize,
    pub quantized_op_types: std::collections::BTreeMap<String, usize>,
    pub outliers: outliers::OutlierReport,
    /// Activations stored as 16-bit codes (`Options::uint16_inputs`).
    pub uint16_activations: usize,
    /// The default-domain opset the model was at, when 16-bit codes made the file raise it.
    pub opset_raised_from: Option<i64>,
    /// Why `Options::uint16_inputs` found Linear inputs to widen and they stayed 8-bit.
    pub uint16_skipped: Option<String>,
}

/// Calibration samples the outlier statistics look at (the first ones).
const OUTLIER_SAMPLES: usize = 128;

/// A float model ready for calibration: the outlier remedies of `Options::smooth` and
/// `Options::wide_residual` applied (doc/quantization.md, section 9). It depends on those two
/// options and the samples only, so one preparation serves quantizations that differ otherwise.
pub struct Prepared {
    /// The model with external data inline and smoothing applied.
    proto: ModelProto,
    /// The import of `proto` when smoothing changed it.
    smoothed: Option<octet_graph::Graph>,
    outliers: outliers::OutlierReport,
}

/// Checks the model and samples and applies the outlier remedies `opts` asks for.
pub fn prepare(model: &OnnxModel, samples: &[Vec<Tensor>], opts: &Options, threads: usize) -> Result<Prepared, Error> {
    let g = &model.graph;
    if let Some(n) = g.nodes.iter().find(|n| matches!(n.op.name(), "QuantizeLinear" | "DequantizeLinear")) {
        return Err(Error::Input(format!(
            "the model is already quantized (node '{}' is a {}); quantize its float original",
            n.name,
            n.op.name()
        )));
    }
    if samples.is_empty() {
        return Err(Error::Input("no calibration samples".into()));
    }
    let names: Vec<&str> = (0..g.inputs.len()).map(|i| g.input_name(i)).collect();
    calibrate::check_finite(samples, &names)?;
    if opts.per_channel && model.opset < 13 {
        return Err(Error::Input(format!(
            "per-channel weights need opset 13 or later (the model declares {}); re-export with a newer opset or pass --per-tensor",
            model.opset
        )));
    }
    let mut proto = model.proto.clone();
    octet_onnx::inline_external_data(&mut proto, &model.base).map_err(|e| Error::Input(e.to_string()))?;
    let measure = opts.uint16_inputs == annotate::WideInputs::Measured;
    let outliers = if opts.smooth || opts.wide_residual || measure {
        outliers::prepare(
            g,
            &mut proto,
            &samples[..samples.len().min(OUTLIER_SAMPLES)],
            opts.smooth,
            opts.wide_residual,
            opts.weight_qmax(),
            threads,
        )?
    } else {
        outliers::OutlierReport::default()
    };
    let smoothed = if outliers.smoothing.iter().any(|s| s.alpha.is_some()) {
        let bytes = prost::Message::encode_to_vec(&proto);
        Some(
            octet_onnx::load_bytes(&bytes, std::path::Path::new("(smoothed model)"), &model.base)
                .map_err(|e| Error::Input(e.to_string()))?
                .graph,
        )
    } else {
        None
    };
    Ok(Prepared { proto, smoothed, outliers })
}

/// Quantizes `model` with calibration `samples` (each: inputs in graph order).
/// `progress(done, total)` follows calibration.
pub fn quantize(
    model: &OnnxModel,
    samples: &[Vec<Tensor>],
    opts: &Options,
    method: Method,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Quantized, Error> {
    let prepared = prepare(model, samples, opts, threads)?;
    quantize_prepared(model, &prepared, samples, opts, method, threads, progress)
}

/// [`quantize`] from a [`prepare`]d model (made with the same `smooth` and `wide_residual`).
pub fn quantize_prepared(
    model: &OnnxModel,
    prepared: &Prepared,
    samples: &[Vec<Tensor>],
    opts: &Options,
    method: Method,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Quantized, Error> {
    let first = samples.first().ok_or_else(|| Error::Input("no calibration samples".into()))?;
    let mut proto = prepared.proto.clone();
    let outliers = prepared.outliers.clone();
    let mut opts = opts.clone();
    opts.float_values.extend(outliers.wide_values.iter().map(|(v, _)| v.clone()));
    opts.coarse_inputs.extend(outliers.coarse_inputs.iter().map(|(v, _)| v.clone()));
    let g = prepared.smoothed.as_ref().unwrap_or(&model.graph);

    let shapes: Vec<Vec<usize>> = first.iter().map(|t| t.shape().to_vec()).collect();
    let typed = octet_runtime::specialize(g, &shapes, Engine::Reference)?;
    let session = Session::new(g.clone(), threads, Engine::Reference)?;
    opts.float_values.extend(calibrate::non_finite_values(&session, &g.names, first)?);
    let mut annotation = annotate::annotate(g, &typed, &opts);
    let wide = |g: &annotate::Group| matches!(g.kind, annotate::GroupKind::Observed { qtype: octet_graph::QType::U16 });
    let uint16_skipped = annotation
        .groups
        .iter()
        .any(wide)
        .then(|| octet_onnx::opset::check_raise(&proto, octet_onnx::opset::SIXTEEN_BIT_QDQ).err())
        .flatten();
    if uint16_skipped.is_some() {
        for g in annotation.groups.iter_mut().filter(|g| wide(g)) {
            g.kind = annotate::GroupKind::Observed { qtype: octet_graph::QType::U8 };
        }
    }
    let cal = calibrate::calibrate(
        &session,
        &annotation,
        &g.names,
        samples,
        method,
        opts.bias_correction,
        opts.adaptive_rounding,
        threads,
        progress,
    )?;
    let conv = convert::convert(g, &typed, &annotation, &cal, method, opts.bias_correction, opts.weight_qmax(), threads);
    octet_onnx::qdq::insert_qdq(&mut proto, &conv.edits);
    let uint16_activations = conv.edits.activations.iter().filter(|a| a.params.qtype == octet_graph::QType::U16).count();
    let opset_raised_from = match uint16_activations {
        0 => None,
        _ => {
            let from = octet_onnx::opset::raise(&mut proto, octet_onnx::opset::SIXTEEN_BIT_QDQ).map_err(Error::Input)?;
            (from < octet_onnx::opset::SIXTEEN_BIT_QDQ).then_some(from)
        }
    };

    let selected: Vec<&annotate::Unit> = annotation.units.iter().filter(|u| u.selected).collect();
    let mut types = std::collections::BTreeMap::new();
    for u in &selected {
        *types.entry(u.op.clone()).or_default() += 1;
    }
    let count = |k: fn(&annotate::ConstantKind) -> bool| annotation.constants.iter().filter(|c| k(&c.kind)).count();
    let summary = Summary {
        preset: opts.preset,
        observer: method,
        samples: cal.samples,
        ops_quantized: selected.len(),
        ops_in_kernels: annotation.units.iter().filter(|u| u.in_kernel).count(),
        ops_residual_float: annotation.units.iter().filter(|u| u.residual).count(),
        ops_unread_float: annotation.units.iter().filter(|u| u.unread).count(),
        ops_total: annotation.units.len(),
        nodes_quantized: selected.iter().map(|u| u.nodes.len()).sum(),
        nodes_total: g.nodes.len(),
        activations: conv.edits.activations.len(),
        groups: annotation.groups.len(),
        weights: count(|k| matches!(k, annotate::ConstantKind::Weight { .. })),
        biases: count(|k| matches!(k, annotate::ConstantKind::Bias { .. })),
        quantized_op_types: types,
        outliers,
        uint16_activations,
        opset_raised_from,
        uint16_skipped,
    };
    Ok(Quantized { model: proto, annotation, values: conv.values, summary })
}
