//! Compute-heavy float ops: MatMul, Gemm, Conv, Softmax, LayerNormalization.

use std::sync::Arc;

use octet_kernels::f32::{self as k, MatLayout, Threads};
use rayon::prelude::*;

use super::broadcast::{broadcast_shapes, broadcast_strides};
use super::elementwise::UnaryKind;
use super::parallel::fill_row_blocks;
use crate::error::OpResult;
use crate::op::{norm_axis, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, strides, DType, Tensor};

pub(crate) fn f32_of<'a>(t: &'a Tensor, what: &str) -> OpResult<&'a [f32]> {
    t.as_f32().ok_or_else(|| format!("{what} must be float32, got {}", t.dtype()))
}

pub(crate) fn expect_f32(f: &Fact, what: &str) -> OpResult<()> {
    if f.dtype != DType::F32 {
        return Err(format!("{what} must be float32, got {}", f.dtype));
    }
    Ok(())
}

// ---------------------------------------------------------------- MatMul

/// Numpy matmul: batched over leading axes with broadcasting; 1-D operands are promoted.
#[derive(Debug)]
pub struct MatMul;

/// The shapes of a numpy matmul: batch shape, M, K, N and the output shape.
pub(crate) struct MatMulDims {
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    pub(crate) out: Vec<usize>,
}

pub(crate) fn matmul_dims(a: &[usize], b: &[usize]) -> OpResult<MatMulDims> {
    if a.is_empty() || b.is_empty() {
        return Err("operands must have rank ≥ 1".into());
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, ka) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if ka != kb {
        return Err(format!("inner dimensions differ: A {a:?}, B {b:?}"));
    }
    let batch = broadcast_shapes(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MatMulDims { batch, m, k: ka, n, out })
}

/// Exact integer numpy matmul (for MatMulInteger and QLinearMatMul): returns the `out`-shaped
/// product of already zero-point-shifted operands.
pub(crate) fn integer_matmul(a: &[i64], a_shape: &[usize], b: &[i64], b_shape: &[usize]) -> OpResult<(Vec<i64>, Vec<usize>)> {
    let d = matmul_dims(a_shape, b_shape)?;
    let (m, kk, n) = (d.m, d.k, d.n);
    let a2: Vec<usize> = if a_shape.len() == 1 { vec![1, a_shape[0]] } else { a_shape.to_vec() };
    let b2: Vec<usize> = if b_shape.len() == 1 { vec![b_shape[0], 1] } else { b_shape.to_vec() };
    let (sa, sb) = (broadcast_strides(&a2[..a2.len() - 2], &d.batch), broadcast_strides(&b2[..b2.len() - 2], &d.batch));
    let mut c = vec![0i64; numel(&d.batch) * m * n];
    let mut idx = vec![0usize; d.batch.len()];
    for (bi, block) in c.chunks_mut(m * n).enumerate() {
        super::layout::unravel(bi, &d.batch, &mut idx);
        let ao: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum::<usize>() * m * kk;
        let bo: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum::<usize>() * kk * n;
        for i in 0..m {
            for p in 0..kk {
                let av = a[ao + i * kk + p];
                for j in 0..n {
                    block[i * n + j] += av * b[bo + p * n + j];
                }
            }
        }
    }
    Ok((c, d.out))
}

