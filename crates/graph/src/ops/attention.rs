//! The transformer ops of recent opsets (ONNX "nn" group): Attention (opset 23) and
//! RotaryEmbedding (opset 23), computed in f64 and stored in the input's type; and
//! [`FusedAttention`], the f32 attention core that plans fuse from MatMul, Softmax and MatMul.

use octet_kernels::f32::{self as k, MatLayout, Threads};
use rayon::prelude::*;

use super::elementwise::from_f64;
use super::nn::{expect_f32, f32_of};
use super::parallel::fill_interleaved_chunks;
use crate::error::OpResult;
use crate::op::{optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, DType, Tensor};

/// `Softmax(Q·Kᵀ [· c | / c]) · V` per (batch, head) in f32, the scores of one head computed,
/// scaled, normalised and multiplied by V while they are in cache on one thread: what
/// [`crate::rewrite::FuseAttention`] makes of `MatMul → [Mul|Div by a scalar] → Softmax → MatMul`
/// (the scores of every head otherwise go through memory three times), with the scalar steps on
/// Q and K before the product (exporters of `scaled_dot_product_attention` scale both by `√c`)
/// and the data movement that made Q, Kᵀ and V (Transposes, Split, Squeeze) read in place
/// through [`OperandView`]s. The same kernels as those nodes ([`k::matmul`],
/// [`k::softmax_rows`]) and the same scalar operations; reading an operand through strides
/// instead of a copy may round the scores differently (within float rounding: the fixtures'
/// tests measure it). Inputs: the sources of `Q[.., S, D]`, `Kᵀ[.., D, N]` and `V[.., N, Dv]`,
/// whose leading axes agree.
#[derive(Clone, Debug)]
pub struct FusedAttention {
    /// How Q, Kᵀ and V are read from inputs 0, 1 and 2: `None`, the input itself.
    pub views: [Option<OperandView>; 3],
    /// The scalar step on Q before the product, if any.
    pub q_scale: Option<ScalarStep>,
    /// The scalar step on Kᵀ before the product, if any.
    pub k_scale: Option<ScalarStep>,
    /// The scalar step on the scores before the softmax, if any.
    pub scale: Option<ScalarStep>,
    /// The output is `[.., S, H, Dv]` instead of `[.., H, S, Dv]` (the Transpose of heads and
    /// rows that followed, fused).
    pub heads_interleaved: bool,
}

/// An operand read in place from a source tensor: element `i` of the operand (of `shape`) is
/// `source[base + Σ_a i_a · strides[a]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OperandView {
    pub shape: Vec<usize>,
    pub base: usize,
    pub strides: Vec<usize>,
}

impl OperandView {
    /// The largest offset the view reaches, plus one (0 for an empty operand).
    fn extent(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.base + self.shape.iter().zip(&self.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
    }

    /// Whether the view is a matrix view (rank ≥ 2, a stride per axis) that stays inside an
    /// input of `len` elements: the contract of [`OperandView::matrix`]'s offsets.
    pub fn check(&self, len: usize) -> OpResult<()> {
        if self.shape.len() < 2 || self.strides.len() != self.shape.len() || self.extent() > len || self.base > len {
            return Err(format!("operand view {self:?} is not a matrix view inside its input of {len} elements"));
        }
        Ok(())
    }

    /// Matrix `i` of the operand (its last two axes; `i` counts over the leading axes in
    /// row-major order): the offset of its first element, its row stride and its column stride.
    pub fn matrix(&self, i: usize) -> (usize, usize, usize) {
        let r = self.shape.len();
        let (mut rest, mut offset) = (i, self.base);
        for a in (0..r.saturating_sub(2)).rev() {
            offset += rest % self.shape[a] * self.strides[a];
            rest /= self.shape[a];
        }
        (offset, self.strides[r - 2], self.strides[r - 1])
    }
}

/// A Mul or Div of every element by a scalar, as the float node it replaces computes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarStep {
    Mul(f32),
    Div(f32),
}

impl ScalarStep {
    /// The constant the step divides or multiplies by.
    pub fn constant(self) -> f32 {
        match self {
            ScalarStep::Mul(c) | ScalarStep::Div(c) => c,
        }
    }

