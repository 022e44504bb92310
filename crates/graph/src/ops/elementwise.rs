//! Elementwise ops: broadcasting binary arithmetic and comparison, Where, unary math, Cast.

use octet_kernels::f32 as k;

use super::broadcast::{binary, binary_on, broadcast_shapes, ternary};
use crate::error::OpResult;
use crate::op::{required, EvalCtx, Fact, Op};
use crate::tensor::{DType, Data, Element, Tensor};
use crate::{op_any, with_data};

/// The broadcasting binary ops (the variadic ones fold over their inputs with these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `fmod = 0`: integer remainder with the divisor's sign (Python's `%`); `fmod = 1`: C's
    /// `fmod`, the dividend's sign.
    Mod {
        fmod: bool,
    },
    Max,
    Min,
    /// `x` where `x ≥ 0`, else `slope · x`.
    PRelu,
    Equal,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    And,
    Or,
    Xor,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    BitShift {
        left: bool,
    },
}

impl BinaryKind {
    pub fn onnx_name(self) -> &'static str {
        match self {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
            BinaryKind::Pow => "Pow",
            BinaryKind::Mod { .. } => "Mod",
            BinaryKind::Max => "Max",
            BinaryKind::Min => "Min",
            BinaryKind::PRelu => "PRelu",
            BinaryKind::Equal => "Equal",
            BinaryKind::Greater => "Greater",
            BinaryKind::GreaterOrEqual => "GreaterOrEqual",
            BinaryKind::Less => "Less",
            BinaryKind::LessOrEqual => "LessOrEqual",
            BinaryKind::And => "And",
            BinaryKind::Or => "Or",
            BinaryKind::Xor => "Xor",
            BinaryKind::BitwiseAnd => "BitwiseAnd",
            BinaryKind::BitwiseOr => "BitwiseOr",
            BinaryKind::BitwiseXor => "BitwiseXor",
            BinaryKind::BitShift { .. } => "BitShift",
        }
    }

    /// Comparisons: any numeric operands, a bool result.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryKind::Equal | BinaryKind::Greater | BinaryKind::GreaterOrEqual | BinaryKind::Less | BinaryKind::LessOrEqual)
    }

    /// Ops whose result is a number of the operands' type, defined on floats.
    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryKind::Add
                | BinaryKind::Sub
                | BinaryKind::Mul
                | BinaryKind::Div
                | BinaryKind::Pow
                | BinaryKind::Mod { .. }
                | BinaryKind::Max
                | BinaryKind::Min
                | BinaryKind::PRelu
        )
    }

    fn float(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
            BinaryKind::Div => a / b,
            BinaryKind::Pow => a.powf(b),
            BinaryKind::Mod { fmod: true } => a % b,
            BinaryKind::Mod { fmod: false } => {
                let r = a % b;
                if r != 0.0 && (r < 0.0) != (b < 0.0) {
                    r + b
                } else {
                    r
                }
            }
            BinaryKind::Max => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            }
            BinaryKind::Min => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.min(b)
                }
            }
            BinaryKind::PRelu => {
                if a < 0.0 {
                    a * b
                } else {
                    a
                }
            }
            _ => unreachable!("{self:?} is not arithmetic"),
        }
    }

    /// Integer semantics on values widened to i64; the caller truncates back to the operand
    /// type, which makes Add, Sub and Mul wrap as the narrow type would.
    fn integer(self, a: i64, b: i64, unsigned: bool) -> OpResult<i64> {
        let nonzero = |b: i64| {
            if b == 0 {
                Err(format!("integer {} by zero", if matches!(self, BinaryKind::Div) { "division" } else { "remainder" }))
            } else {
                Ok(b)
            }
        };
        Ok(match self {
            BinaryKind::Add => a.wrapping_add(b),
            BinaryKind::Sub => a.wrapping_sub(b),
            BinaryKind::Mul => a.wrapping_mul(b),
            BinaryKind::Div if unsigned => ((a as u64) / (nonzero(b)? as u64)) as i64,
            BinaryKind::Div => a.wrapping_div(nonzero(b)?),
            BinaryKind::Pow => {
                if b < 0 {
                    (a as f64).powf(b as f64) as i64
                } else {
                    a.wrapping_pow(b.min(u32::MAX as i64) as u32)
                }
            }
            BinaryKind::Mod { .. } if unsigned => ((a as u64) % (nonzero(b)? as u64)) as i64,
            BinaryKind::Mod { fmod: true } => a.wrapping_rem(nonzero(b)?),
            BinaryKind::Mod { fmod: false } => {
                let r = a.wrapping_rem(nonzero(b)?);
                if r != 0 && ((r < 0) != (b < 0)) {
                    r + b
                } else {
                    r
                }
            }
            BinaryKind::Max if unsigned => (a as u64).max(b as u64) as i64,
            BinaryKind::Min if unsigned => (a as u64).min(b as u64) as i64,
            BinaryKind::Max => a.max(b),
            BinaryKind::Min => a.min(b),
            BinaryKind::PRelu => {
                if a < 0 {
                    a.wrapping_mul(b)
                } else {
                    a
                }
            }
            BinaryKind::And | BinaryKind::BitwiseAnd => a & b,
            BinaryKind::Or | BinaryKind::BitwiseOr => a | b,
            BinaryKind::Xor | BinaryKind::BitwiseXor => a ^ b,
            BinaryKind::BitShift { left } => {
                let out_of_range = !(0..64).contains(&b);
                match (left, unsigned) {
                    (true, _) if out_of_range => 0,
                    (true, _) => ((a as u64) << b) as i64,
                    (false, true) if out_of_range => 0,
                    (false, true) => ((a as u64) >> b) as i64,
                    (false, false) if out_of_range => a >> 63,
                    (false, false) => a >> b,
                }
            }
            _ => unreachable!("{self:?} returns bool"),
        })
    }

    fn compare(self, o: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::*;
        match self {
            BinaryKind::Equal => o == Some(Equal),
            BinaryKind::Greater => o == Some(Greater),
            BinaryKind::GreaterOrEqual => matches!(o, Some(Greater | Equal)),
            BinaryKind::Less => o == Some(Less),
            BinaryKind::LessOrEqual => matches!(o, Some(Less | Equal)),
            _ => unreachable!("{self:?} is not a comparison"),
        }
    }
}

