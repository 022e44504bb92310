//! Conversion: parameters from the observers, then the QDQ edits for the ONNX model.

use std::collections::HashMap;

use octet_graph::{Graph, QParams, QType, Tensor, TypedGraph, ValueId};
use octet_onnx::qdq::{ActivationQdq, ConstantQdq, QdqEdits};
use serde::Serialize;

use crate::annotate::{Annotation, ConstantKind, GroupKind};
use crate::calibrate::Calibration;
use crate::observer::Method;

/// The parameters chosen for one quantized value, for the ranges file.
#[derive(Clone, Debug, Serialize)]
pub struct ValueRecord {
    pub name: String,
    pub qtype: QType,
    pub scale: f32,
    pub zero_point: i32,
    /// Observed minimum and maximum (of the group, in this value's units).
    pub observed: Option<(f32, f32)>,
    /// Values sharing these parameters (up to a constant factor).
    pub group: usize,
}

/// The edits and what they mean.
pub struct Conversion {
    pub edits: QdqEdits,
    pub values: Vec<ValueRecord>,
}

/// `b − E[x]·(Ŵ − W)`: the bias that cancels the mean error the quantized weight `Ŵ` (its codes
/// dequantized) adds to the float weight `W`, for a `[K, N]` (output axis 1) or `[N, K]` (output
/// axis 0) weight and per-input-channel means of `x`.
fn corrected_bias(bias: &Tensor, w: &Tensor, w_hat: &Tensor, out_axis: usize, mean: &[f64]) -> Tensor {
    let shape = w.shape();
    let (k, n) = if out_axis == 1 { (shape[0], shape[1]) } else { (shape[1], shape[0]) };
    let b = bias.as_f32().expect("float bias");
    if mean.len() != k || b.len() != n {
        return bias.clone();
    }
    let mut shift = vec![0.0f64; n];
    for (i, (&wf, &wq)) in w.as_f32().expect("float weight").iter().zip(w_hat.as_f32().expect("float weight")).enumerate() {
        let (row, col) = (i / shape[1], i % shape[1]);
        let (ki, ni) = if out_axis == 1 { (row, col) } else { (col, row) };
        shift[ni] += mean[ki] * (wq - wf) as f64;
    }
    Tensor::f32(bias.shape().to_vec(), b.iter().zip(&shift).map(|(&b, &d)| b - d as f32).collect())
}

/// Weight codes dequantized (`shape` of the weight): what the file stores rounds back to them.
fn dequantized(codes: &[i64], p: &QParams, shape: &[usize]) -> Tensor {
    let inner: usize = p.axis.map(|a| shape[a + 1..].iter().product()).unwrap_or(1);
    let channels = p.scale.len();
    Tensor::f32(shape.to_vec(), codes.iter().enumerate().map(|(i, &q)| p.dequantize(q, (i / inner) % channels)).collect())
}

/// The largest bias code (eq. 7) that conversion allows: half of i32's range, for the bias
/// correction that may still move it.
const BIAS_CODE_LIMIT: f32 = 1_073_741_824.0;

/// Keeps the bias codes `b_j / (s_x · s_w,j)` inside [`BIAS_CODE_LIMIT`]: 16-bit inputs make
/// `s_x` 257× smaller than 8-bit ones, and a column of tiny weights under a large bias would
/// saturate its int32 code (a wrong output in every engine). Such a column's weight scale grows to
/// what its bias needs, and the weight (`float`) is rounded to nearest on that coarser grid.
fn fit_bias_codes(bias: &[f32], sx: f32, weight: &mut ConstantQdq, float: &Tensor) {
    let needed = |b: f32| b.abs() / (sx * BIAS_CODE_LIMIT);
    let mut wider = weight.params.clone();
    match wider.scale.as_mut_slice() {
        [s] => *s = bias.iter().map(|&b| needed(b)).filter(|n| n.is_finite()).fold(*s, f32::max),
        scales => scales.iter_mut().zip(bias).filter(|(_, b)| needed(**b).is_finite()).for_each(|(s, &b)| *s = s.max(needed(b))),
    }
    if wider.scale == weight.params.scale {
        return;
    }
    let codes = wider.quantize_all(float.as_f32().expect("float weight"), float.shape());
    weight.value = dequantized(&codes, &wider, float.shape());
    weight.params = wider;
}

