//! Inserting QuantizeLinear / DequantizeLinear into an ONNX model: the standard QDQ form that
//! ONNX Runtime, other tools and octet's lowering all read.

use std::collections::HashMap;

use octet_graph::{QParams, QType, Tensor};

use crate::proto::tensor_proto::DataType;
use crate::proto::{attribute_proto::AttributeType, AttributeProto, ModelProto, NodeProto, TensorProto};

/// Quantize an activation: `value → Q → DQ`, and make `readers` (indices into the model's node
/// list) read the DQ output instead of `value`.
#[derive(Clone, Debug)]
pub struct ActivationQdq {
    pub value: String,
    pub params: QParams,
    pub readers: Vec<usize>,
}

/// Store a constant input quantized: `node`'s input `slot` becomes `DQ(quantized initializer)`.
#[derive(Clone, Debug)]
pub struct ConstantQdq {
    pub node: usize,
    pub slot: usize,
    /// The float contents, as imported (the initializer may have been external).
    pub value: Tensor,
    pub params: QParams,
}

/// Everything to insert.
#[derive(Clone, Debug, Default)]
pub struct QdqEdits {
    pub activations: Vec<ActivationQdq>,
    pub constants: Vec<ConstantQdq>,
}

fn data_type(q: QType) -> DataType {
    match q {
        QType::U8 => DataType::Uint8,
        QType::S8 => DataType::Int8,
        QType::U16 => DataType::Uint16,
        QType::I32 => DataType::Int32,
    }
}

/// An initializer holding integers of type `q`.
fn int_tensor(name: &str, dims: &[usize], q: QType, values: &[i64]) -> TensorProto {
    let raw: Vec<u8> = match q {
        QType::U8 => values.iter().map(|&v| v as u8).collect(),
        QType::S8 => values.iter().map(|&v| v as i8 as u8).collect(),
        QType::U16 => values.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
        QType::I32 => values.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
    };
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type(q) as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// Scale and zero-point initializers for `params` (scalars per tensor, 1-D per channel).
fn param_tensors(base: &str, p: &QParams) -> [TensorProto; 2] {
    let dims: Vec<usize> = if p.axis.is_some() { vec![p.scale.len()] } else { vec![] };
    let zp: Vec<i64> = p.zero_point.iter().map(|&z| z as i64).collect();
    [float_tensor(&format!("{base}_scale"), &dims, &p.scale), int_tensor(&format!("{base}_zero_point"), &dims, p.qtype, &zp)]
}

fn qdq_node(op: &str, name: &str, inputs: [&str; 3], output: &str, axis: Option<usize>) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: axis
            .map(|a| AttributeProto {
                name: Some("axis".into()),
                r#type: Some(AttributeType::Int as i32),
                i: Some(a as i64),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Applies the edits. Node indices in the edits refer to the model's node list before the call.
/// Q/DQ of an activation are placed right after its producer (first, for graph inputs), those
/// of constants first, so the node list stays topologically sorted.
pub fn insert_qdq(model: &mut ModelProto, edits: &QdqEdits) {
    let g = model.graph.as_mut().expect("an imported model has a graph");
    let mut names = crate::scope::FreshNames::of(g);
    let mut prologue: Vec<NodeProto> = Vec::new();
    let mut after: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut nodes = g.node.clone();

    let mut stored: HashMap<(String, Vec<u32>, Vec<i32>), String> = HashMap::new();
    for c in &edits.constants {
        let original = nodes[c.node].input[c.slot].clone();
        let key = (original.clone(), c.params.scale.iter().map(|s| s.to_bits()).collect(), c.params.zero_point.clone());
        let dq_out = match stored.get(&key) {
            Some(n) => n.clone(),
            None => {
                let base = names.fresh(format!("{original}_quantized"));
                let values = c.params.quantize_all(c.value.as_f32().expect("float constants"), c.value.shape());
                g.initializer.push(int_tensor(&base, c.value.shape(), c.params.qtype, &values));
                let [scale, zp] = param_tensors(&base, &c.params);
                let out = names.fresh(format!("{original}_dequantized"));
                let node_name = names.fresh(format!("{original}_DequantizeLinear"));
                prologue.push(qdq_node("DequantizeLinear", &node_name, [&base, scale.name(), zp.name()], &out, c.params.axis));
                g.initializer.extend([scale, zp]);
                stored.insert(key, out.clone());
                out
            }
        };
        nodes[c.node].input[c.slot] = dq_out;
    }

    let producer: HashMap<&str, usize> =
        g.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    for a in &edits.activations {
        let q_out = names.fresh(format!("{}_quantized", a.value));
        let dq_out = names.fresh(format!("{}_dequantized", a.value));
        let [scale, zp] = param_tensors(&names.fresh(format!("{}_qparams", a.value)), &a.params);
        let q = qdq_node(
            "QuantizeLinear",
            &names.fresh(format!("{}_QuantizeLinear", a.value)),
            [&a.value, scale.name(), zp.name()],
            &q_out,
            None,
        );
        let dq = qdq_node(
            "DequantizeLinear",
            &names.fresh(format!("{}_DequantizeLinear", a.value)),
            [&q_out, scale.name(), zp.name()],
            &dq_out,
            None,
        );
        g.initializer.extend([scale, zp]);
        match producer.get(a.value.as_str()) {
            Some(&p) => after.entry(p).or_default().extend([q, dq]),
            None => prologue.extend([q, dq]),
        }
        for &r in &a.readers {
            for input in nodes[r].input.iter_mut().filter(|i| **i == a.value) {
                *input = dq_out.clone();
            }
        }
    }

    let mut out = prologue;
    for (i, n) in nodes.into_iter().enumerate() {
        out.push(n);
        out.extend(after.remove(&i).unwrap_or_default());
    }
    g.node = out;
    crate::scope::remove_unread(g);
}