/// `out = a ∘ b` with numpy broadcasting.
#[derive(Debug)]
pub struct Binary(pub BinaryKind);

impl Binary {
    fn out_dtype(&self, a: DType, b: DType) -> OpResult<DType> {
        let k = self.0;
        if a != b && !matches!(k, BinaryKind::Pow) {
            return Err(format!("operand types differ: {a} and {b}"));
        }
        let ok = match k {
            BinaryKind::And | BinaryKind::Or | BinaryKind::Xor => a == DType::Bool,
            BinaryKind::BitwiseAnd | BinaryKind::BitwiseOr | BinaryKind::BitwiseXor | BinaryKind::BitShift { .. } => {
                !a.is_float() && (a != DType::Bool || !matches!(k, BinaryKind::BitShift { .. }))
            }
            BinaryKind::Equal => true,
            _ => a != DType::Bool,
        };
        if !ok {
            return Err(format!("{} is not defined for {a}", k.onnx_name()));
        }
        Ok(if k.is_comparison() { DType::Bool } else { a })
    }
}

/// Add, Sub, Mul or Div on f32 or f64 operands without widening (IEEE arithmetic), over
/// `threads` threads when large ([`binary_on`]). Integers take the exact i64 path of
/// [`BinaryKind::integer`], which wraps as the narrow type would.
fn arith<T>(kind: BinaryKind, a: (&[T], &[usize]), b: (&[T], &[usize]), out: &[usize], threads: usize) -> Vec<T>
where
    T: Copy
        + Default
        + Send
        + Sync
        + std::ops::Add<Output = T>
        + std::ops::Sub<Output = T>
        + std::ops::Mul<Output = T>
        + std::ops::Div<Output = T>,
{
    match kind {
        BinaryKind::Add => binary_on(a, b, out, threads, |x, y| x + y),
        BinaryKind::Sub => binary_on(a, b, out, threads, |x, y| x - y),
        BinaryKind::Mul => binary_on(a, b, out, threads, |x, y| x * y),
        BinaryKind::Div => binary_on(a, b, out, threads, |x, y| x / y),
        _ => unreachable!("only the four arithmetic ops have a native path"),
    }
}

/// `f` applied with broadcasting to both operands read as f64.
fn float_path(a: &Tensor, b: &Tensor, shape: &[usize], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    binary(&a.to_f64_vec(), a.shape(), &b.to_f64_vec(), b.shape(), shape, f)
}