/// Chooses every parameter and lists the Q/DQ to insert; weight codes lie in `[−weight_qmax,
/// weight_qmax]`, rounded adaptively where calibration measured the Linear's inputs
/// ([`crate::rounding`]), else to nearest.
#[allow(clippy::too_many_arguments)]
pub fn convert(
    graph: &Graph,
    typed: &TypedGraph,
    ann: &Annotation,
    cal: &Calibration,
    method: Method,
    bias_correction: bool,
    weight_qmax: f32,
    threads: usize,
) -> Conversion {
    let mut params: HashMap<ValueId, QParams> = HashMap::new();
    let mut values = Vec::new();
    for (g, group) in ann.groups.iter().enumerate() {
        let base = match (&group.kind, &cal.observers[g]) {
            (GroupKind::Fixed(p), _) => p.clone(),
            (&GroupKind::Observed { qtype }, Some(obs)) => {
                // 16 bits hold the whole observed range at a finer step than any clipped 8-bit grid.
                let method = if qtype == QType::U16 && method == Method::Auto { Method::MinMax } else { method.for_kind(group.tensor) };
                let (lo, hi) = obs.range(method);
                QParams::from_range(lo, hi, qtype, qtype == QType::S8)
            }
            (GroupKind::Observed { .. }, None) => unreachable!("observed groups have observers"),
        };
        for &(v, f) in &group.members {
            let p = base.scaled(f);
            let observed = cal.observers[g].as_ref().filter(|o| o.count > 0).map(|o| (o.min * f, o.max * f));
            values.push(ValueRecord {
                name: graph.names[v].clone(),
                qtype: p.qtype,
                scale: p.scale[0],
                zero_point: p.zero_point[0],
                observed,
                group: g,
            });
            params.insert(v, p);
        }
    }

    let selected = |n: usize| ann.unit_of[n].is_some_and(|u| ann.units[u].selected);
    let producer_selected = |v: ValueId| graph.nodes.iter().enumerate().any(|(i, n)| n.outputs.contains(&v) && selected(i));
    let mut activations = Vec::new();
    for (&v, p) in &params {
        let all = producer_selected(v);
        let readers: Vec<usize> =
            graph.nodes.iter().enumerate().filter(|(i, n)| n.inputs.contains(&Some(v)) && (all || selected(*i))).map(|(i, _)| i).collect();
        activations.push(ActivationQdq { value: graph.names[v].clone(), params: p.clone(), readers });
    }
    activations.sort_by(|a, b| a.value.cmp(&b.value));

    let mut constants: Vec<ConstantQdq> = Vec::new();
    for c in &ann.constants {
        let value = (**typed.fact(c.value).value.as_ref().expect("constants have values")).clone();
        let (value, p) = match &c.kind {
            ConstantKind::Weight { axis, matrix_output_axis } => {
                let w = value.as_f32().expect("float weight");
                let p = QParams::symmetric_weights(w, value.shape(), *axis, weight_qmax);
                let input = crate::calibrate::linear_input(ann, c);
                let moment =
                    input.and_then(|x| cal.moments.get(&x)).filter(|m| matrix_output_axis.is_some_and(|a| value.shape()[1 - a] == m.k));
                let codes = match (moment, matrix_output_axis) {
                    (Some(m), Some(out_axis)) => {
                        let centred = bias_correction && input.is_some_and(|x| cal.means.contains_key(&x));
                        crate::rounding::round_adaptively(w, value.shape(), *out_axis, &p, weight_qmax, m, centred, threads)
                    }
                    _ => p.quantize_all(w, value.shape()),
                };
                (dequantized(&codes, &p, value.shape()), p)
            }
            ConstantKind::Bias { input, weight } => {
                let sx = params[input].scale[0];
                let w = typed.fact(ann.constants[*weight].value).value.as_ref().expect("constants have values");
                fit_bias_codes(value.as_f32().expect("float bias"), sx, &mut constants[*weight], w);
                let sw = &constants[*weight].params;
                let p = QParams {
                    qtype: QType::I32,
                    scale: sw.scale.iter().map(|s| s * sx).collect(),
                    zero_point: vec![0; sw.scale.len()],
                    axis: sw.axis.map(|_| 0),
                };
                let value = match (cal.means.get(input).filter(|_| bias_correction), &ann.constants[*weight].kind) {
                    (Some(mean), ConstantKind::Weight { matrix_output_axis: Some(out_axis), .. }) => {
                        let w = typed.fact(ann.constants[*weight].value).value.as_ref().expect("constants have values");
                        corrected_bias(&value, w, &constants[*weight].value, *out_axis, mean)
                    }
                    _ => value,
                };
                (value, p)
            }
        };
        constants.push(ConstantQdq { node: c.node, slot: c.slot, value, params: p });
    }
    values.sort_by(|a, b| a.name.cmp(&b.name));
    Conversion { edits: QdqEdits { activations, constants }, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bias_too_large_for_its_codes_widens_only_its_columns_weight_scale() {
        // W [K = 2, N = 2]: column 0 tiny weights under a bias of 5, column 1 ordinary.
        let float = Tensor::f32(vec![2, 2], vec![1e-6, 0.5, -2e-6, -0.25]);
        let p = QParams::symmetric_weights(float.as_f32().unwrap(), &[2, 2], Some(1), 127.0);
        let nearest = dequantized(&p.quantize_all(float.as_f32().unwrap(), &[2, 2]), &p, &[2, 2]);
        let mut weight = ConstantQdq { node: 0, slot: 1, value: nearest.clone(), params: p.clone() };
        let sx = 10.0 / 65535.0;
        let bias = [5.0f32, 0.1];
        assert!(bias[0] / (sx * p.scale[0]) > i32::MAX as f32, "the test's column 0 overflows as set up");
        fit_bias_codes(&bias, sx, &mut weight, &float);
        let q = &weight.params;
        assert!((bias[0] / (sx * q.scale[0]) - BIAS_CODE_LIMIT).abs() <= 1e-3 * BIAS_CODE_LIMIT, "{:?}", q.scale);
        assert_eq!(q.scale[1], p.scale[1], "column 1 keeps its scale");
        let w = weight.value.as_f32().unwrap();
        let before = nearest.as_f32().unwrap();
        assert_eq!((w[1], w[3]), (before[1], before[3]), "column 1 keeps its codes");
        assert!(w[0].abs() <= q.scale[0] && w[2].abs() <= q.scale[0], "column 0 rounds on its wider grid: {w:?}");
    }
}