    /// The factor the step multiplies by (`1/c` for a Div, rounded once).
    pub fn factor(self) -> f32 {
        match self {
            ScalarStep::Mul(c) => c,
            ScalarStep::Div(c) => 1.0 / c,
        }
    }

    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self {
            ScalarStep::Mul(c) => x * c,
            ScalarStep::Div(c) => x / c,
        }
    }

    /// `x` stepped in place.
    fn apply_all(step: Option<ScalarStep>, x: &mut [f32]) {
        if let Some(step) = step {
            x.iter_mut().for_each(|x| *x = step.apply(*x));
        }
    }
}

/// One matrix of an operand: `at(i, j) = data[i·layout.row + j·layout.col]`.
struct Matrix<'a> {
    data: &'a [f32],
    layout: MatLayout,
}

impl<'a> Matrix<'a> {
    /// The matrix stepped by `step` into `scratch` (`rows × cols` values), in the orientation
    /// its memory is read fastest in: row-major unless its columns are contiguous. Without a
    /// step, the matrix itself.
    fn stepped(self, step: Option<ScalarStep>, rows: usize, cols: usize, scratch: &'a mut [f32]) -> Matrix<'a> {
        let Some(step) = step else { return self };
        let (row, col) = (self.layout.row as usize, self.layout.col as usize);
        if col != 1 && row == 1 {
            for (j, dst) in scratch.chunks_exact_mut(rows.max(1)).take(cols).enumerate() {
                dst.iter_mut().zip(&self.data[j * col..]).for_each(|(o, &x)| *o = step.apply(x));
            }
            return Matrix { data: scratch, layout: MatLayout::transposed(rows) };
        }
        for (i, dst) in scratch.chunks_exact_mut(cols.max(1)).take(rows).enumerate() {
            if col == 1 {
                dst.iter_mut().zip(&self.data[i * row..]).for_each(|(o, &x)| *o = step.apply(x));
            } else {
                dst.iter_mut().enumerate().for_each(|(j, o)| *o = step.apply(self.data[i * row + j * col]));
            }
        }
        Matrix { data: scratch, layout: MatLayout::row_major(cols) }
    }
}

/// The sizes of a [`FusedAttention`]: `batches` (batch × heads) products of `S × D` by `D × N`,
/// then `S × N` by `N × Dv`; `heads` is the axis before S; `out` the output's shape.
struct AttentionDims {
    batches: usize,
    heads: usize,
    s: usize,
    d: usize,
    n: usize,
    dv: usize,
    out: Vec<usize>,
}

impl FusedAttention {
    /// The operands' shapes, given the inputs'.
    fn operand_shapes(&self, inputs: [&[usize]; 3]) -> [Vec<usize>; 3] {
        std::array::from_fn(|i| self.views[i].as_ref().map_or_else(|| inputs[i].to_vec(), |v| v.shape.clone()))
    }

    fn dims(&self, [q, kt, v]: &[Vec<usize>; 3]) -> OpResult<AttentionDims> {
        let r = q.len();
        let lead = |x: &Vec<usize>| x.len() == r && x[..r - 2] == q[..r - 2];
        if r < 2 || !lead(kt) || !lead(v) {
            return Err(format!("Q {q:?}, Kᵀ {kt:?} and V {v:?} must be matrices of the same leading axes"));
        }
        let (s, d, n) = (q[r - 2], q[r - 1], kt[r - 1]);
        if kt[r - 2] != d || v[r - 2] != n {
            return Err(format!("Q {q:?}, Kᵀ {kt:?} and V {v:?} do not chain"));
        }
        let mut out = q[..r - 2].to_vec();
        out.extend([s, v[r - 1]]);
        let heads = if r >= 3 { q[r - 3] } else { 1 };
        if self.heads_interleaved {
            if r < 3 {
                return Err(format!("heads interleaved needs a heads axis, Q is {q:?}"));
            }
            out.swap(r - 3, r - 2);
        }
        Ok(AttentionDims { batches: numel(&q[..r - 2]), heads, s, d, n, dv: v[r - 1], out })
    }

