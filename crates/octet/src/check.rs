//! `octet check`: how every node of a model would run, and why.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use octet_graph::ops::{self, OPSETS};
use octet_graph::pattern::Index;
use octet_graph::{Dim, Graph, Node, TypedGraph, ValueId};
use octet_runtime::Engine;
use serde::Serialize;

/// The `int8` column of a quantized node that no int8 kernel took.
pub const FLOAT_BETWEEN_DQ_AND_Q: &str = "float between dq and q";

/// How one node of the file runs.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A quantized op: its inputs come from DequantizeLinear and its outputs go to
    /// QuantizeLinear (or stay float, for ops quantized on their inputs only).
    Int8,
    /// Executed by a float kernel on float data.
    Float,
    /// A QuantizeLinear or DequantizeLinear on an activation.
    Qdq,
    /// Computed once at load: it depends only on constants and input shapes.
    Folded,
    /// Absorbed into another node by a rewrite pass.
    Fused,
}

#[derive(Serialize, Debug)]
pub struct NodeReport {
    pub name: String,
    pub op: String,
    pub status: Status,
    /// The node that executes this one's work (itself, or the node it was fused into).
    pub runs_as: Option<String>,
    pub kernel: String,
    pub int8: String,
    pub output_shape: Vec<usize>,
    pub why: String,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub model: String,
    pub producer: String,
    pub opset: u32,
    pub inputs: Vec<String>,
    pub batch: usize,
    pub nodes: Vec<NodeReport>,
    pub counts: BTreeMap<Status, usize>,
    /// The int8 kernel tier in use.
    pub isa: String,
    /// Op types running quantized, with counts (planned ops, e.g. one Gelu for a fused pattern).
    pub quantized_ops: BTreeMap<String, usize>,
    /// Remarks on how this file runs here and elsewhere (not errors).
    pub notes: Vec<String>,
}

/// The largest |code| of the s8 constants that DequantizeLinear reads (the weights), if any.
fn weight_code_max(g: &Graph, typed: &TypedGraph) -> Option<i32> {
    g.nodes
        .iter()
        .filter(|n| n.op.name() == "DequantizeLinear")
        .filter_map(|n| typed.facts.get(n.inputs.first().copied().flatten()?)?.as_ref()?.value.clone())
        .filter_map(|t| match t.data() {
            octet_graph::Data::I8(v) => v.iter().map(|&x| (x as i32).abs()).max(),
            _ => None,
        })
        .max()
}

/// What the file and this CPU imply beyond the per-node table.
fn notes(g: &Graph, typed: &TypedGraph) -> Vec<String> {
    let mut notes: Vec<String> = octet_kernels::isa::tier_note().into_iter().map(String::from).collect();
    if let Some(max) = weight_code_max(g, typed).filter(|&m| m > octet_graph::qparams::REDUCED_WEIGHT_QMAX as i32) {
        notes.push(format!(
            "weights use the full s8 range (codes up to ±{max}): ONNX Runtime's U8S8 kernels may saturate on this file on CPUs without VNNI; `octet quantize --reduce-range` writes 7-bit weights that run exactly there (and on octet's faster AVX2 kernel)"
        ));
    }
    notes
}

/// QDQ structure of the imported graph.
struct Qdq<'a> {
    g: &'a Graph,
    ix: Index,
}

impl<'a> Qdq<'a> {
    fn new(g: &'a Graph) -> Self {
        Qdq { g, ix: Index::of_graph(g) }
    }
    fn made_by(&self, v: ValueId, op: &str) -> bool {
        self.ix.producer(v).is_some_and(|p| self.g.nodes[p].op.name() == op)
    }
    fn read_by(&self, v: ValueId, op: &str) -> bool {
        self.ix.readers(v).iter().any(|&i| self.g.nodes[i].op.name() == op)
    }
    /// The only reader of `v`, when there is one.
    fn sole_reader(&self, v: ValueId) -> Option<&'a Node> {
        match self.ix.readers(v) {
            [r] => Some(&self.g.nodes[*r]),
            _ => None,
        }
    }
}

/// Whether a planned node is quantized in QDQ form, and how.
fn quantized(q: &Qdq, typed: &TypedGraph, p: &Node) -> Option<&'static str> {
    if matches!(p.op.name(), "QuantizeLinear" | "DequantizeLinear") {
        return None;
    }
    let def = ops::lookup(p.op.name())?;
    let mut activations = p.inputs.iter().flatten().filter(|&&v| !typed.fact(v).is_constant()).peekable();
    activations.peek()?;
    if !activations.all(|&v| q.made_by(v, "DequantizeLinear")) {
        return None;
    }
    if def.quant == ops::QuantRule::Matmul && p.inputs.get(1).copied().flatten().is_some_and(|w| !q.made_by(w, "DequantizeLinear")) {
        return None;
    }
    let out = p.outputs[0];
    if q.read_by(out, "QuantizeLinear") {
        return Some("inputs from DequantizeLinear, output to QuantizeLinear");
    }
    if def.quant != ops::QuantRule::Matmul {
        return None;
    }
    match linear_bias(q, p) {
        Some(add) if q.read_by(add.outputs[0], "QuantizeLinear") => {
            Some("a Linear: inputs and int32 bias from DequantizeLinear, output to QuantizeLinear")
        }
        Some(_) => Some("a Linear: inputs and int32 bias from DequantizeLinear, output stays float"),
        None => Some("inputs from DequantizeLinear, output stays float"),
    }
}

