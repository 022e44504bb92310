//! `octet check`: how every node of a model would run, and why.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use octet_graph::ops::{self, OPSETS};
use octet_graph::{Dim, TypedGraph};
use serde::Serialize;

/// How one node of the file runs.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Executed by a float kernel.
    Float,
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
    /// The node that executes this one's work (itself, or the fused node).
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
    pub counts: HashMap<String, usize>,
}

/// Builds the report, with symbolic input dims set to `batch`.
pub fn check(model: &Path, batch: usize) -> Result<Report> {
    let m = octet_onnx::load(model)?;
    let g = &m.graph;
    let shapes: Vec<Vec<usize>> =
        g.inputs.iter().map(|i| i.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { batch }).collect()).collect();
    let typed = TypedGraph::specialize(g, &shapes)?;
    let planned: HashMap<&str, &octet_graph::Node> = typed.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let constant = |v: usize| typed.facts.get(v).and_then(|f| f.as_ref()).is_some_and(|f| f.is_constant());
    let absorbed_by: HashMap<&str, &str> =
        typed.nodes.iter().flat_map(|p| p.fused.iter().map(move |f| (f.as_str(), p.name.as_str()))).collect();
    let mut nodes = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in &g.nodes {
        let out_shape = n.outputs.first().and_then(|&v| typed.facts.get(v)?.as_ref().map(|f| f.shape.clone())).unwrap_or_default();
        let (status, runs_as, kernel, int8, why) = if let Some(p) = planned.get(n.name.as_str()) {
            let def = ops::lookup(p.op.name()).expect("planned ops come from the registry");
            let fused = p.op.name() != n.op.name();
            let why = if fused {
                format!("matched the {} pattern and runs as one {} op", if p.op.name() == "Gelu" { "GELU" } else { "LayerNorm" }, p.op.name())
            } else {
                "float kernel".to_string()
            };
            (Status::Float, Some(n.name.clone()), format!("{}: {}", p.op.name(), def.float_kernel), def.int8.describe().to_string(), why)
        } else if n.outputs.iter().all(|&v| constant(v)) {
            (Status::Folded, None, "-".into(), "-".into(), "depends only on constants and input shapes: computed once per input shape".into())
        } else {
            let by = absorbed_by.get(n.name.as_str()).map(|s| s.to_string());
            let why = match &by {
                Some(b) => format!("part of a pattern that '{b}' runs as one op"),
                None => "its result is not needed for the outputs".into(),
            };
            (Status::Fused, by, "-".into(), "-".into(), why)
        };
        *counts.entry(format!("{status:?}").to_lowercase()).or_default() += 1;
        nodes.push(NodeReport { name: n.name.clone(), op: n.op.name().to_string(), status, runs_as, kernel, int8, output_shape: out_shape, why });
    }
    Ok(Report {
        model: model.display().to_string(),
        producer: m.producer,
        opset: m.opset,
        inputs: g.inputs.iter().enumerate().map(|(i, x)| format!("{} {} {}", g.input_name(i), x.dtype, x.describe_dims())).collect(),
        batch,
        nodes,
        counts,
    })
}

impl Report {
    /// The human-readable form.
    pub fn text(&self, all: bool) -> String {
        let mut s = format!(
            "{}: opset {} (supported {}–{}), produced by {}\ninputs: {} (symbolic dims checked at {})\n\n",
            self.model,
            self.opset,
            OPSETS.0,
            OPSETS.1,
            if self.producer.is_empty() { "unknown" } else { &self.producer },
            self.inputs.join("; "),
            self.batch
        );
        let shown: Vec<&NodeReport> = self.nodes.iter().filter(|n| all || n.status == Status::Float).collect();
        let w0 = shown.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
        let w1 = shown.iter().map(|n| n.op.len()).max().unwrap_or(2).max(2);
        let w2 = shown.iter().map(|n| n.kernel.len()).max().unwrap_or(6).max(6);
        s += &format!("{:<w0$}  {:<w1$}  {:<8}  {:<w2$}  {:<22}  {}\n", "node", "op", "status", "kernel", "int8", "why");
        for n in shown {
            s += &format!("{:<w0$}  {:<w1$}  {:<8}  {:<w2$}  {:<22}  {}\n", n.name, n.op, format!("{:?}", n.status).to_lowercase(), n.kernel, n.int8, n.why);
        }
        let c = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        s += &format!(
            "\n{} nodes: {} run in float, {} folded at load, {} fused. All operators are supported.{}\n",
            self.nodes.len(),
            c("float"),
            c("folded"),
            c("fused"),
            if all { "" } else { " (--all lists folded and fused nodes too)" }
        );
        s
    }
}
