//! The float interpreter: runs a [`TypedGraph`] node by node, freeing each intermediate value
//! after its last reader. A [`Session`] keeps one plan per set of input shapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::op::EvalCtx;
use crate::tensor::Tensor;
use crate::typed::TypedGraph;

/// A typed graph ready to run, with the last reader of every value precomputed.
#[derive(Debug)]
pub struct Plan {
    pub graph: TypedGraph,
    /// For each node, the values that no later node or output reads.
    release_after: Vec<Vec<ValueId>>,
}

impl Plan {
    pub fn new(graph: TypedGraph) -> Plan {
        let mut last: HashMap<ValueId, usize> = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                last.insert(*v, i);
            }
        }
        let mut release_after = vec![Vec::new(); graph.nodes.len()];
        for (v, i) in last {
            let constant = graph.fact(v).is_constant();
            if !constant && !graph.outputs.contains(&v) {
                release_after[i].push(v);
            }
        }
        Plan { graph, release_after }
    }

    /// Runs the plan. `inputs` are in graph input order and must have the planned shapes.
    pub fn run(&self, inputs: Vec<Tensor>, ctx: &EvalCtx) -> Result<Vec<Tensor>> {
        let g = &self.graph;
        let mut values: Vec<Option<Arc<Tensor>>> = g.facts.iter().map(|f| f.as_ref().and_then(|f| f.value.clone())).collect();
        for (&v, t) in g.inputs.iter().zip(inputs) {
            let f = g.fact(v);
            if t.dtype() != f.dtype || t.shape() != f.shape.as_slice() {
                return Err(Error::Input(format!(
                    "input '{}' is {} {:?}, the plan expects {} {:?}",
                    g.names[v],
                    t.dtype(),
                    t.shape(),
                    f.dtype,
                    f.shape
                )));
            }
            values[v] = Some(Arc::new(t));
        }
        for (i, node) in g.nodes.iter().enumerate() {
            let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|v| v.and_then(|v| values[v].as_deref())).collect();
            let outs = node
                .op
                .eval(&ins, ctx)
                .map_err(|message| Error::Node { node: node.name.clone(), op: node.op.name().into(), message })?;
            for (&v, t) in node.outputs.iter().zip(outs) {
                values[v] = Some(Arc::new(t));
            }
            for &v in &self.release_after[i] {
                values[v] = None;
            }
        }
        g.outputs
            .iter()
            .map(|&o| {
                let t = values[o].clone().ok_or_else(|| Error::Invalid(format!("output '{}' was not computed", g.names[o])))?;
                Ok(Arc::try_unwrap(t).unwrap_or_else(|t| (*t).clone()))
            })
            .collect()
    }
}

/// A loaded model: plans are made on first use for each set of input shapes and reused.
pub struct Session {
    graph: Graph,
    ctx: EvalCtx,
    pool: rayon::ThreadPool,
    plans: Mutex<HashMap<Vec<Vec<usize>>, Arc<Plan>>>,
}

impl Session {
    /// A session that runs on `threads` threads (at least 1).
    pub fn new(graph: Graph, threads: usize) -> Result<Session> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
        Ok(Session { graph, ctx: EvalCtx { threads }, pool, plans: Mutex::new(HashMap::new()) })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The plan for these input shapes, made now if new.
    pub fn plan(&self, shapes: &[Vec<usize>]) -> Result<Arc<Plan>> {
        if let Some(p) = self.plans.lock().expect("plan cache").get(shapes) {
            return Ok(p.clone());
        }
        let plan = Arc::new(Plan::new(TypedGraph::specialize(&self.graph, shapes)?));
        self.plans.lock().expect("plan cache").insert(shapes.to_vec(), plan.clone());
        Ok(plan)
    }

    /// Runs the model on inputs given in graph input order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        for (i, t) in inputs.iter().enumerate() {
            let want = self.graph.inputs.get(i).map(|x| x.dtype);
            if let Some(want) = want.filter(|&w| w != t.dtype()) {
                return Err(Error::Input(format!("input '{}' is {}, the model expects {want}", self.graph.input_name(i), t.dtype())));
            }
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let plan = self.plan(&shapes)?;
        self.pool.install(|| plan.run(inputs, &self.ctx))
    }
}
