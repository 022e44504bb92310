//! The pass list: every rewrite a plan goes through, in order, declared once. A plan is the
//! graph specialised to its input shapes ([`TypedGraph::specialize_with`]), then each step of
//! [`PASSES`] that applies to its engine and to whether its runs are observed.

use std::collections::HashMap;
use std::sync::Arc;

use octet_graph::ops::quant::DequantizeLinear;
use octet_graph::rewrite::{self, FuseAttention, FuseGelu, FuseLayerNorm, FuseMatMulActivation, FuseMatMulBias, FuseMatMulResidual, Pass};
use octet_graph::{Error, Fact, Graph, Node, Result, Tensor, TypedGraph, ValueId};
use octet_kernels::Isa;

use crate::lower::Matched;

/// How a session runs a quantized model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// QDQ patterns lowered to int8 kernels (the default).
    Int8,
    /// Everything in float, Q/DQ included: the reference semantics.
    Reference,
}

/// Which plans a step rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Every plan.
    Always,
    /// Plans of the int8 engine.
    Int8,
    /// Plans whose runs nobody observes value by value: the step removes intermediate values
    /// that calibration and `octet compare` read.
    Unobserved,
}

/// What a step does.
pub enum Action {
    /// A local rewrite, tried at every node.
    Rewrite(&'static dyn Pass),
    /// The int8 lowering of QDQ patterns ([`crate::lower::lower`]) on the plan's ISA tier.
    Lower,
    /// Folds the constants the lowering left (the dequantized weights it did not take).
    FoldConstants,
    /// Binds the constants that subgraph bodies capture into the bodies
    /// ([`crate::subgraphs::bind_captured_constants`]); each body is then planned through this
    /// same list when it first runs.
    BindSubgraphConstants,
}

/// One step of the pass list.
pub struct Step {
    pub when: When,
    pub action: Action,
}

/// The pass list, in the order it runs.
pub static PASSES: &[Step] = &[
    Step { when: When::Always, action: Action::Rewrite(&FuseLayerNorm) },
    Step { when: When::Always, action: Action::Rewrite(&FuseGelu) },
    Step { when: When::Int8, action: Action::Lower },
    Step { when: When::Int8, action: Action::FoldConstants },
    Step { when: When::Always, action: Action::BindSubgraphConstants },
    Step { when: When::Unobserved, action: Action::Rewrite(&FuseMatMulBias) },
    Step { when: When::Unobserved, action: Action::Rewrite(&FuseMatMulActivation) },
    Step { when: When::Unobserved, action: Action::Rewrite(&FuseMatMulResidual) },
    Step { when: When::Unobserved, action: Action::Rewrite(&FuseAttention) },
];

impl Step {
    /// The step's name, as the verifier reports it.
    pub fn name(&self) -> &'static str {
        match self.action {
            Action::Rewrite(p) => p.name(),
            Action::Lower => "int8-lowering",
            Action::FoldConstants => "fold-constants",
            Action::BindSubgraphConstants => "bind-subgraph-constants",
        }
    }

    fn applies(&self, engine: Engine, observed: bool) -> bool {
        match self.when {
            When::Always => true,
            When::Int8 => engine == Engine::Int8,
            When::Unobserved => !observed,
        }
    }

    /// Runs the step; the int8 lowering adds the nodes it lowered to `matched`.
    fn run(&self, g: &mut TypedGraph, isa: Option<Isa>, matched: &mut Vec<Matched>) -> Result<()> {
        match self.action {
            Action::Rewrite(p) => return rewrite::apply(g, p),
            Action::Lower => {
                let isa = match isa {
                    Some(isa) => isa,
                    None => Isa::selected().map_err(Error::Input)?,
                };
                matched.extend(crate::lower::lower(g, isa));
                g.remove_dead_nodes();
            }
            Action::FoldConstants => g.fold_constants()?,
            Action::BindSubgraphConstants => crate::subgraphs::bind_captured_constants(g)?,
        }
        g.verify_in_debug(self.name())
    }
}

