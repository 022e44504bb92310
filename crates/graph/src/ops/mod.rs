//! The op registry: the single source of truth for which operators octet supports, from which
//! opset, how each runs in float, how the quantizer treats it, and how each is built from its
//! attributes. The support matrix (`octet ops`), `octet check` and `doc/operators.md` are
//! generated from it; their int8 column from the runtime's int8 rules (`octet_runtime::lower`).

pub mod attention;
pub mod broadcast;
pub mod control_flow;
pub mod detection;
pub mod elementwise;
pub mod generator;
pub mod layout;
pub mod loss;
pub mod math;
pub mod nn;
pub mod norm;
pub mod parallel;
pub mod pool;
pub mod quant;
pub mod recurrent_state;
pub mod reduction;
pub mod resize;
pub mod rnn;
pub mod sampling;
pub mod shape;
pub mod text;
pub mod view;

use std::sync::Arc;

use crate::attrs::{Attr, Attrs};
use crate::error::OpResult;
use crate::op::Op;
use elementwise::{dtype_from_onnx, Binary, BinaryKind, Cast, Unary, UnaryKind, Variadic, Where};
use reduction::{ArgExtreme, Reduce, ReduceKind};

/// The lowest and highest default-domain opset a model may declare.
pub const OPSETS: (u32, u32) = (1, 28);

/// What a node needs to build its op.
pub struct BuildCtx<'a> {
    pub attrs: &'a Attrs,
    /// The model's default-domain opset.
    pub opset: u32,
    /// The node's inputs as the file lists them (captured values of subgraphs come after).
    pub num_inputs: usize,
    pub num_outputs: usize,
}

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

fn reduce(c: &BuildCtx, kind: ReduceKind) -> OpResult<Arc<dyn Op>> {
    ok(Reduce {
        kind,
        axes: attr_before(c, "axes", kind.axes_input_since())?,
        keepdims: c.attrs.int_or("keepdims", 1)? != 0,
        noop_with_empty_axes: c.attrs.int_or("noop_with_empty_axes", 0)? != 0,
    })
}

fn arg_extreme(c: &BuildCtx, max: bool) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(ArgExtreme {
        max,
        axis: a.int_or("axis", 0)?,
        keepdims: a.int_or("keepdims", 1)? != 0,
        select_last_index: a.int_or("select_last_index", 0)? != 0,
    })
}

/// Softmax, LogSoftmax, Hardmax: before opset 13 the input is flattened at `axis` (default 1).
fn softmax_like(c: &BuildCtx, kind: nn::SoftmaxKind) -> OpResult<Arc<dyn Op>> {
    let flatten = c.opset < 13;
    ok(nn::Softmax { kind, axis: c.attrs.int_or("axis", if flatten { 1 } else { -1 })?, flatten })
}

fn variadic(name: &'static str, kind: BinaryKind, mean: bool) -> OpResult<Arc<dyn Op>> {
    ok(Variadic { name, kind, mean })
}

fn pool(c: &BuildCtx, kind: pool::PoolKind) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(pool::Pool {
        kind,
        kernel: a.ints("kernel_shape")?.ok_or("kernel_shape is required")?,
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        auto_pad: a.string_or("auto_pad", "NOTSET")?,
        ceil_mode: a.int_or("ceil_mode", 0)? != 0,
        storage_order_col: a.int_or("storage_order", 0)? != 0,
        outputs: c.num_outputs,
    })
}

fn normalization(c: &BuildCtx, kind: norm::NormKind, epsilon: f32) -> OpResult<Arc<dyn Op>> {
    ok(norm::Normalization { kind, epsilon: c.attrs.float_or("epsilon", epsilon)? as f64 })
}

fn reduction_mode(c: &BuildCtx) -> OpResult<layout::Reduction> {
    layout::Reduction::parse(&c.attrs.string_or("reduction", "none")?)
}

/// A data-type attribute (an ONNX `TensorProto.DataType` code), `None` when absent.
fn dtype_attr(c: &BuildCtx, name: &str) -> OpResult<Option<crate::tensor::DType>> {
    c.attrs
        .int(name)?
        .map(|code| dtype_from_onnx(code).ok_or_else(|| format!("'{name}' names ONNX data type {code}, which octet does not support")))
        .transpose()
}

/// A non-negative int attribute as a size, `None` when absent.
fn size_attr(c: &BuildCtx, name: &str) -> OpResult<Option<usize>> {
    Ok(c.attrs.int(name)?.map(|v| v.max(0) as usize))
}

fn window(c: &BuildCtx, kind: generator::WindowKind) -> OpResult<Arc<dyn Op>> {
    ok(generator::Window {
        kind,
        periodic: c.attrs.int_or("periodic", 1)? != 0,
        dtype: dtype_attr(c, "output_datatype")?.unwrap_or(crate::tensor::DType::F32),
    })
}

fn loss(c: &BuildCtx, softmax: bool) -> OpResult<Arc<dyn Op>> {
    let reduction = match c.attrs.string_or("reduction", "mean")?.as_str() {
        "none" => loss::LossReduction::None,
        "sum" => loss::LossReduction::Sum,
        "mean" => loss::LossReduction::Mean,
        r => return Err(format!("unknown reduction '{r}'")),
    };
    ok(loss::Loss { softmax, reduction, ignore_index: c.attrs.int("ignore_index")?, outputs: c.num_outputs })
}

fn recurrent(c: &BuildCtx, kind: rnn::CellKind) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    let direction = a.string_or("direction", "forward")?;
    let directions = match direction.as_str() {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => return Err(format!("unknown direction '{d}'")),
    };
    ok(rnn::Recurrent {
        kind,
        directions,
        reverse_only: direction == "reverse",
        hidden: size_attr(c, "hidden_size")?,
        activations: rnn::activations(
            kind,
            a.strings("activations")?,
            a.floats("activation_alpha")?,
            a.floats("activation_beta")?,
            directions,
        )?,
        clip: a.float("clip")?.map(f64::from),
        batch_first: a.int_or("layout", 0)? != 0,
        outputs: c.num_outputs,
    })
}

fn alpha(c: &BuildCtx, default: f32) -> OpResult<f32> {
    c.attrs.float_or("alpha", default)
}

