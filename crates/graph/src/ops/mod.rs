//! The op registry: the single source of truth for which operators octet supports, from which
//! opset, how each runs in float and in int8, and how each is built from its attributes. The
//! support matrix (`octet ops`), `octet check` and `doc/operators.md` are generated from it.

pub mod broadcast;
pub mod elementwise;
pub mod nn;
pub mod quant;
pub mod resize;
pub mod shape;
pub mod view;

use std::sync::Arc;

use crate::attrs::{Attr, Attrs};
use crate::error::OpResult;
use crate::op::Op;
use elementwise::{dtype_from_onnx, Binary, BinaryKind, Cast, Unary, UnaryKind, Where};

/// The lowest and highest default-domain opset a model may declare.
pub const OPSETS: (u32, u32) = (11, 28);

/// What a node needs to build its op.
pub struct BuildCtx<'a> {
    pub attrs: &'a Attrs,
    /// The model's default-domain opset.
    pub opset: u32,
    pub num_outputs: usize,
}

/// How an op runs once the model is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Int8Support {
    /// No int8 kernel: the op runs in float between DequantizeLinear and QuantizeLinear.
    FloatBetweenDqQ,
    /// The op is itself a quantization boundary.
    QdqBoundary,
    /// The int8 lowering (crates/quant/src/lower) has a kernel for the op's QDQ pattern; when a
    /// pattern does not match (other parameters, shapes), it runs in float between dq and q.
    Kernel(&'static str),
}

impl Int8Support {
    pub fn describe(self) -> &'static str {
        match self {
            Int8Support::FloatBetweenDqQ => "float between dq and q",
            Int8Support::QdqBoundary => "quantization boundary",
            Int8Support::Kernel(k) => k,
        }
    }
}

const GEMM: Int8Support = Int8Support::Kernel("u8×s8 GEMM (weights packed; Q·Kᵀ → softmax → P·V fused)");
const TABLE: Int8Support = Int8Support::Kernel("256-entry table (in the epilogue of a GEMM before it, if any)");
const ARITH: Int8Support = Int8Support::Kernel("dq ∘ op ∘ q in one pass; with a constant scalar: 256-entry table");
const MOVE: Int8Support = Int8Support::Kernel("moves 8-bit data (same parameters in and out)");

/// How annotation treats an op when a preset quantizes it (doc/quantization.md, section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantRule {
    /// A matrix product: activations u8 asymmetric on the left, s8 symmetric on the right;
    /// constant weights s8 symmetric per output channel; a constant bias int32.
    Matmul,
    /// Inputs and output observed, u8 asymmetric. A Mul or Div by a positive constant scalar
    /// is a change of scale instead: its output shares its input's parameters, rescaled.
    Observed,
    /// Moves data without changing values: the output shares the input's parameters.
    SharesInput,
    /// Input observed, output on the fixed grid scale 1/256, zero point 0 (Softmax).
    FixedOutput,
    /// Not quantized: shape arithmetic, casts, comparisons, the Q/DQ ops themselves.
    NotQuantized,
}

impl QuantRule {
    pub fn describe(self) -> &'static str {
        match self {
            QuantRule::Matmul => "u8 × s8 (weights per channel, bias i32)",
            QuantRule::Observed => "observed u8",
            QuantRule::SharesInput => "shares its input's parameters",
            QuantRule::FixedOutput => "output fixed 1/256",
            QuantRule::NotQuantized => "not quantized",
        }
    }
}

/// One registry entry.
pub struct OpDef {
    pub name: &'static str,
    /// First opset whose semantics are implemented (the op is accepted up to [`OPSETS`]`.1`).
    pub since: u32,
    /// How the float kernel computes.
    pub float_kernel: &'static str,
    pub int8: Int8Support,
    pub quant: QuantRule,
    /// What is not supported, or what is worth knowing.
    pub notes: &'static str,
    pub build: fn(&BuildCtx) -> OpResult<Arc<dyn Op>>,
}

fn ok(op: impl Op) -> OpResult<Arc<dyn Op>> {
    Ok(Arc::new(op))
}

fn binary(kind: BinaryKind) -> OpResult<Arc<dyn Op>> {
    ok(Binary(kind))
}

fn unary(kind: UnaryKind) -> OpResult<Arc<dyn Op>> {
    ok(Unary(kind))
}

/// The attribute form of an operand that later opsets moved to an input.
fn attr_before(c: &BuildCtx, name: &str, opset: u32) -> OpResult<Option<Vec<i64>>> {
    if c.opset < opset {
        c.attrs.ints(name)
    } else {
        Ok(None)
    }
}