    /// Checks that every view stays inside its input (of `len` elements).
    fn check_views(&self, lens: [usize; 3]) -> OpResult<()> {
        self.views.iter().zip(lens).try_for_each(|(view, len)| view.as_ref().map_or(Ok(()), |v| v.check(len)))
    }

    /// Matrix `i` (in batch order) of operand `which`, of shape `shape`, from its input `data`.
    fn matrix<'a>(&self, which: usize, shape: &[usize], data: &'a [f32], i: usize) -> Matrix<'a> {
        let r = shape.len();
        match &self.views[which] {
            None => Matrix { data: &data[i * shape[r - 2] * shape[r - 1]..], layout: MatLayout::row_major(shape[r - 1]) },
            Some(v) => {
                let (offset, row, col) = v.matrix(i);
                Matrix { data: &data[offset..], layout: MatLayout { row: row as isize, col: col as isize } }
            }
        }
    }

    /// Head `i`'s output (`S × Dv`, row-major) into `out`.
    fn head(&self, i: usize, inputs: [&[f32]; 3], shapes: &[Vec<usize>; 3], d: &AttentionDims, out: &mut [f32]) {
        let (s, dk, n, dv) = (d.s, d.d, d.n, d.dv);
        let (q, kt, v) =
            (self.matrix(0, &shapes[0], inputs[0], i), self.matrix(1, &shapes[1], inputs[1], i), self.matrix(2, &shapes[2], inputs[2], i));
        let (q_len, k_len) = (if self.q_scale.is_some() { s * dk } else { 0 }, if self.k_scale.is_some() { n * dk } else { 0 });
        octet_kernels::i8::with_scratch_f32(s * n + q_len + k_len, |scratch| {
            let (scores, rest) = scratch.split_at_mut(s * n);
            let (qs, ks) = rest.split_at_mut(q_len);
            let q = q.stepped(self.q_scale, s, dk, qs);
            let kt = kt.stepped(self.k_scale, dk, n, ks);
            k::matmul(s, n, dk, q.data, q.layout, kt.data, kt.layout, scores, false, Threads(1));
            ScalarStep::apply_all(self.scale, scores);
            k::softmax_rows(scores, n);
            k::matmul(s, dv, n, scores, MatLayout::row_major(n), v.data, v.layout, out, false, Threads(1));
        });
    }
}

impl Op for FusedAttention {
    fn name(&self) -> &'static str {
        "FusedAttention"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (q, k, v) = (required(inputs, 0, "Q")?, required(inputs, 1, "K")?, required(inputs, 2, "V")?);
        for (f, what) in [(q, "Q"), (k, "K"), (v, "V")] {
            expect_f32(f, what)?;
        }
        self.check_views([numel(&q.shape), numel(&k.shape), numel(&v.shape)])?;
        Ok(vec![Fact::new(DType::F32, self.dims(&self.operand_shapes([&q.shape, &k.shape, &v.shape]))?.out)])
    }
    fn multiply_adds(&self, inputs: &[Option<&Fact>]) -> u64 {
        match (optional(inputs, 0), optional(inputs, 1), optional(inputs, 2)) {
            (Some(q), Some(k), Some(v)) => {
                self.dims(&self.operand_shapes([&q.shape, &k.shape, &v.shape])).map_or(0, |d| (d.batches * d.s * d.n * (d.d + d.dv)) as u64)
            }
            _ => 0,
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>], ctx: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (qt, kt, vt) = (required(inputs, 0, "Q")?, required(inputs, 1, "K")?, required(inputs, 2, "V")?);
        let data = [f32_of(qt, "Q")?, f32_of(kt, "K")?, f32_of(vt, "V")?];
        self.check_views(data.map(|d| d.len()))?;
        let shapes = self.operand_shapes([qt.shape(), kt.shape(), vt.shape()]);
        let d = self.dims(&shapes)?;
        for (which, shape) in shapes.iter().enumerate() {
            if self.views[which].is_none() && numel(shape) > data[which].len() {
                return Err(format!("operand {which} of shape {shape:?} holds {} values", data[which].len()));
            }
        }
        let per = d.s * d.dv;
        let out = if self.heads_interleaved {
            fill_interleaved_chunks(d.batches, d.heads, d.s, d.dv, ctx.threads, |i, out| self.head(i, data, &shapes, &d, out))
        } else {
            let mut out = vec![0.0f32; d.batches * per];
            if ctx.threads > 1 {
                out.par_chunks_mut(per.max(1)).enumerate().for_each(|(i, o)| self.head(i, data, &shapes, &d, o));
            } else {
                out.chunks_mut(per.max(1)).enumerate().for_each(|(i, o)| self.head(i, data, &shapes, &d, o));
            }
            out
        };
        Ok(vec![Tensor::f32(d.out, out)])
    }
    op_any!();
}