/// `c = a · b` for numpy-matmul operands; `c` is `out`-shaped and zero-initialised by the caller.
fn batched_matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], d: &MatMulDims, c: &mut [f32], threads: usize) {
    let (m, kk, n) = (d.m, d.k, d.n);
    let a_batch = &a_shape[..a_shape.len().saturating_sub(2)];
    let b_batch = &b_shape[..b_shape.len().saturating_sub(2)];
    let nb = numel(&d.batch);
    if b_shape.len() <= 2 && a_shape.len() >= 2 {
        // Weights shared by every batch entry: one tall matmul.
        k::matmul(nb * m, n, kk, a, MatLayout::row_major(kk), b, MatLayout::row_major(n), c, false, Threads(threads));
        return;
    }
    let sa = broadcast_strides(a_batch, &d.batch);
    let sb = broadcast_strides(b_batch, &d.batch);
    let bst = strides(&d.batch);
    let offset = |i: usize, st: &[usize], per: usize| -> usize {
        bst.iter().zip(st).enumerate().map(|(ax, (&o, &s))| (i / o) % d.batch[ax] * s).sum::<usize>() * per
    };
    let run = |(i, ci): (usize, &mut [f32])| {
        let (ao, bo) = (offset(i, &sa, 1) * m * kk, offset(i, &sb, 1) * kk * n);
        k::matmul(m, n, kk, &a[ao..], MatLayout::row_major(kk), &b[bo..], MatLayout::row_major(n), ci, false, Threads(1));
    };
    if threads > 1 && nb > 1 {
        c.par_chunks_mut(m * n).enumerate().for_each(run);
    } else {
        c.chunks_mut(m * n).enumerate().for_each(run);
    }
}

impl Op for MatMul {
    fn name(&self) -> &'static str {
        "MatMul"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        expect_f32(a, "A")?;
        expect_f32(b, "B")?;
        Ok(vec![Fact::new(DType::F32, matmul_dims(&a.shape, &b.shape)?.out)])
    }
    fn multiply_adds(&self, inputs: &[Option<&Fact>]) -> u64 {
        match (optional(inputs, 0), optional(inputs, 1)) {
            (Some(a), Some(b)) => {
                matmul_dims(&a.shape, &b.shape).map_or(0, |d| numel(&d.out) as u64 * *a.shape.last().unwrap_or(&1) as u64)
            }
            _ => 0,
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let d = matmul_dims(a.shape(), b.shape())?;
        let mut c = vec![0.0f32; numel(&d.out)];
        let (ash, bsh): (Vec<usize>, Vec<usize>) = (
            if a.rank() == 1 { vec![1, a.shape()[0]] } else { a.shape().to_vec() },
            if b.rank() == 1 { vec![b.shape()[0], 1] } else { b.shape().to_vec() },
        );
        batched_matmul(f32_of(a, "A")?, &ash, f32_of(b, "B")?, &bsh, &d, &mut c, ctx.threads);
        Ok(vec![Tensor::f32(d.out, c)])
    }
    op_any!();
}

/// `A · B (+ bias)`, then an activation, then a residual added, for a constant `B[k×n]` held
/// packed in panels: a MatMul whose weights a session packed once
/// ([`crate::rewrite::pack_matmul_weights`]) and, in plans that nobody observes value by value,
/// the bias Add, the activation and the residual Add that followed it
/// ([`crate::rewrite::FuseMatMulBias`], [`crate::rewrite::FuseMatMulActivation`],
/// [`crate::rewrite::FuseMatMulResidual`]). Inputs: `A[…, k]`, then `bias[n]` when `bias` is
/// set, then the residual (the output's shape) when `residual` is set.
#[derive(Debug)]
pub struct PackedMatMul {
    pub b: Arc<k::PanelMatrix>,
    pub bias: bool,
    /// An elementwise op with a vectorised float kernel ([`UnaryKind::f32_kernel`]).
    pub activation: Option<UnaryKind>,
    pub residual: bool,
}

impl PackedMatMul {
    /// The index of the residual input.
    fn residual_input(&self) -> usize {
        1 + self.bias as usize
    }
}

