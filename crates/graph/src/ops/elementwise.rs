//! Elementwise ops: broadcasting binary arithmetic and comparison, Where, unary math, Cast.

use octet_kernels::f32 as k;

use super::broadcast::{binary, broadcast_shapes, ternary};
use crate::error::OpResult;
use crate::op::{required, EvalCtx, Fact, Op};
use crate::tensor::{DType, Data, Element, Tensor};
use crate::{op_any, with_data};

/// The broadcasting binary ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Equal,
}

/// `out = a ∘ b` with numpy broadcasting.
#[derive(Debug)]
pub struct Binary(pub BinaryKind);

impl Binary {
    fn out_dtype(&self, a: DType, b: DType) -> OpResult<DType> {
        match self.0 {
            BinaryKind::Pow => Ok(a),
            _ if a != b => Err(format!("operand types differ: {a} and {b}")),
            BinaryKind::Equal => Ok(DType::Bool),
            _ => Ok(a),
        }
    }
}

/// Add, Sub, Mul and Div as ONNX runtimes compute them: IEEE arithmetic on floats,
/// two's-complement wrap-around on integers (`i64::MIN / -1` included), never a panic.
pub trait Arithmetic: Copy {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// Callers rule out integer division by zero.
    fn div(self, o: Self) -> Self;
}

macro_rules! float_arithmetic {
    ($($t:ty),*) => {$(
        impl Arithmetic for $t {
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Self { self / o }
        }
    )*};
}
macro_rules! integer_arithmetic {
    ($($t:ty),*) => {$(
        impl Arithmetic for $t {
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div(self, o: Self) -> Self { self.wrapping_div(o) }
        }
    )*};
}
float_arithmetic!(f32, f64);
integer_arithmetic!(i64, i32, i8, u8);

fn arith<T>(kind: BinaryKind, a: &[T], ash: &[usize], b: &[T], bsh: &[usize], out: &[usize]) -> OpResult<Vec<T>>
where
    T: Copy + Default + Arithmetic + Element + PartialEq,
{
    Ok(match kind {
        BinaryKind::Add => binary(a, ash, b, bsh, out, T::add),
        BinaryKind::Sub => binary(a, ash, b, bsh, out, T::sub),
        BinaryKind::Mul => binary(a, ash, b, bsh, out, T::mul),
        BinaryKind::Div => {
            let integer = T::from_f64(0.5).to_f64() == 0.0;
            if integer && b.iter().any(|&y| y.to_f64() == 0.0) {
                return Err("integer division by zero".into());
            }
            binary(a, ash, b, bsh, out, T::div)
        }
        BinaryKind::Pow | BinaryKind::Equal => unreachable!("handled by the caller"),
    })
}