impl Op for Binary {
    fn name(&self) -> &'static str {
        self.0.onnx_name()
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let shape = broadcast_shapes(&[&a.shape, &b.shape])?;
        Ok(vec![Fact::new(self.out_dtype(a.dtype, b.dtype)?, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let out_dtype = self.out_dtype(a.dtype(), b.dtype())?;
        let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
        let (ash, bsh) = (a.shape(), b.shape());
        let kind = self.0;
        let native = matches!(kind, BinaryKind::Add | BinaryKind::Sub | BinaryKind::Mul | BinaryKind::Div);
        let data = match (kind, a.data(), b.data()) {
            (BinaryKind::Pow, Data::F32(x), Data::F32(y)) if y.len() == 1 && y[0] == 2.0 => Data::F32(x.iter().map(|v| v * v).collect()),
            (BinaryKind::Pow, Data::F32(x), _) => {
                let y: Vec<f32> = b.to_f64_vec().into_iter().map(|v| v as f32).collect();
                Data::F32(binary(x, ash, &y, bsh, &shape, f32::powf))
            }
            (_, Data::F32(x), Data::F32(y)) if native => Data::F32(arith(kind, (x, ash), (y, bsh), &shape, ctx.threads)),
            (_, Data::F64(x), Data::F64(y)) if native => Data::F64(arith(kind, (x, ash), (y, bsh), &shape, ctx.threads)),
            _ if kind.is_comparison() => {
                let cmp = |x: &Tensor| x.dtype().is_float() || x.dtype() == DType::U64;
                let bools = if cmp(a) || cmp(b) {
                    binary(&a.to_f64_vec(), ash, &b.to_f64_vec(), bsh, &shape, |p: f64, q: f64| kind.compare(p.partial_cmp(&q)))
                } else {
                    let (x, y) = (a.to_i64_vec().expect("integer"), b.to_i64_vec().expect("integer"));
                    binary(&x, ash, &y, bsh, &shape, |p: i64, q: i64| kind.compare(Some(p.cmp(&q))))
                };
                Data::Bool(bools)
            }
            _ if a.dtype().is_float() => {
                let v = float_path(a, b, &shape, |p, q| kind.float(p, q));
                from_f64(out_dtype, v)
            }
            _ if kind == BinaryKind::Pow => from_f64(out_dtype, float_path(a, b, &shape, f64::powf)),
            _ => {
                let unsigned = a.dtype().is_unsigned_integer();
                let (x, y) = (a.to_i64_vec().expect("integer"), b.to_i64_vec().expect("integer"));
                let err = std::cell::Cell::new(None);
                let v = binary(&x, ash, &y, bsh, &shape, |p, q| {
                    kind.integer(p, q, unsigned).unwrap_or_else(|e| {
                        err.set(Some(e));
                        0
                    })
                });
                if let Some(e) = err.take() {
                    return Err(e);
                }
                Data::from_i64s(out_dtype, &v)
            }
        };
        Ok(vec![Tensor::from_parts(shape, data)])
    }

    op_any!();
}

/// Sum, Mean, Max and Min of any number of inputs, with broadcasting.
#[derive(Debug)]
pub struct Variadic {
    pub name: &'static str,
    pub kind: BinaryKind,
    /// Divides by the number of inputs at the end (Mean).
    pub mean: bool,
}

impl Variadic {
    fn present<'a, T>(inputs: &[Option<&'a T>]) -> OpResult<Vec<&'a T>> {
        let v: Vec<&T> = inputs.iter().flatten().copied().collect();
        if v.is_empty() {
            return Err("needs at least one input".into());
        }
        Ok(v)
    }
}

