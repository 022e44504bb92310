//! Dense tensors: a shape and a typed, row-major buffer.

use std::fmt;

/// Element types the engine computes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
    /// IEEE half precision: stored as such, computed in f32.
    F16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U64 => "uint64",
            DType::U32 => "uint32",
            DType::U16 => "uint16",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16)
    }

    pub fn is_signed_integer(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I16 | DType::I8)
    }

    pub fn is_unsigned_integer(self) -> bool {
        matches!(self, DType::U64 | DType::U32 | DType::U16 | DType::U8)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::I16 | DType::U16 => 2,
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
    F16(Vec<half::f16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U64(Vec<u64>),
    U32(Vec<u32>),
    U16(Vec<u16>),
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
            $crate::Data::F16($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::I16($v) => $body,
            $crate::Data::I8($v) => $body,
            $crate::Data::U64($v) => $body,
            $crate::Data::U32($v) => $body,
            $crate::Data::U16($v) => $body,
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
            $crate::Data::F16($v) => $crate::Data::F16($body),
            $crate::Data::I64($v) => $crate::Data::I64($body),
            $crate::Data::I32($v) => $crate::Data::I32($body),
            $crate::Data::I16($v) => $crate::Data::I16($body),
            $crate::Data::I8($v) => $crate::Data::I8($body),
            $crate::Data::U64($v) => $crate::Data::U64($body),
            $crate::Data::U32($v) => $crate::Data::U32($body),
            $crate::Data::U16($v) => $crate::Data::U16($body),
            $crate::Data::U8($v) => $crate::Data::U8($body),
            $crate::Data::Bool($v) => $crate::Data::Bool($body),
        }
    };
}

impl Data {
    /// Concatenates buffers of the same type, in order; `None` when the types differ or there
    /// is none.
    pub fn concat(parts: &[&Data]) -> Option<Data> {
        let first = parts.first()?;
        let mut out = Data::with_capacity(first.dtype(), parts.iter().map(|p| p.len()).sum());
        for p in parts {
            if !out.extend_from(p, 0..p.len()) {
                return None;
            }
        }
        Some(out)
    }

