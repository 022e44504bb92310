//! ONNX ModelProto → [`Graph`]: values, initializers (inline or external), declared input dims,
//! and one registry op per node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use octet_graph::ops::{self, BuildCtx, OPSETS};
use octet_graph::{Attr, Attrs, Dim, Graph, Input, Node};
use prost::Message;

use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::type_proto::Value as TypeValue;
use crate::proto::{GraphProto, ModelProto, NodeProto};
use crate::tensor::{dtype_name, take_tensor, tensor_from_proto};

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read '{path}': {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("'{path}' is not an ONNX model: {reason}")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("'{path}' declares opset {opset}; octet supports opsets {min} to {max} of the default ONNX domain")]
    Opset { path: PathBuf, opset: i64, min: u32, max: u32 },
    #[error("'{path}': {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Graph(#[from] octet_graph::Error),
}

/// An imported model and what the file said about itself.
#[derive(Debug)]
pub struct OnnxModel {
    pub graph: Graph,
    /// The default-domain opset.
    pub opset: u32,
    pub ir_version: i64,
    /// `producer_name producer_version`, e.g. `pytorch 2.15.0`.
    pub producer: String,
    /// The file as decoded, for rewriting (QDQ export); nodes are in the order of `graph.nodes`.
    /// Its initializers hold no inline data when loaded by [`load_for_inference`].
    pub proto: ModelProto,
    /// The folder external data paths are relative to.
    pub base: PathBuf,
}

/// Loads an ONNX file; external data is looked up next to it (and must stay in its folder).
pub fn load(path: &Path) -> Result<OnnxModel, ImportError> {
    let bytes = std::fs::read(path).map_err(|error| ImportError::Io { path: path.to_path_buf(), error })?;
    let base = path.parent().unwrap_or(Path::new("."));
    import(decode(bytes::Bytes::from(bytes), path)?, path, base, None)
}

/// [`load`] for callers that run the graph and never rewrite the file: the file is mapped, not
/// read, the initializers' bytes are sliced from the mapping (not copied) and each is handed back
/// to the kernel once its tensor holds it, so that the weights are held once, not two or three
/// times, while the model loads; `proto` keeps no initializer data.
///
/// As with any mapped file, the process gets SIGBUS if another process truncates the file while
/// it loads.
pub fn load_for_inference(path: &Path) -> Result<OnnxModel, ImportError> {
    let io = |error| ImportError::Io { path: path.to_path_buf(), error };
    let file = std::fs::File::open(path).map_err(io)?;
    let base = path.parent().unwrap_or(Path::new("."));
    if file.metadata().map_err(io)?.len() == 0 {
        return import(decode(bytes::Bytes::new(), path)?, path, base, None);
    }
    // SAFETY: the mapping is read-only and private; octet never writes the file it loads.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?);
    let model = decode(bytes::Bytes::from_owner(MappedFile(map.clone())), path)?;
    import(model, path, base, Some(&map))
}