/// The Add of a dequantized bias that is the only reader of a matrix product's output.
fn linear_bias<'a>(q: &Qdq<'a>, p: &Node) -> Option<&'a Node> {
    q.sole_reader(p.outputs[0]).filter(|a| a.op.name() == "Add" && a.inputs.iter().flatten().any(|&b| q.made_by(b, "DequantizeLinear")))
}

/// Builds the report, with symbolic input dims set to `batch`.
pub fn check(model: &Path, batch: usize) -> Result<Report> {
    let m = octet_onnx::load_for_inference(model)?;
    let g = &m.graph;
    let shapes: Vec<Vec<usize>> =
        g.inputs.iter().map(|i| i.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { batch }).collect()).collect();
    let typed = octet_runtime::specialize(g, &shapes, Engine::Reference)?;
    let isa = octet_kernels::Isa::selected().map_err(anyhow::Error::msg)?;
    let (lowered, matched) = octet_runtime::passes::specialize_matched(g, &shapes, Engine::Int8)?;
    let mut patterns_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &matched {
        patterns_of.entry(m.node.as_str()).or_default().push(m.pattern);
    }
    let mut kernel_of: HashMap<&str, (&str, String)> = HashMap::new();
    for l in &lowered.nodes {
        if let Some(k) = l.op.kernel() {
            for member in std::iter::once(&l.name).chain(&l.fused) {
                kernel_of.insert(member, (l.name.as_str(), k.clone()));
            }
        }
    }
    let q = Qdq::new(g);
    let planned: HashMap<&str, &Node> = typed.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let constant = |v: usize| typed.facts.get(v).and_then(|f| f.as_ref()).is_some_and(|f| f.is_constant());
    let absorbed_by: HashMap<&str, &str> =
        typed.nodes.iter().flat_map(|p| p.fused.iter().map(move |f| (f.as_str(), p.name.as_str()))).collect();
    let mut quantized_ops = BTreeMap::new();
    let mut linear_adds: HashMap<&str, &str> = HashMap::new();
    let mut int8: HashMap<&str, &'static str> = HashMap::new();
    for p in &typed.nodes {
        if let Some(why) = quantized(&q, &typed, p) {
            int8.insert(&p.name, why);
            *quantized_ops.entry(p.op.name().to_string()).or_default() += 1;
            if let Some(a) = linear_bias(&q, p) {
                linear_adds.insert(&a.name, &p.name);
            }
        }
    }
    let stream: std::collections::HashSet<ValueId> = octet_quant::annotate::residual_stream(&typed).into_iter().collect();
    let mut nodes = Vec::new();
    for n in &g.nodes {
        let out_shape = n.outputs.first().and_then(|&v| typed.facts.get(v)?.as_ref().map(|f| f.shape.clone())).unwrap_or_default();
        let report = |status, runs_as: Option<String>, kernel: String, int8: &str, why: String| NodeReport {
            name: n.name.clone(),
            op: n.op.name().to_string(),
            status,
            runs_as,
            kernel,
            int8: int8.to_string(),
            output_shape: out_shape.clone(),
            why,
        };
        let r = if let Some((anchor, kernel)) = kernel_of.get(n.name.as_str()) {
            let why = match patterns_of.get(n.name.as_str()).or(patterns_of.get(anchor)) {
                Some(patterns) => format!("matched {}", patterns.join("; then ")),
                None => int8.get(n.name.as_str()).copied().unwrap_or("an int8 pattern").to_string(),
            };
            if *anchor == n.name {
                report(Status::Int8, Some(n.name.clone()), kernel.clone(), "int8 kernel", format!("{why}: lowered to an int8 kernel"))
            } else if matches!(n.op.name(), "QuantizeLinear" | "DequantizeLinear") {
                report(Status::Qdq, Some(anchor.to_string()), "-".into(), "-", format!("absorbed into the int8 kernel of '{anchor}'"))
            } else {
                report(
                    Status::Int8,
                    Some(anchor.to_string()),
                    format!("part of: {kernel}"),
                    "int8 kernel",
                    format!("{why}: runs inside the int8 kernel of '{anchor}'"),
                )
            }
        } else if let Some(p) = planned.get(n.name.as_str()) {
            let def = ops::lookup(p.op.name()).expect("planned ops come from the registry");
            let kernel = format!("{}: {}", p.op.name(), def.float_kernel);
            let fused =
                if p.op.name() != n.op.name() { format!("; matched a pattern that runs as one {}", p.op.name()) } else { String::new() };
            if matches!(n.op.name(), "QuantizeLinear" | "DequantizeLinear") {
                report(Status::Qdq, Some(n.name.clone()), kernel, "-", "quantization boundary of an activation".into())
            } else if let Some(why) = int8.get(n.name.as_str()) {
                report(Status::Int8, Some(n.name.clone()), kernel, FLOAT_BETWEEN_DQ_AND_Q, format!("{why}{fused}; no int8 kernel matched"))
            } else if let Some(linear) = linear_adds.get(n.name.as_str()) {
                report(
                    Status::Int8,
                    Some(linear.to_string()),
                    kernel,
                    &octet_runtime::lower::int8_support(def).describe(),
                    format!("the int32 bias of the Linear '{linear}'"),
                )
            } else if p.inputs.iter().flatten().chain(&p.outputs).any(|v| stream.contains(v)) {
                report(
                    Status::Float,
                    Some(n.name.clone()),
                    kernel,
                    "not quantized",
                    format!("the residual stream, float by default (`octet quantize --int8-residual` quantizes it){fused}"),
                )
            } else {
                report(Status::Float, Some(n.name.clone()), kernel, "not quantized", format!("float kernel{fused}"))
            }
        } else if n.outputs.iter().all(|&v| constant(v)) {
            let why = if n.op.name() == "DequantizeLinear" {
                "dequantizes a constant (weight or bias): computed once at load".into()
            } else {
                "depends only on constants and input shapes: computed once per input shape".into()
            };
            report(Status::Folded, None, "-".into(), "-", why)
        } else {
            let by = absorbed_by.get(n.name.as_str()).map(|s| s.to_string());
            let why = match &by {
                Some(b) => format!("part of a pattern that '{b}' runs as one op"),
                None => "its result is not needed for the outputs".into(),
            };
            let status = if by.as_deref().is_some_and(|b| int8.contains_key(b)) { Status::Int8 } else { Status::Fused };
            let why = if status == Status::Int8 { format!("{why}, quantized") } else { why };
            report(status, by, "-".into(), "-", why)
        };
        nodes.push(r);
    }
    let mut counts = BTreeMap::new();
    for n in &nodes {
        *counts.entry(n.status).or_default() += 1;
    }
    Ok(Report {
        model: model.display().to_string(),
        producer: m.producer,
        opset: m.opset,
        inputs: g.inputs.iter().enumerate().map(|(i, x)| format!("{} {} {}", g.input_name(i), x.dtype, x.describe_dims())).collect(),
        batch,
        nodes,
        counts,
        isa: isa.name().to_string(),
        quantized_ops,
        notes: notes(g, &typed),
    })
}