/// Every supported operator, alphabetically.
pub static REGISTRY: &[OpDef] = &[
    OpDef {
        name: "Abs",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "integers too",
        build: |_| unary(UnaryKind::Abs),
    },
    OpDef {
        name: "Acos",
        since: 7,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Acos),
    },
    OpDef {
        name: "Acosh",
        since: 9,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Acosh),
    },
    OpDef {
        name: "Add",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| binary(BinaryKind::Add),
    },
    OpDef {
        name: "AffineGrid",
        since: 20,
        float_kernel: "f64",
        quant: QuantRule::NotQuantized,
        notes: "2-D and 3-D",
        build: |c| ok(sampling::AffineGrid { align_corners: c.attrs.int_or("align_corners", 0)? != 0 }),
    },
    OpDef {
        name: "And",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::And),
    },
    OpDef {
        name: "ArgMax",
        since: 1,
        float_kernel: "row scan",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| arg_extreme(c, true),
    },
    OpDef {
        name: "ArgMin",
        since: 1,
        float_kernel: "row scan",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| arg_extreme(c, false),
    },
    OpDef {
        name: "Asin",
        since: 7,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Asin),
    },
    OpDef {
        name: "Asinh",
        since: 9,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Asinh),
    },
    OpDef {
        name: "Atan",
        since: 7,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Atan),
    },
    OpDef {
        name: "Atanh",
        since: 9,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Atanh),
    },
    OpDef {
        name: "Attention",
        since: 23,
        float_kernel: "f64 reference loops",
        quant: QuantRule::NotQuantized,
        notes: "masks, causal and sliding windows, KV cache, grouped-query heads, softcap, every QK output mode",
        build: build_attention,
    },
    OpDef {
        name: "AveragePool",
        since: 7,
        float_kernel: "window scan, any number of spatial axes",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| pool(c, pool::PoolKind::Average { count_include_pad: c.attrs.int_or("count_include_pad", 0)? != 0 }),
    },
    OpDef {
        name: "BatchNormalization",
        since: 7,
        float_kernel: "per-channel affine (f64)",
        quant: QuantRule::Observed,
        notes: "inference form, and training_mode (batch statistics, updated running mean and variance)",
        build: build_batch_normalization,
    },
    OpDef {
        name: "BitCast",
        since: 26,
        float_kernel: "reinterpret bytes",
        quant: QuantRule::NotQuantized,
        notes: "between types of one width",
        build: |c| ok(layout::BitCast { to: dtype_attr(c, "to")?.ok_or("BitCast needs 'to'")? }),
    },
    OpDef {
        name: "BitShift",
        since: 11,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "signed integers: arithmetic right shift",
        build: |c| binary(BinaryKind::BitShift { left: c.attrs.string_or("direction", "")? == "LEFT" }),
    },
    OpDef {
        name: "BitwiseAnd",
        since: 18,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::BitwiseAnd),
    },
    OpDef {
        name: "BitwiseNot",
        since: 18,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| unary(UnaryKind::BitwiseNot),
    },
    OpDef {
        name: "BitwiseOr",
        since: 18,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::BitwiseOr),
    },
    OpDef {
        name: "BitwiseXor",
        since: 18,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::BitwiseXor),
    },
    OpDef {
        name: "BlackmanWindow",
        since: 17,
        float_kernel: "generated",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| window(c, generator::WindowKind::Blackman),
    },
    OpDef {
        name: "Cast",
        since: 6,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized,
        notes: "between float32/64/16, signed and unsigned integers of 8 to 64 bits, bool; no bfloat16, float8, int4 or strings",
        build: |c| ok(Cast { to: dtype_attr(c, "to")?.ok_or("Cast needs 'to'")? }),
    },
    OpDef {
        name: "CastLike",
        since: 15,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(layout::CastLike),
    },
    OpDef {
        name: "CausalConvWithState",
        since: 27,
        float_kernel: "f64",
        quant: QuantRule::NotQuantized,
        notes: "activation none or silu/swish",
        build: build_causal_conv_with_state,
    },
    OpDef {
        name: "Ceil",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Ceil),
    },
    OpDef {
        name: "Celu",
        since: 12,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| unary(UnaryKind::Celu { alpha: alpha(c, 1.0)? }),
    },
    OpDef {
        name: "CenterCropPad",
        since: 18,
        float_kernel: "index map",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| ok(layout::CenterCropPad { axes: c.attrs.ints("axes")? }),
    },
    OpDef {
        name: "Clip",
        since: 6,
        float_kernel: "elementwise",
        quant: QuantRule::Observed,
        notes: "bounds: attributes before opset 11, inputs from 11",
        build: build_clip,
    },
    OpDef {
        name: "Col2Im",
        since: 18,
        float_kernel: "f64, any number of spatial axes",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: build_col2im,
    },
    OpDef {
        name: "Compress",
        since: 9,
        float_kernel: "index map",
        quant: QuantRule::SharesInput,
        notes: "the condition must be known when the model is planned",
        build: |c| ok(layout::Compress { axis: c.attrs.int("axis")? }),
    },
    OpDef {
        name: "Concat",
        since: 4,
        float_kernel: "copy",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Concat { axis: c.attrs.int_or("axis", 0)? }),
    },
    OpDef {
        name: "Constant",
        since: 1,
        float_kernel: "folded at load",
        quant: QuantRule::NotQuantized,
        notes: "sparse values are not supported",
        build: constant,
    },
    OpDef {
        name: "ConstantOfShape",
        since: 9,
        float_kernel: "folded at load",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| ok(shape::ConstantOfShape { value: c.attrs.tensor("value").cloned().unwrap_or_else(shape::zero_f32) }),
    },
    OpDef {
        name: "Conv",
        since: 1,
        float_kernel: "im2col + gemm crate matmul",
        quant: QuantRule::Matmul,
        notes: "1-D and 2-D",
        build: build_conv,
    },
    OpDef {
        name: "ConvInteger",
        since: 10,
        float_kernel: "exact i64 accumulation, any number of spatial axes",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: build_conv_integer,
    },
    OpDef {
        name: "ConvTranspose",
        since: 1,
        float_kernel: "f64 scatter, any number of spatial axes",
        quant: QuantRule::Observed,
        notes: "groups, output_padding, output_shape, auto_pad",
        build: build_conv_transpose,
    },
    OpDef {
        name: "Cos",
        since: 7,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Cos),
    },
    OpDef {
        name: "Cosh",
        since: 9,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Cosh),
    },
    OpDef {
        name: "CumProd",
        since: 26,
        float_kernel: "running product (f64)",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: build_cum_prod,
    },
    OpDef { name: "CumSum", since: 11, float_kernel: "running sum (f64)", quant: QuantRule::NotQuantized, notes: "", build: build_cum_sum },
    OpDef {
        name: "DFT",
        since: 17,
        float_kernel: "direct sums (f64)",
        quant: QuantRule::NotQuantized,
        notes: "forward, inverse, one-sided; axis attribute before opset 20",
        build: build_dft,
    },
    OpDef {
        name: "DeformConv",
        since: 19,
        float_kernel: "bilinear taps (f64), 2-D",
        quant: QuantRule::NotQuantized,
        notes: "offsets, mask, groups, offset groups",
        build: build_deform_conv,
    },
    OpDef {
        name: "DepthToSpace",
        since: 1,
        float_kernel: "index map",
        quant: QuantRule::SharesInput,
        notes: "DCR and CRD modes",
        build: build_depth_to_space,
    },
    OpDef {
        name: "DequantizeLinear",
        since: 10,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized,
        notes: "per tensor and per axis; uint8, int8, uint16, int16, int32 inputs; no blocked quantization",
        build: |c| ok(quant::DequantizeLinear { axis: c.attrs.int_or("axis", 1)? }),
    },
    OpDef {
        name: "Det",
        since: 11,
        float_kernel: "LU with partial pivoting (f64)",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(math::Det),
    },
    OpDef {
        name: "Div",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::Observed,
        notes: "by a positive constant scalar: a change of scale, no kernel",
        build: |_| binary(BinaryKind::Div),
    },
    OpDef {
        name: "Dropout",
        since: 7,
        float_kernel: "identity (inference)",
        quant: QuantRule::SharesInput,
        notes: "inference, or training with ratio 0; the mask output is all true",
        build: |c| ok(norm::Dropout { mask: c.num_outputs > 1 }),
    },
    OpDef {
        name: "DynamicQuantizeLinear",
        since: 11,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(quant::DynamicQuantizeLinear),
    },
    OpDef {
        name: "Einsum",
        since: 12,
        float_kernel: "direct loops over every label (f64)",
        quant: QuantRule::NotQuantized,
        notes: "ellipsis broadcasting, implicit output",
        build: |c| ok(math::Einsum { equation: c.attrs.string_or("equation", "")? }),
    },
    OpDef {
        name: "Elu",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| unary(UnaryKind::Elu { alpha: alpha(c, 1.0)? }),
    },
    OpDef {
        name: "Equal",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "no strings",
        build: |_| binary(BinaryKind::Equal),
    },
    OpDef {
        name: "Erf",
        since: 9,
        float_kernel: "vectorised rational approximation",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Erf),
    },
    OpDef {
        name: "Exp",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Exp),
    },
    OpDef {
        name: "Expand",
        since: 8,
        float_kernel: "strided copy",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |_| ok(shape::Expand),
    },
    OpDef {
        name: "EyeLike",
        since: 9,
        float_kernel: "folded at load",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| ok(generator::EyeLike { dtype: dtype_attr(c, "dtype")?, k: c.attrs.int_or("k", 0)? }),
    },
    OpDef {
        name: "Flatten",
        since: 1,
        float_kernel: "view",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Flatten { axis: c.attrs.int_or("axis", 1)? }),
    },
    OpDef {
        name: "Floor",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Floor),
    },
    OpDef {
        name: "GRU",
        since: 7,
        float_kernel: "f64 recurrence",
        quant: QuantRule::NotQuantized,
        notes: "every direction, linear_before_reset, sequence_lens, layout, clip, activations",
        build: |c| recurrent(c, rnn::CellKind::Gru { linear_before_reset: c.attrs.int_or("linear_before_reset", 0)? != 0 }),
    },
    OpDef {
        name: "Gather",
        since: 1,
        float_kernel: "copy",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Gather { axis: c.attrs.int_or("axis", 0)? }),
    },
    OpDef {
        name: "GatherElements",
        since: 11,
        float_kernel: "index map",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(layout::GatherElements { axis: c.attrs.int_or("axis", 0)? }),
    },
    OpDef {
        name: "GatherND",
        since: 11,
        float_kernel: "index map",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(layout::GatherNd { batch_dims: c.attrs.int_or("batch_dims", 0)?.max(0) as usize }),
    },
    OpDef {
        name: "Gelu",
        since: 20,
        float_kernel: "vectorised erf or tanh form",
        quant: QuantRule::Observed,
        notes: "also what Erf- and Tanh-GELU subgraphs are fused into",
        build: gelu,
    },
    OpDef {
        name: "Gemm",
        since: 7,
        float_kernel: "gemm crate matmul (transposes as strides)",
        quant: QuantRule::Matmul,
        notes: "",
        build: build_gemm,
    },
    OpDef {
        name: "GlobalAveragePool",
        since: 1,
        float_kernel: "reduction over spatial axes",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| ok(pool::GlobalPool { kind: pool::PoolKind::Average { count_include_pad: false } }),
    },
    OpDef {
        name: "GlobalLpPool",
        since: 2,
        float_kernel: "reduction over spatial axes",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| ok(pool::GlobalPool { kind: pool::PoolKind::Lp { p: c.attrs.int_or("p", 2)? as f64 } }),
    },
    OpDef {
        name: "GlobalMaxPool",
        since: 1,
        float_kernel: "reduction over spatial axes",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |_| ok(pool::GlobalPool { kind: pool::PoolKind::Max }),
    },
    OpDef {
        name: "Greater",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::Greater),
    },
    OpDef {
        name: "GreaterOrEqual",
        since: 12,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::GreaterOrEqual),
    },
    OpDef {
        name: "GridSample",
        since: 16,
        float_kernel: "f64, any number of spatial axes",
        quant: QuantRule::Observed,
        notes: "nearest, linear, cubic (and opset 16's bilinear, bicubic); zeros, border, reflection padding",
        build: build_grid_sample,
    },
    OpDef {
        name: "GroupNormalization",
        since: 18,
        float_kernel: "per (N, group) moments (f64)",
        quant: QuantRule::Observed,
        notes: "scale and bias per group before opset 21, per channel from 21",
        build: build_group_normalization,
    },
    OpDef {
        name: "HammingWindow",
        since: 17,
        float_kernel: "generated",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| window(c, generator::WindowKind::Hamming),
    },
    OpDef {
        name: "HannWindow",
        since: 17,
        float_kernel: "generated",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| window(c, generator::WindowKind::Hann),
    },
    OpDef {
        name: "HardSigmoid",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| unary(UnaryKind::HardSigmoid { alpha: alpha(c, 0.2)?, beta: c.attrs.float_or("beta", 0.5)? }),
    },
    OpDef {
        name: "HardSwish",
        since: 14,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::HardSwish),
    },
    OpDef {
        name: "Hardmax",
        since: 1,
        float_kernel: "row kernel",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| softmax_like(c, nn::SoftmaxKind::Hardmax),
    },
    OpDef {
        name: "Identity",
        since: 1,
        float_kernel: "copy",
        quant: QuantRule::SharesInput,
        notes: "tensors only (no sequences or optionals)",
        build: |_| ok(shape::Identity),
    },
    OpDef {
        name: "If",
        since: 1,
        float_kernel: "runs one branch subgraph",
        quant: QuantRule::NotQuantized,
        notes: "branches may read values of enclosing graphs; a run-time condition needs branches of one output shape",
        build: |c| ok(control_flow::If { then_branch: c.attrs.graph("then_branch")?, else_branch: c.attrs.graph("else_branch")? }),
    },
    OpDef {
        name: "InstanceNormalization",
        since: 6,
        float_kernel: "per (N, C) moments (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| normalization(c, norm::NormKind::Instance, 1e-5),
    },
    OpDef { name: "IsInf", since: 10, float_kernel: "elementwise", quant: QuantRule::NotQuantized, notes: "", build: build_is_inf },
    OpDef {
        name: "IsNaN",
        since: 9,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| unary(UnaryKind::IsNaN),
    },
    OpDef { name: "LRN", since: 1, float_kernel: "channel windows (f64)", quant: QuantRule::Observed, notes: "", build: build_lrn },
    OpDef {
        name: "LSTM",
        since: 7,
        float_kernel: "f64 recurrence",
        quant: QuantRule::NotQuantized,
        notes: "every direction, peepholes, input_forget, sequence_lens, layout, clip, activations",
        build: |c| recurrent(c, rnn::CellKind::Lstm { input_forget: c.attrs.int_or("input_forget", 0)? != 0 }),
    },
    OpDef {
        name: "LayerNormalization",
        since: 17,
        float_kernel: "vectorised row kernel",
        quant: QuantRule::Observed,
        notes: "also what decomposed LayerNorm subgraphs are fused into",
        build: build_layer_normalization,
    },
    OpDef {
        name: "LeakyRelu",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| unary(UnaryKind::LeakyRelu { alpha: alpha(c, 0.01)? }),
    },
    OpDef {
        name: "Less",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::Less),
    },
    OpDef {
        name: "LessOrEqual",
        since: 12,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::LessOrEqual),
    },
    OpDef {
        name: "LinearAttention",
        since: 27,
        float_kernel: "f64 recurrence",
        quant: QuantRule::NotQuantized,
        notes: "linear, gated, delta, gated_delta update rules; grouped-query heads",
        build: build_linear_attention,
    },
    OpDef {
        name: "Log",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Log),
    },
    OpDef {
        name: "LogSoftmax",
        since: 1,
        float_kernel: "row kernel (f32)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| softmax_like(c, nn::SoftmaxKind::LogSoftmax),
    },
    OpDef {
        name: "Loop",
        since: 1,
        float_kernel: "runs the body subgraph per iteration",
        quant: QuantRule::NotQuantized,
        notes: "output sizes depend on values: the inputs must be known when the model is planned",
        build: |c| ok(control_flow::Loop { body: c.attrs.graph("body")?, declared_inputs: c.num_inputs }),
    },
    OpDef {
        name: "LpNormalization",
        since: 1,
        float_kernel: "row norms (f64)",
        quant: QuantRule::Observed,
        notes: "p = 1 or 2",
        build: |c| ok(norm::LpNormalization { axis: c.attrs.int_or("axis", -1)?, p: c.attrs.int_or("p", 2)? }),
    },
    OpDef {
        name: "LpPool",
        since: 2,
        float_kernel: "window scan, any number of spatial axes",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| pool(c, pool::PoolKind::Lp { p: c.attrs.int_or("p", 2)? as f64 }),
    },
    OpDef {
        name: "MatMul",
        since: 1,
        float_kernel: "gemm crate matmul, batched with rayon",
        quant: QuantRule::Matmul,
        notes: "",
        build: |_| ok(nn::MatMul),
    },
    OpDef {
        name: "MatMulInteger",
        since: 10,
        float_kernel: "exact i64 accumulation",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(quant::MatMulInteger),
    },
    OpDef {
        name: "Max",
        since: 6,
        float_kernel: "broadcast elementwise, any number of inputs",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| variadic("Max", BinaryKind::Max, false),
    },
    OpDef {
        name: "MaxPool",
        since: 1,
        float_kernel: "window scan, any number of spatial axes",
        quant: QuantRule::SharesInput,
        notes: "with the Indices output",
        build: |c| pool(c, pool::PoolKind::Max),
    },
    OpDef { name: "MaxUnpool", since: 9, float_kernel: "index map", quant: QuantRule::Observed, notes: "", build: build_max_unpool },
    OpDef {
        name: "Mean",
        since: 6,
        float_kernel: "broadcast elementwise, any number of inputs",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| variadic("Mean", BinaryKind::Add, true),
    },
    OpDef {
        name: "MeanVarianceNormalization",
        since: 9,
        float_kernel: "moments (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| normalization(c, norm::NormKind::MeanVariance { axes: c.attrs.ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]) }, 0.0),
    },
    OpDef {
        name: "MelWeightMatrix",
        since: 17,
        float_kernel: "generated",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| ok(generator::MelWeightMatrix { dtype: dtype_attr(c, "output_datatype")?.unwrap_or(crate::tensor::DType::F32) }),
    },
    OpDef {
        name: "Min",
        since: 6,
        float_kernel: "broadcast elementwise, any number of inputs",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| variadic("Min", BinaryKind::Min, false),
    },
    OpDef {
        name: "Mish",
        since: 18,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Mish),
    },
    OpDef {
        name: "Mod",
        since: 10,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| binary(BinaryKind::Mod { fmod: c.attrs.int_or("fmod", 0)? != 0 }),
    },
    OpDef {
        name: "Mul",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::Observed,
        notes: "by a positive constant scalar: a change of scale, no kernel",
        build: |_| binary(BinaryKind::Mul),
    },
    OpDef {
        name: "Neg",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "integers too",
        build: |_| unary(UnaryKind::Neg),
    },
    OpDef {
        name: "NegativeLogLikelihoodLoss",
        since: 12,
        float_kernel: "f64",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| loss(c, false),
    },
    OpDef {
        name: "NonMaxSuppression",
        since: 10,
        float_kernel: "greedy per class (f64)",
        quant: QuantRule::NotQuantized,
        notes: "output size depends on values: known when the model is planned",
        build: |c| ok(detection::NonMaxSuppression { center_point_box: c.attrs.int_or("center_point_box", 0)? != 0 }),
    },
    OpDef {
        name: "NonZero",
        since: 9,
        float_kernel: "scan",
        quant: QuantRule::NotQuantized,
        notes: "output size depends on values: known when the model is planned",
        build: |_| ok(layout::NonZero),
    },
    OpDef {
        name: "Not",
        since: 1,
        float_kernel: "elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| unary(UnaryKind::Not),
    },
    OpDef {
        name: "OneHot",
        since: 9,
        float_kernel: "index map",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| ok(layout::OneHot { axis: c.attrs.int_or("axis", -1)? }),
    },
    OpDef {
        name: "Or",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::Or),
    },
    OpDef {
        name: "PRelu",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| binary(BinaryKind::PRelu),
    },
    OpDef {
        name: "Pad",
        since: 2,
        float_kernel: "index map",
        quant: QuantRule::Observed,
        notes: "constant, reflect, edge, wrap; pads: attribute before opset 11",
        build: build_pad,
    },
    OpDef {
        name: "Pow",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| binary(BinaryKind::Pow),
    },
    OpDef {
        name: "QLinearConv",
        since: 10,
        float_kernel: "exact i64 accumulation, f64 requantization",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: build_qlinear_conv,
    },
    OpDef {
        name: "QLinearMatMul",
        since: 10,
        float_kernel: "exact i64 accumulation, f64 requantization",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(quant::QLinearMatMul),
    },
    OpDef {
        name: "QuantizeLinear",
        since: 10,
        float_kernel: "elementwise, round half to even",
        quant: QuantRule::NotQuantized,
        notes: "per tensor and per axis; to uint8, int8, uint16, int16, int32; no blocked quantization",
        build: build_quantize_linear,
    },
    OpDef {
        name: "RMSNormalization",
        since: 23,
        float_kernel: "row moments (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| normalization(c, norm::NormKind::Rms { axis: c.attrs.int_or("axis", -1)? }, 1e-5),
    },
    OpDef {
        name: "RNN",
        since: 7,
        float_kernel: "f64 recurrence",
        quant: QuantRule::NotQuantized,
        notes: "every direction, sequence_lens, layout, clip, activations",
        build: |c| recurrent(c, rnn::CellKind::Rnn),
    },
    OpDef {
        name: "Range",
        since: 11,
        float_kernel: "folded at load",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(generator::Range),
    },
    OpDef {
        name: "Reciprocal",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Reciprocal),
    },
    OpDef {
        name: "ReduceL1",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::NotQuantized,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::L1),
    },
    OpDef {
        name: "ReduceL2",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::NotQuantized,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::L2),
    },
    OpDef {
        name: "ReduceLogSum",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::NotQuantized,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::LogSum),
    },
    OpDef {
        name: "ReduceLogSumExp",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::NotQuantized,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::LogSumExp),
    },
    OpDef {
        name: "ReduceMax",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::Observed,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::Max),
    },
    OpDef {
        name: "ReduceMean",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::Observed,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::Mean),
    },
    OpDef {
        name: "ReduceMin",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::Observed,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::Min),
    },
    OpDef {
        name: "ReduceProd",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::NotQuantized,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::Prod),
    },
    OpDef {
        name: "ReduceSum",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::NotQuantized,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::Sum),
    },
    OpDef {
        name: "ReduceSumSquare",
        since: 1,
        float_kernel: "f64 accumulation (integers exact where the result is one)",
        quant: QuantRule::NotQuantized,
        notes: "axes: attribute before opset 13 (ReduceSum) or 18, then input",
        build: |c| reduce(c, ReduceKind::SumSquare),
    },
    OpDef { name: "Relu", since: 6, float_kernel: "elementwise", quant: QuantRule::Observed, notes: "", build: |_| unary(UnaryKind::Relu) },
    OpDef {
        name: "Reshape",
        since: 5,
        float_kernel: "view",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Reshape { allow_zero: c.attrs.int_or("allowzero", 0)? != 0 }),
    },
    OpDef {
        name: "Resize",
        since: 11,
        float_kernel: "separable interpolation",
        quant: QuantRule::Observed,
        notes: "nearest, linear, cubic; every coordinate mode; antialias",
        build: resize,
    },
    OpDef {
        name: "ReverseSequence",
        since: 10,
        float_kernel: "index map",
        quant: QuantRule::SharesInput,
        notes: "",
        build: build_reverse_sequence,
    },
    OpDef {
        name: "RoiAlign",
        since: 10,
        float_kernel: "bilinear samples per bin (f64)",
        quant: QuantRule::NotQuantized,
        notes: "avg and max modes; half_pixel and output_half_pixel",
        build: build_roi_align,
    },
    OpDef {
        name: "RotaryEmbedding",
        since: 23,
        float_kernel: "f64",
        quant: QuantRule::NotQuantized,
        notes: "interleaved or half-split pairs; partial rotary dims",
        build: build_rotary_embedding,
    },
    OpDef {
        name: "Round",
        since: 11,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Round),
    },
    OpDef {
        name: "Scan",
        since: 8,
        float_kernel: "runs the body subgraph per slice",
        quant: QuantRule::NotQuantized,
        notes: "axes and directions per input and output; opset 8's batched form with full-length sequence_lens",
        build: build_scan,
    },
    OpDef {
        name: "Scatter",
        since: 9,
        float_kernel: "copy, then writes in index order",
        quant: QuantRule::NotQuantized,
        notes: "deprecated form of ScatterElements",
        build: |c| ok(layout::ScatterElements { name: "Scatter", axis: c.attrs.int_or("axis", 0)?, reduction: layout::Reduction::None }),
    },
    OpDef {
        name: "ScatterElements",
        since: 11,
        float_kernel: "copy, then writes in index order",
        quant: QuantRule::NotQuantized,
        notes: "reductions none, add, mul, max, min",
        build: |c| ok(layout::ScatterElements { name: "ScatterElements", axis: c.attrs.int_or("axis", 0)?, reduction: reduction_mode(c)? }),
    },
    OpDef {
        name: "ScatterND",
        since: 11,
        float_kernel: "copy, then writes in index order",
        quant: QuantRule::NotQuantized,
        notes: "reductions none, add, mul, max, min",
        build: |c| ok(layout::ScatterNd { reduction: reduction_mode(c)? }),
    },
    OpDef {
        name: "Selu",
        since: 6,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| unary(UnaryKind::Selu { alpha: alpha(c, 1.673_263_2)?, gamma: c.attrs.float_or("gamma", 1.050_701)? }),
    },
    OpDef {
        name: "Shape",
        since: 1,
        float_kernel: "folded at load",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |c| ok(shape::Shape { start: c.attrs.int_or("start", 0)?, end: c.attrs.ints("end")?.map(|v| v[0]) }),
    },
    OpDef {
        name: "Shrink",
        since: 9,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "integers too",
        build: |c| unary(UnaryKind::Shrink { bias: c.attrs.float_or("bias", 0.0)?, lambd: c.attrs.float_or("lambd", 0.5)? }),
    },
    OpDef {
        name: "Sigmoid",
        since: 6,
        float_kernel: "vectorised",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Sigmoid),
    },
    OpDef {
        name: "Sign",
        since: 9,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "integers too",
        build: |_| unary(UnaryKind::Sign),
    },
    OpDef {
        name: "Sin",
        since: 7,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Sin),
    },
    OpDef {
        name: "Sinh",
        since: 9,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Sinh),
    },
    OpDef {
        name: "Size",
        since: 1,
        float_kernel: "folded at load",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(layout::Size),
    },
    OpDef { name: "Slice", since: 1, float_kernel: "strided copy", quant: QuantRule::SharesInput, notes: "", build: build_slice },
    OpDef {
        name: "Softmax",
        since: 1,
        float_kernel: "vectorised row kernel",
        quant: QuantRule::FixedOutput,
        notes: "",
        build: |c| softmax_like(c, nn::SoftmaxKind::Softmax),
    },
    OpDef {
        name: "SoftmaxCrossEntropyLoss",
        since: 12,
        float_kernel: "f64",
        quant: QuantRule::NotQuantized,
        notes: "with the log-probability output",
        build: |c| loss(c, true),
    },
    OpDef {
        name: "Softplus",
        since: 1,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Softplus),
    },
    OpDef {
        name: "Softsign",
        since: 1,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Softsign),
    },
    OpDef {
        name: "SpaceToDepth",
        since: 1,
        float_kernel: "index map",
        quant: QuantRule::SharesInput,
        notes: "",
        build: build_space_to_depth,
    },
    OpDef {
        name: "Split",
        since: 2,
        float_kernel: "strided copy",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Split { axis: c.attrs.int_or("axis", 0)?, split: attr_before(c, "split", 13)?, outputs: c.num_outputs }),
    },
    OpDef { name: "Sqrt", since: 6, float_kernel: "elementwise", quant: QuantRule::Observed, notes: "", build: |_| unary(UnaryKind::Sqrt) },
    OpDef {
        name: "Squeeze",
        since: 1,
        float_kernel: "view",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Squeeze { axes: attr_before(c, "axes", 13)? }),
    },
    OpDef {
        name: "Sub",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| binary(BinaryKind::Sub),
    },
    OpDef {
        name: "Sum",
        since: 6,
        float_kernel: "broadcast elementwise, any number of inputs",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| variadic("Sum", BinaryKind::Add, false),
    },
    OpDef {
        name: "SwiGLU",
        since: 28,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| ok(elementwise::SwiGlu { alpha: alpha(c, 1.0)? }),
    },
    OpDef {
        name: "Swish",
        since: 24,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| unary(UnaryKind::Swish { alpha: alpha(c, 1.0)? }),
    },
    OpDef {
        name: "Tan",
        since: 7,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |_| unary(UnaryKind::Tan),
    },
    OpDef { name: "Tanh", since: 6, float_kernel: "vectorised", quant: QuantRule::Observed, notes: "", build: |_| unary(UnaryKind::Tanh) },
    OpDef {
        name: "TensorScatter",
        since: 24,
        float_kernel: "copy, then writes",
        quant: QuantRule::NotQuantized,
        notes: "linear and circular modes",
        build: build_tensor_scatter,
    },
    OpDef {
        name: "TfIdfVectorizer",
        since: 9,
        float_kernel: "hashed n-gram walk",
        quant: QuantRule::NotQuantized,
        notes: "integer token ids (pool_int64s); no string pools",
        build: build_tf_idf_vectorizer,
    },
    OpDef {
        name: "ThresholdedRelu",
        since: 10,
        float_kernel: "elementwise (f64)",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| unary(UnaryKind::ThresholdedRelu { alpha: alpha(c, 1.0)? }),
    },
    OpDef { name: "Tile", since: 6, float_kernel: "index map", quant: QuantRule::SharesInput, notes: "", build: |_| ok(layout::Tile) },
    OpDef {
        name: "TopK",
        since: 1,
        float_kernel: "sort per row",
        quant: QuantRule::NotQuantized,
        notes: "k: attribute before opset 10; results always sorted",
        build: build_top_k,
    },
    OpDef {
        name: "Transpose",
        since: 1,
        float_kernel: "strided copy",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Transpose { perm: c.attrs.ints("perm")? }),
    },
    OpDef {
        name: "Trilu",
        since: 14,
        float_kernel: "index map",
        quant: QuantRule::Observed,
        notes: "",
        build: |c| ok(layout::Trilu { upper: c.attrs.int_or("upper", 1)? != 0 }),
    },
    OpDef {
        name: "Unique",
        since: 11,
        float_kernel: "scan",
        quant: QuantRule::NotQuantized,
        notes: "output size depends on values: known when the model is planned",
        build: |c| ok(layout::Unique { axis: c.attrs.int("axis")?, sorted: c.attrs.int_or("sorted", 1)? != 0, outputs: c.num_outputs }),
    },
    OpDef {
        name: "Unsqueeze",
        since: 1,
        float_kernel: "view",
        quant: QuantRule::SharesInput,
        notes: "",
        build: |c| ok(shape::Unsqueeze { axes: attr_before(c, "axes", 13)? }),
    },
    OpDef {
        name: "Upsample",
        since: 7,
        float_kernel: "index map",
        quant: QuantRule::SharesInput,
        notes: "nearest with integer scales (opsets 7–9; later opsets use Resize)",
        build: build_upsample,
    },
    OpDef {
        name: "Where",
        since: 9,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| ok(Where),
    },
    OpDef {
        name: "Xor",
        since: 7,
        float_kernel: "broadcast elementwise",
        quant: QuantRule::NotQuantized,
        notes: "",
        build: |_| binary(BinaryKind::Xor),
    },
];