/// Scaled dot-product attention with optional mask, causal and sliding-window masking, KV cache
/// (past and present keys and values), grouped-query heads, softcap and the QK output modes.
#[derive(Debug)]
pub struct Attention {
    pub scale: Option<f64>,
    pub is_causal: bool,
    pub q_num_heads: Option<usize>,
    pub kv_num_heads: Option<usize>,
    pub softcap: f64,
    pub qk_matmul_output_mode: i64,
    pub left_window: i64,
    pub right_window: i64,
    pub outputs: usize,
}

/// A (batch, heads, sequence, head size) view of Q, K or V.
struct Heads {
    b: usize,
    h: usize,
    s: usize,
    d: usize,
    v: Vec<f64>,
}

impl Heads {
    fn at(&self, b: usize, h: usize, s: usize) -> &[f64] {
        let o = ((b * self.h + h) * self.s + s) * self.d;
        &self.v[o..o + self.d]
    }
}

/// Shapes of the outputs: Y, present key, present value, QK.
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    past: usize,
    skv: usize,
    dk: usize,
    dv: usize,
    three_d: bool,
}

impl Attention {
    fn dims(&self, q: &[usize], k: &[usize], v: &[usize], past: Option<&[usize]>) -> OpResult<Dims> {
        if q.len() != k.len() || q.len() != v.len() || !(3..=4).contains(&q.len()) {
            return Err(format!("Q {q:?}, K {k:?} and V {v:?} must all be 3-D or all 4-D"));
        }
        let three_d = q.len() == 3;
        let (b, hq, sq, dk, hkv, skv, dv) = if three_d {
            let (hq, hkv) =
                (self.q_num_heads.ok_or("3-D inputs need q_num_heads")?, self.kv_num_heads.ok_or("3-D inputs need kv_num_heads")?);
            if hq == 0 || hkv == 0 || !q[2].is_multiple_of(hq) || !k[2].is_multiple_of(hkv) || !v[2].is_multiple_of(hkv) {
                return Err(format!("hidden sizes of Q {q:?}, K {k:?}, V {v:?} do not split into {hq} and {hkv} heads"));
            }
            (q[0], hq, q[1], q[2] / hq, hkv, k[1], v[2] / hkv)
        } else {
            (q[0], q[1], q[2], q[3], k[1], k[2], v[3])
        };
        let (kd, vs) = if three_d { (k[2] / hkv, v[1]) } else { (k[3], v[2]) };
        if k[0] != b || v[0] != b || kd != dk || vs != skv || hkv == 0 || hq % hkv != 0 || (!three_d && v[1] != hkv) {
            return Err(format!("Q {q:?}, K {k:?} and V {v:?} do not describe one attention"));
        }
        let past_len = match past {
            Some(p) if p.len() == 4 && p[0] == b && p[1] == hkv && p[3] == dk => p[2],
            Some(p) => return Err(format!("past_key {p:?} does not match K {k:?}")),
            None => 0,
        };
        Ok(Dims { b, hq, hkv, sq, past: past_len, skv: past_len + skv, dk, dv, three_d })
    }