impl Op for PackedMatMul {
    fn name(&self) -> &'static str {
        "PackedMatMul"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let a = required(inputs, 0, "A")?;
        expect_f32(a, "A")?;
        if a.shape.last() != Some(&self.b.k()) {
            return Err(format!("A has shape {:?}, the packed B has {} rows", a.shape, self.b.k()));
        }
        if self.bias {
            let bias = required(inputs, 1, "bias")?;
            expect_f32(bias, "bias")?;
            if numel(&bias.shape) != self.b.n() {
                return Err(format!("bias has shape {:?}, not {} values", bias.shape, self.b.n()));
            }
        }
        let mut out = a.shape.clone();
        *out.last_mut().expect("checked above") = self.b.n();
        if self.residual {
            let r = required(inputs, self.residual_input(), "residual")?;
            expect_f32(r, "residual")?;
            if r.shape != out {
                return Err(format!("residual has shape {:?}, the output {out:?}", r.shape));
            }
        }
        Ok(vec![Fact::new(DType::F32, out)])
    }
    fn multiply_adds(&self, inputs: &[Option<&Fact>]) -> u64 {
        optional(inputs, 0).map_or(0, |a| (numel(&a.shape) as u64 / self.b.k().max(1) as u64) * (self.b.k() * self.b.n()) as u64)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let a = required(inputs, 0, "A")?;
        let bias = if self.bias { Some(f32_of(required(inputs, 1, "bias")?, "bias")?) } else { None };
        let mut out = a.shape().to_vec();
        *out.last_mut().ok_or("A must not be a scalar")? = self.b.n();
        let m = numel(&a.shape()[..a.rank() - 1]);
        let len = numel(&out);
        let residual = if self.residual { Some(f32_of(required(inputs, self.residual_input(), "residual")?, "residual")?) } else { None };
        if residual.is_some_and(|r| r.len() != len) {
            return Err(format!("the residual does not hold the output's {len} values"));
        }
        let mut c = Vec::with_capacity(len);
        let epilogue = self.activation.and_then(UnaryKind::f32_kernel);
        self.b.matmul(m, f32_of(a, "A")?, bias, epilogue, residual, &mut c.spare_capacity_mut()[..len], Threads(ctx.threads));
        // SAFETY: `matmul` wrote all `m × n = len` outputs.
        unsafe { c.set_len(len) };
        Ok(vec![Tensor::f32(out, c)])
    }
    op_any!();
}

// ---------------------------------------------------------------- Gemm

/// `Y = alpha · A' · B' + beta · C` with optional transposes and a broadcast C.
#[derive(Debug)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Gemm {
    fn dims(&self, a: &[usize], b: &[usize]) -> OpResult<(usize, usize, usize)> {
        if a.len() != 2 || b.len() != 2 {
            return Err(format!("A {a:?} and B {b:?} must be 2-D"));
        }
        let (m, ka) = if self.trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
        let (kb, n) = if self.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
        if ka != kb {
            return Err(format!("inner dimensions differ: A {a:?}, B {b:?} (transA={}, transB={})", self.trans_a, self.trans_b));
        }
        Ok((m, ka, n))
    }
}

impl Op for Gemm {
    fn name(&self) -> &'static str {
        "Gemm"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        expect_f32(a, "A")?;
        let (m, _, n) = self.dims(&a.shape, &b.shape)?;
        if let Some(c) = optional(inputs, 2) {
            broadcast_shapes(&[&c.shape, &[m, n]])?;
        }
        Ok(vec![Fact::new(DType::F32, vec![m, n])])
    }
    fn multiply_adds(&self, inputs: &[Option<&Fact>]) -> u64 {
        match (optional(inputs, 0), optional(inputs, 1)) {
            (Some(a), Some(b)) => self.dims(&a.shape, &b.shape).map_or(0, |(m, k, n)| (m * k * n) as u64),
            _ => 0,
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let (m, kk, n) = self.dims(a.shape(), b.shape())?;
        let mut y = vec![0.0f32; m * n];
        let la = if self.trans_a { MatLayout::transposed(m) } else { MatLayout::row_major(kk) };
        let lb = if self.trans_b { MatLayout::transposed(kk) } else { MatLayout::row_major(n) };
        k::matmul(m, n, kk, f32_of(a, "A")?, la, f32_of(b, "B")?, lb, &mut y, false, Threads(ctx.threads));
        if self.alpha != 1.0 {
            y.iter_mut().for_each(|v| *v *= self.alpha);
        }
        if let Some(c) = optional(inputs, 2).filter(|_| self.beta != 0.0) {
            if broadcast_shapes(&[c.shape(), &[m, n]])? != [m, n] {
                return Err(format!("C {:?} does not broadcast to [{m}, {n}]", c.shape()));
            }
            let st = broadcast_strides(c.shape(), &[m, n]);
            let cv = f32_of(c, "C")?;
            for (i, row) in y.chunks_mut(n.max(1)).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v += self.beta * cv[i * st[0] + j * st[1]];
                }
            }
        }
        Ok(vec![Tensor::f32(vec![m, n], y)])
    }
    op_any!();
}