// Builders of the ops whose attributes take more than an expression, in registry order.

fn build_attention(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(attention::Attention {
        scale: a.float("scale")?.map(f64::from),
        is_causal: a.int_or("is_causal", 0)? != 0,
        q_num_heads: size_attr(c, "q_num_heads")?,
        kv_num_heads: size_attr(c, "kv_num_heads")?,
        softcap: a.float_or("softcap", 0.0)? as f64,
        qk_matmul_output_mode: a.int_or("qk_matmul_output_mode", 0)?,
        left_window: a.int_or("left_window_size", -1)?,
        right_window: a.int_or("right_window_size", -1)?,
        outputs: c.num_outputs,
    })
}

fn build_batch_normalization(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    if c.attrs.int_or("training_mode", 0)? != 0 {
        ok(norm::BatchNormTraining {
            epsilon: c.attrs.float_or("epsilon", 1e-5)? as f64,
            momentum: c.attrs.float_or("momentum", 0.9)? as f64,
            outputs: c.num_outputs,
        })
    } else if c.num_outputs > 1 {
        Err("BatchNormalization with running-statistics outputs needs training_mode = 1".into())
    } else {
        normalization(c, norm::NormKind::Batch, 1e-5)
    }
}

fn build_causal_conv_with_state(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(recurrent_state::CausalConvWithState {
        silu: match c.attrs.string_or("activation", "none")?.as_str() {
            "none" => false,
            "silu" | "swish" => true,
            a => return Err(format!("unknown activation '{a}'")),
        },
    })
}