    fn output_facts(&self, d: &Dims, dtype: DType) -> Vec<Fact> {
        let y = if d.three_d { vec![d.b, d.sq, d.hq * d.dv] } else { vec![d.b, d.hq, d.sq, d.dv] };
        let mut out = vec![
            Fact::new(dtype, y),
            Fact::new(dtype, vec![d.b, d.hkv, d.skv, d.dk]),
            Fact::new(dtype, vec![d.b, d.hkv, d.skv, d.dv]),
            Fact::new(dtype, vec![d.b, d.hq, d.sq, d.skv]),
        ];
        out.truncate(self.outputs.max(1));
        out
    }

    /// Q, K or V as (batch, heads, seq, size); 3-D inputs are split into heads.
    fn heads(t: &Tensor, heads: usize, three_d: bool) -> Heads {
        let s = t.shape();
        let v = t.to_f64_vec();
        if !three_d {
            return Heads { b: s[0], h: s[1], s: s[2], d: s[3], v };
        }
        let (b, n, d) = (s[0], s[1], s[2] / heads);
        let mut out = vec![0.0; v.len()];
        for bi in 0..b {
            for si in 0..n {
                for h in 0..heads {
                    let src = (bi * n + si) * heads * d + h * d;
                    let dst = ((bi * heads + h) * n + si) * d;
                    out[dst..dst + d].copy_from_slice(&v[src..src + d]);
                }
            }
        }
        Heads { b, h: heads, s: n, d, v: out }
    }

    /// The past cache followed by the new keys or values along the sequence axis.
    fn present(past: Option<&Tensor>, new: Heads) -> Heads {
        let Some(p) = past else { return new };
        let pv = p.to_f64_vec();
        let ps = p.shape()[2];
        let s = ps + new.s;
        let mut v = Vec::with_capacity(new.b * new.h * s * new.d);
        for b in 0..new.b {
            for h in 0..new.h {
                let o = (b * new.h + h) * ps * new.d;
                v.extend_from_slice(&pv[o..o + ps * new.d]);
                for i in 0..new.s {
                    v.extend_from_slice(new.at(b, h, i));
                }
            }
        }
        Heads { b: new.b, h: new.h, s, d: new.d, v }
    }
}

impl Op for Attention {
    fn name(&self) -> &'static str {
        "Attention"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (q, k, v) = (required(inputs, 0, "Q")?, required(inputs, 1, "K")?, required(inputs, 2, "V")?);
        if !q.dtype.is_float() {
            return Err(format!("Attention takes floats, got {}", q.dtype));
        }
        let d = self.dims(&q.shape, &k.shape, &v.shape, optional(inputs, 4).map(|f| f.shape.as_slice()))?;
        Ok(self.output_facts(&d, q.dtype))
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (q, k, v) = (required(inputs, 0, "Q")?, required(inputs, 1, "K")?, required(inputs, 2, "V")?);
        let (mask, past_k, past_v, nonpad) = (optional(inputs, 3), optional(inputs, 4), optional(inputs, 5), optional(inputs, 6));
        if past_k.is_some() != past_v.is_some() {
            return Err("past_key and past_value must be given together".into());
        }
        let d = self.dims(q.shape(), k.shape(), v.shape(), past_k.map(|t| t.shape()))?;
        let qh = Self::heads(q, d.hq, d.three_d);
        let kh = Self::present(past_k, Self::heads(k, d.hkv, d.three_d));
        let vh = Self::present(past_v, Self::heads(v, d.hkv, d.three_d));
        let nonpad: Option<Vec<i64>> = nonpad.map(|t| t.to_i64_vec().ok_or("nonpad_kv_seqlen must be integers")).transpose()?;
        if nonpad.as_ref().is_some_and(|n| n.len() != d.b) {
            return Err("nonpad_kv_seqlen needs one length per batch entry".into());
        }

