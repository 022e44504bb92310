//! A graph specialised to concrete input shapes: every value has a [`Fact`] and everything that
//! depends only on constants and shapes is folded.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Node, ValueId};
use crate::op::{EvalCtx, Fact};
use crate::pattern::Index;
use crate::tensor::Tensor;

/// A specialised graph. Nodes are in topological order; `facts[v]` is known for every value
/// that is a graph input, a constant or a node output.
#[derive(Clone, Debug)]
pub struct TypedGraph {
    pub names: Vec<String>,
    pub facts: Vec<Option<Fact>>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

fn node_error(node: &Node, message: String) -> Error {
    Error::Node { node: node.name.clone(), op: node.op.name().to_string(), message }
}

/// Refuses a node whose outputs would exceed the tensor size limit ([`crate::limits`]), before
/// they are computed or allocated.
fn check_sizes(node: &Node, outputs: &[Fact]) -> Result<()> {
    for f in outputs {
        crate::limits::check_tensor(f.dtype, &f.shape).map_err(|m| node_error(node, format!("output {m}")))?;
    }
    Ok(())
}

/// Checks concrete input shapes against the declared dims; symbols with one name take one size.
pub fn check_input_shapes(graph: &Graph, shapes: &[Vec<usize>]) -> Result<()> {
    if shapes.len() != graph.inputs.len() {
        return Err(Error::Input(format!("the model has {} inputs, {} were given", graph.inputs.len(), shapes.len())));
    }
    let mut bound: Vec<(&str, usize)> = Vec::new();
    for (i, (input, shape)) in graph.inputs.iter().zip(shapes).enumerate() {
        let name = graph.input_name(i);
        let mismatch =
            || Error::Input(format!("input '{name}' has shape {shape:?}, the model expects {} ({})", input.describe_dims(), input.dtype));
        if input.dims.len() != shape.len() {
            return Err(mismatch());
        }
        for (d, &n) in input.dims.iter().zip(shape) {
            match d {
                Dim::Fixed(f) if *f != n => return Err(mismatch()),
                Dim::Symbol(s) if !s.is_empty() => match bound.iter().find(|(b, _)| b == s) {
                    Some(&(_, m)) if m != n => {
                        return Err(Error::Input(format!("input '{name}': dim '{s}' is {n} here but {m} in another input")))
                    }
                    Some(_) => {}
                    None => bound.push((s, n)),
                },
                _ => {}
            }
        }
    }
    Ok(())
}

impl TypedGraph {
    /// Specialises `graph` to input facts (in graph input order) and folds everything that
    /// depends only on constants and shapes. No rewrite pass runs here: the runtime's pass list
    /// does (`octet_runtime::passes`). An input whose fact carries a value is a constant of the
    /// result (inputs that feed shape operands).
    ///
    /// `constants` are more constants than `graph` holds, moved in: the typed graph then holds
    /// the only reference to them, and a pass that packs one can free it
    /// ([`TypedGraph::release_constant`]). A node for which `defer_folding` says so stays a node
    /// even when its inputs are constant (the int8 lowering reads the integers of dequantized
    /// weights); [`TypedGraph::fold_constants`] folds what is left of them later.
    pub fn specialize_with(
        graph: &Graph,
        constants: HashMap<ValueId, Arc<Tensor>>,
        inputs: &[Fact],
        defer_folding: &dyn Fn(&Node, &[Option<&Fact>]) -> bool,
    ) -> Result<TypedGraph> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|f| f.shape.clone()).collect();
        check_input_shapes(graph, &shapes)?;
        let mut facts: Vec<Option<Fact>> = vec![None; graph.names.len()];
        for (input, fact) in graph.inputs.iter().zip(inputs) {
            facts[input.value] = Some(fact.clone());
        }
        for (&v, t) in &graph.constants {
            facts[v] = Some(Fact::constant(t.clone()));
        }
        for (v, t) in constants {
            facts[v] = Some(Fact::constant(t));
        }
        Self::specialize_facts(graph, facts, defer_folding)
    }

    /// [`TypedGraph::specialize_with`] from the facts already known, by value id (a subgraph's
    /// constants, formal inputs and the enclosing values it captures): the same walk, folding
    /// and size limits, so that an error inside a subgraph names the subgraph's node.
    pub fn specialize_facts(
        graph: &Graph,
        mut facts: Vec<Option<Fact>>,
        defer_folding: &dyn Fn(&Node, &[Option<&Fact>]) -> bool,
    ) -> Result<TypedGraph> {
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let inputs: Vec<Option<&Fact>> = node
                .inputs
                .iter()
                .map(|i| match i {
                    None => Ok(None),
                    Some(v) => facts[*v].as_ref().map(Some).ok_or_else(|| {
                        Error::Invalid(format!("node '{}' reads '{}' before anything defines it", node.name, graph.names[*v]))
                    }),
                })
                .collect::<Result<_>>()?;
            let all_constant = inputs.iter().flatten().all(|f| f.is_constant());
            let deferred = all_constant && defer_folding(node, &inputs);
            let inferred = node.op.infer(&inputs).map_err(|m| node_error(node, m))?;
            check_sizes(node, &inferred)?;
            let out_facts: Vec<Fact> = if all_constant && node.op.foldable() && !deferred {
                let tensors: Vec<Option<&Tensor>> = inputs.iter().map(|f| f.and_then(|f| f.value.as_deref())).collect();
                let out = node.op.eval(&tensors, &EvalCtx::default()).map_err(|m| node_error(node, m))?;
                out.into_iter().map(|t| Fact::constant(Arc::new(t))).collect()
            } else {
                inferred
            };
            if out_facts.len() < node.outputs.len() {
                return Err(node_error(node, format!("produces {} outputs, the model uses {}", out_facts.len(), node.outputs.len())));
            }
            let folded = out_facts.iter().take(node.outputs.len()).all(|f| f.is_constant());
            for (&v, f) in node.outputs.iter().zip(out_facts) {
                facts[v] = Some(f);
            }
            if !folded {
                nodes.push(node.clone());
            }
        }
        for &o in &graph.outputs {
            if facts[o].is_none() {
                return Err(Error::Invalid(format!("graph output '{}' is never computed", graph.names[o])));
            }
        }
        let mut typed = TypedGraph {
            names: graph.names.clone(),
            facts,
            nodes,
            inputs: graph.inputs.iter().map(|i| i.value).collect(),
            outputs: graph.outputs.clone(),
        };
        typed.remove_dead_nodes();
        typed.verify_in_debug("specialize")?;
        Ok(typed)
    }

    /// Evaluates every node whose inputs are all constant and drops it.
    pub fn fold_constants(&mut self) -> Result<()> {
        let mut kept = Vec::with_capacity(self.nodes.len());
        for node in std::mem::take(&mut self.nodes) {
            let inputs: Vec<Option<&Fact>> = node.inputs.iter().map(|i| i.map(|v| self.fact(v))).collect();
            if !node.op.foldable() || !inputs.iter().flatten().all(|f| f.is_constant()) {
                kept.push(node);
                continue;
            }
            let tensors: Vec<Option<&Tensor>> = inputs.iter().map(|f| f.and_then(|f| f.value.as_deref())).collect();
            let out = node.op.eval(&tensors, &EvalCtx::default()).map_err(|m| node_error(&node, m))?;
            for (&v, t) in node.outputs.iter().zip(out) {
                self.facts[v] = Some(Fact::constant(Arc::new(t)));
            }
        }
        self.nodes = kept;
        self.remove_dead_nodes();
        Ok(())
    }

    pub fn fact(&self, v: ValueId) -> &Fact {
        self.facts[v].as_ref().expect("every value of a typed graph has a fact")
    }

    /// A new non-constant value.
    pub fn add_value(&mut self, name: &str, fact: Fact) -> ValueId {
        self.names.push(name.to_string());
        self.facts.push(Some(fact));
        self.names.len() - 1
    }

    /// Drops the contents of constant `v` (its type and shape stay) when no live node reads it
    /// any more: a lowering calls this for weights it has packed, so that they are not held twice.
    /// Nodes that read it are live unless every output of theirs is unread.
    pub fn release_constant(&mut self, v: ValueId) {
        let ix = Index::of_typed(self);
        let live_reader = ix.readers(v).iter().any(|&r| !self.nodes[r].outputs.iter().all(|&o| ix.uses(o) == 0));
        if live_reader || self.outputs.contains(&v) {
            return;
        }
        if let Some(t) = self.facts[v].as_mut().and_then(|f| f.value.take()) {
            if let Ok(t) = Arc::try_unwrap(t) {
                let bytes = (t.len() * t.dtype().size()) as u64;
                drop(t);
                crate::memory::freed(bytes);
            }
        }
    }

    /// A new constant value.
    pub fn add_constant(&mut self, name: &str, t: Tensor) -> ValueId {
        self.names.push(name.to_string());
        self.facts.push(Some(Fact::constant(Arc::new(t))));
        self.names.len() - 1
    }

    /// Replaces node `at` by `node`, which computes the same outputs from `node.inputs`, and
    /// records in `node.fused` every node that the old subgraph between those inputs and the
    /// outputs contained (they are left dead, for [`TypedGraph::remove_dead_nodes`]).
    pub fn replace_node(&mut self, at: usize, mut node: Node) {
        let ix = Index::of_typed(self);
        let stop: Vec<ValueId> = node.inputs.iter().flatten().copied().collect();
        let mut fused = vec![self.nodes[at].name.clone()];
        fused.extend(self.nodes[at].fused.iter().cloned());
        let mut todo: Vec<ValueId> = self.nodes[at].inputs.iter().flatten().copied().collect();
        let mut seen = vec![false; self.nodes.len()];
        while let Some(v) = todo.pop() {
            if stop.contains(&v) {
                continue;
            }
            let Some(p) = ix.producer(v) else { continue };
            if std::mem::replace(&mut seen[p], true) {
                continue;
            }
            fused.push(self.nodes[p].name.clone());
            fused.extend(self.nodes[p].fused.iter().cloned());
            todo.extend(self.nodes[p].inputs.iter().flatten());
        }
        fused.retain(|n| *n != node.name);
        node.fused = fused;
        self.nodes[at] = node;
    }

    /// Drops nodes none of whose outputs reach a graph output.
    pub fn remove_dead_nodes(&mut self) {
        let mut live = vec![false; self.names.len()];
        for &o in &self.outputs {
            live[o] = true;
        }
        let mut keep = vec![false; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|&o| live[o]) {
                keep[i] = true;
                for v in n.inputs.iter().flatten() {
                    live[*v] = true;
                }
            }
        }
        let mut it = keep.into_iter();
        self.nodes.retain(|_| it.next().unwrap());
    }

    /// [`TypedGraph::verify`] in debug builds and tests, naming the step that ran before.
    pub fn verify_in_debug(&self, pass: &str) -> Result<()> {
        if cfg!(debug_assertions) {
            self.verify().map_err(|e| Error::Invalid(format!("after pass '{pass}': {e}")))?;
        }
        Ok(())
    }

    /// Checks the invariants: topological order, one producer per value, a fact for every
    /// value, and facts that agree with each node's shape inference.
    pub fn verify(&self) -> std::result::Result<(), String> {
        let mut defined = vec![false; self.names.len()];
        for &i in &self.inputs {
            defined[i] = true;
        }
        for (v, f) in self.facts.iter().enumerate() {
            if f.as_ref().is_some_and(|f| f.is_constant()) {
                defined[v] = true;
            }
        }
        for n in &self.nodes {
            for v in n.inputs.iter().flatten() {
                if !defined[*v] {
                    return Err(format!("node '{}' reads '{}' before it is defined", n.name, self.names[*v]));
                }
            }
            let inputs: Vec<Option<&Fact>> = n.inputs.iter().map(|i| i.map(|v| self.fact(v))).collect();
            let inferred = n.op.infer(&inputs).map_err(|m| format!("node '{}': {m}", n.name))?;
            for (&o, f) in n.outputs.iter().zip(&inferred) {
                if defined[o] {
                    return Err(format!("value '{}' is defined twice", self.names[o]));
                }
                defined[o] = true;
                let have = self.facts[o].as_ref().ok_or_else(|| format!("value '{}' has no fact", self.names[o]))?;
                if have.dtype != f.dtype || have.shape != f.shape {
                    return Err(format!(
                        "node '{}' output '{}': recorded {} {:?}, inferred {} {:?}",
                        n.name, self.names[o], have.dtype, have.shape, f.dtype, f.shape
                    ));
                }
            }
        }
        for &o in &self.outputs {
            if !defined[o] {
                return Err(format!("graph output '{}' is not defined", self.names[o]));
            }
        }
        Ok(())
    }
}