// ---------------------------------------------------------------- Conv

/// 1-D and 2-D convolution with groups, strides, dilations and explicit or `auto_pad` padding,
/// as im2col followed by a matmul per group.
#[derive(Debug)]
pub struct Conv {
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub auto_pad: String,
    pub group: usize,
}

struct ConvGeom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    dil: [usize; 2],
    pad: [usize; 2],
    oh: usize,
    ow: usize,
}

impl Conv {
    fn geom(&self, x: &[usize], w: &[usize]) -> OpResult<ConvGeom> {
        let spatial = x.len().checked_sub(2).ok_or("X must have rank ≥ 3")?;
        if !(1..=2).contains(&spatial) || w.len() != x.len() {
            return Err(format!("only 1-D and 2-D convolutions are supported: X {x:?}, W {w:?}"));
        }
        let attrs = super::pool::WindowAttrs {
            strides: self.strides.as_deref(),
            dilations: self.dilations.as_deref(),
            pads: self.pads.as_deref(),
            auto_pad: &self.auto_pad,
            ceil_mode: false,
        };
        let axes = super::pool::window_geometry(&x[2..], &w[2..], &attrs)?;
        // A 1-D convolution is a 2-D one over a height of 1.
        let unit = super::pool::Axis { size: 1, kernel: 1, stride: 1, dilation: 1, pad_begin: 0, pad_end: 0, out: 1 };
        let [hy, wx] = if spatial == 2 { [axes[0], axes[1]] } else { [unit, axes[0]] };
        let (h, kh, wd, kw) = (hy.size, hy.kernel, wx.size, wx.kernel);
        let (stride, dil, pad_begin, out) =
            ([hy.stride, wx.stride], [hy.dilation, wx.dilation], [hy.pad_begin, wx.pad_begin], [hy.out, wx.out]);
        let g = self.group.max(1);
        if x[1] != w[1] * g || !w[0].is_multiple_of(g) {
            return Err(format!("channels of X {x:?} and W {w:?} do not match group {g}"));
        }
        Ok(ConvGeom { n: x[0], c: x[1], h, w: wd, m: w[0], kh, kw, stride, dil, pad: pad_begin, oh: out[0], ow: out[1] })
    }

    fn out_shape(g: &ConvGeom, rank: usize) -> Vec<usize> {
        if rank == 4 {
            vec![g.n, g.m, g.oh, g.ow]
        } else {
            vec![g.n, g.m, g.ow]
        }
    }
}

