//! Ops of the ONNX spec's "tensor" group that rearrange or index elements: Size, Tile, Pad,
//! Trilu, DepthToSpace, SpaceToDepth, ReverseSequence, CenterCropPad, GatherElements, GatherND,
//! ScatterElements, ScatterND, OneHot, Compress, CastLike.
//!
//! Most are an index map: output element `i` is input element `map(i)` (or a fill value), built
//! once and applied with [`Data::gather`] whatever the element type.

use std::sync::Arc;

use super::shape::{const_ints, tensor_ints};
use crate::error::OpResult;
use crate::op::{norm_axis, norm_index, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, strides, Data, Pick, Tensor};

/// The multi-index of row-major element `i` of `shape`.
pub(crate) fn unravel(mut i: usize, shape: &[usize], out: &mut [usize]) {
    for a in (0..shape.len()).rev() {
        out[a] = i % shape[a].max(1);
        i /= shape[a].max(1);
    }
}

/// The single output of shape `shape` whose element at multi-index `i` is `x`'s element
/// `map(i)` (a flat offset), or `fill` (default zero) where `map` gives `None`.
fn remap(x: &Tensor, shape: Vec<usize>, fill: Option<&Tensor>, mut map: impl FnMut(&[usize]) -> Option<usize>) -> OpResult<Vec<Tensor>> {
    crate::limits::check_tensor(x.dtype(), &shape).map_err(|m| format!("output {m}"))?;
    let zero = Data::zeros(x.dtype(), 1);
    let fill = match fill {
        Some(f) if f.len() == 1 && f.dtype() == x.dtype() => f.data(),
        Some(_) => return Err(format!("the fill value must be one {} element", x.dtype())),
        None => &zero,
    };
    let mut index = vec![0usize; shape.len()];
    let picks = (0..numel(&shape)).map(|i| {
        unravel(i, &shape, &mut index);
        map(&index).map_or(Pick::Other(0), Pick::Own)
    });
    let data = x.data().pick(fill, picks).expect("one element type");
    Ok(vec![Tensor::from_parts(shape, data)])
}

fn offset(index: &[usize], st: &[usize]) -> usize {
    index.iter().zip(st).map(|(i, s)| i * s).sum()
}

// ---------------------------------------------------------------- Size

/// The number of elements, as an int64 scalar.
#[derive(Debug)]
pub struct Size;

impl Op for Size {
    fn name(&self) -> &'static str {
        "Size"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        Ok(vec![Fact::constant(Arc::new(Tensor::i64(vec![], vec![numel(&x.shape) as i64])))])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        Ok(vec![Tensor::i64(vec![], vec![required(inputs, 0, "data")?.len() as i64])])
    }
    op_any!();
}

// ---------------------------------------------------------------- Tile

/// Repeats the input `repeats[a]` times along each axis.
#[derive(Debug)]
pub struct Tile;

fn tile_shape(s: &[usize], reps: &[i64]) -> OpResult<Vec<usize>> {
    if reps.len() != s.len() || reps.iter().any(|&r| r < 0) {
        return Err(format!("repeats {reps:?} must be {} non-negative counts", s.len()));
    }
    s.iter().zip(reps).map(|(&d, &r)| d.checked_mul(r as usize).ok_or_else(|| "tiled shape overflows".to_string())).collect()
}