fn constant(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    use crate::tensor::Tensor;
    let a = c.attrs;
    let t = if let Some(t) = a.tensor("value") {
        t.clone()
    } else if let Some(Attr::Float(v)) = a.get("value_float") {
        Tensor::scalar_f32(*v)
    } else if let Some(Attr::Floats(v)) = a.get("value_floats") {
        Tensor::f32(vec![v.len()], v.clone())
    } else if let Some(Attr::Int(v)) = a.get("value_int") {
        Tensor::i64(vec![], vec![*v])
    } else if let Some(Attr::Ints(v)) = a.get("value_ints") {
        Tensor::i64(vec![v.len()], v.clone())
    } else {
        return Err("Constant without a supported value attribute (value, value_float(s), value_int(s))".into());
    };
    ok(shape::Constant { value: Arc::new(t) })
}

fn resize(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    let mode = match a.string_or("mode", "nearest")?.as_str() {
        "nearest" => resize::Mode::Nearest,
        "linear" => resize::Mode::Linear,
        "cubic" => resize::Mode::Cubic,
        other => return Err(format!("unknown Resize mode '{other}'")),
    };
    ok(resize::Resize {
        mode,
        coord: a.string_or("coordinate_transformation_mode", "half_pixel")?,
        nearest_mode: a.string_or("nearest_mode", "round_prefer_floor")?,
        cubic_a: a.float_or("cubic_coeff_a", -0.75)?,
        exclude_outside: a.int_or("exclude_outside", 0)? != 0,
        extrapolation: a.float_or("extrapolation_value", 0.0)?,
        antialias: a.int_or("antialias", 0)? != 0,
        axes: a.ints("axes")?,
        aspect_policy: a.string_or("keep_aspect_ratio_policy", "stretch")?,
    })
}

fn gelu(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    match c.attrs.string_or("approximate", "none")?.as_str() {
        "none" => unary(UnaryKind::GeluErf),
        "tanh" => unary(UnaryKind::GeluTanh),
        other => Err(format!("unknown Gelu approximation '{other}'")),
    }
}

const FLOAT: Int8Support = Int8Support::FloatBetweenDqQ;