        let full = [d.b, d.hq, d.sq, d.skv];
        let (mask_v, mask_st, mask_len, mask_bool) = match mask {
            Some(m) => {
                let ms = m.shape();
                let last = *ms.last().ok_or("attn_mask must have rank ≥ 1")?;
                let fits = ms.iter().rev().skip(1).zip(full.iter().rev().skip(1)).all(|(&m, &f)| m == 1 || m == f);
                if last > d.skv || ms.len() > 4 || !fits {
                    return Err(format!("attn_mask {ms:?} does not fit {full:?}"));
                }
                // Broadcast onto (B, H, Sq, Skv) except along the last axis, which is read as
                // is and padded (with "masked") up to Skv.
                let own = crate::tensor::strides(ms);
                let st: Vec<usize> = (0..4)
                    .map(|a| {
                        let i = a as isize - (4 - ms.len() as isize);
                        match i {
                            _ if i < 0 => 0,
                            i if a == 3 => own[i as usize],
                            i if ms[i as usize] == 1 => 0,
                            i => own[i as usize],
                        }
                    })
                    .collect();
                (m.to_f64_vec(), st, last, m.dtype() == DType::Bool)
            }
            None => (Vec::new(), vec![0; 4], 0, false),
        };
        let scale = self.scale.unwrap_or(1.0 / (d.dk as f64).sqrt()).sqrt();
        let reps = d.hq / d.hkv;
        // The QK output is only materialised when the node asks for it (its 4th output).
        let qk_len = if self.outputs > 3 { d.b * d.hq * d.sq * d.skv } else { 0 };
        let (mut y, mut qk_out) = (vec![0.0; d.b * d.hq * d.sq * d.dv], vec![0.0; qk_len]);
        let mut row = vec![0.0f64; d.skv];
        let mut bias = vec![0.0f64; d.skv];
        for b in 0..d.b {
            let offset = match (&nonpad, past_k) {
                (Some(n), None) => n[b] - d.sq as i64,
                _ => d.past as i64,
            };
            for h in 0..d.hq {
                let kvh = h / reps;
                for i in 0..d.sq {
                    let qi = qh.at(b, h, i);
                    for (j, bj) in bias.iter_mut().enumerate() {
                        let mut m = 0.0;
                        if mask.is_some() {
                            if j >= mask_len {
                                m = f64::NEG_INFINITY;
                            } else {
                                let at = b * mask_st[0] + h * mask_st[1] + i * mask_st[2] + j * mask_st[3];
                                let e = mask_v[at];
                                m = if mask_bool {
                                    if e != 0.0 {
                                        0.0
                                    } else {
                                        f64::NEG_INFINITY
                                    }
                                } else {
                                    e
                                };
                            }
                        }
                        let p = i as i64 + offset;
                        let j = j as i64;
                        if self.is_causal && j > p {
                            m = f64::NEG_INFINITY;
                        }
                        if (self.left_window >= 0 && p - j > self.left_window) || (self.right_window >= 0 && j - p > self.right_window) {
                            m = f64::NEG_INFINITY;
                        }
                        if nonpad.as_ref().is_some_and(|n| j >= n[b]) {
                            m = f64::NEG_INFINITY;
                        }
                        *bj = m;
                    }
                    for (j, r) in row.iter_mut().enumerate() {
                        let kj = kh.at(b, kvh, j);
                        let mut s: f64 = qi.iter().zip(kj).map(|(a, c)| (a * scale) * (c * scale)).sum();
                        if self.softcap > 0.0 {
                            s = (s / self.softcap).tanh() * self.softcap;
                        }
                        *r = s;
                    }
                    let out_row = ((b * d.hq + h) * d.sq + i) * d.skv;
                    if qk_len > 0 && self.qk_matmul_output_mode <= 1 {
                        qk_out[out_row..out_row + d.skv].copy_from_slice(&row);
                    }
                    row.iter_mut().zip(&bias).for_each(|(r, m)| *r += m);
                    if qk_len > 0 && self.qk_matmul_output_mode == 2 {
                        qk_out[out_row..out_row + d.skv].copy_from_slice(&row);
                    }
                    let all_masked = bias.iter().all(|m| *m == f64::NEG_INFINITY);
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let safe = if max == f64::NEG_INFINITY { 0.0 } else { max };
                    row.iter_mut().for_each(|r| *r = (*r - safe).exp());
                    let sum: f64 = row.iter().sum();
                    let sum = if sum == 0.0 { 1.0 } else { sum };
                    row.iter_mut().for_each(|r| *r = if all_masked { 0.0 } else { *r / sum });
                    if qk_len > 0 && self.qk_matmul_output_mode == 3 {
                        qk_out[out_row..out_row + d.skv].copy_from_slice(&row);
                    }
                    let yo = ((b * d.hq + h) * d.sq + i) * d.dv;
                    for (j, &p) in row.iter().enumerate() {
                        if p != 0.0 {
                            for (o, &e) in y[yo..yo + d.dv].iter_mut().zip(vh.at(b, kvh, j)) {
                                *o += p * e;
                            }
                        }
                    }
                }
            }
        }
        if d.three_d {
            let mut t = vec![0.0; y.len()];
            for b in 0..d.b {
                for h in 0..d.hq {
                    for i in 0..d.sq {
                        let src = ((b * d.hq + h) * d.sq + i) * d.dv;
                        let dst = (b * d.sq + i) * d.hq * d.dv + h * d.dv;
                        t[dst..dst + d.dv].copy_from_slice(&y[src..src + d.dv]);
                    }
                }
            }
            y = t;
        }
        let dtype = q.dtype();
        let facts = self.output_facts(&d, dtype);
        let values = [y, kh.v, vh.v, qk_out];
        Ok(facts.into_iter().zip(values).map(|(f, v)| Tensor::from_parts(f.shape, from_f64(dtype, v))).collect())
    }
    op_any!();
}