impl Op for Variadic {
    fn name(&self) -> &'static str {
        self.name
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let v = Self::present(inputs)?;
        let shapes: Vec<&[usize]> = v.iter().map(|f| f.shape.as_slice()).collect();
        if let Some(f) = v.iter().find(|f| f.dtype != v[0].dtype) {
            return Err(format!("operand types differ: {} and {}", v[0].dtype, f.dtype));
        }
        Ok(vec![Fact::new(v[0].dtype, broadcast_shapes(&shapes)?)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let v = Self::present(inputs)?;
        if v.len() == 1 {
            return Ok(vec![v[0].clone()]);
        }
        let op = Binary(self.kind);
        let mut acc = v[0].clone();
        for t in &v[1..] {
            acc = op.eval(&[Some(&acc), Some(t)], ctx)?.remove(0);
        }
        if self.mean {
            let n = Tensor::from_parts(vec![], from_f64(acc.dtype(), vec![v.len() as f64]));
            acc = Binary(BinaryKind::Div).eval(&[Some(&acc), Some(&n)], ctx)?.remove(0);
        }
        Ok(vec![acc])
    }

    op_any!();
}

/// A buffer of `dtype` from f64 values (saturating casts for integers).
pub fn from_f64(dtype: DType, v: Vec<f64>) -> Data {
    match dtype {
        DType::F64 => Data::F64(v),
        _ => Data::from_fn(dtype, v.len(), |i| v[i]),
    }
}

/// `out = cond ? x : y` with broadcasting.
#[derive(Debug)]
pub struct Where;

impl Op for Where {
    fn name(&self) -> &'static str {
        "Where"
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (c, x, y) = (required(inputs, 0, "condition")?, required(inputs, 1, "X")?, required(inputs, 2, "Y")?);
        if x.dtype != y.dtype {
            return Err(format!("X is {} but Y is {}", x.dtype, y.dtype));
        }
        if c.dtype != DType::Bool {
            return Err(format!("condition must be bool, got {}", c.dtype));
        }
        Ok(vec![Fact::new(x.dtype, broadcast_shapes(&[&c.shape, &x.shape, &y.shape])?)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (c, x, y) = (required(inputs, 0, "condition")?, required(inputs, 1, "X")?, required(inputs, 2, "Y")?);
        let shape = broadcast_shapes(&[c.shape(), x.shape(), y.shape()])?;
        let Data::Bool(cond) = c.data() else { return Err("condition must be bool".into()) };
        let data = match (x.data(), y.data()) {
            (Data::F32(a), Data::F32(b)) => Data::F32(select(cond, c, a, x, b, y, &shape)),
            (Data::F64(a), Data::F64(b)) => Data::F64(select(cond, c, a, x, b, y, &shape)),
            (Data::I64(a), Data::I64(b)) => Data::I64(select(cond, c, a, x, b, y, &shape)),
            (Data::I32(a), Data::I32(b)) => Data::I32(select(cond, c, a, x, b, y, &shape)),
            (Data::I8(a), Data::I8(b)) => Data::I8(select(cond, c, a, x, b, y, &shape)),
            (Data::U8(a), Data::U8(b)) => Data::U8(select(cond, c, a, x, b, y, &shape)),
            (Data::Bool(a), Data::Bool(b)) => Data::Bool(select(cond, c, a, x, b, y, &shape)),
            _ => return Err(format!("X is {} but Y is {}", x.dtype(), y.dtype())),
        };
        Ok(vec![Tensor::from_parts(shape, data)])
    }

    op_any!();
}

fn select<T: Copy>(cond: &[bool], c: &Tensor, a: &[T], x: &Tensor, b: &[T], y: &Tensor, shape: &[usize]) -> Vec<T> {
    ternary((cond, c.shape()), (a, x.shape()), (b, y.shape()), shape, |p, q, r| if p { q } else { r })
}

/// The elementwise unary ops. Parameters are the ops' float attributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryKind {
    Sqrt,
    Erf,
    Tanh,
    Sigmoid,
    Relu,
    GeluErf,
    GeluTanh,
    Abs,
    Neg,
    Sign,
    Exp,
    Log,
    Ceil,
    Floor,
    /// Round half to even.
    Round,
    Reciprocal,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Softplus,
    Softsign,
    Mish,
    HardSwish,
    Elu {
        alpha: f32,
    },
    Celu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    LeakyRelu {
        alpha: f32,
    },
    ThresholdedRelu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    Shrink {
        bias: f32,
        lambd: f32,
    },
    Swish {
        alpha: f32,
    },
    /// Bool result.
    IsNaN,
    /// Bool result; which infinities count.
    IsInf {
        positive: bool,
        negative: bool,
    },
    /// Bool in, bool out.
    Not,
    /// Integers in, same type out.
    BitwiseNot,
}

impl UnaryKind {
    /// The vectorised in-place float32 kernel of this op, for the ops that have one.
    pub fn f32_kernel(self) -> Option<fn(&mut [f32])> {
        match self {
            UnaryKind::Erf => Some(k::erf),
            UnaryKind::Tanh => Some(k::tanh),
            UnaryKind::Sigmoid => Some(k::sigmoid),
            UnaryKind::GeluErf => Some(k::gelu_erf),
            UnaryKind::GeluTanh => Some(k::gelu_tanh),
            _ => None,
        }
    }