/// A mapped file as the owner of [`bytes::Bytes`] slices.
struct MappedFile(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Gives the whole pages of `bytes` (a slice of `map`) back to the kernel: read again, they
/// would be faulted in from the file, so this only lowers the resident memory.
fn release_pages(map: &memmap2::Mmap, bytes: &[u8]) {
    const PAGE: usize = 4096;
    let Some(offset) = (bytes.as_ptr() as usize).checked_sub(map.as_ptr() as usize) else { return };
    let (start, end) = (offset.next_multiple_of(PAGE), (offset + bytes.len()) / PAGE * PAGE);
    if offset + bytes.len() <= map.len() && start < end {
        // SAFETY: the mapping is private and never written, so dropping its pages loses nothing.
        // Failure (e.g. pages larger than 4 KiB) only leaves them resident.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
    }
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// Imports a serialized model. `path` names it in messages; `base` is the folder of its
/// external data files.
pub fn load_bytes(bytes: &[u8], path: &Path, base: &Path) -> Result<OnnxModel, ImportError> {
    import(decode(bytes::Bytes::copy_from_slice(bytes), path)?, path, base, None)
}

fn decode(bytes: bytes::Bytes, path: &Path) -> Result<ModelProto, ImportError> {
    ModelProto::decode(bytes).map_err(|e| ImportError::NotOnnx {
        path: path.to_path_buf(),
        reason: format!("the protobuf does not parse ({e}); is the file truncated or corrupt?"),
    })
}

/// Imports a decoded model. With the `mapped` file it was decoded from, initializer bytes are
/// taken out of the proto and their pages released ([`load_for_inference`]); without, the proto
/// keeps them.
fn import(mut model: ModelProto, path: &Path, base: &Path, mapped: Option<&memmap2::Mmap>) -> Result<OnnxModel, ImportError> {
    let not_onnx = |reason: String| ImportError::NotOnnx { path: path.to_path_buf(), reason };
    let invalid = |message: String| ImportError::Invalid { path: path.to_path_buf(), message };
    if model.ir_version() <= 0 || model.opset_import.is_empty() {
        return Err(not_onnx("it has no IR version or no opset import".into()));
    }
    let opset = model.opset_import.iter().find(|o| is_default_domain(o.domain())).map(|o| o.version()).unwrap_or(OPSETS.0 as i64);
    let (ir_version, producer) = (model.ir_version(), format!("{} {}", model.producer_name(), model.producer_version()).trim().to_string());
    let g = model.graph.as_mut().ok_or_else(|| not_onnx("it has no graph".into()))?;
    if opset < OPSETS.0 as i64 || opset > OPSETS.1 as i64 {
        return Err(ImportError::Opset { path: path.to_path_buf(), opset, min: OPSETS.0, max: OPSETS.1 });
    }
    let opset = opset as u32;

    let mut graph = Graph::default();
    let mut index = HashMap::new();
    for init in &mut g.initializer {
        let t = match mapped {
            None => tensor_from_proto(init, base),
            Some(map) => {
                let raw = init.raw_data.clone();
                let t = take_tensor(init, base);
                if let Some(raw) = raw {
                    release_pages(map, &raw);
                }
                t
            }
        };
        let t = t.map_err(|m| invalid(format!("initializer '{}': {m}", init.name())))?;
        let v = graph.value(init.name(), &mut index);
        graph.constants.insert(v, Arc::new(t));
    }
    for vi in &g.input {
        let v = graph.value(vi.name(), &mut index);
        if graph.constants.contains_key(&v) {
            continue;
        }
        let Some(TypeValue::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(invalid(format!("input '{}' is not a tensor", vi.name())));
        };
        let dtype = ops::elementwise::dtype_from_onnx(tt.elem_type() as i64).ok_or_else(|| {
            invalid(format!("input '{}' has data type {}, which octet does not support", vi.name(), dtype_name(tt.elem_type())))
        })?;
        let dims = tt
            .shape
            .as_ref()
            .ok_or_else(|| invalid(format!("input '{}' has no declared shape", vi.name())))?
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(DimValue::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                Some(DimValue::DimParam(s)) => Dim::Symbol(s.clone()),
                _ => Dim::Symbol(String::new()),
            })
            .collect();
        graph.inputs.push(Input { value: v, dtype, dims });
    }
    for (i, n) in g.node.iter().enumerate() {
        let node = import_node(n, i, opset, base, &mut graph, &mut index, 0)?;
        graph.nodes.push(node);
    }
    for vi in &g.output {
        let v = *index.get(vi.name()).ok_or_else(|| invalid(format!("output '{}' is not produced by any node", vi.name())))?;
        graph.outputs.push(v);
    }
    if graph.outputs.is_empty() {
        return Err(invalid("the graph has no outputs".into()));
    }
    Ok(OnnxModel { graph, opset, ir_version, producer, proto: model, base: base.to_path_buf() })
}

/// The subgraph attributes of the control-flow ops, in the order their captured values follow
/// the node's inputs.
const SUBGRAPH_ATTRIBUTES: &[&str] = &["then_branch", "else_branch", "body"];

/// Subgraphs nest at most this deep (a hostile file could otherwise exhaust the stack).
const MAX_SUBGRAPH_DEPTH: usize = 16;

/// A subgraph as a [`Body`]: its own initializers and nodes; the names it reads without
/// defining them are the values it captures from enclosing scopes.
fn import_body(g: &GraphProto, opset: u32, base: &Path, depth: usize) -> Result<ops::control_flow::Body, ImportError> {
    if depth > MAX_SUBGRAPH_DEPTH {
        return Err(octet_graph::Error::Node {
            node: g.name().to_string(),
            op: "subgraph".into(),
            message: format!("subgraphs nest deeper than {MAX_SUBGRAPH_DEPTH}"),
        }
        .into());
    }
    let invalid = |message: String| ImportError::Invalid { path: base.to_path_buf(), message };
    let mut graph = Graph::default();
    let mut index = HashMap::new();
    let mut defined = std::collections::HashSet::new();
    for init in &g.initializer {
        let t = tensor_from_proto(init, base).map_err(|m| invalid(format!("initializer '{}': {m}", init.name())))?;
        let v = graph.value(init.name(), &mut index);
        graph.constants.insert(v, Arc::new(t));
        defined.insert(v);
    }
    let formal: Vec<usize> = g.input.iter().map(|vi| graph.value(vi.name(), &mut index)).collect();
    defined.extend(formal.iter().copied());
    let mut captured = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let node = import_node(n, i, opset, base, &mut graph, &mut index, depth)?;
        for v in node.inputs.iter().flatten() {
            if !defined.contains(v) && !captured.contains(v) {
                captured.push(*v);
            }
        }
        defined.extend(node.outputs.iter().copied());
        graph.nodes.push(node);
    }
    for vi in &g.output {
        let v = graph.value(vi.name(), &mut index);
        if !defined.contains(&v) && !captured.contains(&v) {
            captured.push(v);
        }
        graph.outputs.push(v);
    }
    Ok(ops::control_flow::Body { graph, formal, captured })
}