/// Rotary position embedding: rotates pairs of the first `rotary_embedding_dim` features
/// (interleaved pairs, or the two halves) by angles from the cos and sin caches.
#[derive(Debug)]
pub struct RotaryEmbedding {
    pub interleaved: bool,
    pub num_heads: Option<usize>,
    pub rotary_dim: Option<usize>,
}

impl Op for RotaryEmbedding {
    fn name(&self) -> &'static str {
        "RotaryEmbedding"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        if !x.dtype.is_float() || !(3..=4).contains(&x.shape.len()) {
            return Err(format!("RotaryEmbedding takes a 3-D or 4-D float tensor, got {} {:?}", x.dtype, x.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, cos, sin) = (required(inputs, 0, "X")?, required(inputs, 1, "cos_cache")?, required(inputs, 2, "sin_cache")?);
        let ids = optional(inputs, 3).map(|t| t.to_i64_vec().ok_or("position_ids must be integers")).transpose()?;
        let s = x.shape();
        // As (batch, seq, heads, head size), the layout the op is defined on.
        let (b, seq, heads, hd, bsnh) = if s.len() == 4 {
            (s[0], s[2], s[1], s[3], false)
        } else {
            let n = self.num_heads.filter(|&n| n > 0 && s[2] % n == 0).ok_or("3-D input needs num_heads dividing the hidden size")?;
            (s[0], s[1], n, s[2] / n, true)
        };
        let rot = self.rotary_dim.filter(|&r| r > 0).unwrap_or(hd);
        if rot > hd || !rot.is_multiple_of(2) {
            return Err(format!("rotary_embedding_dim {rot} must be even and at most the head size {hd}"));
        }
        let half = rot / 2;
        let (cv, sv) = (cos.to_f64_vec(), sin.to_f64_vec());
        let cs = cos.shape();
        if cs.last() != Some(&half) || sin.shape() != cs {
            return Err(format!("cos/sin caches {cs:?} must end in rotary_dim / 2 = {half}"));
        }
        let row_of = |bi: usize, si: usize| -> OpResult<usize> {
            match (&ids, cs.len()) {
                (Some(p), 2) => {
                    let pos = *p.get(bi * seq + si).ok_or("position_ids are too short")?;
                    usize::try_from(pos).ok().filter(|&r| r < cs[0]).ok_or_else(|| format!("position id {pos} is outside the cache"))
                }
                (None, 3) if cs[0] == b && cs[1] == seq => Ok(bi * seq + si),
                _ => Err(format!("cos/sin caches {cs:?} need position_ids (2-D caches) or (batch, seq, dim/2) caches")),
            }
        };
        let v = x.to_f64_vec();
        let mut out = v.clone();
        for bi in 0..b {
            for si in 0..seq {
                let r = row_of(bi, si)? * half;
                for h in 0..heads {
                    let base = if bsnh { ((bi * seq + si) * heads + h) * hd } else { ((bi * heads + h) * seq + si) * hd };
                    for k in 0..half {
                        let (i1, i2) = if self.interleaved { (base + 2 * k, base + 2 * k + 1) } else { (base + k, base + k + half) };
                        let (c, sn) = (cv[r + k], sv[r + k]);
                        out[i1] = v[i1] * c - v[i2] * sn;
                        out[i2] = v[i2] * c + v[i1] * sn;
                    }
                }
            }
        }
        Ok(vec![Tensor::from_parts(s.to_vec(), from_f64(x.dtype(), out))])
    }
    op_any!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q, Kᵀ and V of 2 heads read from one `[S, 3, H, D]` tensor (a QKV projection before its
    /// Transpose and Split) give the output of the same heads copied out first.
    #[test]
    fn views_read_the_operands_in_place() {
        let (s, h, d) = (5, 2, 3);
        let x: Vec<f32> = (0..s * 3 * h * d).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.1).collect();
        let st = [3 * h * d, h * d, d, 1];
        let at = |part: usize, hh: usize, row: usize, col: usize| x[row * st[0] + part * st[1] + hh * st[2] + col];
        // Q [H, S, D], Kᵀ [H, D, S], V [H, S, D], copied.
        let q: Vec<f32> = (0..h * s * d).map(|i| at(0, i / (s * d), i / d % s, i % d)).collect();
        let kt: Vec<f32> = (0..h * d * s).map(|i| at(1, i / (d * s), i % s, i / s % d)).collect();
        let v: Vec<f32> = (0..h * s * d).map(|i| at(2, i / (s * d), i / d % s, i % d)).collect();
        let view = |part: usize, transposed: bool| OperandView {
            shape: if transposed { vec![h, d, s] } else { vec![h, s, d] },
            base: part * st[1],
            strides: if transposed { vec![st[2], 1, st[0]] } else { vec![st[2], st[0], 1] },
        };
        let ctx = EvalCtx::default();
        let steps = [None, Some(ScalarStep::Mul(0.5))];
        for q_scale in steps {
            for k_scale in steps {
                let copied = FusedAttention {
                    views: [None, None, None],
                    q_scale,
                    k_scale,
                    scale: Some(ScalarStep::Div(2.0)),
                    heads_interleaved: false,
                };
                let viewed = FusedAttention { views: [Some(view(0, false)), Some(view(1, true)), Some(view(2, false))], ..copied.clone() };
                let t = |v: &[f32], shape: Vec<usize>| Tensor::f32(shape, v.to_vec());
                let want =
                    copied.eval(&[Some(&t(&q, vec![h, s, d])), Some(&t(&kt, vec![h, d, s])), Some(&t(&v, vec![h, s, d]))], &ctx).unwrap();
                let src = t(&x, vec![s, 3, h, d]);
                let got = viewed.eval(&[Some(&src), Some(&src), Some(&src)], &ctx).unwrap();
                assert_eq!(got[0].shape(), &[h, s, d]);
                let close =
                    got[0].as_f32().unwrap().iter().zip(want[0].as_f32().unwrap()).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0));
                assert!(close, "{q_scale:?} {k_scale:?}: {:?} vs {:?}", got[0], want[0]);
            }
        }
    }

    #[test]
    fn views_past_their_input_are_refused() {
        let view = OperandView { shape: vec![2, 4, 4], base: 8, strides: vec![16, 4, 1] };
        let op = FusedAttention { views: [Some(view), None, None], q_scale: None, k_scale: None, scale: None, heads_interleaved: false };
        let f = |shape: Vec<usize>| Fact::new(DType::F32, shape);
        let (q, k, v) = (f(vec![32]), f(vec![2, 4, 4]), f(vec![2, 4, 4]));
        let err = op.infer(&[Some(&q), Some(&k), Some(&v)]).unwrap_err();
        assert!(err.contains("not a matrix view inside"), "{err}");
    }
}