impl Op for Binary {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
            BinaryKind::Pow => "Pow",
            BinaryKind::Equal => "Equal",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let shape = broadcast_shapes(&[&a.shape, &b.shape])?;
        Ok(vec![Fact::new(self.out_dtype(a.dtype, b.dtype)?, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        self.out_dtype(a.dtype(), b.dtype())?;
        let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
        let (ash, bsh) = (a.shape(), b.shape());
        let data = match (self.0, a.data(), b.data()) {
            (BinaryKind::Equal, _, _) => {
                let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
                Data::Bool(binary(&x, ash, &y, bsh, &shape, |p, q| p == q))
            }
            (BinaryKind::Pow, Data::F32(x), Data::F32(y)) if y.len() == 1 && y[0] == 2.0 => {
                Data::F32(x.iter().map(|v| v * v).collect())
            }
            (BinaryKind::Pow, Data::F32(x), _) => {
                let y: Vec<f32> = b.to_f64_vec().into_iter().map(|v| v as f32).collect();
                Data::F32(binary(x, ash, &y, bsh, &shape, f32::powf))
            }
            (BinaryKind::Pow, _, _) => {
                let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
                let v = binary(&x, ash, &y, bsh, &shape, f64::powf);
                from_f64(a.dtype(), v)
            }
            (kind, Data::F32(x), Data::F32(y)) => Data::F32(arith(kind, x, ash, y, bsh, &shape)?),
            (kind, Data::F64(x), Data::F64(y)) => Data::F64(arith(kind, x, ash, y, bsh, &shape)?),
            (kind, Data::I64(x), Data::I64(y)) => Data::I64(arith(kind, x, ash, y, bsh, &shape)?),
            (kind, Data::I32(x), Data::I32(y)) => Data::I32(arith(kind, x, ash, y, bsh, &shape)?),
            (kind, Data::U8(x), Data::U8(y)) => Data::U8(arith(kind, x, ash, y, bsh, &shape)?),
            (kind, Data::I8(x), Data::I8(y)) => Data::I8(arith(kind, x, ash, y, bsh, &shape)?),
            (_, d, _) => return Err(format!("{} is not defined for {}", self.name(), d.dtype())),
        };
        Ok(vec![Tensor::from_parts(shape, data)])
    }

    op_any!();
}

/// A buffer of `dtype` from f64 values (saturating casts for integers).
pub fn from_f64(dtype: DType, v: Vec<f64>) -> Data {
    fn conv<T: Element>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::from_f64(x)).collect()
    }
    match dtype {
        DType::F32 => Data::F32(conv(&v)),
        DType::F64 => Data::F64(v),
        DType::I64 => Data::I64(conv(&v)),
        DType::I32 => Data::I32(conv(&v)),
        DType::I8 => Data::I8(conv(&v)),
        DType::U8 => Data::U8(conv(&v)),
        DType::Bool => Data::Bool(conv(&v)),
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

/// The unary float ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    Sqrt,
    Erf,
    Tanh,
    Sigmoid,
    Relu,
    GeluErf,
    GeluTanh,
}

/// `out = f(x)` elementwise; float inputs (Relu also takes integers).
#[derive(Debug)]
pub struct Unary(pub UnaryKind);

impl Op for Unary {
    fn name(&self) -> &'static str {
        match self.0 {
            UnaryKind::Sqrt => "Sqrt",
            UnaryKind::Erf => "Erf",
            UnaryKind::Tanh => "Tanh",
            UnaryKind::Sigmoid => "Sigmoid",
            UnaryKind::Relu => "Relu",
            UnaryKind::GeluErf | UnaryKind::GeluTanh => "Gelu",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let mut out = x.clone();
        if let Some(v) = out.as_f32_mut() {
            match self.0 {
                UnaryKind::Sqrt => v.iter_mut().for_each(|e| *e = e.sqrt()),
                UnaryKind::Erf => k::erf(v),
                UnaryKind::Tanh => k::tanh(v),
                UnaryKind::Sigmoid => k::sigmoid(v),
                UnaryKind::Relu => v.iter_mut().for_each(|e| *e = e.max(0.0)),
                UnaryKind::GeluErf => k::gelu_erf(v),
                UnaryKind::GeluTanh => k::gelu_tanh(v),
            }
            return Ok(vec![out]);
        }
        let f64_op = |v: f64| -> f64 {
            match self.0 {
                UnaryKind::Sqrt => v.sqrt(),
                UnaryKind::Erf => k::erf_scalar(v as f32) as f64,
                UnaryKind::Tanh => v.tanh(),
                UnaryKind::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                UnaryKind::Relu => v.max(0.0),
                UnaryKind::GeluErf => k::gelu_erf_scalar(v as f32) as f64,
                UnaryKind::GeluTanh => k::gelu_tanh_scalar(v as f32) as f64,
            }
        };
        if x.dtype() == DType::Bool || (!x.dtype().is_float() && self.0 != UnaryKind::Relu) {
            return Err(format!("{} is not defined for {}", self.name(), x.dtype()));
        }
        let v = x.to_f64_vec().into_iter().map(f64_op).collect();
        Ok(vec![Tensor::from_parts(x.shape().to_vec(), from_f64(x.dtype(), v))])
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
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        11 => DType::F64,
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
        if x.dtype() == self.to {
            return Ok(vec![x.clone()]);
        }
        let data = match (x.data(), self.to) {
            (Data::F64(v), DType::F32) => Data::F32(v.iter().map(|&e| e as f32).collect()),
            (d, DType::F32) => Data::F32(with_data!(d, v => v.iter().map(|&e| e.to_f64() as f32).collect())),
            (d, to) => {
                let v: Vec<f64> = with_data!(d, v => v.iter().map(|&e| e.to_f64()).collect());
                from_f64(to, v)
            }
        };
        Ok(vec![Tensor::from_parts(x.shape().to_vec(), data)])
    }

    op_any!();
}