    pub fn onnx_name(self) -> &'static str {
        use UnaryKind::*;
        match self {
            Sqrt => "Sqrt",
            Erf => "Erf",
            Tanh => "Tanh",
            Sigmoid => "Sigmoid",
            Relu => "Relu",
            GeluErf | GeluTanh => "Gelu",
            Abs => "Abs",
            Neg => "Neg",
            Sign => "Sign",
            Exp => "Exp",
            Log => "Log",
            Ceil => "Ceil",
            Floor => "Floor",
            Round => "Round",
            Reciprocal => "Reciprocal",
            Sin => "Sin",
            Cos => "Cos",
            Tan => "Tan",
            Asin => "Asin",
            Acos => "Acos",
            Atan => "Atan",
            Sinh => "Sinh",
            Cosh => "Cosh",
            Asinh => "Asinh",
            Acosh => "Acosh",
            Atanh => "Atanh",
            Softplus => "Softplus",
            Softsign => "Softsign",
            Mish => "Mish",
            HardSwish => "HardSwish",
            Elu { .. } => "Elu",
            Celu { .. } => "Celu",
            Selu { .. } => "Selu",
            LeakyRelu { .. } => "LeakyRelu",
            ThresholdedRelu { .. } => "ThresholdedRelu",
            HardSigmoid { .. } => "HardSigmoid",
            Shrink { .. } => "Shrink",
            Swish { .. } => "Swish",
            IsNaN => "IsNaN",
            IsInf { .. } => "IsInf",
            Not => "Not",
            BitwiseNot => "BitwiseNot",
        }
    }

    /// Ops with a float result of the input's type (the int8 lowering tabulates these).
    pub fn is_float_valued(self) -> bool {
        !matches!(self, UnaryKind::IsNaN | UnaryKind::IsInf { .. } | UnaryKind::Not | UnaryKind::BitwiseNot)
    }

    /// Ops also defined on integers (computed exactly in i64).
    fn integer(self, x: i64) -> Option<i64> {
        Some(match self {
            UnaryKind::Relu => x.max(0),
            UnaryKind::Abs => x.wrapping_abs(),
            UnaryKind::Neg => x.wrapping_neg(),
            UnaryKind::Sign => x.signum(),
            UnaryKind::BitwiseNot => !x,
            _ => return None,
        })
    }

    fn float(self, x: f64) -> f64 {
        use UnaryKind::*;
        let softplus = |x: f64| if x > 30.0 { x } else { x.exp().ln_1p() };
        match self {
            Sqrt => x.sqrt(),
            Erf => k::erf_scalar(x as f32) as f64,
            Tanh => x.tanh(),
            Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Relu => x.max(0.0),
            GeluErf => k::gelu_erf_scalar(x as f32) as f64,
            GeluTanh => k::gelu_tanh_scalar(x as f32) as f64,
            Abs => x.abs(),
            Neg => -x,
            Sign => {
                if x.is_nan() {
                    x
                } else if x == 0.0 {
                    0.0
                } else {
                    x.signum()
                }
            }
            Exp => x.exp(),
            Log => x.ln(),
            Ceil => x.ceil(),
            Floor => x.floor(),
            Round => x.round_ties_even(),
            Reciprocal => 1.0 / x,
            Sin => x.sin(),
            Cos => x.cos(),
            Tan => x.tan(),
            Asin => x.asin(),
            Acos => x.acos(),
            Atan => x.atan(),
            Sinh => x.sinh(),
            Cosh => x.cosh(),
            Asinh => x.asinh(),
            Acosh => x.acosh(),
            Atanh => x.atanh(),
            Softplus => softplus(x),
            Softsign => x / (1.0 + x.abs()),
            Mish => x * softplus(x).tanh(),
            HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Elu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * x.exp_m1()
                } else {
                    x
                }
            }
            Celu { alpha } => {
                let a = alpha as f64;
                x.max(0.0) + (a * (x / a).exp_m1()).min(0.0)
            }
            Selu { alpha, gamma } => gamma as f64 * if x <= 0.0 { alpha as f64 * x.exp_m1() } else { x },
            LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * x
                } else {
                    x
                }
            }
            ThresholdedRelu { alpha } => {
                if x > alpha as f64 {
                    x
                } else {
                    0.0
                }
            }
            HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
            Shrink { bias, lambd } => {
                let (b, l) = (bias as f64, lambd as f64);
                if x < -l {
                    x + b
                } else if x > l {
                    x - b
                } else {
                    0.0
                }
            }
            Swish { alpha } => x / (1.0 + (-(alpha as f64) * x).exp()),
            IsNaN | IsInf { .. } | Not | BitwiseNot => unreachable!("{self:?} has no float result"),
        }
    }
}

