//! Dense tensors: a shape and a typed, row-major buffer.

use std::fmt;

/// Element types the engine computes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The typed element buffer of a [`Tensor`].
#[derive(Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// Applies `$body` to the vector inside a [`Data`] whatever its element type, binding it to `$v`.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $body,
            $crate::Data::F64($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::I8($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::Bool($v) => $body,
        }
    };
}

/// Like [`with_data!`], and wraps the resulting vector back into the same variant.
#[macro_export]
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $crate::Data::F32($body),
            $crate::Data::F64($v) => $crate::Data::F64($body),
            $crate::Data::I64($v) => $crate::Data::I64($body),
            $crate::Data::I32($v) => $crate::Data::I32($body),
            $crate::Data::I8($v) => $crate::Data::I8($body),
            $crate::Data::U8($v) => $crate::Data::U8($body),
            $crate::Data::Bool($v) => $crate::Data::Bool($body),
        }
    };
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::I64(_) => DType::I64,
            Data::I32(_) => DType::I32,
            Data::I8(_) => DType::I8,
            Data::U8(_) => DType::U8,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A buffer of `len` zeros (false for bool).
    pub fn zeros(dtype: DType, len: usize) -> Data {
        match dtype {
            DType::F32 => Data::F32(vec![0.0; len]),
            DType::F64 => Data::F64(vec![0.0; len]),
            DType::I64 => Data::I64(vec![0; len]),
            DType::I32 => Data::I32(vec![0; len]),
            DType::I8 => Data::I8(vec![0; len]),
            DType::U8 => Data::U8(vec![0; len]),
            DType::Bool => Data::Bool(vec![false; len]),
        }
    }

    /// The elements at `indices`, in that order.
    pub fn gather(&self, indices: impl Iterator<Item = usize>) -> Data {
        map_data!(self, v => indices.map(|i| v[i]).collect())
    }
}

/// A dense row-major tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?}", self.dtype(), self.shape)
    }
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// [`numel`] with overflow checked: `None` for shapes from untrusted data that no buffer holds.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl Tensor {
    /// A tensor from a shape and a buffer; `None` when the buffer length does not match.
    /// The tensor, if `data` holds exactly the elements `shape` asks for (checked arithmetic: a
    /// shape whose size overflows matches nothing).
    pub fn new(shape: Vec<usize>, data: Data) -> Option<Tensor> {
        (checked_numel(&shape) == Some(data.len())).then_some(Tensor { shape, data })
    }

    /// Panics when the buffer length does not match the shape: for buffers the caller sized.
    pub fn from_parts(shape: Vec<usize>, data: Data) -> Tensor {
        let (n, len) = (numel(&shape), data.len());
        assert_eq!(n, len, "tensor of shape {shape:?} needs {n} elements, got {len}");
        Tensor { shape, data }
    }

    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_parts(shape, Data::F32(v))
    }

    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        Tensor::from_parts(shape, Data::I64(v))
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::f32(vec![], vec![v])
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor { shape, data: Data::zeros(dtype, n) }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn into_data(self) -> Data {
        self.data
    }

    /// Concatenates tensors of one dtype and equal trailing dims along the first axis (e.g.
    /// samples into a batch); `None` when they differ or `parts` is empty.
    pub fn concat_rows(parts: &[&Tensor]) -> Option<Tensor> {
        let first = parts.first()?;
        if first.rank() == 0 || parts.iter().any(|p| p.dtype() != first.dtype() || p.rank() != first.rank() || p.shape[1..] != first.shape[1..]) {
            return None;
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let data: Vec<&Data> = parts.iter().map(|p| &p.data).collect();
        Some(Tensor::from_parts(shape, crate::ops::view::concat_data(&data)?))
    }

    /// The same elements under another shape with as many elements.
    pub fn reshaped(self, shape: Vec<usize>) -> Tensor {
        Tensor::from_parts(shape, self.data)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Integer elements widened to i64 (for shape, axes and index operands).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I64(v) => Some(v.clone()),
            Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    /// Elements converted to f64 (any dtype).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_data!(&self.data, v => v.iter().map(|&x| to_f64(x)).collect())
    }

    /// The single element of a one-element tensor as f64.
    pub fn scalar_value(&self) -> Option<f64> {
        (self.len() == 1).then(|| self.to_f64_vec()[0])
    }
}

/// Conversion of any element type to f64, used by casts and diagnostics.
pub trait Element: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! element_num {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
element_num!(f32, f64, i64, i32, i8, u8);

impl Element for bool {
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

fn to_f64<T: Element>(x: T) -> f64 {
    x.to_f64()
}