/// A DequantizeLinear of a constant tensor (a quantized weight or bias) stays a node on the int8
/// engine, so that the lowering can take its integers.
fn deferred_for_lowering(node: &Node, inputs: &[Option<&Fact>]) -> bool {
    node.op.downcast::<DequantizeLinear>().is_some()
        && inputs.first().copied().flatten().is_some_and(|f| f.shape.iter().product::<usize>() > 1)
}

/// What a plan is made for.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub engine: Engine,
    /// The int8 kernels' ISA tier; `None`: the one [`Isa::selected`] names (the best the CPU
    /// has, or `OCTET_ISA`).
    pub isa: Option<Isa>,
    /// Whether the plan's runs are observed value by value.
    pub observed: bool,
}

/// What the specialisation of `engine`'s plans leaves unfolded: on the int8 engine, the
/// DequantizeLinear of constant tensors (see [`deferred_for_lowering`]).
pub(crate) fn deferral(engine: Engine) -> &'static dyn Fn(&Node, &[Option<&Fact>]) -> bool {
    match engine {
        Engine::Int8 => &deferred_for_lowering,
        Engine::Reference => &|_, _| false,
    }
}

/// Rewrites a specialised graph by every step of [`PASSES`] that applies to `target`; returns
/// what the int8 lowering matched where ([`Matched`]).
pub(crate) fn rewrite(typed: &mut TypedGraph, target: Target) -> Result<Vec<Matched>> {
    let mut matched = Vec::new();
    for step in PASSES.iter().filter(|s| s.applies(target.engine, target.observed)) {
        step.run(typed, target.isa, &mut matched)?;
    }
    Ok(matched)
}

/// The graph of a plan: `graph` specialised to `inputs` with `constants` moved in, rewritten by
/// every step of [`PASSES`] that applies to `target`.
pub fn plan_graph(graph: &Graph, constants: HashMap<ValueId, Arc<Tensor>>, inputs: &[Fact], target: Target) -> Result<TypedGraph> {
    plan_graph_matched(graph, constants, inputs, target).map(|(typed, _)| typed)
}

/// [`plan_graph`], with what the int8 lowering matched where.
fn plan_graph_matched(
    graph: &Graph,
    constants: HashMap<ValueId, Arc<Tensor>>,
    inputs: &[Fact],
    target: Target,
) -> Result<(TypedGraph, Vec<Matched>)> {
    let mut typed = TypedGraph::specialize_with(graph, constants, inputs, deferral(target.engine))?;
    let matched = rewrite(&mut typed, target)?;
    Ok((typed, matched))
}

/// [`specialize`], with the nodes the int8 lowering lowered or fused and the pattern of each (none
/// on the reference engine): what `octet check` reports.
pub fn specialize_matched(graph: &Graph, shapes: &[Vec<usize>], engine: Engine) -> Result<(TypedGraph, Vec<Matched>)> {
    if shapes.len() != graph.inputs.len() {
        return Err(Error::Input(format!("the model has {} inputs, {} shapes were given", graph.inputs.len(), shapes.len())));
    }
    let facts: Vec<Fact> = graph.inputs.iter().zip(shapes).map(|(i, s)| Fact::new(i.dtype, s.clone())).collect();
    plan_graph_matched(graph, HashMap::new(), &facts, Target { engine, isa: None, observed: true })
}

/// `graph` specialised to input shapes (in graph input order, dtypes as declared) and rewritten
/// as an observed plan of `engine` is: every value a hook would see is still there. What the
/// quantizer and `octet check` read.
pub fn specialize(graph: &Graph, shapes: &[Vec<usize>], engine: Engine) -> Result<TypedGraph> {
    specialize_matched(graph, shapes, engine).map(|(typed, _)| typed)
}