    /// An empty buffer with room for `len` elements.
    pub fn with_capacity(dtype: DType, len: usize) -> Data {
        let mut d = Data::zeros(dtype, 0);
        with_data!(&mut d, v => v.reserve_exact(len));
        d
    }

    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::F16(_) => DType::F16,
            Data::I64(_) => DType::I64,
            Data::I32(_) => DType::I32,
            Data::I16(_) => DType::I16,
            Data::I8(_) => DType::I8,
            Data::U64(_) => DType::U64,
            Data::U32(_) => DType::U32,
            Data::U16(_) => DType::U16,
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
            DType::F16 => Data::F16(vec![half::f16::ZERO; len]),
            DType::I64 => Data::I64(vec![0; len]),
            DType::I32 => Data::I32(vec![0; len]),
            DType::I16 => Data::I16(vec![0; len]),
            DType::I8 => Data::I8(vec![0; len]),
            DType::U64 => Data::U64(vec![0; len]),
            DType::U32 => Data::U32(vec![0; len]),
            DType::U16 => Data::U16(vec![0; len]),
            DType::U8 => Data::U8(vec![0; len]),
            DType::Bool => Data::Bool(vec![false; len]),
        }
    }

    /// A buffer of `len` elements of `dtype`, element `i` converted from `f(i)` by
    /// [`Element::from_f64`].
    pub fn from_fn(dtype: DType, len: usize, f: impl Fn(usize) -> f64) -> Data {
        fn build<T: Element>(len: usize, f: impl Fn(usize) -> f64) -> Vec<T> {
            (0..len).map(|i| T::from_f64(f(i))).collect()
        }
        match dtype {
            DType::F32 => Data::F32(build(len, f)),
            DType::F64 => Data::F64(build(len, f)),
            DType::F16 => Data::F16(build(len, f)),
            DType::I64 => Data::I64(build(len, f)),
            DType::I32 => Data::I32(build(len, f)),
            DType::I16 => Data::I16(build(len, f)),
            DType::I8 => Data::I8(build(len, f)),
            DType::U64 => Data::U64(build(len, f)),
            DType::U32 => Data::U32(build(len, f)),
            DType::U16 => Data::U16(build(len, f)),
            DType::U8 => Data::U8(build(len, f)),
            DType::Bool => Data::Bool(build(len, f)),
        }
    }

    /// A buffer of `dtype` from i64 values by [`Element::from_i64`] (integer truncation).
    pub fn from_i64s(dtype: DType, v: &[i64]) -> Data {
        fn build<T: Element>(v: &[i64]) -> Vec<T> {
            v.iter().map(|&x| T::from_i64(x)).collect()
        }
        match dtype {
            DType::F32 => Data::F32(build(v)),
            DType::F64 => Data::F64(build(v)),
            DType::F16 => Data::F16(build(v)),
            DType::I64 => Data::I64(v.to_vec()),
            DType::I32 => Data::I32(build(v)),
            DType::I16 => Data::I16(build(v)),
            DType::I8 => Data::I8(build(v)),
            DType::U64 => Data::U64(build(v)),
            DType::U32 => Data::U32(build(v)),
            DType::U16 => Data::U16(build(v)),
            DType::U8 => Data::U8(build(v)),
            DType::Bool => Data::Bool(build(v)),
        }
    }

    /// The elements as little-endian bytes (bool: one byte, 0 or 1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::F16(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::I32(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::I16(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::I8(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::U64(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::U32(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::U16(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
            Data::U8(v) => v.clone(),
            Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        }
    }

    /// Elements of `dtype` from little-endian bytes (a trailing partial element is dropped;
    /// bool: any non-zero byte is true). uint8 takes the buffer as is.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Data {
        fn le<T, const N: usize>(b: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N).map(|c| f(c.try_into().expect("N bytes"))).collect()
        }
        match dtype {
            DType::F32 => Data::F32(le(bytes, f32::from_le_bytes)),
            DType::F64 => Data::F64(le(bytes, f64::from_le_bytes)),
            DType::F16 => Data::F16(le(bytes, half::f16::from_le_bytes)),
            DType::I64 => Data::I64(le(bytes, i64::from_le_bytes)),
            DType::I32 => Data::I32(le(bytes, i32::from_le_bytes)),
            DType::I16 => Data::I16(le(bytes, i16::from_le_bytes)),
            DType::I8 => Data::I8(bytes.iter().map(|&b| b as i8).collect()),
            DType::U64 => Data::U64(le(bytes, u64::from_le_bytes)),
            DType::U32 => Data::U32(le(bytes, u32::from_le_bytes)),
            DType::U16 => Data::U16(le(bytes, u16::from_le_bytes)),
            DType::U8 => Data::U8(bytes.to_vec()),
            DType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
        }
    }

    /// Appends `other`'s elements `range`; false (and nothing appended) when the types differ.
    pub fn extend_from(&mut self, other: &Data, range: std::ops::Range<usize>) -> bool {
        macro_rules! extend {
            ($($v:ident),*) => {
                match (self, other) {
                    $((Data::$v(o), Data::$v(v)) => o.extend_from_slice(&v[range]),)*
                    _ => return false,
                }
            };
        }
        extend!(F32, F64, F16, I64, I32, I16, I8, U64, U32, U16, U8, Bool);
        true
    }

    /// Elements read from `self` or `other` (one element type), in the order of `picks`; `None`
    /// when the types differ. The index maps and scatters build their outputs with this.
    pub fn pick(&self, other: &Data, picks: impl Iterator<Item = Pick>) -> Option<Data> {
        macro_rules! pick {
            ($($v:ident),*) => {
                match (self, other) {
                    $((Data::$v(a), Data::$v(b)) => Data::$v(picks.map(|p| match p { Pick::Own(i) => a[i], Pick::Other(j) => b[j] }).collect()),)*
                    _ => return None,
                }
            };
        }
        Some(pick!(F32, F64, F16, I64, I32, I16, I8, U64, U32, U16, U8, Bool))
    }

    /// The elements at `indices`, in that order.
    pub fn gather(&self, indices: impl Iterator<Item = usize>) -> Data {
        map_data!(self, v => indices.map(|i| v[i]).collect())
    }
}

/// Where [`Data::pick`] reads an element: the buffer itself or the other one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Own(usize),
    Other(usize),
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
        if first.rank() == 0
            || parts.iter().any(|p| p.dtype() != first.dtype() || p.rank() != first.rank() || p.shape[1..] != first.shape[1..])
        {
            return None;
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let data: Vec<&Data> = parts.iter().map(|p| &p.data).collect();
        Some(Tensor::from_parts(shape, Data::concat(&data)?))
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
            Data::F32(_) | Data::F64(_) | Data::F16(_) => None,
            d => Some(with_data!(d, v => v.iter().map(|&x| x.to_i64()).collect())),
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
    /// Saturating for integers (NaN to 0), as Rust's `as` converts.
    fn from_f64(v: f64) -> Self;
    /// Exact for every integer type (u64 above `i64::MAX` wraps); floats truncate.
    fn to_i64(self) -> i64;
    /// Two's-complement truncation for integers, as ONNX casts between integer types.
    fn from_i64(v: i64) -> Self;
}

macro_rules! element_num {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_i64(v: i64) -> Self { v as $t }
        }
    )*};
}
element_num!(f32, f64, i64, i32, i16, i8, u64, u32, u16, u8);

impl Element for half::f16 {
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        half::f16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        self.to_f32() as i64
    }
    fn from_i64(v: i64) -> Self {
        half::f16::from_f64(v as f64)
    }
}

impl Element for bool {
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

fn to_f64<T: Element>(x: T) -> f64 {
    x.to_f64()
}