fn build_clip(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(elementwise::Clip {
        min: if c.opset < 11 { Some(c.attrs.float_or("min", f32::MIN)?) } else { None },
        max: if c.opset < 11 { Some(c.attrs.float_or("max", f32::MAX)?) } else { None },
    })
}

fn build_col2im(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(sampling::Col2Im { dilations: c.attrs.ints("dilations")?, pads: c.attrs.ints("pads")?, strides: c.attrs.ints("strides")? })
}

fn build_conv(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(nn::Conv {
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        auto_pad: a.string_or("auto_pad", "NOTSET")?,
        group: a.int_or("group", 1)?.max(1) as usize,
    })
}

fn build_conv_integer(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(quant::IntegerConv {
        qlinear: false,
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        auto_pad: a.string_or("auto_pad", "NOTSET")?,
        group: a.int_or("group", 1)?.max(1) as usize,
    })
}

fn build_conv_transpose(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(nn::ConvTranspose {
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        output_padding: a.ints("output_padding")?,
        output_shape: a.ints("output_shape")?,
        auto_pad: a.string_or("auto_pad", "NOTSET")?,
        group: a.int_or("group", 1)?.max(1) as usize,
    })
}

fn build_cum_prod(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(math::Cumulative { product: true, exclusive: c.attrs.int_or("exclusive", 0)? != 0, reverse: c.attrs.int_or("reverse", 0)? != 0 })
}

