//! The graph as imported: nodes in topological order over numbered values, with declared
//! input dims that may be symbolic.

use std::collections::HashMap;
use std::sync::Arc;

use crate::op::Op;
use crate::tensor::{DType, Tensor};

/// Index of a value (an edge) in a graph.
pub type ValueId = usize;

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Arc<dyn Op>,
    /// `None` for an optional input left out.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// Names of the imported nodes a rewrite absorbed into this one (empty for imported nodes).
    pub fused: Vec<String>,
}

/// A declared input dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A named or unnamed symbolic dim (e.g. the batch): any size, the same for equal names.
    Symbol(String),
}

/// A graph input and what it must look like.
#[derive(Clone, Debug)]
pub struct Input {
    pub value: ValueId,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl Input {
    /// The dims as text, e.g. `[batch, 3, 224, 224]`.
    pub fn describe_dims(&self) -> String {
        let d: Vec<String> = self
            .dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => n.to_string(),
                Dim::Symbol(s) if s.is_empty() => "?".into(),
                Dim::Symbol(s) => s.clone(),
            })
            .collect();
        format!("[{}]", d.join(", "))
    }
}

/// An imported graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Value names, indexed by [`ValueId`].
    pub names: Vec<String>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<ValueId>,
    /// Initializers (weights and other constants).
    pub constants: HashMap<ValueId, Arc<Tensor>>,
}

impl Graph {
    /// The id of the value called `name`, created when new.
    pub fn value(&mut self, name: &str, index: &mut HashMap<String, ValueId>) -> ValueId {
        if let Some(&id) = index.get(name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.to_string());
        index.insert(name.to_string(), id);
        id
    }

    /// Name of the graph input `i`.
    pub fn input_name(&self, i: usize) -> &str {
        &self.names[self.inputs[i].value]
    }

    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|&v| self.names[v].as_str()).collect()
    }
}

/// A subgraph: its formal inputs, the enclosing-scope values it reads, and its outputs
/// (`graph.outputs`). Held by the If, Loop and Scan nodes that run it (`ops::control_flow`).
#[derive(Debug)]
pub struct Body {
    pub graph: Graph,
    pub formal: Vec<ValueId>,
    /// Body-side ids of the captured values, in the order the node's inputs carry them.
    pub captured: Vec<ValueId>,
}
