//! Raising a model's default-domain opset, for what only newer opsets can say: 16-bit
//! QuantizeLinear/DequantizeLinear need opset 21. Nodes whose meaning changed on the way are
//! rewritten to the new form; a model holding a change octet does not rewrite is left as it is.

use crate::proto::tensor_proto::DataType;
use crate::proto::{attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, TensorProto};

/// The first opset whose QuantizeLinear and DequantizeLinear take uint16 and int16.
pub const SIXTEEN_BIT_QDQ: i64 = 21;

/// The oldest opset this module raises: before 13, Squeeze, Unsqueeze, Split, ReduceSum and
/// others took attributes that later became inputs.
const OLDEST: i64 = 13;

/// The first IR version that opset 21 goes with.
const IR_VERSION_OF_OPSET_21: i64 = 10;

/// Reductions whose `axes` became an input at opset 18 (ReduceSum's did at 13).
const REDUCE_AXES_INPUT_AT_18: [&str; 9] =
    ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare"];

/// Ops whose meaning changed between opset 13 and 21 in ways not rewritten here, with the opset
/// of the change: GroupNormalization's scale and bias went from per group to per channel,
/// GridSample renamed its modes, DFT's axis became an input, RoiAlign's default coordinate mode
/// changed.
const NOT_REWRITTEN: [(&str, i64); 4] = [("GroupNormalization", 21), ("GridSample", 20), ("DFT", 20), ("RoiAlign", 16)];

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// The model's default-domain opset.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model.opset_import.iter().find(|o| is_default_domain(o.domain())).map(|o| o.version())
}

/// `Ok` when [`raise`] can take `model` to opset `to`, else why not (a sentence).
pub fn check_raise(model: &ModelProto, to: i64) -> Result<(), String> {
    let from = default_opset(model).ok_or("the model imports no default-domain opset")?;
    if from >= to {
        return Ok(());
    }
    if from < OLDEST {
        return Err(format!(
            "the model is at opset {from}, and octet raises opsets from {OLDEST} on (re-export it with opset {OLDEST} or later)"
        ));
    }
    if !model.functions.is_empty() {
        return Err("the model defines local functions, whose opset imports octet does not rewrite".into());
    }
    let mut blocking = None;
    if let Some(g) = &model.graph {
        crate::scope::for_each_node(g, &mut |n| {
            if let Some((op, at)) =
                NOT_REWRITTEN.iter().find(|(op, at)| is_default_domain(n.domain()) && n.op_type() == *op && from < *at && to >= *at)
            {
                blocking.get_or_insert_with(|| {
                    format!("node '{}' is a {op}, whose meaning changed at opset {at}, and octet does not rewrite it", n.name())
                });
            }
        });
    }
    blocking.map_or(Ok(()), Err)
}

/// Raises `model`'s default-domain opset to `to` (and its IR version to what `to` needs),
/// rewriting the nodes whose form changed: reductions' `axes` attributes become int64 inputs
/// (opset 18), a Split without sizes names its number of outputs (opset 18). Returns the opset
/// it was at. Fails, changing nothing, where [`check_raise`] does.
pub fn raise(model: &mut ModelProto, to: i64) -> Result<i64, String> {
    check_raise(model, to)?;
    let from = default_opset(model).expect("checked");
    if from >= to {
        return Ok(from);
    }
    if let Some(g) = model.graph.as_mut() {
        let mut names = crate::scope::FreshNames::of(g);
        rewrite_graph(g, from, to, &mut names);
    }
    for o in model.opset_import.iter_mut().filter(|o| is_default_domain(o.domain())) {
        o.version = Some(to);
    }
    if to >= SIXTEEN_BIT_QDQ && model.ir_version() < IR_VERSION_OF_OPSET_21 {
        model.ir_version = Some(IR_VERSION_OF_OPSET_21);
    }
    Ok(from)
}

fn rewrite_graph(g: &mut GraphProto, from: i64, to: i64, names: &mut crate::scope::FreshNames) {
    let crosses = |at: i64| from < at && to >= at;
    let mut initializers = Vec::new();
    for n in g.node.iter_mut() {
        for a in n.attribute.iter_mut() {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                rewrite_graph(sub, from, to, names);
            }
        }
        if !is_default_domain(n.domain()) {
            continue;
        }
        if crosses(18) && REDUCE_AXES_INPUT_AT_18.contains(&n.op_type()) {
            if let Some(at) = n.attribute.iter().position(|a| a.name() == "axes") {
                let axes = n.attribute.remove(at).ints;
                let name = names.fresh(format!("{}_axes", n.output.first().map_or(n.name(), |o| o.as_str())));
                initializers.push(TensorProto {
                    name: Some(name.clone()),
                    dims: vec![axes.len() as i64],
                    data_type: Some(DataType::Int64 as i32),
                    raw_data: Some(axes.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
                    ..Default::default()
                });
                n.input.truncate(1);
                n.input.push(name);
            }
        }
        let sizes_given = n.input.get(1).is_some_and(|s| !s.is_empty());
        if crosses(18) && n.op_type() == "Split" && !sizes_given && !n.attribute.iter().any(|a| a.name() == "num_outputs") {
            n.attribute.push(AttributeProto {
                name: Some("num_outputs".into()),
                r#type: Some(AttributeType::Int as i32),
                i: Some(n.output.len() as i64),
                ..Default::default()
            });
        }
    }
    g.initializer.extend(initializers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{NodeProto, OperatorSetIdProto};

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{op}_0")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
    }

    fn model(opset: i64, nodes: Vec<NodeProto>) -> ModelProto {
        ModelProto {
            ir_version: Some(7),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
            graph: Some(GraphProto { node: nodes, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn reductions_take_axes_as_inputs_and_splits_name_their_outputs() {
        let mut m = model(
            14,
            vec![
                node("ReduceMean", &["x"], &["m"], vec![ints("axes", &[-1])]),
                node("ReduceMax", &["x"], &["all"], vec![]),
                node("Split", &["x"], &["a", "b"], vec![]),
            ],
        );
        assert_eq!(raise(&mut m, SIXTEEN_BIT_QDQ), Ok(14));
        assert_eq!((default_opset(&m), m.ir_version()), (Some(21), 10));
        let g = m.graph.as_ref().unwrap();
        assert_eq!((g.node[0].input.clone(), g.node[0].attribute.len()), (vec!["x".to_string(), "m_axes".to_string()], 0));
        let axes = &g.initializer[0];
        assert_eq!(
            (axes.name(), axes.dims.clone(), axes.data_type, axes.raw_data().to_vec()),
            ("m_axes", vec![1], Some(DataType::Int64 as i32), (-1i64).to_le_bytes().to_vec())
        );
        assert_eq!(g.node[1].input, vec!["x".to_string()], "no axes: all of them, as before");
        assert_eq!((g.node[2].attribute[0].name(), g.node[2].attribute[0].i()), ("num_outputs", 2));
    }

    #[test]
    fn models_it_cannot_raise_are_left_alone() {
        for (opset, op) in [(12, "Relu"), (17, "GroupNormalization"), (19, "GridSample")] {
            let mut m = model(opset, vec![node(op, &["x"], &["y"], vec![])]);
            let before = m.clone();
            let why = raise(&mut m, SIXTEEN_BIT_QDQ).unwrap_err();
            assert!(why.contains(if opset < 13 { "opset 12" } else { op }), "{why}");
            assert_eq!(m, before);
        }
        let mut recent = model(21, vec![node("GroupNormalization", &["x"], &["y"], vec![])]);
        assert_eq!(raise(&mut recent, SIXTEEN_BIT_QDQ), Ok(21));
    }
}
