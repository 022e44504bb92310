//! The int8 ops the lowering produces. Each computes what its QDQ pattern `dq → op → q` means
//! (doc/quantization.md, section 7): table ops bit for bit, the others within one output step.

use std::sync::Arc;

use octet_graph::op::{optional, required, EvalCtx, Fact, Op};
use octet_graph::ops::attention::OperandView;
use octet_graph::ops::broadcast::{binary, broadcast_shapes};
use octet_graph::ops::elementwise::BinaryKind;
use octet_graph::ops::parallel::{fill_interleaved_chunks, fill_row_blocks};
use octet_graph::tensor::numel;
use octet_graph::{op_any, DType, Data, Tensor};
use octet_kernels::i8::elementwise::{self as ew, Arith};
use octet_kernels::i8::{gemm_kernel_name, gemm_u16s8_epilogue, gemm_u8s8_epilogue, Epilogue, OutType, PackedB};
pub use octet_kernels::Affine;
use octet_kernels::Isa;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The tensor type of codes with these parameters.
pub trait CodeType {
    fn dtype(self) -> DType;
}

impl CodeType for Affine {
    fn dtype(self) -> DType {
        if self.signed {
            DType::I8
        } else {
            DType::U8
        }
    }
}

/// An 8-bit tensor's storage as bytes (s8 as two's complement).
pub fn bytes(t: &Tensor) -> Result<&[u8], String> {
    match t.data() {
        Data::U8(v) => Ok(v),
        // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
        Data::I8(v) => Ok(unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len()) }),
        d => Err(format!("expected an 8-bit tensor, got {}", d.dtype())),
    }
}

/// The left operand as u8 with its zero point (s8 is shifted by +128, eq. 9).
fn as_u8(t: &Tensor, p: Affine) -> Result<(std::borrow::Cow<'_, [u8]>, i32), String> {
    match t.data() {
        Data::U8(v) if !p.signed => Ok((std::borrow::Cow::Borrowed(v), p.zero_point)),
        Data::I8(v) if p.signed => {
            Ok((std::borrow::Cow::Owned(v.iter().map(|&x| (x as u8) ^ p.flip_to_u8()).collect()), p.u8_zero_point()))
        }
        d => Err(format!("input is {} but its parameters say {}", d.dtype(), p.dtype())),
    }
}

/// A tensor from 8-bit output bytes.
fn q_tensor(shape: Vec<usize>, bytes: Vec<u8>, signed: bool) -> Tensor {
    let data = if signed { Data::I8(bytes.into_iter().map(|b| b as i8).collect()) } else { Data::U8(bytes) };
    Tensor::from_parts(shape, data)
}

/// What a lowered op writes: 8-bit with parameters, or f32.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    Quantized(Affine),
    F32,
}

impl Output {
    fn dtype(self) -> DType {
        match self {
            Output::Quantized(p) => p.dtype(),
            Output::F32 => DType::F32,
        }
    }
}