fn build_cum_sum(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(math::Cumulative { product: false, exclusive: c.attrs.int_or("exclusive", 0)? != 0, reverse: c.attrs.int_or("reverse", 0)? != 0 })
}

fn build_dft(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(math::Dft {
        inverse: c.attrs.int_or("inverse", 0)? != 0,
        onesided: c.attrs.int_or("onesided", 0)? != 0,
        axis_attr: if c.opset < 20 { Some(c.attrs.int_or("axis", 1)?) } else { None },
    })
}

fn build_deform_conv(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(sampling::DeformConv {
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        group: a.int_or("group", 1)?.max(1) as usize,
        offset_group: a.int_or("offset_group", 1)?.max(1) as usize,
    })
}

fn build_depth_to_space(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(layout::DepthSpace {
        to_space: true,
        blocksize: c.attrs.int_or("blocksize", 0)?.max(0) as usize,
        crd: c.attrs.string_or("mode", "DCR")? == "CRD",
    })
}

fn build_gemm(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(nn::Gemm {
        alpha: a.float_or("alpha", 1.0)?,
        beta: a.float_or("beta", 1.0)?,
        trans_a: a.int_or("transA", 0)? != 0,
        trans_b: a.int_or("transB", 0)? != 0,
    })
}

fn build_grid_sample(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(sampling::GridSample {
        mode: match c.attrs.string_or("mode", if c.opset < 20 { "bilinear" } else { "linear" })?.as_str() {
            "nearest" => sampling::SampleMode::Nearest,
            "linear" | "bilinear" => sampling::SampleMode::Linear,
            "cubic" | "bicubic" => sampling::SampleMode::Cubic,
            m => return Err(format!("unknown GridSample mode '{m}'")),
        },
        padding: match c.attrs.string_or("padding_mode", "zeros")?.as_str() {
            "zeros" => sampling::Padding::Zeros,
            "border" => sampling::Padding::Border,
            "reflection" => sampling::Padding::Reflection,
            m => return Err(format!("unknown padding_mode '{m}'")),
        },
        align_corners: c.attrs.int_or("align_corners", 0)? != 0,
    })
}

