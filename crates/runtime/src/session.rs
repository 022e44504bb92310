//! Sessions and plans: a [`Plan`] runs a [`TypedGraph`] node by node, freeing each intermediate
//! value after its last reader; a [`Session`] keeps one plan per set of input shapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use octet_graph::pattern::Index;
use octet_graph::{Data, Error, EvalCtx, Fact, Graph, Result, Tensor, TypedGraph, ValueId};

use octet_kernels::Isa;

use crate::passes::{plan_graph, Engine, Target};
use crate::subgraphs::BodyPlans;

/// Observes a run: every computed value (graph inputs included) and every node's time.
pub trait Hooks: Send {
    /// False for hooks that ignore [`Hooks::value`]: their runs may use a plan whose fusions
    /// remove intermediate values.
    fn observes_values(&self) -> bool {
        true
    }
    /// Called once per value; an error aborts the run.
    fn value(&mut self, _v: ValueId, _t: &Tensor) -> Result<()> {
        Ok(())
    }
    /// False for hooks that ignore [`Hooks::node_done`]'s time: their runs read no clock.
    fn times_nodes(&self) -> bool {
        true
    }
    fn node_done(&mut self, _plan: &Plan, _node: usize, _time: Duration) {}
}

/// Observes nothing.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn observes_values(&self) -> bool {
        false
    }
    fn times_nodes(&self) -> bool {
        false
    }
}

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

    /// For a view op (same data, new shape) whose input dies with it: the input itself, taken out
    /// of `values`, so that the view costs no copy.
    fn take_for_view(&self, i: usize, values: &mut [Option<Arc<Tensor>>]) -> Option<Tensor> {
        let node = &self.graph.nodes[i];
        let v = node.inputs.first().copied().flatten()?;
        if !node.op.is_view() || node.outputs.len() != 1 || !self.release_after[i].contains(&v) {
            return None;
        }
        match Arc::try_unwrap(values[v].take()?) {
            Ok(t) => Some(t),
            Err(shared) => {
                values[v] = Some(shared);
                None
            }
        }
    }

    /// Runs the plan. `inputs` are in graph input order and must have the planned shapes.
    pub fn run(&self, inputs: Vec<Tensor>, ctx: &EvalCtx) -> Result<Vec<Tensor>> {
        self.run_hooked(inputs, ctx, &mut NoHooks)
    }

    /// [`Plan::run`], reporting every value and node time to `hooks`.
    pub fn run_hooked(&self, inputs: Vec<Tensor>, ctx: &EvalCtx, hooks: &mut dyn Hooks) -> Result<Vec<Tensor>> {
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
            if !f.is_constant() {
                hooks.value(v, &t)?;
                values[v] = Some(Arc::new(t));
            }
        }
        for (i, node) in g.nodes.iter().enumerate() {
            let start = hooks.times_nodes().then(Instant::now);
            let outs = match self.take_for_view(i, &mut values) {
                Some(t) => vec![t.reshaped(g.fact(node.outputs[0]).shape.clone())],
                None => {
                    let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|v| v.and_then(|v| values[v].as_deref())).collect();
                    node.op.eval(&ins, ctx).map_err(|message| Error::Node {
                        node: node.name.clone(),
                        op: node.op.name().into(),
                        message,
                    })?
                }
            };
            for (&v, t) in node.outputs.iter().zip(outs) {
                hooks.value(v, &t)?;
                values[v] = Some(Arc::new(t));
            }
            for &v in &self.release_after[i] {
                values[v] = None;
            }
            hooks.node_done(self, i, start.map_or(Duration::ZERO, |s| s.elapsed()));
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

/// Reads a session's model again (its file), giving the same graph.
pub type Reload = Arc<dyn Fn() -> Result<Graph> + Send + Sync>;