impl Op for Conv {
    fn name(&self) -> &'static str {
        "Conv"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, w) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?);
        expect_f32(x, "X")?;
        Ok(vec![Fact::new(DType::F32, Self::out_shape(&self.geom(&x.shape, &w.shape)?, x.shape.len()))])
    }
    fn multiply_adds(&self, inputs: &[Option<&Fact>]) -> u64 {
        // Every output value sums C/group · kernel-size products: W's shape after its first dim.
        match (optional(inputs, 0), optional(inputs, 1)) {
            (Some(x), Some(w)) => self
                .geom(&x.shape, &w.shape)
                .map_or(0, |g| numel(&Self::out_shape(&g, x.shape.len())) as u64 * w.shape.iter().skip(1).product::<usize>() as u64),
            _ => 0,
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, w) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?);
        let g = self.geom(x.shape(), w.shape())?;
        let (xv, wv) = (f32_of(x, "X")?, f32_of(w, "W")?);
        let groups = self.group.max(1);
        let (cg, mg) = (g.c / groups, g.m / groups);
        let kdim = cg * g.kh * g.kw;
        let pixels = g.oh * g.ow;
        let mut out = vec![0.0f32; g.n * g.m * pixels];
        let mut col = vec![0.0f32; kdim * pixels];
        for n in 0..g.n {
            for gi in 0..groups {
                for ci in 0..cg {
                    let plane = &xv[((n * g.c) + gi * cg + ci) * g.h * g.w..][..g.h * g.w];
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let row = &mut col[((ci * g.kh + ky) * g.kw + kx) * pixels..][..pixels];
                            for oy in 0..g.oh {
                                let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                                for ox in 0..g.ow {
                                    let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                                    row[oy * g.ow + ox] = if iy >= 0 && (iy as usize) < g.h && ix >= 0 && (ix as usize) < g.w {
                                        plane[iy as usize * g.w + ix as usize]
                                    } else {
                                        0.0
                                    };
                                }
                            }
                        }
                    }
                }
                let dst = &mut out[(n * g.m + gi * mg) * pixels..][..mg * pixels];
                let wg = &wv[gi * mg * kdim..][..mg * kdim];
                k::matmul(
                    mg,
                    pixels,
                    kdim,
                    wg,
                    MatLayout::row_major(kdim),
                    &col,
                    MatLayout::row_major(pixels),
                    dst,
                    false,
                    Threads(ctx.threads),
                );
            }
        }
        if let Some(b) = optional(inputs, 2) {
            let bv = f32_of(b, "B")?;
            if bv.len() != g.m {
                return Err(format!("bias has {} values for {} output channels", bv.len(), g.m));
            }
            for (i, plane) in out.chunks_mut(pixels.max(1)).enumerate() {
                let bias = bv[i % g.m];
                plane.iter_mut().for_each(|v| *v += bias);
            }
        }
        Ok(vec![Tensor::f32(Self::out_shape(&g, x.rank()), out)])
    }
    op_any!();
}

// ---------------------------------------------------------------- Softmax

/// Which row function a [`Softmax`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    /// 1 at the first maximum of the row, 0 elsewhere.
    Hardmax,
}

/// Softmax, LogSoftmax or Hardmax along `axis`. Opset < 13 treats the input as 2-D, flattened
/// at `axis`. float16 and float64 inputs are computed in f32.
#[derive(Debug)]
pub struct Softmax {
    pub kind: SoftmaxKind,
    pub axis: i64,
    pub flatten: bool,
}

impl Softmax {
    /// Whether this is a Softmax (not LogSoftmax or Hardmax) over the last axis of a
    /// rank-`rank` input.
    pub fn is_softmax_over_last_axis(&self, rank: usize) -> bool {
        self.kind == SoftmaxKind::Softmax && (self.axis == -1 || self.axis == rank as i64 - 1)
    }
    fn rows(&self, row: &mut [f32]) {
        match self.kind {
            SoftmaxKind::Softmax => k::softmax_rows(row, row.len()),
            SoftmaxKind::LogSoftmax => {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
                let log = sum.ln() as f32;
                row.iter_mut().for_each(|v| *v = *v - max - log);
            }
            SoftmaxKind::Hardmax => {
                let first = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
                row.iter_mut().enumerate().for_each(|(i, v)| *v = if i == first { 1.0 } else { 0.0 });
            }
        }
    }
}