fn import_node(
    n: &NodeProto,
    i: usize,
    opset: u32,
    base: &Path,
    graph: &mut Graph,
    index: &mut HashMap<String, usize>,
    depth: usize,
) -> Result<Node, ImportError> {
    let name = if n.name().is_empty() { format!("{}_{i}", n.op_type()) } else { n.name().to_string() };
    let op_type = n.op_type();
    let def = ops::lookup(op_type).filter(|_| is_default_domain(n.domain()));
    let Some(def) = def else {
        return Err(octet_graph::Error::UnsupportedOp {
            node: name,
            op: op_type.to_string(),
            domain: if is_default_domain(n.domain()) { String::new() } else { format!(" of domain '{}'", n.domain()) },
            opset,
            closest: ops::closest(op_type, 3).join(", "),
        }
        .into());
    };
    let node_err = |message: String| octet_graph::Error::Node { node: name.clone(), op: op_type.to_string(), message };
    if opset < def.since {
        return Err(node_err(format!("{op_type} needs opset {} or later; the model declares {opset}", def.since)).into());
    }
    let mut attrs = Attrs::default();
    for a in &n.attribute {
        let value = match a.r#type() {
            AttributeType::Float => Attr::Float(a.f()),
            AttributeType::Int => Attr::Int(a.i()),
            AttributeType::String => Attr::String(String::from_utf8_lossy(a.s()).into_owned()),
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Strings => Attr::Strings(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
            AttributeType::Tensor => {
                let t = a.t.as_ref().ok_or_else(|| node_err(format!("attribute '{}' holds no tensor", a.name())))?;
                Attr::Tensor(tensor_from_proto(t, base).map_err(|m| node_err(format!("attribute '{}': {m}", a.name())))?)
            }
            AttributeType::Graph => {
                let g = a.g.as_ref().ok_or_else(|| node_err(format!("attribute '{}' holds no graph", a.name())))?;
                Attr::Graph(Arc::new(
                    import_body(g, opset, base, depth + 1).map_err(|e| node_err(format!("subgraph '{}': {e}", a.name())))?,
                ))
            }
            other => return Err(node_err(format!("attribute '{}' of type {} is not supported", a.name(), other.as_str_name())).into()),
        };
        attrs.0.insert(a.name().to_string(), value);
    }
    let op = (def.build)(&BuildCtx { attrs: &attrs, opset, num_inputs: n.input.len(), num_outputs: n.output.len() }).map_err(node_err)?;
    let mut inputs: Vec<Option<usize>> = n.input.iter().map(|s| (!s.is_empty()).then(|| graph.value(s, index))).collect();
    // Values of this scope that the node's subgraphs read, in the order the control-flow ops take them.
    for key in SUBGRAPH_ATTRIBUTES {
        if let Some(Attr::Graph(body)) = attrs.0.get(*key) {
            inputs.extend(body.captured.iter().map(|&v| Some(graph.value(&body.graph.names[v], index))));
        }
    }
    let outputs = n
        .output
        .iter()
        .enumerate()
        .map(|(k, s)| if s.is_empty() { graph.value(&format!("{name}:unused{k}"), index) } else { graph.value(s, index) })
        .collect();
    Ok(Node { name, op, inputs, outputs, fused: vec![] })
}