/// The quantized weights of a [`Session::reloadable`] session (constants read only by
/// DequantizeLinear), out of its graph: each plan gets them moved in, and its lowering frees each
/// as it packs it.
struct MovedWeights {
    ids: Vec<ValueId>,
    /// Until the first plan takes them.
    held: Mutex<Option<HashMap<ValueId, Arc<Tensor>>>>,
    /// Reads the model again, for later plans.
    reload: Reload,
}

/// What selects a plan: every input's shape, the contents of inputs planned by value, and
/// whether its runs are observed value by value (then it keeps every intermediate value).
type PlanKey = (Vec<(Vec<usize>, Option<Vec<u64>>)>, bool);

/// A loaded model: plans are made on first use for each set of input shapes and reused.
/// Inputs that feed shape operands (a Reshape's shape, Resize sizes, …) are planned by value.
pub struct Session {
    /// The graph; without its quantized weights when they are `moved`.
    graph: Graph,
    /// Set by [`Session::reloadable`].
    moved: Option<MovedWeights>,
    /// The graph quantizes activations (a QDQ model): its inputs must be finite.
    quantized: bool,
    engine: Engine,
    /// Set by [`Session::with_isa`].
    isa: Option<Isa>,
    by_value: Vec<bool>,
    ctx: EvalCtx,
    pool: rayon::ThreadPool,
    plans: Mutex<HashMap<PlanKey, Arc<Plan>>>,
}