/// `out = f(x)` elementwise.
#[derive(Debug)]
pub struct Unary(pub UnaryKind);

impl Unary {
    fn out_dtype(&self, x: DType) -> OpResult<DType> {
        let k = self.0;
        let ok = match k {
            UnaryKind::IsNaN | UnaryKind::IsInf { .. } => x.is_float(),
            UnaryKind::Not => x == DType::Bool,
            UnaryKind::BitwiseNot => x != DType::Bool && !x.is_float(),
            UnaryKind::Shrink { .. } => x != DType::Bool,
            _ => x.is_float() || (x != DType::Bool && k.integer(0).is_some()),
        };
        if !ok {
            return Err(format!("{} is not defined for {x}", k.onnx_name()));
        }
        Ok(if k.is_float_valued() || matches!(k, UnaryKind::BitwiseNot) { x } else { DType::Bool })
    }
}

impl Op for Unary {
    fn name(&self) -> &'static str {
        self.0.onnx_name()
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        Ok(vec![Fact::new(self.out_dtype(x.dtype)?, x.shape.clone())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let out_dtype = self.out_dtype(x.dtype())?;
        let kind = self.0;
        let vectorised = kind.f32_kernel();
        let shape = x.shape().to_vec();
        let data = match (kind, x.data()) {
            (_, Data::F32(v)) if vectorised.is_some() => {
                let mut out = v.clone();
                vectorised.expect("checked")(&mut out);
                Data::F32(out)
            }
            (UnaryKind::Sqrt, Data::F32(v)) => Data::F32(v.iter().map(|e| e.sqrt()).collect()),
            (UnaryKind::Relu, Data::F32(v)) => Data::F32(v.iter().map(|e| e.max(0.0)).collect()),
            (UnaryKind::Not, Data::Bool(v)) => Data::Bool(v.iter().map(|e| !e).collect()),
            (UnaryKind::IsNaN, _) => Data::Bool(x.to_f64_vec().iter().map(|e| e.is_nan()).collect()),
            (UnaryKind::IsInf { positive, negative }, _) => {
                Data::Bool(x.to_f64_vec().iter().map(|e| e.is_infinite() && if *e > 0.0 { positive } else { negative }).collect())
            }
            _ if x.dtype().is_float() => from_f64(out_dtype, x.to_f64_vec().into_iter().map(|e| kind.float(e)).collect()),
            (UnaryKind::Shrink { .. }, _) => from_f64(out_dtype, x.to_f64_vec().into_iter().map(|e| kind.float(e)).collect()),
            _ => {
                let v: Vec<i64> =
                    x.to_i64_vec().expect("integer").into_iter().map(|e| kind.integer(e).expect("checked by out_dtype")).collect();
                Data::from_i64s(out_dtype, &v)
            }
        };
        Ok(vec![Tensor::from_parts(shape, data)])
    }

    op_any!();
}

/// `min(max(x, lo), hi)`; the bounds are attributes before opset 11 and optional inputs since.
#[derive(Debug)]
pub struct Clip {
    pub min: Option<f32>,
    pub max: Option<f32>,
}

impl Op for Clip {
    fn name(&self) -> &'static str {
        "Clip"
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        if x.dtype == DType::Bool {
            return Err("Clip is not defined for bool".into());
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let bound = |i: usize, attr: Option<f32>| -> OpResult<Option<f64>> {
            match crate::op::optional(inputs, i) {
                Some(t) => t.scalar_value().map(Some).ok_or_else(|| format!("Clip bound {i} must hold one element")),
                None => Ok(attr.map(f64::from)),
            }
        };
        let (lo, hi) = (bound(1, self.min)?, bound(2, self.max)?);
        let shape = x.shape().to_vec();
        if let (Data::F32(v), lo, hi) = (x.data(), lo.map(|l| l as f32), hi.map(|h| h as f32)) {
            let (lo, hi) = (lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY));
            return Ok(vec![Tensor::f32(shape, v.iter().map(|&e| if e.is_nan() { e } else { e.max(lo).min(hi) }).collect())]);
        }
        if x.dtype().is_float() {
            let (lo, hi) = (lo.unwrap_or(f64::NEG_INFINITY), hi.unwrap_or(f64::INFINITY));
            let v = x.to_f64_vec().into_iter().map(|e| if e.is_nan() { e } else { e.max(lo).min(hi) }).collect();
            return Ok(vec![Tensor::from_parts(shape, from_f64(x.dtype(), v))]);
        }
        let ints = |b: Option<f64>, t: Option<&Tensor>| t.and_then(|t| t.to_i64_vec()).map(|v| v[0]).or(b.map(|b| b as i64));
        let (lo, hi) =
            (ints(lo, crate::op::optional(inputs, 1)).unwrap_or(i64::MIN), ints(hi, crate::op::optional(inputs, 2)).unwrap_or(i64::MAX));
        let unsigned = x.dtype().is_unsigned_integer();
        let v: Vec<i64> = x
            .to_i64_vec()
            .expect("integer")
            .into_iter()
            .map(|e| if unsigned { (e as u64).max(lo as u64).min(hi as u64) as i64 } else { e.max(lo).min(hi) })
            .collect();
        Ok(vec![Tensor::from_parts(shape, Data::from_i64s(x.dtype(), &v))])
    }