/// The left operand of a product with constant weights: u8 codes with zero point 0 (the input's
/// zero point folded into the bias, [`weights_epilogue`]), or 16-bit codes with their zero point.
#[derive(Clone, Copy)]
enum Rows<'a> {
    U8(&'a [u8]),
    U16 { codes: &'a [u16], zero_point: i32 },
}

/// Runs the GEMM and the epilogue over `m` rows of `a` (row stride `lda`), giving an `m × n`
/// tensor of `shape`. With several threads, each takes a block of rows through both. `residual`
/// holds the `m × n` residual codes of `e.residual`; `sum` (f32 output only) `m × n` values added
/// to the output.
#[allow(clippy::too_many_arguments)]
fn gemm_out(
    m: usize,
    a: Rows,
    lda: usize,
    b: &PackedB,
    e: &Epilogue,
    shape: Vec<usize>,
    out: Output,
    threads: usize,
    residual: &[u8],
    sum: &[f32],
) -> Tensor {
    let n = b.n;
    let tile = b.tile_rows();
    let block_rows = if threads > 1 { m.div_ceil(tile).div_ceil(threads) * tile } else { m }.max(1);
    // Allocated uninitialised: the products write every output (zeroing first cost 1.3 % of
    // ViT-S int8).
    let (mut f, mut q): (Vec<f32>, Vec<u8>) = match out {
        Output::F32 => (Vec::with_capacity(m * n), Vec::new()),
        Output::Quantized(_) => (Vec::new(), Vec::with_capacity(m * n)),
    };
    let block = |r0: usize, f: &mut [MaybeUninit<f32>], q: &mut [MaybeUninit<u8>]| {
        let rows = block_rows.min(m - r0);
        if rows == 0 {
            return;
        }
        let res = if residual.is_empty() { residual } else { &residual[r0 * n..(r0 + rows) * n] };
        let sum = if sum.is_empty() { sum } else { &sum[r0 * n..(r0 + rows) * n] };
        match a {
            Rows::U8(a) => octet_kernels::i8::gemm_u8s8_epilogue_uninit(rows, &a[r0 * lda..], lda, b, e, f, q, res, sum),
            Rows::U16 { codes, zero_point } => {
                f.fill(MaybeUninit::new(0.0));
                q.fill(MaybeUninit::new(0));
                // SAFETY: both were just initialised.
                let (f, q) = unsafe { (f.assume_init_mut(), q.assume_init_mut()) };
                gemm_u16s8_epilogue(rows, &codes[r0 * lda..], lda, zero_point, b, e, f, q, res);
                octet_kernels::f32::add_assign(f, sum);
            }
        }
    };
    let (f_len, q_len) = (f.capacity().min(m * n), q.capacity().min(m * n));
    let (fs, qs) = (&mut f.spare_capacity_mut()[..f_len], &mut q.spare_capacity_mut()[..q_len]);
    let chunk = (block_rows * n).max(1);
    match (out, threads > 1) {
        (Output::F32, true) => fs.par_chunks_mut(chunk).enumerate().for_each(|(i, f)| block(i * block_rows, f, &mut [])),
        (Output::F32, false) => fs.chunks_mut(chunk).enumerate().for_each(|(i, f)| block(i * block_rows, f, &mut [])),
        (_, true) => qs.par_chunks_mut(chunk).enumerate().for_each(|(i, q)| block(i * block_rows, &mut [], q)),
        (_, false) => qs.chunks_mut(chunk).enumerate().for_each(|(i, q)| block(i * block_rows, &mut [], q)),
    }
    // SAFETY: the blocks cover all `m × n` outputs of the tensor written, each written above.
    unsafe {
        match out {
            Output::F32 => f.set_len(m * n),
            Output::Quantized(_) => q.set_len(m * n),
        }
    }
    match out {
        Output::F32 => Tensor::f32(shape, f),
        Output::Quantized(p) => q_tensor(shape, q, p.signed),
    }
}

/// An output tensor of `chunks × per` values of type `out`, chunk `i` written by
/// `fill(i, f32 chunk, 8-bit chunk)` (the other slice empty); chunks go over the thread pool.
fn per_chunk(
    shape: Vec<usize>,
    chunks: usize,
    per: usize,
    out: Output,
    threads: usize,
    fill: impl Fn(usize, &mut [f32], &mut [u8]) + Sync,
) -> Tensor {
    match out {
        Output::F32 => {
            let mut f = vec![0.0f32; chunks * per];
            if threads > 1 {
                f.par_chunks_mut(per.max(1)).enumerate().for_each(|(i, f)| fill(i, f, &mut []));
            } else {
                f.chunks_mut(per.max(1)).enumerate().for_each(|(i, f)| fill(i, f, &mut []));
            }
            Tensor::f32(shape, f)
        }
        Output::Quantized(p) => {
            let mut q = vec![0u8; chunks * per];
            if threads > 1 {
                q.par_chunks_mut(per.max(1)).enumerate().for_each(|(i, q)| fill(i, &mut [], q));
            } else {
                q.chunks_mut(per.max(1)).enumerate().for_each(|(i, q)| fill(i, &mut [], q));
            }
            q_tensor(shape, q, p.signed)
        }
    }
}

/// [`per_chunk`] for outputs whose chunks interleave: the output is `[B, S, H, D]` and chunk
/// `i = b·H + h` is the `S × D` block of rows `(b, ·, h)` ([`fill_interleaved_chunks`]).
#[allow(clippy::too_many_arguments)]
fn per_chunk_interleaved(
    shape: Vec<usize>,
    chunks: usize,
    heads: usize,
    rows: usize,
    cols: usize,
    out: Output,
    threads: usize,
    fill: impl Fn(usize, &mut [f32], &mut [u8]) + Sync,
) -> Tensor {
    match out {
        Output::F32 => {
            Tensor::f32(shape, fill_interleaved_chunks(chunks, heads, rows, cols, threads, |i, f: &mut [f32]| fill(i, f, &mut [])))
        }
        Output::Quantized(p) => {
            q_tensor(shape, fill_interleaved_chunks(chunks, heads, rows, cols, threads, |i, q: &mut [u8]| fill(i, &mut [], q)), p.signed)
        }
    }
}

/// The epilogue for a product of `input` with `weights` (accumulator scale `acc_scale[j]`):
/// the input's zero-point term `−z·Σ_k w[k][j]` is folded into the i32 bias (eq. 10), so the
/// GEMM runs with zero point 0; then requantize to `out` or write f32.
pub fn weights_epilogue(input: Affine, weights: &PackedB, acc_scale: &[f32], bias: Option<Vec<i32>>, out: Output) -> Epilogue {
    let z = input.zero_point + if input.signed { 128 } else { 0 };
    let bias = bias.unwrap_or_else(|| vec![0; weights.n]);
    let folded = bias.iter().zip(weights.col_sums()).map(|(b, s)| b.wrapping_sub(z.wrapping_mul(*s))).collect();
    make_epilogue(acc_scale, Some(folded), out)
}

/// Runs `a · B` and applies `e`, folding the left zero point into the epilogue's bias when the
/// right operand's zero point is 0 (then the GEMM needs no correction pass).
#[allow(clippy::too_many_arguments)]
fn gemm_epilogue(m: usize, a: &[u8], lda: usize, a_zp: i32, b: &PackedB, e: &Epilogue, f: &mut [f32], q: &mut [u8]) {
    if b.zero_point == 0 && a_zp != 0 {
        let folded = Epilogue { bias: Some(b.col_sums().iter().map(|s| a_zp.wrapping_neg().wrapping_mul(*s)).collect()), ..e.clone() };
        gemm_u8s8_epilogue(m, a, lda, 0, b, &folded, f, q, &[]);
    } else {
        gemm_u8s8_epilogue(m, a, lda, a_zp, b, e, f, q, &[]);
    }
}

/// The epilogue for an accumulator of scale `acc_scale[j]`: requantize to `out` or write f32.
pub fn make_epilogue(acc_scale: &[f32], bias: Option<Vec<i32>>, out: Output) -> Epilogue {
    match out {
        Output::F32 => Epilogue { scale: acc_scale.to_vec(), bias, out: OutType::F32, table: None, residual: None, activation: None },
        Output::Quantized(p) => Epilogue {
            scale: acc_scale.iter().map(|s| s / p.scale).collect(),
            bias,
            out: p.out_type(),
            table: None,
            residual: None,
            activation: None,
        },
    }
}

// ---------------------------------------------------------------- QLinear

/// `x[.., K] · W[K, N] (+ b)` with a u8/s8 activation, packed s8 weights and an i32 bias:
/// Linear, Gemm and MatMul with constant weights. The epilogue comes from [`weights_epilogue`].
/// With `wide_input` the activation is uint16 codes of `input`'s scale and zero point, and the
/// epilogue comes from [`make_epilogue`] (the zero point is applied in i64, [`gemm_u16s8_epilogue`]).
/// A second input is the residual: 8-bit codes for `epilogue.residual`, or with `sum_f32` (f32
/// output) values added to the output, as the float Add it replaces does.
#[derive(Clone, Debug)]
pub struct QLinear {
    pub input: Affine,
    pub wide_input: bool,
    pub weights: PackedB,
    pub epilogue: Epilogue,
    pub output: Output,
    pub sum_f32: bool,
}

impl Op for QLinear {
    fn name(&self) -> &'static str {
        "QLinear"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = required(inputs, 0, "x")?;
        let mut shape = x.shape.clone();
        if shape.last() != Some(&self.weights.k) {
            return Err(format!("input {:?} does not end in K = {}", x.shape, self.weights.k));
        }
        *shape.last_mut().unwrap() = self.weights.n;
        if let Some(r) = optional(inputs, 1) {
            if r.shape != shape {
                return Err(format!("residual {:?} differs from the output {shape:?}", r.shape));
            }
        }
        Ok(vec![Fact::new(self.output.dtype(), shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0, "x")?;
        let k = self.weights.k;
        let m = x.len() / k;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = self.weights.n;
        let (residual, sum): (&[u8], &[f32]) = match optional(inputs, 1) {
            Some(r) if self.sum_f32 => (&[], r.as_f32().ok_or("the residual of an f32 sum is not f32")?),
            Some(r) => (bytes(r)?, &[]),
            None => (&[], &[]),
        };
        let (bytes, codes);
        let a = match (x.data(), self.wide_input) {
            (Data::U16(v), true) => {
                codes = v;
                Rows::U16 { codes, zero_point: self.input.zero_point }
            }
            (d, true) => return Err(format!("input is {} but its parameters say uint16", d.dtype())),
            (_, false) => {
                bytes = as_u8(x, self.input)?.0;
                Rows::U8(&bytes)
            }
        };
        Ok(vec![gemm_out(m, a, k, &self.weights, &self.epilogue, shape, self.output, ctx.threads, residual, sum)])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        let sum = if self.sum_f32 { ", f32 residual add" } else { "" };
        let wide = if self.wide_input { "16-bit input as two bytes: " } else { "" };
        Some(format!("{wide}{} + {}{sum}", self.weights.kernel_name(), epilogue_name(&self.epilogue)))
    }
    op_any!();
}

fn epilogue_name(e: &Epilogue) -> String {
    let mut parts = Vec::new();
    if e.bias.is_some() {
        parts.push("bias");
    }
    parts.push(if e.out == OutType::F32 { "f32 out" } else { "requantize" });
    if e.table.is_some() {
        parts.push("table");
    }
    if e.residual.is_some() {
        parts.push("residual add");
    }
    match (e.activation, e.out) {
        (Some(_), OutType::F32) => parts.push("f32 activation"),
        (Some(_), _) => parts.push("f32 activation before requantizing"),
        (None, _) => {}
    }
    parts.join(", ")
}

// ---------------------------------------------------------------- QMatMul (activation × activation)

/// Batched `a[.., M, K] · b[.., K, N]` with both operands 8-bit activations (Q·Kᵀ and P·V).
#[derive(Clone, Debug)]
pub struct QMatMul {
    pub a: Affine,
    pub b: Affine,
    pub output: Output,
    pub isa: Isa,
}

impl QMatMul {
    pub fn dims(&self, a: &[usize], b: &[usize]) -> Result<(Vec<usize>, usize, usize, usize), String> {
        if a.len() < 2 || b.len() < 2 || a.len() != b.len() || a[..a.len() - 2] != b[..b.len() - 2] {
            return Err(format!("operands {a:?} and {b:?} must be batched matrices of equal batch shape"));
        }
        let (m, k, n) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
        if b[b.len() - 2] != k {
            return Err(format!("inner dimensions differ: {a:?} · {b:?}"));
        }
        let mut out = a[..a.len() - 2].to_vec();
        out.extend([m, n]);
        Ok((out, m, k, n))
    }
}

impl Op for QMatMul {
    fn name(&self) -> &'static str {
        "QMatMul"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        Ok(vec![Fact::new(self.output.dtype(), self.dims(&a.shape, &b.shape)?.0)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let (at, bt) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let (shape, m, k, n) = self.dims(at.shape(), bt.shape())?;
        let batches = at.len() / (m * k).max(1);
        let (a, a_zp) = as_u8(at, self.a)?;
        let (b, b_zp) = right_operand(bt, self.b)?;
        let e = make_epilogue(&[self.a.scale * self.b.scale], None, self.output);
        let per = m * n;
        let one = |i: usize, f: &mut [f32], q: &mut [u8]| {
            let packed = PackedB::from_rows(self.isa, k, n, b_zp, &b.s8(i * k * n..(i + 1) * k * n), n);
            gemm_epilogue(m, &a[i * m * k..], k, a_zp, &packed, &e, f, q);
        };
        let tensor = per_chunk(shape, batches, per, self.output, ctx.threads, one);
        Ok(vec![tensor])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some(format!("{} per batch, right operand packed per call", gemm_kernel_name(self.isa)))
    }
    op_any!();
}

// ---------------------------------------------------------------- QConv

/// 2-D convolution (groups = 1) as im2col on 8-bit data (padding with the zero point) and
/// the u8×s8 GEMM: the patch embedding.
#[derive(Clone, Debug)]
pub struct QConv {
    pub input: Affine,
    pub weights: PackedB,
    pub epilogue: Epilogue,
    pub output: Output,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 4],
    pub dilation: [usize; 2],
    /// The output is `[N, OH·OW, M]`, one row of channels per output pixel, as the GEMM makes
    /// it, instead of NCHW: the flatten and Transpose that followed a patch embedding, fused.
    pub pixels_major: bool,
}

impl QConv {
    fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize), String> {
        let eff = |i: usize| self.dilation[i] * (self.kernel[i] - 1) + 1;
        let ph = h + self.pad[0] + self.pad[2];
        let pw = w + self.pad[1] + self.pad[3];
        if ph < eff(0) || pw < eff(1) {
            return Err("kernel larger than the padded input".into());
        }
        Ok(((ph - eff(0)) / self.stride[0] + 1, (pw - eff(1)) / self.stride[1] + 1))
    }
}

impl Op for QConv {
    fn name(&self) -> &'static str {
        "QConv"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = required(inputs, 0, "X")?;
        if x.shape.len() != 4 {
            return Err(format!("X {:?} must be NCHW", x.shape));
        }
        let (oh, ow) = self.out_hw(x.shape[2], x.shape[3])?;
        let shape = if self.pixels_major { vec![x.shape[0], oh * ow, self.weights.n] } else { vec![x.shape[0], self.weights.n, oh, ow] };
        Ok(vec![Fact::new(self.output.dtype(), shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let (oh, ow) = self.out_hw(h, w)?;
        let (a, zp) = as_u8(x, self.input)?;
        let kdim = self.weights.k;
        let pixels = oh * ow;
        let m_out = self.weights.n;
        // im2col of every image, one row per output pixel, over the pool; then one product of
        // all the images' rows.
        let rows = n * pixels;
        let im2col_row = |r: usize, row: &mut [u8]| {
            let (img, oy, ox) = (r / pixels, r % pixels / ow, r % ow);
            let x0 = (ox * self.stride[1]) as isize - self.pad[1] as isize;
            let contiguous = self.dilation[1] == 1 && x0 >= 0 && x0 as usize + self.kernel[1] <= w;
            for ci in 0..c {
                for ky in 0..self.kernel[0] {
                    let iy = (oy * self.stride[0] + ky * self.dilation[0]) as isize - self.pad[0] as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    let src = &a[((img * c + ci) * h + iy as usize) * w..][..w];
                    let at = (ci * self.kernel[0] + ky) * self.kernel[1];
                    if contiguous {
                        row[at..at + self.kernel[1]].copy_from_slice(&src[x0 as usize..x0 as usize + self.kernel[1]]);
                        continue;
                    }
                    for kx in 0..self.kernel[1] {
                        let ix = (ox * self.stride[1] + kx * self.dilation[1]) as isize - self.pad[1] as isize;
                        if ix >= 0 && (ix as usize) < w {
                            row[at + kx] = src[ix as usize];
                        }
                    }
                }
            }
        };
        let mut col = vec![zp as u8; rows * kdim];
        if kdim > 0 && ctx.threads > 1 {
            col.par_chunks_mut(kdim).enumerate().with_min_len(16).for_each(|(r, row)| im2col_row(r, row));
        } else if kdim > 0 {
            col.chunks_mut(kdim).enumerate().for_each(|(r, row)| im2col_row(r, row));
        }
        let t = gemm_out(rows, Rows::U8(&col), kdim, &self.weights, &self.epilogue, vec![rows, m_out], self.output, ctx.threads, &[], &[]);
        if self.pixels_major {
            return Ok(vec![Tensor::from_parts(vec![n, pixels, m_out], t.into_data())]);
        }
        // [N, pixels, M] → [N, M, pixels].
        let (per, m_out_i) = ((pixels * m_out) as isize, m_out as isize);
        let view = octet_graph::ops::view::View { base: 0, shape: vec![n, m_out, pixels], strides: vec![per, 1, m_out_i] };
        Ok(vec![Tensor::from_parts(vec![n, m_out, oh, ow], view.copy_on(&t, ctx.threads).into_data())])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        let layout = if self.pixels_major { ", written [N, pixels, channels]" } else { "" };
        Some(format!("im2col + {} + {}{layout}", self.weights.kernel_name(), epilogue_name(&self.epilogue)))
    }
    op_any!();
}

// ---------------------------------------------------------------- QTable

/// An elementwise function of one 8-bit input as a 256-entry table, built by running the float
/// op on every dequantized code and quantizing the results: equal to the QDQ reference bit for bit.
#[derive(Clone, Debug)]
pub struct QTable {
    pub input: Affine,
    pub output: Affine,
    pub table: Arc<[u8; 256]>,
    pub what: String,
}

impl QTable {
    /// The one table that applies `tables` in turn, the last first (`tables[0]` reads what the
    /// others made: the order a walk back from a value meets them); `None` for no tables.
    pub fn compose(tables: &[&QTable]) -> Option<QTable> {
        let (first, last) = (tables.last()?, tables.first()?);
        if tables.windows(2).any(|w| w[1].output != w[0].input) {
            return None;
        }
        let table: [u8; 256] = std::array::from_fn(|x| tables.iter().rev().fold(x as u8, |c, t| t.table[c as usize]));
        let what = tables.iter().rev().map(|t| t.what.as_str()).collect::<Vec<_>>().join(" then ");
        Some(QTable { input: first.input, output: last.output, table: Arc::new(table), what })
    }

    /// The table for `f` (an op applied to a 1-D f32 tensor of the 256 dequantized codes, in
    /// the order of their stored bytes).
    pub fn build(input: Affine, output: Affine, what: String, f: impl Fn(Tensor) -> Result<Tensor, String>) -> Result<QTable, String> {
        let (pi, po) = (input, output);
        let x = Tensor::f32(vec![256], (0..=255u8).map(|b| pi.dequantize(b)).collect());
        let y = f(x)?;
        let y = y.as_f32().ok_or("the op did not give f32")?;
        let table: [u8; 256] = std::array::from_fn(|b| po.quantize(y[b]));
        Ok(QTable { input, output, table: Arc::new(table), what })
    }
}

impl Op for QTable {
    fn name(&self) -> &'static str {
        "QTable"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![Fact::new(self.output.dtype(), required(inputs, 0, "x")?.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0, "x")?;
        let src = bytes(x)?;
        let mut out = vec![0u8; src.len()];
        ew::lookup(src, &self.table, &mut out);
        Ok(vec![q_tensor(x.shape().to_vec(), out, self.output.signed)])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some(format!("256-entry table ({})", self.what))
    }
    op_any!();
}

// ---------------------------------------------------------------- QBinary

/// One operand of a [`QBinary`]: an 8-bit activation or a float constant.
#[derive(Clone, Debug)]
pub enum Operand {
    Quantized(Affine),
    Float,
}

/// `q(dq(a) ∘ dq(b))` elementwise with broadcasting, in the reference's f32 operations: the
/// residual Add, a Mul by a constant vector (LayerScale), an Add of a constant (position table).
#[derive(Debug)]
pub struct QBinary {
    pub kind: BinaryKind,
    pub operands: [Operand; 2],
    pub output: Affine,
}

impl Op for QBinary {
    fn name(&self) -> &'static str {
        "QBinary"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        Ok(vec![Fact::new(self.output.dtype(), broadcast_shapes(&[&a.shape, &b.shape])?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let (a, b) = (required(inputs, 0, "A")?, required(inputs, 1, "B")?);
        let o = self.output;
        let arith = match self.kind {
            BinaryKind::Add => Arith::Add,
            BinaryKind::Sub => Arith::Sub,
            BinaryKind::Mul => Arith::Mul,
            BinaryKind::Div => Arith::Div,
            k => return Err(format!("{k:?} is not lowered")),
        };
        if let ([Operand::Quantized(pa), Operand::Quantized(pb)], true) = (&self.operands, a.shape() == b.shape()) {
            let mut out = vec![0u8; a.len()];
            ew::binary_same_shape(arith, bytes(a)?, *pa, bytes(b)?, *pb, &mut out, o);
            return Ok(vec![q_tensor(a.shape().to_vec(), out, o.signed)]);
        }
        let values = |i: usize, t: &Tensor| -> Result<Vec<f32>, String> {
            match &self.operands[i] {
                Operand::Quantized(p) => {
                    let mut f = vec![0.0f32; t.len()];
                    ew::dequantize(bytes(t)?, *p, &mut f);
                    Ok(f)
                }
                Operand::Float => t.as_f32().map(|v| v.to_vec()).ok_or_else(|| "float operand expected".to_string()),
            }
        };
        let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
        let (av, bv) = (values(0, a)?, values(1, b)?);
        let q = o;
        if a.shape() == b.shape() {
            let mut out = vec![0u8; av.len()];
            ew::binary_f32_same_shape(arith, &av, &bv, &mut out, q);
            return Ok(vec![q_tensor(shape, out, o.signed)]);
        }
        let out = match arith {
            Arith::Add => binary(&av, a.shape(), &bv, b.shape(), &shape, |x, y| q.quantize(x + y)),
            Arith::Sub => binary(&av, a.shape(), &bv, b.shape(), &shape, |x, y| q.quantize(x - y)),
            Arith::Mul => binary(&av, a.shape(), &bv, b.shape(), &shape, |x, y| q.quantize(x * y)),
            Arith::Div => binary(&av, a.shape(), &bv, b.shape(), &shape, |x, y| q.quantize(x / y)),
        };
        Ok(vec![q_tensor(shape, out, o.signed)])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some(format!("dequantize, {:?}, quantize (f32, fused)", self.kind))
    }
    op_any!();
}

// ---------------------------------------------------------------- QSoftmax

/// Softmax over the last axis of 8-bit logits: `exp(s·(q − q_max))` on integer differences.
#[derive(Clone, Debug)]
pub struct QSoftmax {
    pub input: Affine,
    pub output: Affine,
}

impl Op for QSoftmax {
    fn name(&self) -> &'static str {
        "QSoftmax"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![Fact::new(self.output.dtype(), required(inputs, 0, "x")?.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0, "x")?;
        let row = *x.shape().last().ok_or("scalar input")?;
        let src = bytes(x)?;
        let mut out = vec![0u8; src.len()];
        let (pi, po) = (self.input, self.output);
        let block = row * 64;
        if ctx.threads > 1 {
            src.par_chunks(block).zip(out.par_chunks_mut(block)).for_each(|(s, d)| ew::softmax_rows_q8(s, pi, row, po, d));
        } else {
            ew::softmax_rows_q8(src, pi, row, po, &mut out);
        }
        Ok(vec![q_tensor(x.shape().to_vec(), out, self.output.signed)])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some("vectorised exp of integer logit differences".into())
    }
    op_any!();
}

// ---------------------------------------------------------------- QGlobalAveragePool

/// GlobalAveragePool of an 8-bit `[N, C, spatial…]` tensor: the exact integer sum of each
/// channel's codes, its mean dequantized and quantized once (`[N, C, 1, …]`).
#[derive(Debug)]
pub struct QGlobalAveragePool {
    pub input: Affine,
    pub output: Affine,
}

impl QGlobalAveragePool {
    /// Rows (N·C) and codes per row (the spatial size) of an input shape.
    fn rows(shape: &[usize]) -> Result<(usize, usize), String> {
        if shape.len() < 2 {
            return Err(format!("input of rank {} (GlobalAveragePool takes [N, C, …])", shape.len()));
        }
        let n: usize = shape[2..].iter().product();
        if n > ew::MEAN_ROW_MAX {
            return Err(format!("{n} values per channel exceed the int8 kernel's sums"));
        }
        Ok((shape[0] * shape[1], n))
    }
}

impl Op for QGlobalAveragePool {
    fn name(&self) -> &'static str {
        "QGlobalAveragePool"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = required(inputs, 0, "x")?;
        Self::rows(&x.shape)?;
        let shape = x.shape.iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect();
        Ok(vec![Fact::new(self.output.dtype(), shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0, "x")?;
        let (rows, n) = Self::rows(x.shape())?;
        let src = bytes(x)?;
        let mut out = vec![0u8; rows];
        let (pi, po) = (self.input, self.output);
        let per_task = (1 << 16) / n.max(1) + 1;
        if ctx.threads > 1 && n > 0 {
            src.par_chunks(per_task * n).zip(out.par_chunks_mut(per_task)).for_each(|(s, d)| ew::mean_rows_q8(s, pi, n, po, d));
        } else {
            ew::mean_rows_q8(src, pi, n, po, &mut out);
        }
        let shape = x.shape().iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect();
        Ok(vec![q_tensor(shape, out, self.output.signed)])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some("integer sum of each channel's codes".into())
    }
    op_any!();
}

// ---------------------------------------------------------------- QLayerNorm

/// LayerNorm over the last axis of an 8-bit tensor: exact integer mean and variance of the
/// codes, normalisation in f32, quantized output.
#[derive(Debug)]
pub struct QLayerNorm {
    /// The input's parameters, or `None` for an f32 input (the float residual stream), whose
    /// output is then quantized.
    pub input: Option<Affine>,
    pub output: Output,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub epsilon: f32,
}

impl QLayerNorm {
    /// The rows of `shape` are `gamma`'s length (the kernels write whole rows of it).
    fn check_rows(&self, shape: &[usize]) -> Result<(), String> {
        if shape.last() != Some(&self.gamma.len()) && numel(shape) != 0 {
            return Err(format!("input {shape:?} does not end in the {} normalised values", self.gamma.len()));
        }
        Ok(())
    }
}

impl Op for QLayerNorm {
    fn name(&self) -> &'static str {
        "QLayerNorm"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = required(inputs, 0, "x")?;
        self.check_rows(&x.shape)?;
        Ok(vec![Fact::new(self.output.dtype(), x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0, "x")?;
        let c = self.gamma.len();
        let shape = x.shape().to_vec();
        self.check_rows(&shape)?;
        let po = match self.output {
            Output::Quantized(p) => Some(p),
            Output::F32 => None,
        };
        let Some(pi) = self.input else {
            // f32 in: the float LayerNorm's own arithmetic, then QuantizeLinear's, row by row.
            let (src, po) =
                (x.as_f32().ok_or("an f32 LayerNorm input is not f32")?, po.ok_or("an f32 LayerNorm needs a quantized output")?);
            let q = fill_row_blocks(src.len(), c, ctx.threads, |r0, q| {
                ew::layer_norm_rows_quantize(&src[r0 * c..r0 * c + q.len()], c, &self.gamma, &self.beta, self.epsilon, po, q)
            });
            return Ok(vec![q_tensor(shape, q, po.signed)]);
        };
        let src = bytes(x)?;
        let rows = |r0: usize, len: usize| &src[r0 * c..r0 * c + len];
        let (g, b, eps) = (&self.gamma, &self.beta, self.epsilon);
        Ok(vec![match po {
            Some(p) => q_tensor(
                shape,
                fill_row_blocks(src.len(), c, ctx.threads, |r0, q| {
                    ew::layer_norm_rows_q8(rows(r0, q.len()), pi, c, g, b, eps, po, q, &mut [])
                }),
                p.signed,
            ),
            None => Tensor::f32(
                shape,
                fill_row_blocks(src.len(), c, ctx.threads, |r0, f| {
                    ew::layer_norm_rows_q8(rows(r0, f.len()), pi, c, g, b, eps, None, &mut [], f)
                }),
            ),
        }])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some(match self.input {
            Some(_) => "integer mean and variance, f32 normalise".into(),
            None => "f32 LayerNorm rows, quantized as they are written".into(),
        })
    }
    op_any!();
}

// ---------------------------------------------------------------- data movement on 8-bit data

/// A data-movement op (Reshape, Transpose, Split, …) applied to 8-bit codes, whose output keeps
/// the input's parameters: no arithmetic, bit-exact.
#[derive(Debug)]
pub struct QMove(pub Arc<dyn Op>);

impl Op for QMove {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        self.0.infer(inputs)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        self.0.eval(inputs, ctx)
    }
    fn is_view(&self) -> bool {
        self.0.is_view()
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some(format!("{} on 8-bit data", self.0.name()))
    }
    op_any!();
}

// ---------------------------------------------------------------- QAttention

/// Attention fused per (batch, head), the logits and probabilities of one head staying in
/// cache: `Q·Kᵀ` on the int8 GEMM, the softmax, and `P·V` on the int8 GEMM.
///
/// With an 8-bit softmax (`--int8-softmax` files) the arithmetic is that of the three lowered
/// ops, bit for bit. With float logits and probabilities (octet's default files: `MatMul →
/// [scale] → Softmax → MatMul` with no Q/DQ between), the logits are the exact i32 products
/// scaled, the softmax runs in f32, and the probabilities go into `P·V` as 16-bit codes
/// `round(p·65535)` on [`octet_kernels::i8::gemm_i16s8_epilogue`] (stored centred on zero), whose sums cannot
/// overflow because a row's probabilities add up to one.
///
/// Q, K (or Kᵀ) and V may be read in place from the tensor their data movement started from
/// (the QKV projection's output) and through a table of their codes ([`OperandRead`]): each head
/// then reads its rows where they are, or gathers them once, as it packs them.
#[derive(Clone, Debug)]
pub struct QAttention {
    pub scores: QMatMul,
    /// `None`: float softmax and 16-bit probabilities (then `scores.output` is f32).
    pub softmax: Option<QSoftmax>,
    pub context: QMatMul,
    /// Operand 1 is K `[.., N, D]` (packed as its transpose) rather than Kᵀ `[.., D, N]`.
    pub keys_as_rows: bool,
    /// A constant factor on the logits (the attention scale applied after `Q·Kᵀ`).
    pub logit_scale: f32,
    /// The output is laid out `[.., S, H, D]` instead of `[.., H, S, D]`: the Transpose of heads
    /// and rows that followed the attention (before the heads are merged for the output
    /// projection), fused. Each head's rows are written at a stride of `H·D`.
    pub heads_interleaved: bool,
    /// How Q, K (or Kᵀ) and V are read from inputs 0, 1 and 2.
    pub reads: [OperandRead; 3],
}

/// How [`QAttention`] reads one operand from its input: in place through a view (the data
/// movement that made the operand, fused), and through a table of its codes (an elementwise op
/// on the operand, fused: the scalar steps exporters put on Q and K), each optional.
#[derive(Clone, Debug, Default)]
pub struct OperandRead {
    /// Where the operand's elements sit in the input; `None`: the input is the operand.
    pub view: Option<OperandView>,
    /// The table from the input's codes to the operand's.
    pub table: Option<QTable>,
}

impl OperandRead {
    /// The operand's shape given its input's.
    fn shape<'a>(&'a self, input: &'a [usize]) -> &'a [usize] {
        self.view.as_ref().map_or(input, |v| &v.shape)
    }

    /// Whether the input holds s8 codes, for an operand of parameters `p`.
    fn input_signed(&self, p: Affine) -> bool {
        self.table.as_ref().map_or(p.signed, |t| t.input.signed)
    }

    /// Checks the input's type, that a table's output is the operand's type, and for a view
    /// that it stays inside the input.
    fn check(&self, dtype: DType, shape: &[usize], p: Affine, what: &str) -> Result<(), String> {
        let want = if self.input_signed(p) { DType::I8 } else { DType::U8 };
        if dtype != want {
            return Err(format!("{what} is {dtype} but its parameters say {want}"));
        }
        if self.table.as_ref().is_some_and(|t| t.output.signed != p.signed) {
            return Err(format!("the table on {what} writes codes of another type than the operand's {}", p.dtype()));
        }
        self.view.as_ref().map_or(Ok(()), |v| v.check(numel(shape)))
    }

    /// The map from the input's stored bytes to the bytes a kernel reads, whose codes differ
    /// from the operand's by `flip` (0x80 for u8 codes read as s8 and the reverse, eq. 9):
    /// `None` when it is the identity.
    fn byte_map(&self, flip: u8) -> Option<ByteMap> {
        match &self.table {
            Some(t) => Some(ByteMap::Table(Box::new(std::array::from_fn(|x| t.table[x] ^ flip)))),
            None => (flip != 0).then_some(ByteMap::Xor(flip)),
        }
    }

    /// Matrix `i` (`rows × cols`) of the operand: the offset of its first element in the input,
    /// its row stride and its column stride.
    fn matrix(&self, i: usize, rows: usize, cols: usize) -> (usize, usize, usize) {
        self.view.as_ref().map_or((i * rows * cols, cols, 1), |v| v.matrix(i))
    }
}

/// How the bytes of an operand's input become the bytes a kernel reads.
enum ByteMap {
    /// Each byte XORed with this (u8 codes as s8 and the reverse).
    Xor(u8),
    /// Each byte looked up.
    Table(Box<[u8; 256]>),
}

/// Matrix `(offset, row stride, column stride)` of `rows × cols` bytes of `src` as a kernel
/// reads it: in place with its row stride when its rows are contiguous and `map` is `None`,
/// else gathered through `map` into `scratch` (row stride `cols`).
fn operand_rows<'a>(
    src: &'a [u8],
    (offset, row, col): (usize, usize, usize),
    rows: usize,
    cols: usize,
    map: Option<&ByteMap>,
    scratch: &'a mut [u8],
) -> (&'a [u8], usize) {
    let scratch = &mut scratch[..rows * cols];
    match map {
        None if col == 1 => return (&src[offset..], row),
        Some(ByteMap::Table(t)) if col == 1 => ew::lookup_rows(&src[offset..], row, rows, cols, t, scratch),
        Some(ByteMap::Xor(x)) if col == 1 => {
            for (r, dst) in scratch.chunks_exact_mut(cols.max(1)).enumerate() {
                dst.iter_mut().zip(&src[offset + r * row..][..cols]).for_each(|(d, &s)| *d = s ^ x);
            }
        }
        _ => {
            let at = |r: usize, c: usize| src[offset + r * row + c * col];
            for (r, dst) in scratch.chunks_exact_mut(cols.max(1)).enumerate() {
                for (c, d) in dst.iter_mut().enumerate() {
                    *d = match map {
                        Some(ByteMap::Table(t)) => t[at(r, c) as usize],
                        Some(ByteMap::Xor(x)) => at(r, c) ^ x,
                        None => at(r, c),
                    };
                }
            }
        }
    }
    (scratch, cols)
}

/// Reinterprets bytes as s8 codes.
fn as_s8(b: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
}

/// The parameters of 16-bit probability codes in [`QAttention`] (as the left operand of `P·V`).
pub const PROBABILITY_CODES: Affine = Affine { scale: 1.0 / 65535.0, zero_point: 0, signed: false };

impl QAttention {
    /// The output's shape given that of the product `[.., H, S, D]`.
    fn output_shape(&self, mut shape: Vec<usize>) -> Vec<usize> {
        let r = shape.len();
        if self.heads_interleaved && r >= 3 {
            shape.swap(r - 3, r - 2);
        }
        shape
    }

    /// The shape of Kᵀ given operand 1's shape.
    fn kt_shape(&self, s: &[usize]) -> Vec<usize> {
        let mut s = s.to_vec();
        let r = s.len();
        if self.keys_as_rows && r >= 2 {
            s.swap(r - 1, r - 2);
        }
        s
    }

    /// The parameters of the three operands.
    fn operand_params(&self) -> [Affine; 3] {
        [self.scores.a, self.scores.b, self.context.b]
    }

    /// Checks each input's type and shape against how its operand is read.
    fn check_reads(&self, inputs: [(DType, &[usize]); 3]) -> Result<(), String> {
        for ((read, (dtype, shape)), (p, what)) in self.reads.iter().zip(inputs).zip(self.operand_params().into_iter().zip(["Q", "K", "V"]))
        {
            read.check(dtype, shape, p, what)?;
        }
        Ok(())
    }

    /// (the scores' shape, S, D, N), the output's shape and Dv, from the inputs' shapes.
    #[allow(clippy::type_complexity)]
    fn dims(&self, inputs: [&[usize]; 3]) -> Result<((Vec<usize>, usize, usize, usize), Vec<usize>, usize), String> {
        let [q, k, v] = [0, 1, 2].map(|j| self.reads[j].shape(inputs[j]));
        let scores = self.scores.dims(q, &self.kt_shape(k))?;
        let (out, _, _, dv) = self.context.dims(&scores.0, v)?;
        Ok((scores, self.output_shape(out), dv))
    }
}

impl Op for QAttention {
    fn name(&self) -> &'static str {
        "QAttention"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let facts = [required(inputs, 0, "Q")?, required(inputs, 1, "K")?, required(inputs, 2, "V")?];
        self.check_reads(facts.map(|f| (f.dtype, f.shape.as_slice())))?;
        let (_, out, _) = self.dims(facts.map(|f| f.shape.as_slice()))?;
        Ok(vec![Fact::new(self.context.output.dtype(), out)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let tensors = [required(inputs, 0, "Q")?, required(inputs, 1, "K")?, required(inputs, 2, "V")?];
        let params = self.operand_params();
        self.check_reads(tensors.map(|t| (t.dtype(), t.shape())))?;
        let ((_, m, k, n), shape, d) = self.dims(tensors.map(|t| t.shape()))?;
        let batches = numel(self.reads[0].shape(tensors[0].shape())) / (m * k).max(1);
        let src = [bytes(tensors[0])?, bytes(tensors[1])?, bytes(tensors[2])?];
        // Q as u8 codes, K and V as s8 (eq. 9): flip the stored bytes of the other type.
        let flips = [params[0].flip_to_u8(), params[1].flip_to_s8(), params[2].flip_to_s8()];
        let maps: [Option<ByteMap>; 3] = std::array::from_fn(|j| self.reads[j].byte_map(flips[j]));
        let (q_zp, k_zp, v_zp) = (params[0].u8_zero_point(), params[1].s8_zero_point(), params[2].s8_zero_point());
        let e1 = make_epilogue(&[self.scores.a.scale * self.scores.b.scale * self.logit_scale], None, self.scores.output);
        let e2 = make_epilogue(&[self.context.a.scale * self.context.b.scale], None, self.context.output);
        let isa = self.scores.isa;
        // Operand matrices: Q is m × k; operand 1 is K (n × k) or Kᵀ (k × n); V is n × d.
        let dims = [(m, k), if self.keys_as_rows { (n, k) } else { (k, n) }, (n, d)];
        let head = |i: usize, f: &mut [f32], out: &mut [u8]| {
            let lens = dims.map(|(r, c)| r * c);
            octet_kernels::i8::with_scratch_u8(lens.iter().sum(), |scratch| {
                let (qs, rest) = scratch.split_at_mut(lens[0]);
                let (ks, vs) = rest.split_at_mut(lens[1]);
                let read = |j: usize, scratch| {
                    let (r, c) = dims[j];
                    operand_rows(src[j], self.reads[j].matrix(i, r, c), r, c, maps[j].as_ref(), scratch)
                };
                let ((q, q_ld), (keys, k_ld), (values, v_ld)) = (read(0, qs), read(1, ks), read(2, vs));
                let (keys, values) = (as_s8(keys), as_s8(values));
                let kp = if self.keys_as_rows {
                    PackedB::from_cols(isa, k, n, k_zp, keys, k_ld)
                } else {
                    PackedB::from_rows(isa, k, n, k_zp, keys, k_ld)
                };
                match (&self.softmax, self.scores.output) {
                    (Some(softmax), Output::Quantized(sp)) => {
                        let mut logits = vec![0u8; m * n];
                        let mut p = vec![0u8; m * n];
                        gemm_epilogue(m, q, q_ld, q_zp, &kp, &e1, &mut [], &mut logits);
                        ew::softmax_rows_q8(&logits, sp, n, softmax.output, &mut p);
                        if softmax.output.signed {
                            p.iter_mut().for_each(|b| *b ^= 0x80);
                        }
                        let p_zp = softmax.output.zero_point + if softmax.output.signed { 128 } else { 0 };
                        let vp = PackedB::from_rows(isa, n, d, v_zp, values, v_ld);
                        gemm_epilogue(m, &p, n, p_zp, &vp, &e2, f, out);
                    }
                    _ => {
                        use octet_kernels::i8::{gemm_i16s8_epilogue, with_scratch_f32, with_scratch_i16};
                        with_scratch_i16(m * n, |codes| {
                            with_scratch_f32(m * n, |p| {
                                gemm_epilogue(m, q, q_ld, q_zp, &kp, &e1, p, &mut []);
                                octet_kernels::f32::softmax_rows_u16(p, n, codes);
                            });
                            let vp = PackedB::from_rows_for_i16(isa, n, d, v_zp, values, v_ld);
                            gemm_i16s8_epilogue(m, codes, n, &vp, &e2, f, out, &[]);
                        });
                    }
                }
            });
        };
        let tensor = if self.heads_interleaved && shape.len() >= 3 {
            let heads = shape[shape.len() - 2];
            per_chunk_interleaved(shape, batches, heads, m, d, self.context.output, ctx.threads, head)
        } else {
            per_chunk(shape, batches, m * d, self.context.output, ctx.threads, head)
        };
        Ok(vec![tensor])
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        let softmax = if self.softmax.is_some() { "8-bit softmax" } else { "f32 softmax, 16-bit probabilities" };
        let layout = if self.heads_interleaved { ", heads written interleaved" } else { "" };
        let viewed = self.reads.iter().filter(|r| r.view.is_some()).count();
        let tables = self.reads.iter().filter(|r| r.table.is_some()).count();
        let reads = match (viewed, tables) {
            (0, 0) => String::new(),
            (v, 0) => format!(", {v} operand(s) read in place"),
            (v, t) => format!(", {v} operand(s) read in place, {t} table(s) applied while packing"),
        };
        Some(format!(
            "fused attention per (batch, head): {} · {softmax} · {}{layout}{reads}",
            gemm_kernel_name(self.scores.isa),
            gemm_kernel_name(self.context.isa)
        ))
    }
    op_any!();
}

/// A right operand's stored codes, read as s8 a slice at a time ([`RightCodes::s8`]), so that
/// converting u8 codes happens per batch, on the thread that packs them.
enum RightCodes<'a> {
    S8(&'a [i8]),
    U8(&'a [u8]),
}

impl RightCodes<'_> {
    /// Elements `range` as s8 (u8 codes shift by −128, eq. 9).
    fn s8(&self, range: std::ops::Range<usize>) -> std::borrow::Cow<'_, [i8]> {
        match self {
            RightCodes::S8(v) => std::borrow::Cow::Borrowed(&v[range]),
            RightCodes::U8(v) => std::borrow::Cow::Owned(v[range].iter().map(|&x| (x ^ 0x80) as i8).collect()),
        }
    }
}

/// A right operand's codes with the zero point of their s8 form.
fn right_operand(t: &Tensor, p: Affine) -> Result<(RightCodes<'_>, i32), String> {
    match t.data() {
        Data::I8(v) if p.signed => Ok((RightCodes::S8(v), p.s8_zero_point())),
        Data::U8(v) if !p.signed => Ok((RightCodes::U8(v), p.s8_zero_point())),
        d => Err(format!("operand is {} but its parameters say {}", d.dtype(), p.dtype())),
    }
}

/// Several strided copies of one 8-bit input (a Transpose followed by a Split, read in one pass
/// per output instead of two).
#[derive(Debug)]
pub struct QViews {
    pub views: Vec<octet_graph::ops::view::View>,
}

impl Op for QViews {
    fn name(&self) -> &'static str {
        "TransposeSplit"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = required(inputs, 0, "x")?;
        Ok(self.views.iter().map(|v| Fact::new(x.dtype, v.shape.clone())).collect())
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0, "x")?;
        Ok(self.views.iter().map(|v| v.copy_on(x, ctx.threads)).collect())
    }
    fn foldable(&self) -> bool {
        false
    }
    fn kernel(&self) -> Option<String> {
        Some("Transpose and Split on 8-bit data, one strided copy per output".into())
    }
    op_any!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(f: impl Fn(u8) -> u8, signed_in: bool, signed_out: bool) -> QTable {
        let a = |signed| Affine { scale: 1.0, zero_point: 0, signed };
        QTable { input: a(signed_in), output: a(signed_out), table: Arc::new(std::array::from_fn(|x| f(x as u8))), what: "t".into() }
    }

    #[test]
    fn layer_norms_and_attention_reads_refuse_inputs_they_cannot_compute() {
        let a = |signed| Affine { scale: 0.1, zero_point: 0, signed };
        let ln = QLayerNorm { input: None, output: Output::Quantized(a(false)), gamma: vec![1.0; 4], beta: vec![0.0; 4], epsilon: 1e-5 };
        let x = |shape: Vec<usize>| Fact::new(DType::F32, shape);
        assert!(ln.infer(&[Some(&x(vec![2, 4]))]).is_ok() && ln.infer(&[Some(&x(vec![0, 3]))]).is_ok());
        let err = ln.infer(&[Some(&x(vec![2, 3]))]).unwrap_err();
        assert!(err.contains("does not end in the 4 normalised values"), "{err}");
        let t = Tensor::f32(vec![2, 3], vec![0.0; 6]);
        assert!(ln.eval(&[Some(&t)], &EvalCtx::default()).is_err(), "rows of 3 for a gamma of 4");
        let read = OperandRead { view: None, table: Some(table(|x| x, false, true)) };
        let err = read.check(DType::U8, &[4, 4], a(false), "K").unwrap_err();
        assert!(err.contains("the table on K writes codes of another type"), "{err}");
        assert!(read.check(DType::U8, &[4, 4], a(true), "K").is_ok());
        assert!(read.check(DType::I8, &[4, 4], a(true), "K").is_err(), "the input holds the table's input type");
    }

    #[test]
    fn composed_tables_apply_the_last_met_first() {
        let (inner, outer) = (table(|x| x.wrapping_mul(3), false, true), table(|x| x ^ 0x5a, true, false));
        let c = QTable::compose(&[&outer, &inner]).unwrap();
        assert!(c.table.iter().enumerate().all(|(x, &y)| y == (x as u8).wrapping_mul(3) ^ 0x5a));
        assert_eq!((c.input.signed, c.output.signed), (false, false));
        assert!(QTable::compose(&[]).is_none());
        assert!(QTable::compose(&[&inner, &inner]).is_none(), "a chain whose types do not meet");
    }

    #[test]
    fn operand_rows_read_in_place_or_gather_through_the_map() {
        // A 3 × 4 matrix at offset 5 of a 40-byte source, rows 10 apart, then its transpose.
        let src: Vec<u8> = (0..40).map(|x| x * 7).collect();
        let want = |r: usize, c: usize| src[5 + r * 10 + c];
        let mut scratch = vec![0u8; 12];
        let (got, ld) = operand_rows(&src, (5, 10, 1), 3, 4, None, &mut scratch);
        assert_eq!((ld, &got[..4], &got[10..14]), (10, &src[5..9], &src[15..19]));
        let t: [u8; 256] = std::array::from_fn(|x| (x as u8).wrapping_add(1));
        for map in [ByteMap::Xor(0x80), ByteMap::Table(Box::new(t))] {
            let f = |b: u8| match &map {
                ByteMap::Xor(x) => b ^ x,
                ByteMap::Table(t) => t[b as usize],
            };
            let mut scratch = vec![0u8; 12];
            let (got, ld) = operand_rows(&src, (5, 10, 1), 3, 4, Some(&map), &mut scratch);
            assert_eq!(ld, 4);
            assert!((0..12).all(|i| got[i] == f(want(i / 4, i % 4))));
            let mut scratch = vec![0u8; 12];
            let (got, _) = operand_rows(&src, (5, 1, 10), 4, 3, Some(&map), &mut scratch);
            assert!((0..12).all(|i| got[i] == f(want(i % 3, i / 3))), "the transpose");
        }
    }
}