fn build_group_normalization(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    normalization(
        c,
        norm::NormKind::Group { groups: c.attrs.int_or("num_groups", 1)?.max(0) as usize, per_group_affine: c.opset < 21 },
        1e-5,
    )
}

fn build_is_inf(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    unary(UnaryKind::IsInf { positive: c.attrs.int_or("detect_positive", 1)? != 0, negative: c.attrs.int_or("detect_negative", 1)? != 0 })
}

fn build_lrn(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(norm::Lrn {
        alpha: c.attrs.float_or("alpha", 1e-4)? as f64,
        beta: c.attrs.float_or("beta", 0.75)? as f64,
        bias: c.attrs.float_or("bias", 1.0)? as f64,
        size: c.attrs.int_or("size", 1)?.max(1) as usize,
    })
}

fn build_layer_normalization(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(nn::LayerNorm { axis: c.attrs.int_or("axis", -1)?, epsilon: c.attrs.float_or("epsilon", 1e-5)?, stats: c.num_outputs > 1 })
}

fn build_linear_attention(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(recurrent_state::LinearAttention {
        rule: match a.string_or("update_rule", "gated_delta")?.as_str() {
            "linear" => recurrent_state::UpdateRule::Linear,
            "gated" => recurrent_state::UpdateRule::Gated,
            "delta" => recurrent_state::UpdateRule::Delta,
            "gated_delta" => recurrent_state::UpdateRule::GatedDelta,
            r => return Err(format!("unknown update_rule '{r}'")),
        },
        q_heads: a.int_or("q_num_heads", 0)?.max(0) as usize,
        kv_heads: a.int_or("kv_num_heads", 0)?.max(0) as usize,
        scale: a.float_or("scale", 0.0)? as f64,
    })
}