    op_any!();
}

/// Converts elements to another type (`to` is an ONNX data type code).
#[derive(Debug)]
pub struct Cast {
    pub to: DType,
}

/// The [`DType`] of an ONNX `TensorProto.DataType` code, when the engine computes with it.
pub fn dtype_from_onnx(code: i64) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        _ => return None,
    })
}

impl Op for Cast {
    fn name(&self) -> &'static str {
        "Cast"
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![Fact::new(self.to, x.shape.clone())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![cast(x, self.to)])
    }

    op_any!();
}

/// `x` converted to `to` as ONNX casts: integers to integers by two's-complement truncation,
/// floats to integers by truncation toward zero (saturating), anything to bool by `!= 0`.
pub fn cast(x: &Tensor, to: DType) -> Tensor {
    if x.dtype() == to {
        return x.clone();
    }
    let data = match (x.data(), to) {
        (Data::F64(v), DType::F32) => Data::F32(v.iter().map(|&e| e as f32).collect()),
        (d, DType::F32) => Data::F32(with_data!(d, v => v.iter().map(|&e| e.to_f64() as f32).collect())),
        // Integers to integers (and narrow integers to floats) exactly through i64; uint64 to a
        // float through f64, since its i64 image wraps above i64::MAX.
        (d, to) if !(d.dtype().is_float() || d.dtype() == DType::U64 && to.is_float()) => {
            Data::from_i64s(to, &x.to_i64_vec().expect("integer"))
        }
        (_, to) => from_f64(to, x.to_f64_vec()),
    };
    Tensor::from_parts(x.shape().to_vec(), data)
}

/// SwiGLU: `swish_α(a) · b` for two inputs of one shape.
#[derive(Debug)]
pub struct SwiGlu {
    pub alpha: f32,
}

impl Op for SwiGlu {
    fn name(&self) -> &'static str {
        "SwiGLU"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        if a.shape != b.shape || a.dtype != b.dtype || !a.dtype.is_float() {
            return Err(format!(
                "SwiGLU takes two float inputs of one shape and type, got {} {:?} and {} {:?}",
                a.dtype, a.shape, b.dtype, b.shape
            ));
        }
        Ok(vec![Fact::new(a.dtype, a.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        if a.shape() != b.shape() {
            return Err(format!("SwiGLU takes two inputs of one shape, got {:?} and {:?}", a.shape(), b.shape()));
        }
        let alpha = self.alpha as f64;
        let v = a.to_f64_vec().into_iter().zip(b.to_f64_vec()).map(|(x, y)| x / (1.0 + (-alpha * x).exp()) * y).collect();
        Ok(vec![Tensor::from_parts(a.shape().to_vec(), from_f64(a.dtype(), v))])
    }
    op_any!();
}