impl Session {
    /// A session that runs on `threads` threads (at least 1) with `engine`. Its graph's MatMul
    /// weights are packed for the float matmul ([`octet_graph::rewrite::pack_matmul_weights`]).
    pub fn new(mut graph: Graph, threads: usize, engine: Engine) -> Result<Session> {
        octet_graph::rewrite::pack_matmul_weights(&mut graph);
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
        let by_value = graph
            .inputs
            .iter()
            .map(|i| graph.nodes.iter().any(|n| n.op.value_operands().iter().any(|&k| n.inputs.get(k) == Some(&Some(i.value)))))
            .collect();
        let quantized = graph.nodes.iter().any(|n| n.op.name() == "QuantizeLinear");
        Ok(Session {
            graph,
            moved: None,
            quantized,
            engine,
            isa: None,
            by_value,
            ctx: EvalCtx { threads, subgraphs: Some(Arc::new(BodyPlans::new(Target { engine, isa: None, observed: false }))) },
            pool,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the int8 engine's plans on `isa` instead of the tier [`Isa::selected`] names (tests
    /// compare tiers in one process). Plans made before keep theirs.
    pub fn with_isa(mut self, isa: Isa) -> Session {
        self.isa = Some(isa);
        self.ctx.subgraphs = Some(Arc::new(BodyPlans::new(Target { engine: self.engine, isa: self.isa, observed: false })));
        self
    }

    /// The engine the session's plans are made for.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Lets the session hold its quantized weights once, packed in its plans, instead of twice:
    /// the constants that only DequantizeLinear nodes read leave the graph and go into the next
    /// plan, whose lowering frees each as it packs it; a plan for other input shapes then reads
    /// the model again with `reload` (a file loader). On the reference engine nothing changes.
    pub fn reloadable(mut self, reload: Reload) -> Session {
        if self.engine != Engine::Int8 {
            return self;
        }
        let ix = Index::of_graph(&self.graph);
        let g = &self.graph;
        let only_dequantized = |v: &ValueId| {
            let nodes = ix.readers(*v);
            !nodes.is_empty()
                && !ix.is_output(*v)
                && nodes.iter().all(|&i| g.nodes[i].op.name() == "DequantizeLinear" && g.nodes[i].inputs.first() == Some(&Some(*v)))
        };
        let ids: Vec<ValueId> = g.constants.keys().filter(|v| only_dequantized(v)).copied().collect();
        let held = ids.iter().filter_map(|v| self.graph.constants.remove(v).map(|t| (*v, t))).collect();
        self.moved = Some(MovedWeights { ids, held: Mutex::new(Some(held)), reload });
        self
    }

    /// The model's interface and structure. On a [`Session::reloadable`] session its quantized
    /// weights are not in it.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The moved weights for a new plan: the session's own the first time, then the model's
    /// again; none for a session that keeps its weights in its graph.
    fn take_weights(&self) -> Result<HashMap<ValueId, Arc<Tensor>>> {
        let Some(moved) = &self.moved else { return Ok(HashMap::new()) };
        if let Some(held) = moved.held.lock().expect("weights").take() {
            return Ok(held);
        }
        let g = (moved.reload)()?;
        if g.names != self.graph.names {
            return Err(Error::Invalid("the model file changed since the session loaded it; load it again".into()));
        }
        Ok(g.constants.into_iter().filter(|(v, _)| moved.ids.contains(v)).collect())
    }

    /// The plan for these inputs, made now if new. An `observed` plan keeps every intermediate
    /// value (for hooks that read them); the others also run the execution fusions.
    pub fn plan(&self, inputs: &[Tensor], observed: bool) -> Result<Arc<Plan>> {
        let shapes = inputs
            .iter()
            .zip(&self.by_value)
            .map(|(t, &v)| (t.shape().to_vec(), v.then(|| t.to_f64_vec().into_iter().map(f64::to_bits).collect())))
            .collect();
        let key: PlanKey = (shapes, observed);
        if let Some(p) = self.plans.lock().expect("plan cache").get(&key) {
            return Ok(p.clone());
        }
        let facts: Vec<Fact> = inputs
            .iter()
            .zip(&self.by_value)
            .map(|(t, &v)| if v { Fact::constant(Arc::new(t.clone())) } else { Fact::new(t.dtype(), t.shape().to_vec()) })
            .collect();
        let typed = plan_graph(&self.graph, self.take_weights()?, &facts, Target { engine: self.engine, isa: self.isa, observed })?;
        let plan = Arc::new(Plan::new(typed));
        self.plans.lock().expect("plan cache").insert(key, plan.clone());
        Ok(plan)
    }

    /// Runs the model on inputs given in graph input order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_hooked(inputs, &mut NoHooks)
    }

    /// [`Session::run`], reporting every value and node time to `hooks`.
    pub fn run_hooked(&self, inputs: Vec<Tensor>, hooks: &mut dyn Hooks) -> Result<Vec<Tensor>> {
        for (i, t) in inputs.iter().enumerate() {
            let want = self.graph.inputs.get(i).map(|x| x.dtype);
            if let Some(want) = want.filter(|&w| w != t.dtype()) {
                return Err(Error::Input(format!("input '{}' is {}, the model expects {want}", self.graph.input_name(i), t.dtype())));
            }
        }
        if inputs.len() != self.graph.inputs.len() {
            let names: Vec<&str> = (0..self.graph.inputs.len()).map(|i| self.graph.input_name(i)).collect();
            return Err(Error::Input(format!(
                "the model takes {} inputs ({}), {} were given",
                names.len(),
                names.join(", "),
                inputs.len()
            )));
        }
        if self.quantized {
            for (i, t) in inputs.iter().enumerate() {
                if let Some((at, v)) = first_non_finite(t) {
                    return Err(Error::Input(format!(
                        "input '{}' holds {v} at flat index {at}: a quantized model has no 8-bit code for NaN or infinity, so it refuses them rather than return finite numbers (float models propagate them)",
                        self.graph.input_name(i)
                    )));
                }
            }
        }
        let plan = self.plan(&inputs, hooks.observes_values())?;
        self.pool.install(|| plan.run_hooked(inputs, &self.ctx, hooks))
    }
}

/// The first NaN or infinity of a float tensor: its flat index and value.
fn first_non_finite(t: &Tensor) -> Option<(usize, f64)> {
    match t.data() {
        Data::F32(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i] as f64)),
        Data::F64(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
        _ => None,
    }
}