fn build_max_unpool(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(layout::MaxUnpool {
        kernel: c.attrs.ints("kernel_shape")?.ok_or("kernel_shape is required")?,
        pads: c.attrs.ints("pads")?,
        strides: c.attrs.ints("strides")?,
    })
}

fn build_pad(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(layout::Pad {
        mode: match c.attrs.string_or("mode", "constant")?.as_str() {
            "constant" => layout::PadMode::Constant,
            "reflect" => layout::PadMode::Reflect,
            "edge" => layout::PadMode::Edge,
            "wrap" => layout::PadMode::Wrap,
            m => return Err(format!("unknown Pad mode '{m}'")),
        },
        pads_attr: attr_before(c, "pads", 11)?,
        value_attr: c.attrs.float_or("value", 0.0)?,
    })
}

fn build_qlinear_conv(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    ok(quant::IntegerConv {
        qlinear: true,
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        auto_pad: a.string_or("auto_pad", "NOTSET")?,
        group: a.int_or("group", 1)?.max(1) as usize,
    })
}

fn build_quantize_linear(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let output_dtype = if c.attrs.int_or("output_dtype", 0)? == 0 { None } else { dtype_attr(c, "output_dtype")? };
    if c.attrs.int_or("block_size", 0)? != 0 {
        return Err("blocked quantization (block_size) is not supported".into());
    }
    ok(quant::QuantizeLinear { axis: c.attrs.int_or("axis", 1)?, output_dtype })
}

