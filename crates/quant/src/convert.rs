//! Conversion: parameters from the observers, then the QDQ edits for the ONNX model.

use std::collections::HashMap;

use octet_graph::{Graph, QParams, QType, TypedGraph, ValueId};
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

/// Chooses every parameter and lists the Q/DQ to insert.
pub fn convert(graph: &Graph, typed: &TypedGraph, ann: &Annotation, cal: &Calibration, method: Method) -> Conversion {
    let mut params: HashMap<ValueId, QParams> = HashMap::new();
    let mut values = Vec::new();
    for (g, group) in ann.groups.iter().enumerate() {
        let base = match (&group.kind, &cal.observers[g]) {
            (GroupKind::Fixed(p), _) => p.clone(),
            (GroupKind::Observed { signed }, Some(obs)) => {
                let (lo, hi) = obs.range(method);
                if *signed {
                    QParams::from_range(lo, hi, QType::S8, true)
                } else {
                    QParams::from_range(lo, hi, QType::U8, false)
                }
            }
            (GroupKind::Observed { .. }, None) => unreachable!("observed groups have observers"),
        };
        for &(v, f) in &group.members {
            let p = base.scaled(f);
            let observed = cal.observers[g].as_ref().filter(|o| o.count > 0).map(|o| (o.min * f, o.max * f));
            values.push(ValueRecord { name: graph.names[v].clone(), qtype: p.qtype, scale: p.scale[0], zero_point: p.zero_point[0], observed, group: g });
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
        let p = match &c.kind {
            ConstantKind::Weight { axis: Some(a) } => QParams::per_channel_symmetric(value.as_f32().expect("float weight"), value.shape(), *a),
            ConstantKind::Weight { axis: None } => {
                let w = value.as_f32().expect("float weight");
                let (lo, hi) = w.iter().fold((0.0f32, 0.0f32), |(a, b), &x| (a.min(x), b.max(x)));
                QParams::from_range(lo, hi, QType::S8, true)
            }
            ConstantKind::Bias { input, weight } => {
                let sx = params[input].scale[0];
                let sw = &constants[*weight].params;
                QParams {
                    qtype: QType::I32,
                    scale: sw.scale.iter().map(|s| s * sx).collect(),
                    zero_point: vec![0; sw.scale.len()],
                    axis: sw.axis.map(|_| 0),
                }
            }
        };
        constants.push(ConstantQdq { node: c.node, slot: c.slot, value, params: p });
    }
    values.sort_by(|a, b| a.name.cmp(&b.name));
    Conversion { edits: QdqEdits { activations, constants }, values }
}