impl Op for Softmax {
    fn name(&self) -> &'static str {
        match self.kind {
            SoftmaxKind::Softmax => "Softmax",
            SoftmaxKind::LogSoftmax => "LogSoftmax",
            SoftmaxKind::Hardmax => "Hardmax",
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        if !x.dtype.is_float() {
            return Err(format!("{} takes floats, got {}", self.name(), x.dtype));
        }
        norm_axis(self.axis, x.shape.len())?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let axis = norm_axis(self.axis, x.rank())?;
        let s = x.shape();
        let (row, inner) = if self.flatten { (numel(&s[axis..]), 1) } else { (s[axis], numel(&s[axis + 1..])) };
        if let (Some(v), true) = (x.as_f32(), inner == 1 && row > 0 && self.kind == SoftmaxKind::Softmax) {
            let out = fill_row_blocks(v.len(), row, ctx.threads, |first, rows| {
                rows.iter_mut().zip(&v[first * row..]).for_each(|(o, &x)| {
                    o.write(x);
                });
                // SAFETY: every element was just written.
                k::softmax_rows(unsafe { rows.assume_init_mut() }, row);
            });
            return Ok(vec![Tensor::f32(s.to_vec(), out)]);
        }
        let mut out = match x.as_f32() {
            Some(v) => v.to_vec(),
            None => x.to_f64_vec().into_iter().map(|v| v as f32).collect(),
        };
        if row > 0 {
            if inner == 1 && self.kind == SoftmaxKind::Softmax {
                k::softmax_rows(&mut out, row);
            } else if inner == 1 {
                out.chunks_mut(row).for_each(|r| self.rows(r));
            } else {
                let mut buf = vec![0.0f32; row];
                for block in out.chunks_mut(row * inner) {
                    for j in 0..inner {
                        buf.iter_mut().enumerate().for_each(|(i, b)| *b = block[i * inner + j]);
                        self.rows(&mut buf);
                        buf.iter().enumerate().for_each(|(i, b)| block[i * inner + j] = *b);
                    }
                }
            }
        }
        let t = Tensor::f32(s.to_vec(), out);
        Ok(vec![if x.dtype() == DType::F32 { t } else { super::elementwise::cast(&t, x.dtype()) }])
    }
    op_any!();
}

// ---------------------------------------------------------------- LayerNormalization

/// LayerNorm over the axes from `axis` on; with `stats`, also the outputs Mean and InvStdDev.
#[derive(Debug)]
pub struct LayerNorm {
    pub axis: i64,
    pub epsilon: f32,
    pub stats: bool,
}

impl LayerNorm {
    fn split(&self, s: &[usize]) -> OpResult<(usize, usize)> {
        let axis = norm_axis(self.axis, s.len())?;
        Ok((axis, numel(&s[axis..])))
    }
    fn stat_shape(s: &[usize], axis: usize) -> Vec<usize> {
        s.iter().enumerate().map(|(i, &d)| if i < axis { d } else { 1 }).collect()
    }
    /// A scale or bias operand spread over the normalised block (numpy broadcast onto it).
    fn spread(t: &Tensor, block: &[usize]) -> OpResult<Vec<f32>> {
        let v = f32_of(t, "scale/bias")?;
        if t.shape() == block || v.len() == numel(block) {
            return Ok(v.to_vec());
        }
        broadcast_shapes(&[t.shape(), block])?;
        let st = broadcast_strides(t.shape(), block);
        let bst = strides(block);
        Ok((0..numel(block))
            .map(|i| v[bst.iter().zip(&st).enumerate().map(|(a, (&o, &s))| (i / o) % block[a] * s).sum::<usize>()])
            .collect())
    }
}