fn build_reverse_sequence(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(layout::ReverseSequence {
        batch_axis: c.attrs.int_or("batch_axis", 1)?.clamp(0, 1) as usize,
        time_axis: c.attrs.int_or("time_axis", 0)?.clamp(0, 1) as usize,
    })
}

fn build_roi_align(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    let size = |n: &str, d: i64| -> OpResult<usize> { Ok(a.int_or(n, d)?.clamp(0, 1 << 16) as usize) };
    ok(sampling::RoiAlign {
        max: a.string_or("mode", "avg")? == "max",
        half_pixel: a.string_or("coordinate_transformation_mode", if c.opset < 16 { "output_half_pixel" } else { "half_pixel" })?
            == "half_pixel",
        output_height: size("output_height", 1)?,
        output_width: size("output_width", 1)?,
        sampling_ratio: size("sampling_ratio", 0)?,
        spatial_scale: a.float_or("spatial_scale", 1.0)? as f64,
    })
}

fn build_rotary_embedding(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(attention::RotaryEmbedding {
        interleaved: c.attrs.int_or("interleaved", 0)? != 0,
        num_heads: size_attr(c, "num_heads")?,
        rotary_dim: size_attr(c, "rotary_embedding_dim")?,
    })
}

fn build_scan(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    let n = a.int_or("num_scan_inputs", 0)?.max(0) as usize;
    let flags = |k: &str| -> OpResult<Vec<bool>> { Ok(a.ints(k)?.unwrap_or_default().iter().map(|&v| v != 0).collect()) };
    ok(control_flow::Scan {
        body: a.graph("body")?,
        num_scan_inputs: n,
        input_axes: a.ints("scan_input_axes")?.unwrap_or_default(),
        output_axes: a.ints("scan_output_axes")?.unwrap_or_default(),
        input_reverse: flags(if c.opset < 9 { "directions" } else { "scan_input_directions" })?,
        output_reverse: flags("scan_output_directions")?,
        batched: c.opset < 9,
        declared_inputs: c.num_inputs,
    })
}

fn build_slice(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let attrs = if c.opset < 10 {
        let need = |n: &str| c.attrs.ints(n)?.ok_or_else(|| format!("Slice before opset 10 needs the '{n}' attribute"));
        Some((need("starts")?, need("ends")?, c.attrs.ints("axes")?))
    } else {
        None
    };
    ok(shape::Slice { attrs })
}

fn build_space_to_depth(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(layout::DepthSpace {
        to_space: false,
        blocksize: c.attrs.int_or("blocksize", 0)?.max(0) as usize,
        crd: c.attrs.string_or("mode", "DCR")? == "CRD",
    })
}

fn build_tensor_scatter(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(recurrent_state::TensorScatter { axis: c.attrs.int_or("axis", -2)?, circular: c.attrs.string_or("mode", "linear")? == "circular" })
}

fn build_tf_idf_vectorizer(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    let a = c.attrs;
    if a.get("pool_strings").is_some() {
        return Err("TfIdfVectorizer with a string pool is not supported (integer token ids only)".into());
    }
    let weighting = match a.string_or("mode", "TF")?.as_str() {
        "TF" => text::Weighting::Tf,
        "IDF" => text::Weighting::Idf,
        "TFIDF" => text::Weighting::TfIdf,
        m => return Err(format!("unknown mode '{m}'")),
    };
    let need = |n: &str| -> OpResult<Vec<i64>> { a.ints(n)?.ok_or_else(|| format!("TfIdfVectorizer needs '{n}'")) };
    let size = |n: &str| -> OpResult<usize> { Ok(a.int_or(n, 0)?.max(0) as usize) };
    ok(text::TfIdfVectorizer::new(
        weighting,
        size("min_gram_length")?,
        size("max_gram_length")?,
        size("max_skip_count")?,
        &need("ngram_counts")?,
        &need("ngram_indexes")?,
        &need("pool_int64s")?,
        a.floats("weights")?.unwrap_or_default(),
    )?)
}

fn build_top_k(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    ok(math::TopK {
        axis: c.attrs.int_or("axis", -1)?,
        largest: c.attrs.int_or("largest", 1)? != 0,
        k_attr: if c.opset < 10 { Some(c.attrs.int_or("k", 0)?) } else { None },
    })
}

fn build_upsample(c: &BuildCtx) -> OpResult<Arc<dyn Op>> {
    if c.attrs.string_or("mode", "nearest")? != "nearest" {
        return Err("Upsample supports mode nearest; later opsets use Resize".into());
    }
    ok(layout::Upsample { scales_attr: if c.opset < 9 { c.attrs.floats("scales")? } else { None } })
}

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