impl Report {
    /// The human-readable form.
    pub fn text(&self, all: bool) -> String {
        let mut s = format!(
            "{}: opset {} (supported {}–{}), produced by {}\ninputs: {} (symbolic dims checked at {})\nint8 kernels: {} tier (OCTET_ISA=scalar|avx2|avx512vnni forces another)\n\n",
            self.model,
            self.opset,
            OPSETS.0,
            OPSETS.1,
            if self.producer.is_empty() { "unknown" } else { &self.producer },
            self.inputs.join("; "),
            self.batch,
            self.isa
        );
        let shown: Vec<&NodeReport> = self
            .nodes
            .iter()
            .filter(|n| all || n.status == Status::Int8 || n.status == Status::Float && n.runs_as.as_deref() == Some(&n.name))
            .collect();
        let w0 = shown.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
        let w1 = shown.iter().map(|n| n.op.len()).max().unwrap_or(2).max(2);
        let w2 = shown.iter().map(|n| n.kernel.len()).max().unwrap_or(6).max(6);
        s += &format!("{:<w0$}  {:<w1$}  {:<6}  {:<w2$}  {:<22}  {}\n", "node", "op", "status", "kernel", "int8", "why");
        for n in shown {
            let status = format!("{:?}", n.status).to_lowercase();
            s += &format!("{:<w0$}  {:<w1$}  {:<6}  {:<w2$}  {:<22}  {}\n", n.name, n.op, status, n.kernel, n.int8, n.why);
        }
        let c = |k: Status| self.counts.get(&k).copied().unwrap_or(0);
        s += &format!(
            "\n{} nodes: {} int8, {} float, {} quantize/dequantize, {} folded at load, {} fused. All operators are supported.\n",
            self.nodes.len(),
            c(Status::Int8),
            c(Status::Float),
            c(Status::Qdq),
            c(Status::Folded),
            c(Status::Fused),
        );
        if !self.quantized_ops.is_empty() {
            let ops: Vec<String> = self.quantized_ops.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
            s += &format!("quantized ops: {}\n", ops.join(", "));
        }
        for note in &self.notes {
            s += &format!("note: {note}\n");
        }
        if !all {
            s += "(--all also lists quantize/dequantize, folded and fused nodes)\n";
        }
        s
    }
}
