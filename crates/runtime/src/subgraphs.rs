//! Subgraph bodies (If, Loop, Scan) through the main path: a plan's bodies get the constants
//! they capture bound in and their MatMul weights packed ([`bind_captured_constants`], a step of
//! the pass list), and a session runs each body as a [`Plan`] of its own ([`BodyPlans`]): the
//! body specialised to its inputs' shapes, rewritten by the same pass list, and reused for every
//! iteration and run with those shapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use octet_graph::op::Subgraphs;
use octet_graph::ops::control_flow::Body;
use octet_graph::{DType, Error, EvalCtx, Fact, Result, Tensor, TypedGraph};

use crate::passes::{deferral, rewrite, Target};
use crate::session::Plan;

/// Gives every node with subgraphs bodies in which the captured values whose facts are constant
/// (weights of the enclosing graph, folded shapes) are constants of the body, so that the body's
/// plan folds them, packs its MatMul weights and lowers its QDQ patterns as the enclosing plan
/// does; the node no longer reads them.
pub fn bind_captured_constants(g: &mut TypedGraph) -> Result<()> {
    for i in 0..g.nodes.len() {
        let bodies: Vec<Arc<Body>> = g.nodes[i].op.subgraphs().into_iter().cloned().collect();
        if bodies.is_empty() {
            continue;
        }
        let node = &g.nodes[i];
        let captured: usize = bodies.iter().map(|b| b.captured.len()).sum();
        let declared =
            node.inputs.len().checked_sub(captured).ok_or_else(|| {
                Error::Invalid(format!("node '{}' ({}) has fewer inputs than its bodies capture", node.name, node.op.name()))
            })?;
        let mut inputs = node.inputs[..declared].to_vec();
        let mut bound = Vec::with_capacity(bodies.len());
        let mut at = declared;
        for body in &bodies {
            let reads = &node.inputs[at..at + body.captured.len()];
            at += body.captured.len();
            let values: Vec<Option<Arc<Tensor>>> = reads.iter().map(|v| v.and_then(|v| g.fact(v).value.clone())).collect();
            inputs.extend(reads.iter().zip(&values).filter(|(_, t)| t.is_none()).map(|(v, _)| *v));
            let mut body = body.bind_captured(&values);
            octet_graph::rewrite::pack_matmul_weights(&mut body.graph);
            bound.push(Arc::new(body));
        }
        let op = node
            .op
            .with_subgraphs(bound)
            .ok_or_else(|| Error::Invalid(format!("node '{}' ({}) lists subgraphs but cannot take new ones", node.name, node.op.name())))?;
        let node = &mut g.nodes[i];
        node.op = op;
        node.inputs = inputs;
    }
    Ok(())
}

/// The graph of a body's plan: the body specialised to its inputs' facts (formal inputs, then
/// the values it still captures) and rewritten by the pass list for `target`, as a session's own
/// plans are ([`crate::passes::plan_graph`]). Its inputs are the formal then the captured values.
pub fn plan_body(body: &Body, inputs: &[Fact], target: Target) -> Result<TypedGraph> {
    let g = &body.graph;
    let ids: Vec<usize> = body.formal.iter().chain(&body.captured).copied().collect();
    if inputs.len() != ids.len() {
        return Err(Error::Input(format!("the body takes {} inputs, {} facts were given", ids.len(), inputs.len())));
    }
    let mut facts: Vec<Option<Fact>> = vec![None; g.names.len()];
    for (&v, t) in &g.constants {
        facts[v] = Some(Fact::constant(t.clone()));
    }
    for (&v, f) in ids.iter().zip(inputs) {
        facts[v] = Some(f.clone());
    }
    let mut typed = TypedGraph::specialize_facts(g, facts, deferral(target.engine))?;
    typed.inputs = ids;
    rewrite(&mut typed, target)?;
    Ok(typed)
}

/// A body's inputs' types and shapes: what selects one of its plans.
type Shapes = Vec<(DType, Vec<usize>)>;

/// The plans of one body, by its inputs' types and shapes; the body is held so that its address
/// (the key it is cached under) is not reused while cached.
struct PlansOfBody {
    body: Arc<Body>,
    plans: Vec<(Shapes, Arc<Plan>)>,
}

/// A session's runner of subgraph bodies: one plan per body and input shapes, made on first use.
pub struct BodyPlans {
    target: Target,
    plans: Mutex<HashMap<usize, PlansOfBody>>,
}

impl BodyPlans {
    /// Bodies planned for `target` (the engine and tier of the session's own plans; body values
    /// are never observed).
    pub fn new(target: Target) -> BodyPlans {
        BodyPlans { target: Target { observed: false, ..target }, plans: Mutex::new(HashMap::new()) }
    }

    /// The plan for these inputs, made now if new. A loop's body runs once per iteration with the
    /// same shapes, so the lookup allocates nothing.
    fn plan(&self, body: &Arc<Body>, inputs: &[Tensor]) -> Result<Arc<Plan>> {
        let key = Arc::as_ptr(body) as usize;
        let same = |shapes: &[(DType, Vec<usize>)]| shapes.iter().zip(inputs).all(|((d, s), t)| *d == t.dtype() && s == t.shape());
        if let Some(of_body) = self.plans.lock().expect("body plans").get(&key).filter(|b| Arc::ptr_eq(&b.body, body)) {
            if let Some((_, p)) = of_body.plans.iter().find(|(shapes, _)| same(shapes)) {
                return Ok(p.clone());
            }
        }
        let facts: Vec<Fact> = inputs.iter().map(|t| Fact::new(t.dtype(), t.shape().to_vec())).collect();
        let plan = Arc::new(Plan::new(plan_body(body, &facts, self.target)?));
        let shapes: Shapes = facts.into_iter().map(|f| (f.dtype, f.shape)).collect();
        let mut plans = self.plans.lock().expect("body plans");
        plans.entry(key).or_insert_with(|| PlansOfBody { body: body.clone(), plans: Vec::new() }).plans.push((shapes, plan.clone()));
        Ok(plan)
    }
}

impl Subgraphs for BodyPlans {
    fn run(&self, body: &Arc<Body>, formal: Vec<Tensor>, captured: &[&Tensor], ctx: &EvalCtx) -> std::result::Result<Vec<Tensor>, String> {
        if formal.len() != body.formal.len() || captured.len() != body.captured.len() {
            return Err(format!(
                "the body takes {} inputs and {} captured values, got {} and {}",
                body.formal.len(),
                body.captured.len(),
                formal.len(),
                captured.len()
            ));
        }
        let mut inputs = formal;
        inputs.extend(captured.iter().map(|&t| t.clone()));
        let plan = self.plan(body, &inputs).map_err(|e| e.to_string())?;
        plan.run(inputs, ctx).map_err(|e| e.to_string())
    }
}
