//! The op contract: shape inference over [`Fact`]s and evaluation over [`Tensor`]s.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::error::OpResult;
use crate::graph::Body;
use crate::tensor::{DType, Tensor};

/// What is known about a value before running: its type, its static shape and, for constants,
/// its contents.
#[derive(Clone, Debug)]
pub struct Fact {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub value: Option<Arc<Tensor>>,
}

impl Fact {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Fact {
        Fact { dtype, shape, value: None }
    }

    pub fn constant(t: Arc<Tensor>) -> Fact {
        Fact { dtype: t.dtype(), shape: t.shape().to_vec(), value: Some(t) }
    }

    pub fn is_constant(&self) -> bool {
        self.value.is_some()
    }

    /// Integer contents of a constant (shape, axes or index operands).
    pub fn const_ints(&self) -> Option<Vec<i64>> {
        self.value.as_ref().and_then(|t| t.to_i64_vec())
    }

    /// The single value of a constant one-element tensor.
    pub fn const_scalar(&self) -> Option<f64> {
        self.value.as_ref().and_then(|t| t.scalar_value())
    }
}

/// What an evaluation may use besides its inputs.
#[derive(Clone)]
pub struct EvalCtx {
    /// Threads a kernel may use (1 = stay on the calling thread).
    pub threads: usize,
    /// Runs the bodies of If, Loop and Scan; `None`: node by node ([`Body::run`], what constant
    /// folding uses).
    pub subgraphs: Option<Arc<dyn Subgraphs>>,
}

impl Default for EvalCtx {
    fn default() -> Self {
        EvalCtx { threads: 1, subgraphs: None }
    }
}

impl fmt::Debug for EvalCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvalCtx").field("threads", &self.threads).field("subgraphs", &self.subgraphs.is_some()).finish()
    }
}

impl EvalCtx {
    /// Runs `body` on its formal inputs and captured values, by the context's runner if it has
    /// one.
    pub fn run_body(&self, body: &Arc<Body>, formal: Vec<Tensor>, captured: &[&Tensor]) -> OpResult<Vec<Tensor>> {
        match &self.subgraphs {
            Some(runner) => runner.run(body, formal, captured, self),
            None => body.run(formal, captured),
        }
    }
}

/// Runs subgraph bodies for the ops that hold them: the runtime plans each body as it plans a
/// graph (specialised, rewritten by its pass list, reused for equal input shapes).
pub trait Subgraphs: Send + Sync {
    /// The body's outputs for these formal inputs and captured values (in [`Body`] order); `ctx`
    /// is the context of the op that runs it.
    fn run(&self, body: &Arc<Body>, formal: Vec<Tensor>, captured: &[&Tensor], ctx: &EvalCtx) -> OpResult<Vec<Tensor>>;
}

/// An operator instance with its attributes bound.
///
/// Contract: `infer` and `eval` agree — for inputs matching the facts given to `infer`, `eval`
/// returns tensors of exactly the inferred dtypes and shapes. Optional inputs that are absent
/// are `None`.
pub trait Op: Send + Sync + fmt::Debug + Any {
    /// The operator type, as in ONNX (`"MatMul"`).
    fn name(&self) -> &'static str;

    /// Output facts from input facts. Constant contents of inputs (shape operands) may be used.
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>>;

    /// Computes the outputs.
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>>;

    /// The multiply-adds of a matrix product or convolution for these input facts (0 for every
    /// other op, and when a shape is unknown): the model's operation count of `octet bench
    /// --peak`, two operations each.
    fn multiply_adds(&self, inputs: &[Option<&Fact>]) -> u64 {
        let _ = inputs;
        0
    }

    /// Inputs whose contents (not only shapes) determine the output shapes: shape, axes, sizes
    /// and slice operands. A graph input feeding one is planned by value.
    fn value_operands(&self) -> &'static [usize] {
        &[]
    }

    /// True for ops whose output is their first input's data under another shape (Reshape,
    /// Squeeze, …): the interpreter then moves a dying input instead of copying it.
    fn is_view(&self) -> bool {
        false
    }

    /// For ops that are compiled kernels (int8 lowering): the kernel's name and ISA tier.
    fn kernel(&self) -> Option<String> {
        None
    }

    /// False for ops whose outputs must not be folded into constants even when every input is
    /// constant.
    fn foldable(&self) -> bool {
        true
    }

    /// The subgraph bodies the op runs (If, Loop, Scan), in the order their captured values
    /// follow the op's declared inputs.
    fn subgraphs(&self) -> Vec<&Arc<Body>> {
        Vec::new()
    }

    /// The same op running `bodies` instead of [`Op::subgraphs`] (as many, in the same order);
    /// `None` for ops without subgraphs.
    fn with_subgraphs(&self, bodies: Vec<Arc<Body>>) -> Option<Arc<dyn Op>> {
        let _ = bodies;
        None
    }

    fn as_any(&self) -> &dyn Any;
}

impl dyn Op {
    /// The concrete op, when it is a `T`.
    pub fn downcast<T: Op>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }
}

/// Input `i` of an op, or an error naming it when it is absent.
pub fn required<'a, T>(inputs: &[Option<&'a T>], i: usize, what: &str) -> OpResult<&'a T> {
    inputs.get(i).copied().flatten().ok_or_else(|| format!("missing required input {i} ({what})"))
}

/// Input `i` of an op when present.
pub fn optional<'a, T>(inputs: &[Option<&'a T>], i: usize) -> Option<&'a T> {
    inputs.get(i).copied().flatten()
}

/// Normalises a possibly negative index into an axis of `len` elements (numpy's rule), or an
/// error naming it.
pub fn norm_index(index: i64, len: usize) -> OpResult<usize> {
    let j = if index < 0 { index.saturating_add(len as i64) } else { index };
    if !(0..len as i64).contains(&j) {
        return Err(format!("index {index} is out of range for an axis of {len}"));
    }
    Ok(j as usize)
}

/// Normalises a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// `Op::as_any` for a concrete type.
#[macro_export]
macro_rules! op_any {
    () => {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    };
}