/// Every supported operator, alphabetically.
pub static REGISTRY: &[OpDef] = &[
    OpDef { name: "Add", since: 11, float_kernel: "broadcast elementwise", quant: QuantRule::Observed, int8: ARITH, notes: "", build: |_| binary(BinaryKind::Add) },
    OpDef {
        name: "Cast",
        since: 11,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized, int8: FLOAT,
        notes: "to float32, float64, int64, int32, int8, uint8, bool",
        build: |c| {
            let to = c.attrs.int_or("to", 1)?;
            ok(Cast { to: dtype_from_onnx(to).ok_or_else(|| format!("Cast to ONNX type {to} is not supported"))? })
        },
    },
    OpDef { name: "Concat", since: 11, float_kernel: "copy", quant: QuantRule::SharesInput, int8: FLOAT, notes: "", build: |c| ok(shape::Concat { axis: c.attrs.int_or("axis", 0)? }) },
    OpDef { name: "Constant", since: 11, float_kernel: "folded at load", quant: QuantRule::NotQuantized, int8: FLOAT, notes: "sparse values are not supported", build: constant },
    OpDef {
        name: "ConstantOfShape",
        since: 11,
        float_kernel: "folded at load",
        quant: QuantRule::NotQuantized, int8: FLOAT,
        notes: "",
        build: |c| ok(shape::ConstantOfShape { value: c.attrs.tensor("value").cloned().unwrap_or_else(shape::zero_f32) }),
    },
    OpDef {
        name: "Conv",
        since: 11,
        float_kernel: "im2col + gemm crate matmul",
        quant: QuantRule::Matmul, int8: Int8Support::Kernel("im2col + u8×s8 GEMM (2-D, group 1)"),
        notes: "1-D and 2-D",
        build: |c| {
            let a = c.attrs;
            ok(nn::Conv {
                strides: a.ints("strides")?,
                dilations: a.ints("dilations")?,
                pads: a.ints("pads")?,
                auto_pad: a.string_or("auto_pad", "NOTSET")?,
                group: a.int_or("group", 1)?.max(1) as usize,
            })
        },
    },
    OpDef {
        name: "DequantizeLinear",
        since: 11,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized, int8: Int8Support::QdqBoundary,
        notes: "per tensor and per axis; uint8, int8, int32 inputs; no blocked quantization",
        build: |c| ok(quant::DequantizeLinear { axis: c.attrs.int_or("axis", 1)? }),
    },
    OpDef { name: "Div", since: 11, float_kernel: "broadcast elementwise", quant: QuantRule::Observed, int8: ARITH, notes: "by a positive constant scalar: a change of scale, no kernel", build: |_| binary(BinaryKind::Div) },
    OpDef { name: "Equal", since: 11, float_kernel: "broadcast elementwise", quant: QuantRule::NotQuantized, int8: FLOAT, notes: "no strings", build: |_| binary(BinaryKind::Equal) },
    OpDef { name: "Erf", since: 11, float_kernel: "vectorised rational approximation", quant: QuantRule::Observed, int8: TABLE, notes: "", build: |_| unary(UnaryKind::Erf) },
    OpDef { name: "Expand", since: 11, float_kernel: "strided copy", quant: QuantRule::SharesInput, int8: MOVE, notes: "", build: |_| ok(shape::Expand) },
    OpDef { name: "Flatten", since: 11, float_kernel: "view", quant: QuantRule::SharesInput, int8: MOVE, notes: "", build: |c| ok(shape::Flatten { axis: c.attrs.int_or("axis", 1)? }) },
    OpDef { name: "Gather", since: 11, float_kernel: "copy", quant: QuantRule::SharesInput, int8: MOVE, notes: "", build: |c| ok(shape::Gather { axis: c.attrs.int_or("axis", 0)? }) },
    OpDef {
        name: "Gelu",
        since: 20,
        float_kernel: "vectorised erf or tanh form",
        quant: QuantRule::Observed, int8: TABLE,
        notes: "also what Erf- and Tanh-GELU subgraphs are fused into",
        build: gelu,
    },
    OpDef {
        name: "Gemm",
        since: 11,
        float_kernel: "gemm crate matmul (transposes as strides)",
        quant: QuantRule::Matmul, int8: GEMM,
        notes: "",
        build: |c| {
            let a = c.attrs;
            ok(nn::Gemm {
                alpha: a.float_or("alpha", 1.0)?,
                beta: a.float_or("beta", 1.0)?,
                trans_a: a.int_or("transA", 0)? != 0,
                trans_b: a.int_or("transB", 0)? != 0,
            })
        },
    },
    OpDef { name: "Identity", since: 11, float_kernel: "copy", quant: QuantRule::SharesInput, int8: MOVE, notes: "tensors only (no sequences or optionals)", build: |_| ok(shape::Identity) },
    OpDef {
        name: "LayerNormalization",
        since: 17,
        float_kernel: "vectorised row kernel",
        quant: QuantRule::Observed, int8: Int8Support::Kernel("integer mean and variance, f32 normalise (last axis)"),
        notes: "also what decomposed LayerNorm subgraphs are fused into",
        build: |c| {
            ok(nn::LayerNorm { axis: c.attrs.int_or("axis", -1)?, epsilon: c.attrs.float_or("epsilon", 1e-5)?, stats: c.num_outputs > 1 })
        },
    },
    OpDef { name: "MatMul", since: 11, float_kernel: "gemm crate matmul, batched with rayon", quant: QuantRule::Matmul, int8: GEMM, notes: "", build: |_| ok(nn::MatMul) },
    OpDef { name: "Mul", since: 11, float_kernel: "broadcast elementwise", quant: QuantRule::Observed, int8: ARITH, notes: "by a positive constant scalar: a change of scale, no kernel", build: |_| binary(BinaryKind::Mul) },
    OpDef { name: "Pow", since: 11, float_kernel: "broadcast elementwise", quant: QuantRule::Observed, int8: TABLE, notes: "", build: |_| binary(BinaryKind::Pow) },
    OpDef {
        name: "QuantizeLinear",
        since: 11,
        float_kernel: "elementwise, round half to even",
        quant: QuantRule::NotQuantized, int8: Int8Support::QdqBoundary,
        notes: "per tensor and per axis; to uint8, int8, int32; no blocked quantization",
        build: |c| {
            let od = c.attrs.int_or("output_dtype", 0)?;
            let output_dtype = if od == 0 { None } else { Some(dtype_from_onnx(od).ok_or_else(|| format!("output_dtype {od} is not supported"))?) };
            if c.attrs.int_or("block_size", 0)? != 0 {
                return Err("blocked quantization (block_size) is not supported".into());
            }
            ok(quant::QuantizeLinear { axis: c.attrs.int_or("axis", 1)?, output_dtype })
        },
    },
    OpDef {
        name: "ReduceMean",
        since: 11,
        float_kernel: "f64 accumulation",
        quant: QuantRule::Observed, int8: FLOAT,
        notes: "",
        build: |c| {
            ok(nn::ReduceMean {
                axes: attr_before(c, "axes", 18)?,
                keepdims: c.attrs.int_or("keepdims", 1)? != 0,
                noop_with_empty_axes: c.attrs.int_or("noop_with_empty_axes", 0)? != 0,
            })
        },
    },
    OpDef { name: "Relu", since: 11, float_kernel: "elementwise", quant: QuantRule::Observed, int8: TABLE, notes: "", build: |_| unary(UnaryKind::Relu) },
    OpDef { name: "Reshape", since: 11, float_kernel: "view", quant: QuantRule::SharesInput, int8: MOVE, notes: "", build: |c| ok(shape::Reshape { allow_zero: c.attrs.int_or("allowzero", 0)? != 0 }) },
    OpDef {
        name: "Resize",
        since: 11,
        float_kernel: "separable interpolation",
        quant: QuantRule::Observed, int8: FLOAT,
        notes: "nearest, linear, cubic; every coordinate mode; antialias",
        build: resize,
    },
    OpDef { name: "Shape", since: 11, float_kernel: "folded at load", quant: QuantRule::NotQuantized, int8: FLOAT, notes: "", build: |c| ok(shape::Shape { start: c.attrs.int_or("start", 0)?, end: c.attrs.ints("end")?.map(|v| v[0]) }) },
    OpDef { name: "Sigmoid", since: 11, float_kernel: "vectorised", quant: QuantRule::Observed, int8: TABLE, notes: "", build: |_| unary(UnaryKind::Sigmoid) },
    OpDef {
        name: "Slice",
        since: 11,
        float_kernel: "strided copy",
        quant: QuantRule::SharesInput, int8: MOVE,
        notes: "",
        build: |_| ok(shape::Slice),
    },
    OpDef {
        name: "Softmax",
        since: 11,
        float_kernel: "vectorised row kernel",
        quant: QuantRule::FixedOutput, int8: Int8Support::Kernel("exp of integer logit differences (last axis)"),
        notes: "",
        build: |c| {
            let flatten = c.opset < 13;
            ok(nn::Softmax { axis: c.attrs.int_or("axis", if flatten { 1 } else { -1 })?, flatten })
        },
    },
    OpDef {
        name: "Split",
        since: 11,
        float_kernel: "strided copy",
        quant: QuantRule::SharesInput, int8: MOVE,
        notes: "",
        build: |c| ok(shape::Split { axis: c.attrs.int_or("axis", 0)?, split: attr_before(c, "split", 13)?, outputs: c.num_outputs }),
    },
    OpDef { name: "Sqrt", since: 11, float_kernel: "elementwise", quant: QuantRule::Observed, int8: TABLE, notes: "", build: |_| unary(UnaryKind::Sqrt) },
    OpDef { name: "Squeeze", since: 11, float_kernel: "view", quant: QuantRule::SharesInput, int8: MOVE, notes: "", build: |c| ok(shape::Squeeze { axes: attr_before(c, "axes", 13)? }) },
    OpDef { name: "Sub", since: 11, float_kernel: "broadcast elementwise", quant: QuantRule::Observed, int8: ARITH, notes: "", build: |_| binary(BinaryKind::Sub) },
    OpDef { name: "Tanh", since: 11, float_kernel: "vectorised", quant: QuantRule::Observed, int8: TABLE, notes: "", build: |_| unary(UnaryKind::Tanh) },
    OpDef { name: "Transpose", since: 11, float_kernel: "strided copy", quant: QuantRule::SharesInput, int8: MOVE, notes: "", build: |c| ok(shape::Transpose { perm: c.attrs.ints("perm")? }) },
    OpDef { name: "Unsqueeze", since: 11, float_kernel: "view", quant: QuantRule::SharesInput, int8: MOVE, notes: "", build: |c| ok(shape::Unsqueeze { axes: attr_before(c, "axes", 13)? }) },
    OpDef { name: "Where", since: 11, float_kernel: "broadcast elementwise", quant: QuantRule::NotQuantized, int8: FLOAT, notes: "", build: |_| ok(Where) },
];

/// The registry entry of an operator.
pub fn lookup(name: &str) -> Option<&'static OpDef> {
    REGISTRY.iter().find(|d| d.name == name)
}

/// Supported operator names closest to `name` (edit distance, case-insensitive), best first.
pub fn closest(name: &str, n: usize) -> Vec<&'static str> {
    let lower = name.to_lowercase();
    let mut scored: Vec<(usize, &'static str)> = REGISTRY
        .iter()
        .map(|d| {
            let cand = d.name.to_lowercase();
            let mut score = edit_distance(&lower, &cand);
            if cand.contains(&lower) || lower.contains(&cand) {
                score = score.min(1);
            }
            (score, d.name)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, s)| s).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