impl Op for LayerNorm {
    fn name(&self) -> &'static str {
        "LayerNormalization"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        expect_f32(x, "X")?;
        let (axis, _) = self.split(&x.shape)?;
        let mut out = vec![Fact::new(DType::F32, x.shape.clone())];
        if self.stats {
            let stats = Self::stat_shape(&x.shape, axis);
            out.extend([Fact::new(DType::F32, stats.clone()), Fact::new(DType::F32, stats)]);
        }
        Ok(out)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let (axis, row) = self.split(x.shape())?;
        let block = &x.shape()[axis..];
        let gamma = optional(inputs, 1).map(|t| Self::spread(t, block)).transpose()?.unwrap_or_default();
        let beta = optional(inputs, 2).map(|t| Self::spread(t, block)).transpose()?.unwrap_or_default();
        let xv = f32_of(x, "X")?;
        let y = fill_row_blocks(xv.len(), row, ctx.threads, |first, y| {
            y.fill(std::mem::MaybeUninit::new(0.0));
            // SAFETY: just initialised.
            let y = unsafe { y.assume_init_mut() };
            k::layer_norm_rows(&xv[first * row..first * row + y.len()], y, row, &gamma, &beta, self.epsilon)
        });
        let y = Tensor::f32(x.shape().to_vec(), y);
        if !self.stats {
            return Ok(vec![y]);
        }
        let rows = xv.len() / row.max(1);
        let (mut mean, mut inv) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        for r in xv.chunks(row.max(1)) {
            let m = r.iter().sum::<f32>() / row as f32;
            let var = r.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / row as f32;
            mean.push(m);
            inv.push(1.0 / (var + self.epsilon).sqrt());
        }
        let stats = Self::stat_shape(x.shape(), axis);
        Ok(vec![y, Tensor::f32(stats.clone(), mean), Tensor::f32(stats, inv)])
    }
    op_any!();
}

// ---------------------------------------------------------------- ConvTranspose

/// Transposed convolution over any number of spatial axes, with groups, strides, dilations,
/// output padding, explicit pads, `auto_pad` or `output_shape` (as ONNX's reference computes
/// them). Computed in f64 by scattering each input element through the kernel.
#[derive(Debug)]
pub struct ConvTranspose {
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub output_padding: Option<Vec<i64>>,
    pub output_shape: Option<Vec<i64>>,
    pub auto_pad: String,
    pub group: usize,
}

/// Per spatial axis: stride, dilation, padding before, output size.
struct TransposeAxis {
    stride: usize,
    dilation: usize,
    pad_begin: i64,
    out: usize,
}

impl ConvTranspose {
    fn geometry(&self, x: &[usize], w: &[usize]) -> OpResult<Vec<TransposeAxis>> {
        let sp = x.len().checked_sub(2).filter(|&s| s > 0).ok_or("X must have N, C and spatial axes")?;
        let g = self.group.max(1);
        if w.len() != x.len() || w[0] != x[1] || !x[1].is_multiple_of(g) {
            return Err(format!("W {w:?} does not fit X {x:?} with group {g}"));
        }
        let get = |v: &Option<Vec<i64>>, i: usize, d: i64| v.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(d);
        let same = matches!(self.auto_pad.as_str(), "SAME_UPPER" | "SAME_LOWER");
        (0..sp)
            .map(|i| {
                let stride = usize::try_from(get(&self.strides, i, 1)).ok().filter(|&s| s > 0).ok_or("strides must be positive")?;
                let dilation = usize::try_from(get(&self.dilations, i, 1)).ok().filter(|&s| s > 0).ok_or("dilations must be positive")?;
                let overflow = || format!("strides, dilations and output_padding overflow along spatial axis {i}");
                let eff = (w[2 + i] as i64 - 1).checked_mul(dilation as i64).and_then(|v| v.checked_add(1)).ok_or_else(overflow)?.max(0);
                let full = (stride as i64)
                    .checked_mul(x[2 + i] as i64 - 1)
                    .and_then(|v| v.checked_add(get(&self.output_padding, i, 0)))
                    .and_then(|v| v.checked_add(eff))
                    .ok_or_else(overflow)?;
                let (pad_begin, out) = if self.pads.is_none() && same {
                    let out = self
                        .output_shape
                        .as_ref()
                        .and_then(|o| o.get(o.len().wrapping_sub(sp).wrapping_add(i)).copied())
                        .unwrap_or((x[2 + i] as i64).saturating_mul(stride as i64));
                    let total = full.checked_sub(out).ok_or_else(overflow)?;
                    let begin = if self.auto_pad == "SAME_UPPER" { total / 2 } else { total - total / 2 };
                    (begin, out)
                } else {
                    let (pb, pe) = (get(&self.pads, i, 0), get(&self.pads, i + sp, 0));
                    let out = match self.output_shape.as_ref().and_then(|o| o.get(o.len().wrapping_sub(sp).wrapping_add(i)).copied()) {
                        Some(o) => o,
                        None => full.checked_sub(pb).and_then(|v| v.checked_sub(pe)).ok_or_else(overflow)?,
                    };
                    (pb, out)
                };
                let out = usize::try_from(out).map_err(|_| format!("output size {out} along spatial axis {i} is negative"))?;
                Ok(TransposeAxis { stride, dilation, pad_begin, out })
            })
            .collect()
    }
}