impl Op for Tile {
    fn name(&self) -> &'static str {
        "Tile"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![Fact::new(x.dtype, tile_shape(&x.shape, &const_ints(required(inputs, 1, "repeats")?, "repeats")?)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let s = x.shape().to_vec();
        let shape = tile_shape(&s, &tensor_ints(required(inputs, 1, "repeats")?, "repeats")?)?;
        let st = strides(&s);
        remap(x, shape, None, |i| Some(i.iter().zip(&s).zip(&st).map(|((&i, &d), &st)| (i % d) * st).sum()))
    }
    op_any!();
}

// ---------------------------------------------------------------- Pad

/// Pads with a constant, or by reflecting, repeating the edge, or wrapping around.
#[derive(Debug)]
pub struct Pad {
    pub mode: PadMode,
    /// Before opset 11, pads and the constant were attributes.
    pub pads_attr: Option<Vec<i64>>,
    pub value_attr: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl Pad {
    /// Per axis (before, after); negative values crop.
    fn pads<T>(&self, rank: usize, inputs: &[Option<&T>], ints: impl Fn(&T, &str) -> OpResult<Vec<i64>>) -> OpResult<Vec<(i64, i64)>> {
        let raw = match &self.pads_attr {
            Some(p) => p.clone(),
            None => ints(required(inputs, 1, "pads")?, "pads")?,
        };
        let axes: Vec<usize> = match optional(inputs, 3) {
            Some(a) => ints(a, "axes")?.into_iter().map(|a| norm_axis(a, rank)).collect::<OpResult<_>>()?,
            None => (0..rank).collect(),
        };
        if raw.len() != 2 * axes.len() {
            return Err(format!("pads {raw:?} must hold 2 × {} values", axes.len()));
        }
        let mut pads = vec![(0, 0); rank];
        for (k, &a) in axes.iter().enumerate() {
            pads[a] = (raw[k], raw[k + axes.len()]);
        }
        Ok(pads)
    }
    fn out_shape(s: &[usize], pads: &[(i64, i64)]) -> OpResult<Vec<usize>> {
        s.iter()
            .zip(pads)
            .map(|(&d, &(b, e))| {
                let size = (d as i64).checked_add(b).and_then(|v| v.checked_add(e)).ok_or_else(|| format!("pads {pads:?} overflow"))?;
                usize::try_from(size).map_err(|_| format!("pads {pads:?} crop more than the input {s:?} holds"))
            })
            .collect()
    }
}

impl Op for Pad {
    fn name(&self) -> &'static str {
        "Pad"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1, 3]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        let pads = self.pads(x.shape.len(), inputs, const_ints)?;
        Ok(vec![Fact::new(x.dtype, Self::out_shape(&x.shape, &pads)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "data")?;
        let s = x.shape().to_vec();
        let pads = self.pads(s.len(), inputs, tensor_ints)?;
        let shape = Self::out_shape(&s, &pads)?;
        let fill = match (self.pads_attr.is_some(), optional(inputs, 2)) {
            (false, Some(v)) => v.clone(),
            _ => Tensor::from_parts(vec![], super::elementwise::from_f64(x.dtype(), vec![self.value_attr as f64])),
        };
        if self.mode != PadMode::Constant && s.iter().zip(&pads).any(|(&d, &(b, e))| d == 0 && (b > 0 || e > 0)) {
            return Err("cannot reflect, repeat or wrap an empty axis".into());
        }
        let st = strides(&s);
        let mode = self.mode;
        remap(x, shape, Some(&fill.reshaped(vec![])), |out| {
            let mut off = 0usize;
            for a in 0..s.len() {
                let d = s[a] as i64;
                let mut i = (out[a] as i64).checked_sub(pads[a].0)?;
                if !(0..d).contains(&i) {
                    i = match mode {
                        PadMode::Constant => return None,
                        PadMode::Edge => i.clamp(0, d - 1),
                        PadMode::Wrap => i.rem_euclid(d),
                        PadMode::Reflect if d == 1 => 0,
                        PadMode::Reflect => {
                            let period = 2 * (d - 1);
                            let m = i.rem_euclid(period);
                            if m < d {
                                m
                            } else {
                                period - m
                            }
                        }
                    };
                }
                off += i as usize * st[a];
            }
            Some(off)
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- Trilu

/// Keeps the upper (or lower) triangle of the last two axes, from diagonal `k`.
#[derive(Debug)]
pub struct Trilu {
    pub upper: bool,
}

impl Op for Trilu {
    fn name(&self) -> &'static str {
        "Trilu"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        if x.shape.len() < 2 {
            return Err("Trilu needs at least 2 axes".into());
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let k = match optional(inputs, 1) {
            Some(t) => tensor_ints(t, "k")?.first().copied().ok_or("k must hold one value")?,
            None => 0,
        };
        let s = x.shape().to_vec();
        let r = s.len();
        if r < 2 {
            return Err("Trilu needs at least 2 axes".into());
        }
        let st = strides(&s);
        let upper = self.upper;
        remap(x, s.clone(), None, |i| {
            let (row, col) = (i[r - 2] as i64, i[r - 1] as i64);
            let keep = if upper { col - row >= k } else { col - row <= k };
            keep.then(|| offset(i, &st))
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- DepthToSpace, SpaceToDepth

/// Moves `blocksize²` channel groups into spatial blocks (DepthToSpace, modes DCR and CRD) or
/// back (SpaceToDepth), on NCHW tensors.
#[derive(Debug)]
pub struct DepthSpace {
    pub to_space: bool,
    pub blocksize: usize,
    pub crd: bool,
}

impl DepthSpace {
    fn out_shape(&self, s: &[usize]) -> OpResult<Vec<usize>> {
        let b = self.blocksize;
        let [n, c, h, w] = s else { return Err(format!("expects a 4-D NCHW tensor, got {s:?}")) };
        if b == 0 {
            return Err("blocksize must be positive".into());
        }
        if self.to_space {
            if c % (b * b) != 0 {
                return Err(format!("channels {c} are not a multiple of blocksize² {}", b * b));
            }
            Ok(vec![*n, c / (b * b), h * b, w * b])
        } else {
            if h % b != 0 || w % b != 0 {
                return Err(format!("spatial size {h}×{w} is not a multiple of blocksize {b}"));
            }
            Ok(vec![*n, c * b * b, h / b, w / b])
        }
    }
}

impl Op for DepthSpace {
    fn name(&self) -> &'static str {
        if self.to_space {
            "DepthToSpace"
        } else {
            "SpaceToDepth"
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![Fact::new(x.dtype, self.out_shape(&x.shape)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let s = x.shape().to_vec();
        let shape = self.out_shape(&s)?;
        let st = strides(&s);
        let b = self.blocksize;
        let (to_space, crd) = (self.to_space, self.crd);
        remap(x, shape.clone(), None, |o| {
            let [n, c, h, w] = [o[0], o[1], o[2], o[3]];
            let src = if to_space {
                let (bh, bw) = (h % b, w % b);
                let c_in = if crd { c * b * b + bh * b + bw } else { (bh * b + bw) * shape[1] + c };
                [n, c_in, h / b, w / b]
            } else {
                let c_small = s[1];
                let (blk, c_in) = if crd { (c % (b * b), c / (b * b)) } else { (c / c_small, c % c_small) };
                [n, c_in, h * b + blk / b, w * b + blk % b]
            };
            Some(offset(&src, &st))
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- ReverseSequence

/// Reverses the first `sequence_lens[b]` elements along `time_axis` of each batch entry.
#[derive(Debug)]
pub struct ReverseSequence {
    pub batch_axis: usize,
    pub time_axis: usize,
}

impl Op for ReverseSequence {
    fn name(&self) -> &'static str {
        "ReverseSequence"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        if x.shape.len() < 2 || self.batch_axis > 1 || self.time_axis > 1 || self.batch_axis == self.time_axis {
            return Err("batch_axis and time_axis must be 0 and 1 in some order".into());
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let lens = tensor_ints(required(inputs, 1, "sequence_lens")?, "sequence_lens")?;
        let s = x.shape().to_vec();
        let st = strides(&s);
        let (ba, ta) = (self.batch_axis, self.time_axis);
        if lens.len() != s[ba] || lens.iter().any(|&l| l < 0 || l as usize > s[ta]) {
            return Err(format!("sequence_lens {lens:?} do not fit batch {} × time {}", s[ba], s[ta]));
        }
        remap(x, s.clone(), None, |i| {
            let mut src = i.to_vec();
            let len = lens[i[ba]] as usize;
            if i[ta] < len {
                src[ta] = len - 1 - i[ta];
            }
            Some(offset(&src, &st))
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- CenterCropPad

/// Crops or pads (with zeros) each listed axis to `shape`, centred.
#[derive(Debug)]
pub struct CenterCropPad {
    pub axes: Option<Vec<i64>>,
}

impl CenterCropPad {
    fn target(&self, s: &[usize], want: &[i64]) -> OpResult<Vec<usize>> {
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&a| norm_axis(a, s.len())).collect::<OpResult<_>>()?,
            None => (0..s.len()).collect(),
        };
        if axes.len() != want.len() || want.iter().any(|&d| d < 0) {
            return Err(format!("shape {want:?} does not match axes {axes:?}"));
        }
        let mut out = s.to_vec();
        for (&a, &d) in axes.iter().zip(want) {
            out[a] = d as usize;
        }
        Ok(out)
    }
}

impl Op for CenterCropPad {
    fn name(&self) -> &'static str {
        "CenterCropPad"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input_data")?;
        Ok(vec![Fact::new(x.dtype, self.target(&x.shape, &const_ints(required(inputs, 1, "shape")?, "shape")?)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input_data")?;
        let s = x.shape().to_vec();
        let shape = self.target(&s, &tensor_ints(required(inputs, 1, "shape")?, "shape")?)?;
        let st = strides(&s);
        let shift: Vec<i64> =
            s.iter().zip(&shape).map(|(&d, &t)| if d >= t { ((d - t) / 2) as i64 } else { -(((t - d) / 2) as i64) }).collect();
        remap(x, shape.clone(), None, |o| {
            let mut off = 0;
            for a in 0..s.len() {
                let i = o[a] as i64 + shift[a];
                if !(0..s[a] as i64).contains(&i) {
                    return None;
                }
                off += i as usize * st[a];
            }
            Some(off)
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- GatherElements, GatherND

/// `out[i] = data[i with axis replaced by indices[i]]`.
#[derive(Debug)]
pub struct GatherElements {
    pub axis: i64,
}

impl Op for GatherElements {
    fn name(&self) -> &'static str {
        "GatherElements"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, idx) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?);
        if idx.shape.len() != x.shape.len() {
            return Err("indices must have the rank of data".into());
        }
        Ok(vec![Fact::new(x.dtype, idx.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, it) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?);
        let s = x.shape().to_vec();
        let axis = norm_axis(self.axis, s.len())?;
        let idx = tensor_ints(it, "indices")?;
        let ist = strides(it.shape());
        let st = strides(&s);
        let mut err = None;
        let out = remap(x, it.shape().to_vec(), None, |o| {
            let mut src = o.to_vec();
            match norm_index(idx[offset(o, &ist)], s[axis]) {
                Ok(j) => src[axis] = j,
                Err(e) => {
                    err.get_or_insert(e);
                    return None;
                }
            }
            Some(offset(&src, &st))
        });
        err.map_or(out, Err)
    }
    op_any!();
}

/// `out[b…, i…] = data[b…, indices[b…, i…, :]…]` with `batch_dims` leading batch axes.
#[derive(Debug)]
pub struct GatherNd {
    pub batch_dims: usize,
}

impl GatherNd {
    fn out_shape(&self, data: &[usize], idx: &[usize]) -> OpResult<Vec<usize>> {
        let b = self.batch_dims;
        let k = *idx.last().ok_or("indices must have rank ≥ 1")?;
        if b >= idx.len() || b + k > data.len() || data[..b] != idx[..b] {
            return Err(format!("indices {idx:?} do not fit data {data:?} with batch_dims {b}"));
        }
        Ok(idx[..idx.len() - 1].iter().chain(&data[b + k..]).copied().collect())
    }
}

impl Op for GatherNd {
    fn name(&self) -> &'static str {
        "GatherND"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, idx) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?);
        Ok(vec![Fact::new(x.dtype, self.out_shape(&x.shape, &idx.shape)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, it) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?);
        let (s, is) = (x.shape().to_vec(), it.shape().to_vec());
        let shape = self.out_shape(&s, &is)?;
        let idx = tensor_ints(it, "indices")?;
        let (b, k) = (self.batch_dims, *is.last().expect("checked"));
        let q = is.len() - 1;
        let ist = strides(&is);
        let st = strides(&s);
        let mut err = None;
        let out = remap(x, shape, None, |o| {
            let mut src = Vec::with_capacity(s.len());
            src.extend_from_slice(&o[..b]);
            let base: usize = o[..q].iter().zip(&ist).map(|(i, s)| i * s).sum();
            for j in 0..k {
                match norm_index(idx[base + j], s[b + j]) {
                    Ok(v) => src.push(v),
                    Err(e) => {
                        err.get_or_insert(e);
                        return None;
                    }
                }
            }
            src.extend_from_slice(&o[q..]);
            Some(offset(&src, &st))
        });
        err.map_or(out, Err)
    }
    op_any!();
}

// ---------------------------------------------------------------- ScatterElements, ScatterND

/// How a scatter combines an update with the element already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    pub fn parse(s: &str) -> OpResult<Reduction> {
        Ok(match s {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            other => return Err(format!("unknown scatter reduction '{other}'")),
        })
    }
    fn apply(self, old: f64, new: f64) -> f64 {
        match self {
            Reduction::None => new,
            Reduction::Add => old + new,
            Reduction::Mul => old * new,
            Reduction::Max => old.max(new),
            Reduction::Min => old.min(new),
        }
    }
}

/// Writes `updates` into a copy of `data` at computed flat offsets, in order.
fn scatter(data: &Tensor, updates: &Tensor, offsets: &[usize], reduction: Reduction) -> OpResult<Tensor> {
    if updates.dtype() != data.dtype() {
        return Err(format!("updates are {} but data is {}", updates.dtype(), data.dtype()));
    }
    if reduction == Reduction::None {
        let mut picks: Vec<Pick> = (0..data.len()).map(Pick::Own).collect();
        for (u, &o) in offsets.iter().enumerate() {
            picks[o] = Pick::Other(u);
        }
        let out = data.data().pick(updates.data(), picks.into_iter()).expect("types checked above");
        return Ok(Tensor::from_parts(data.shape().to_vec(), out));
    }
    let mut v = data.to_f64_vec();
    let u = updates.to_f64_vec();
    for (k, &o) in offsets.iter().enumerate() {
        v[o] = reduction.apply(v[o], u[k]);
    }
    Ok(Tensor::from_parts(data.shape().to_vec(), super::elementwise::from_f64(data.dtype(), v)))
}

/// ScatterElements (and the deprecated Scatter): `data[i with axis replaced by indices[i]] = updates[i]`.
#[derive(Debug)]
pub struct ScatterElements {
    pub name: &'static str,
    pub axis: i64,
    pub reduction: Reduction,
}

impl Op for ScatterElements {
    fn name(&self) -> &'static str {
        self.name
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, it, up) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?, required(inputs, 2, "updates")?);
        let s = x.shape();
        let axis = norm_axis(self.axis, s.len())?;
        if it.shape() != up.shape() || it.rank() != s.len() {
            return Err("indices and updates must have one shape, of data's rank".into());
        }
        let idx = tensor_ints(it, "indices")?;
        let st = strides(s);
        let mut pos = vec![0usize; s.len()];
        let offsets = (0..idx.len())
            .map(|k| {
                unravel(k, it.shape(), &mut pos);
                pos[axis] = norm_index(idx[k], s[axis])?;
                Ok(offset(&pos, &st))
            })
            .collect::<OpResult<Vec<usize>>>()?;
        Ok(vec![scatter(x, up, &offsets, self.reduction)?])
    }
    op_any!();
}

/// `data[indices[i…, :]] = updates[i…]` (slices of data when indices are short).
#[derive(Debug)]
pub struct ScatterNd {
    pub reduction: Reduction,
}

impl Op for ScatterNd {
    fn name(&self) -> &'static str {
        "ScatterND"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "data")?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, it, up) = (required(inputs, 0, "data")?, required(inputs, 1, "indices")?, required(inputs, 2, "updates")?);
        let (s, is) = (x.shape(), it.shape());
        let k = *is.last().ok_or("indices must have rank ≥ 1")?;
        if k > s.len() {
            return Err(format!("index tuples of {k} exceed data's rank {}", s.len()));
        }
        let idx = tensor_ints(it, "indices")?;
        let st = strides(s);
        let slice: usize = s[k..].iter().product();
        let n = idx.len() / k.max(1);
        if up.len() != n * slice {
            return Err(format!("updates hold {} elements, the indices address {}", up.len(), n * slice));
        }
        let mut offsets = Vec::with_capacity(up.len());
        for t in 0..n {
            let mut base = 0;
            for j in 0..k {
                base += norm_index(idx[t * k + j], s[j])? * st[j];
            }
            offsets.extend((0..slice).map(|e| base + e));
        }
        Ok(vec![scatter(x, up, &offsets, self.reduction)?])
    }
    op_any!();
}

// ---------------------------------------------------------------- OneHot

/// `values[1]` where the index equals the position along the new `axis`, `values[0]` elsewhere.
#[derive(Debug)]
pub struct OneHot {
    pub axis: i64,
}

impl OneHot {
    fn out_shape(&self, s: &[usize], depth: f64) -> OpResult<(usize, usize, Vec<usize>)> {
        if !(1.0..=1e9).contains(&depth) {
            return Err(format!("depth {depth} is not a positive size"));
        }
        let depth = depth as usize;
        let axis = norm_axis(self.axis, s.len() + 1)?;
        let mut out = s.to_vec();
        out.insert(axis, depth);
        Ok((axis, depth, out))
    }
}

impl Op for OneHot {
    fn name(&self) -> &'static str {
        "OneHot"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (i, d, v) = (required(inputs, 0, "indices")?, required(inputs, 1, "depth")?, required(inputs, 2, "values")?);
        let depth = d.const_scalar().ok_or("depth must be a constant scalar")?;
        Ok(vec![Fact::new(v.dtype, self.out_shape(&i.shape, depth)?.2)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (it, d, v) = (required(inputs, 0, "indices")?, required(inputs, 1, "depth")?, required(inputs, 2, "values")?);
        let (axis, depth, shape) = self.out_shape(it.shape(), d.scalar_value().ok_or("depth must hold one value")?)?;
        if v.len() != 2 {
            return Err("values must hold [off, on]".into());
        }
        let idx: Vec<i64> = it.to_f64_vec().into_iter().map(|x| x as i64).collect();
        let ist = strides(it.shape());
        remap(v, shape, None, |o| {
            let pos: usize = o.iter().enumerate().filter(|&(a, _)| a != axis).map(|(_, &i)| i).zip(&ist).map(|(i, s)| i * s).sum();
            let want = idx[pos];
            let want = if want < 0 { want + depth as i64 } else { want };
            Some(usize::from(want == o[axis] as i64))
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- Compress

/// The slices along `axis` (or elements of the flattened input) where `condition` is true.
/// The output size depends on the condition's values: it must be a constant.
#[derive(Debug)]
pub struct Compress {
    pub axis: Option<i64>,
}

impl Compress {
    fn plan(&self, s: &[usize], cond: &[i64]) -> OpResult<(Option<usize>, Vec<usize>, Vec<usize>)> {
        let (axis, len) = match self.axis {
            Some(a) => {
                let a = norm_axis(a, s.len())?;
                (Some(a), s[a])
            }
            None => (None, numel(s)),
        };
        if cond.len() > len {
            return Err(format!("condition has {} values for {len} slices", cond.len()));
        }
        let keep: Vec<usize> = cond.iter().enumerate().filter(|(_, &c)| c != 0).map(|(i, _)| i).collect();
        let shape = match axis {
            Some(a) => {
                let mut o = s.to_vec();
                o[a] = keep.len();
                o
            }
            None => vec![keep.len()],
        };
        Ok((axis, keep, shape))
    }
}

impl Op for Compress {
    fn name(&self) -> &'static str {
        "Compress"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![Fact::new(x.dtype, self.plan(&x.shape, &const_ints(required(inputs, 1, "condition")?, "condition")?)?.2)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let (axis, keep, shape) = self.plan(x.shape(), &tensor_ints(required(inputs, 1, "condition")?, "condition")?)?;
        let s = x.shape().to_vec();
        let st = strides(&s);
        remap(x, shape, None, |o| match axis {
            Some(a) => {
                let mut src = o.to_vec();
                src[a] = keep[o[a]];
                Some(offset(&src, &st))
            }
            None => Some(keep[o[0]]),
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- CastLike

/// Casts the first input to the second input's element type.
#[derive(Debug)]
pub struct CastLike;

impl Op for CastLike {
    fn name(&self) -> &'static str {
        "CastLike"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, like) = (required(inputs, 0, "input")?, required(inputs, 1, "target_type")?);
        Ok(vec![Fact::new(like.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, like) = (required(inputs, 0, "input")?, required(inputs, 1, "target_type")?);
        Ok(vec![super::elementwise::cast(x, like.dtype())])
    }
    op_any!();
}

/// Output facts of an op whose output sizes depend on input values (NonZero, Unique,
/// NonMaxSuppression): every input must be known when the model is planned (a constant, or a
/// graph input planned by value); the op is then evaluated on them.
pub(crate) fn infer_by_value(op: &dyn Op, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
    let values: Vec<Option<&Tensor>> = inputs
        .iter()
        .map(|f| {
            f.map(|f| {
                f.value.as_deref().ok_or_else(|| {
                    format!("{}'s output size depends on its inputs' values, which must be known when the model is planned", op.name())
                })
            })
            .transpose()
        })
        .collect::<OpResult<_>>()?;
    Ok(op.eval(&values, &EvalCtx::default())?.into_iter().map(|t| Fact::constant(Arc::new(t))).collect())
}

// ---------------------------------------------------------------- NonZero, Unique

/// The indices of the non-zero elements, one row per axis (int64, 2-D).
#[derive(Debug)]
pub struct NonZero;

impl Op for NonZero {
    fn name(&self) -> &'static str {
        "NonZero"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        infer_by_value(self, inputs)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let hits: Vec<usize> = x.to_f64_vec().iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, _)| i).collect();
        let r = s.len().max(1);
        let mut out = vec![0i64; r * hits.len()];
        let mut pos = vec![0usize; s.len()];
        for (k, &i) in hits.iter().enumerate() {
            unravel(i, s, &mut pos);
            for a in 0..s.len() {
                out[a * hits.len() + k] = pos[a] as i64;
            }
        }
        Ok(vec![Tensor::i64(vec![if s.is_empty() { 1 } else { s.len() }, hits.len()], out)])
    }
    op_any!();
}

/// The unique elements (or slices along `axis`), sorted or in order of first occurrence, with
/// first indices, inverse indices and counts.
#[derive(Debug)]
pub struct Unique {
    pub axis: Option<i64>,
    pub sorted: bool,
    pub outputs: usize,
}

impl Op for Unique {
    fn name(&self) -> &'static str {
        "Unique"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        infer_by_value(self, inputs)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape().to_vec();
        let (axis, count, inner, outer) = match self.axis {
            Some(a) => {
                let a = norm_axis(a, s.len())?;
                (Some(a), s[a], numel(&s[a + 1..]), numel(&s[..a]))
            }
            None => (None, x.len(), 1, 1),
        };
        let v = x.to_f64_vec();
        // Slice i as a key: its elements in row-major order.
        let key = |i: usize| -> Vec<f64> {
            (0..outer).flat_map(|o| (0..inner).map(move |j| (o, j))).map(|(o, j)| v[(o * count + i) * inner + j]).collect()
        };
        let keys: Vec<Vec<f64>> = (0..count).map(key).collect();
        let mut firsts: Vec<usize> = Vec::new();
        let mut inverse = vec![0usize; count];
        for i in 0..count {
            match firsts.iter().position(|&f| keys[f] == keys[i]) {
                Some(u) => inverse[i] = u,
                None => {
                    inverse[i] = firsts.len();
                    firsts.push(i);
                }
            }
        }
        let mut order: Vec<usize> = (0..firsts.len()).collect();
        if self.sorted {
            order.sort_by(|&a, &b| keys[firsts[a]].partial_cmp(&keys[firsts[b]]).unwrap_or(std::cmp::Ordering::Equal));
        }
        let mut rank = vec![0usize; firsts.len()];
        for (r, &u) in order.iter().enumerate() {
            rank[u] = r;
        }
        let picked: Vec<usize> = order.iter().map(|&u| firsts[u]).collect();
        let counts: Vec<i64> = order.iter().map(|&u| inverse.iter().filter(|&&i| i == u).count() as i64).collect();
        let y = match axis {
            None => Tensor::from_parts(vec![picked.len()], x.data().gather(picked.iter().copied())),
            Some(a) => {
                let mut shape = s.clone();
                shape[a] = picked.len();
                let idx = (0..outer).flat_map(|o| picked.iter().flat_map(move |&p| (0..inner).map(move |j| (o * count + p) * inner + j)));
                Tensor::from_parts(shape, x.data().gather(idx.collect::<Vec<_>>().into_iter()))
            }
        };
        let n = picked.len();
        let mut out = vec![
            y,
            Tensor::i64(vec![n], picked.iter().map(|&p| p as i64).collect()),
            Tensor::i64(vec![count], inverse.iter().map(|&u| rank[u] as i64).collect()),
            Tensor::i64(vec![n], counts),
        ];
        out.truncate(self.outputs.max(1));
        Ok(out)
    }
    op_any!();
}

// ---------------------------------------------------------------- MaxUnpool, Upsample

/// Scatters pooled values back to the positions MaxPool's Indices name; zeros elsewhere.
#[derive(Debug)]
pub struct MaxUnpool {
    pub kernel: Vec<i64>,
    pub pads: Option<Vec<i64>>,
    pub strides: Option<Vec<i64>>,
}

impl MaxUnpool {
    fn shapes(&self, x: &[usize], output_shape: Option<Vec<i64>>) -> OpResult<(Vec<usize>, Vec<usize>)> {
        let sp = self.kernel.len();
        if x.len() != sp + 2 {
            return Err(format!("X {x:?} does not match kernel_shape {:?}", self.kernel));
        }
        let get = |v: &Option<Vec<i64>>, i: usize, d: i64| v.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(d);
        let mut inferred = x[..2].to_vec();
        for a in 0..sp {
            let d = (x[2 + a] as i64 - 1)
                .checked_mul(get(&self.strides, a, 1))
                .and_then(|v| v.checked_sub(get(&self.pads, a, 0)))
                .and_then(|v| v.checked_sub(get(&self.pads, a + sp, 0)))
                .and_then(|v| v.checked_add(self.kernel[a]))
                .ok_or("kernel_shape, strides and pads overflow")?;
            inferred.push(usize::try_from(d).map_err(|_| format!("unpooled size {d} is negative"))?);
        }
        let out = match output_shape {
            Some(o) => o
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("output_shape {o:?} is negative")))
                .collect::<OpResult<Vec<_>>>()?,
            None => inferred.clone(),
        };
        if out.len() != inferred.len() || out.iter().zip(&inferred).any(|(o, i)| o < i) {
            return Err(format!("output_shape {out:?} is smaller than the unpooled {inferred:?}"));
        }
        Ok((inferred, out))
    }
}

impl Op for MaxUnpool {
    fn name(&self) -> &'static str {
        "MaxUnpool"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[2]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        let os = optional(inputs, 2).map(|f| const_ints(f, "output_shape")).transpose()?;
        Ok(vec![Fact::new(x.dtype, self.shapes(&x.shape, os)?.1)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, it) = (required(inputs, 0, "X")?, required(inputs, 1, "I")?);
        let os = optional(inputs, 2).map(|t| tensor_ints(t, "output_shape")).transpose()?;
        let (inferred, shape) = self.shapes(x.shape(), os)?;
        let idx = tensor_ints(it, "I")?;
        if idx.len() != x.len() {
            return Err("I must have X's shape".into());
        }
        crate::limits::check_tensor(x.dtype(), &inferred).map_err(|m| format!("unpooled tensor {m}"))?;
        let n = numel(&inferred);
        let mut target = vec![None; n];
        for (k, &i) in idx.iter().enumerate() {
            let i = usize::try_from(i).ok().filter(|&i| i < n).ok_or_else(|| format!("index {i} is outside the unpooled tensor"))?;
            target[i] = Some(k);
        }
        let ist = strides(&inferred);
        remap(x, shape, None, |o| {
            if o.iter().zip(&inferred).any(|(a, b)| a >= b) {
                return None;
            }
            target[offset(o, &ist)]
        })
    }
    op_any!();
}

/// Upsample (opsets 7–9): nearest-neighbour repetition by integer scales.
#[derive(Debug)]
pub struct Upsample {
    pub scales_attr: Option<Vec<f32>>,
}

impl Upsample {
    fn scales<T>(&self, inputs: &[Option<&T>], floats: impl Fn(&T) -> Option<Vec<f64>>) -> OpResult<Vec<usize>> {
        let s = match &self.scales_attr {
            Some(s) => s.iter().map(|&v| v as f64).collect(),
            None => floats(required(inputs, 1, "scales")?).ok_or("scales must be known when the model is planned")?,
        };
        s.iter()
            .map(|&v| {
                if v >= 1.0 && v.fract() == 0.0 && v < 1e6 {
                    Ok(v as usize)
                } else {
                    Err(format!("Upsample supports integer scales ≥ 1 (nearest), got {v}"))
                }
            })
            .collect()
    }
}

impl Op for Upsample {
    fn name(&self) -> &'static str {
        "Upsample"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        let s = self.scales(inputs, |f| f.value.as_ref().map(|t| t.to_f64_vec()))?;
        if s.len() != x.shape.len() {
            return Err(format!("scales {s:?} do not match X {:?}", x.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.iter().zip(&s).map(|(d, k)| d * k).collect())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = self.scales(inputs, |t| Some(t.to_f64_vec()))?;
        let xs = x.shape().to_vec();
        if s.len() != xs.len() {
            return Err(format!("scales {s:?} do not match X {xs:?}"));
        }
        let st = strides(&xs);
        let shape: Vec<usize> = xs.iter().zip(&s).map(|(d, k)| d * k).collect();
        remap(x, shape, None, |o| Some(o.iter().zip(&s).zip(&st).map(|((i, k), st)| i / k * st).sum()))
    }
    op_any!();
}

// ---------------------------------------------------------------- BitCast

/// Reinterprets the bytes of each element as another type of the same width.
#[derive(Debug)]
pub struct BitCast {
    pub to: crate::tensor::DType,
}

impl Op for BitCast {
    fn name(&self) -> &'static str {
        "BitCast"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        if x.dtype.size() != self.to.size() {
            return Err(format!("BitCast needs types of one width: {} and {}", x.dtype, self.to));
        }
        Ok(vec![Fact::new(self.to, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        if x.dtype().size() != self.to.size() {
            return Err(format!("BitCast needs types of one width: {} and {}", x.dtype(), self.to));
        }
        Ok(vec![Tensor::from_parts(x.shape().to_vec(), Data::from_le_bytes(self.to, &x.data().to_le_bytes()))])
    }
    op_any!();
}