impl Op for ConvTranspose {
    fn name(&self) -> &'static str {
        "ConvTranspose"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, w) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?);
        if !x.dtype.is_float() {
            return Err(format!("ConvTranspose takes floats, got {}", x.dtype));
        }
        let g = self.geometry(&x.shape, &w.shape)?;
        Ok(vec![Fact::new(x.dtype, [x.shape[0], w.shape[1] * self.group.max(1)].into_iter().chain(g.iter().map(|a| a.out)).collect())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (xt, wt) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?);
        let (xs, ws) = (xt.shape(), wt.shape());
        let geo = self.geometry(xs, ws)?;
        let groups = self.group.max(1);
        let (cg, mg) = (xs[1] / groups, ws[1]);
        let m = mg * groups;
        let in_sp = &xs[2..];
        let k_sp = &ws[2..];
        let out_sp: Vec<usize> = geo.iter().map(|a| a.out).collect();
        let (in_plane, k_plane, out_plane) = (numel(in_sp), numel(k_sp), numel(&out_sp));
        let ost = strides(&out_sp);
        let (x, w) = (xt.to_f64_vec(), wt.to_f64_vec());
        let bias = optional(inputs, 2).map(|b| b.to_f64_vec());
        let mut y = vec![0.0f64; xs[0] * m * out_plane];
        let (mut ip, mut kp) = (vec![0usize; in_sp.len()], vec![0usize; k_sp.len()]);
        crate::limits::check_tensor(DType::I64, &[in_plane, k_plane])
            .map_err(|m| format!("the scatter table of input positions × kernel taps: {m}"))?;
        let mut targets = vec![None; in_plane * k_plane];
        for i in 0..in_plane {
            super::layout::unravel(i, in_sp, &mut ip);
            for k in 0..k_plane {
                super::layout::unravel(k, k_sp, &mut kp);
                let mut off = 0usize;
                let mut inside = true;
                for (a, ax) in geo.iter().enumerate() {
                    let o = (ip[a] * ax.stride + kp[a] * ax.dilation) as i64 - ax.pad_begin;
                    if o < 0 || o >= ax.out as i64 {
                        inside = false;
                        break;
                    }
                    off += o as usize * ost[a];
                }
                targets[i * k_plane + k] = inside.then_some(off);
            }
        }
        for n in 0..xs[0] {
            for g in 0..groups {
                for c in 0..cg {
                    let ci = g * cg + c;
                    let xrow = &x[(n * xs[1] + ci) * in_plane..][..in_plane];
                    for mo in 0..mg {
                        let wrow = &w[(ci * mg + mo) * k_plane..][..k_plane];
                        let yrow = &mut y[(n * m + g * mg + mo) * out_plane..][..out_plane];
                        for (i, &xv) in xrow.iter().enumerate() {
                            for (k, &wv) in wrow.iter().enumerate() {
                                if let Some(o) = targets[i * k_plane + k] {
                                    yrow[o] += xv * wv;
                                }
                            }
                        }
                    }
                }
            }
            if let Some(b) = &bias {
                for (mo, &bv) in b.iter().enumerate().take(m) {
                    y[(n * m + mo) * out_plane..][..out_plane].iter_mut().for_each(|e| *e += bv);
                }
            }
        }
        let shape = [xs[0], m].into_iter().chain(out_sp).collect();
        Ok(vec![Tensor::from_parts(shape, super::elementwise::from_f64(xt.dtype(), y))])
    }
    op_any!();
}
