//! Ops of recurrent-state models from recent opsets (ONNX "nn" group): LinearAttention,
//! CausalConvWithState, and TensorScatter for the caches they keep. Computed in f64.

use super::elementwise::from_f64;
use crate::error::OpResult;
use crate::op::{norm_axis, optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, strides, Pick, Tensor};

/// Which state update LinearAttention applies per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateRule {
    Linear,
    Gated,
    Delta,
    GatedDelta,
}

/// Recurrent linear attention over (B, T, H·D) inputs: per step the (d_k × d_v) state is decayed
/// (gated rules), corrected toward the value (delta rules), extended by `k vᵀ`, and read by `q`.
#[derive(Debug)]
pub struct LinearAttention {
    pub rule: UpdateRule,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub scale: f64,
}

impl LinearAttention {
    fn dims(&self, q: &[usize], k: &[usize], v: &[usize]) -> OpResult<(usize, usize, usize, usize)> {
        let (hq, hk) = (self.q_heads, self.kv_heads);
        if q.len() != 3
            || k.len() != 3
            || v.len() != 3
            || hq == 0
            || hk == 0
            || hq % hk != 0
            || !q[2].is_multiple_of(hq)
            || !v[2].is_multiple_of(hk)
        {
            return Err(format!("query {q:?}, key {k:?}, value {v:?} do not split into {hq} and {hk} heads"));
        }
        let (dk, dv) = (q[2] / hq, v[2] / hk);
        if k[2] != hk * dk || k[..2] != q[..2] || v[..2] != q[..2] {
            return Err(format!("query {q:?}, key {k:?}, value {v:?} disagree"));
        }
        Ok((q[0], q[1], dk, dv))
    }
}

impl Op for LinearAttention {
    fn name(&self) -> &'static str {
        "LinearAttention"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (q, k, v) = (required(inputs, 0, "query")?, required(inputs, 1, "key")?, required(inputs, 2, "value")?);
        let (b, t, dk, dv) = self.dims(&q.shape, &k.shape, &v.shape)?;
        let state_dtype = optional(inputs, 3).map_or(q.dtype, |s| s.dtype);
        Ok(vec![Fact::new(q.dtype, vec![b, t, self.q_heads * dv]), Fact::new(state_dtype, vec![b, self.kv_heads, dk, dv])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (qt, kt, vt) = (required(inputs, 0, "query")?, required(inputs, 1, "key")?, required(inputs, 2, "value")?);
        let (b, t, dk, dv) = self.dims(qt.shape(), kt.shape(), vt.shape())?;
        let (hq, hk) = (self.q_heads, self.kv_heads);
        let gating = matches!(self.rule, UpdateRule::Gated | UpdateRule::GatedDelta);
        let delta = matches!(self.rule, UpdateRule::Delta | UpdateRule::GatedDelta);
        let (decay, beta) = (optional(inputs, 4), optional(inputs, 5));
        if gating != decay.is_some() || delta != beta.is_some() {
            return Err(format!(
                "update rule {:?} takes decay {} and beta {}",
                self.rule,
                if gating { "(required)" } else { "(forbidden)" },
                if delta { "(required)" } else { "(forbidden)" }
            ));
        }
        let decay_per_dim = match decay {
            Some(d) if d.shape() == [b, t, hk] => Some(false),
            Some(d) if d.shape() == [b, t, hk * dk] => Some(true),
            Some(d) => return Err(format!("decay {:?} must be (B, T, kv_heads) or (B, T, kv_heads·d_k)", d.shape())),
            None => None,
        };
        let beta_width = match beta {
            Some(bt) if bt.rank() == 3 && bt.shape()[..2] == [b, t] && (bt.shape()[2] == hk || bt.shape()[2] == 1) => bt.shape()[2],
            Some(bt) => return Err(format!("beta {:?} must be (B, T, kv_heads) or (B, T, 1)", bt.shape())),
            None => 0,
        };
        let (q, k, v) = (qt.to_f64_vec(), kt.to_f64_vec(), vt.to_f64_vec());
        let (dec, bet) = (decay.map(|d| d.to_f64_vec()), beta.map(|x| x.to_f64_vec()));
        let mut state = match optional(inputs, 3) {
            Some(s) if s.shape() == [b, hk, dk, dv] => s.to_f64_vec(),
            Some(s) => return Err(format!("past_state {:?} must be {:?}", s.shape(), [b, hk, dk, dv])),
            None => vec![0.0; b * hk * dk * dv],
        };
        let scale = if self.scale == 0.0 { 1.0 / (dk as f64).sqrt() } else { self.scale };
        let group = hq / hk;
        let mut out = vec![0.0; b * t * hq * dv];
        let mut retrieved = vec![0.0; dv];
        for bi in 0..b {
            for ti in 0..t {
                for h in 0..hk {
                    let st = &mut state[(bi * hk + h) * dk * dv..][..dk * dv];
                    if let (Some(dec), Some(per_dim)) = (&dec, decay_per_dim) {
                        for i in 0..dk {
                            let g = if per_dim { dec[(bi * t + ti) * hk * dk + h * dk + i] } else { dec[(bi * t + ti) * hk + h] };
                            st[i * dv..][..dv].iter_mut().for_each(|e| *e *= g.exp());
                        }
                    }
                    let kv = &k[(bi * t + ti) * hk * dk + h * dk..][..dk];
                    let vv = &v[(bi * t + ti) * hk * dv + h * dv..][..dv];
                    let mut vnew = vv.to_vec();
                    if let Some(bet) = &bet {
                        let bv = bet[(bi * t + ti) * beta_width + if beta_width == 1 { 0 } else { h }];
                        for (m, r) in retrieved.iter_mut().enumerate() {
                            *r = (0..dk).map(|i| st[i * dv + m] * kv[i]).sum();
                        }
                        vnew.iter_mut().zip(&retrieved).for_each(|(e, r)| *e = bv * (*e - r));
                    }
                    for i in 0..dk {
                        for m in 0..dv {
                            st[i * dv + m] += kv[i] * vnew[m];
                        }
                    }
                }
                for h in 0..hq {
                    let st = &state[(bi * hk + h / group) * dk * dv..][..dk * dv];
                    let qv = &q[(bi * t + ti) * hq * dk + h * dk..][..dk];
                    let o = &mut out[(bi * t + ti) * hq * dv + h * dv..][..dv];
                    for (m, e) in o.iter_mut().enumerate() {
                        *e = scale * (0..dk).map(|i| qv[i] * st[i * dv + m]).sum::<f64>();
                    }
                }
            }
        }
        let state_dtype = optional(inputs, 3).map_or(qt.dtype(), |s| s.dtype());
        Ok(vec![
            Tensor::from_parts(vec![b, t, hq * dv], from_f64(qt.dtype(), out)),
            Tensor::from_parts(vec![b, hk, dk, dv], from_f64(state_dtype, state)),
        ])
    }
    op_any!();
}

/// Depthwise causal 1-D convolution (B, C, L) continuing from a (B, C, k − 1) state, with an
/// optional SiLU; returns the output and the new state.
#[derive(Debug)]
pub struct CausalConvWithState {
    pub silu: bool,
}

impl Op for CausalConvWithState {
    fn name(&self) -> &'static str {
        "CausalConvWithState"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, w) = (required(inputs, 0, "input")?, required(inputs, 1, "weight")?);
        if x.shape.len() != 3 || w.shape.len() != 3 || w.shape[0] != x.shape[1] || w.shape[1] != 1 || w.shape[2] == 0 {
            return Err(format!("input {:?} and weight {:?} must be (B, C, L) and (C, 1, k)", x.shape, w.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone()), Fact::new(x.dtype, vec![x.shape[0], x.shape[1], w.shape[2] - 1])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (xt, wt) = (required(inputs, 0, "input")?, required(inputs, 1, "weight")?);
        let facts = self.infer(&[Some(&Fact::new(xt.dtype(), xt.shape().to_vec())), Some(&Fact::new(wt.dtype(), wt.shape().to_vec()))])?;
        let (b, c, l) = (xt.shape()[0], xt.shape()[1], xt.shape()[2]);
        let k = wt.shape()[2];
        let past = match optional(inputs, 3) {
            Some(p) if p.shape() == [b, c, k - 1] => p.to_f64_vec(),
            Some(p) => return Err(format!("past_state {:?} must be {:?}", p.shape(), [b, c, k - 1])),
            None => vec![0.0; b * c * (k - 1)],
        };
        let (x, w) = (xt.to_f64_vec(), wt.to_f64_vec());
        let bias = optional(inputs, 2).map(|t| t.to_f64_vec());
        let (mut y, mut state) = (Vec::with_capacity(b * c * l), Vec::with_capacity(b * c * (k - 1)));
        for bi in 0..b {
            for ch in 0..c {
                let padded: Vec<f64> =
                    past[(bi * c + ch) * (k - 1)..][..k - 1].iter().chain(&x[(bi * c + ch) * l..][..l]).copied().collect();
                for i in 0..l {
                    let mut s: f64 = (0..k).map(|j| padded[i + j] * w[ch * k + j]).sum();
                    s += bias.as_ref().map_or(0.0, |bv| bv[ch]);
                    y.push(if self.silu { s / (1.0 + (-s).exp()) } else { s });
                }
                state.extend_from_slice(&padded[padded.len() - (k - 1)..]);
            }
        }
        let dtype = xt.dtype();
        Ok(facts.into_iter().zip([y, state]).map(|(f, v)| Tensor::from_parts(f.shape, from_f64(dtype, v))).collect())
    }
    op_any!();
}

/// Writes `update` into a copy of `past_cache` along `axis`, from `write_indices[batch]`
/// (wrapping around in circular mode).
#[derive(Debug)]
pub struct TensorScatter {
    pub axis: i64,
    pub circular: bool,
}

impl Op for TensorScatter {
    fn name(&self) -> &'static str {
        "TensorScatter"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let c = required(inputs, 0, "past_cache")?;
        Ok(vec![Fact::new(c.dtype, c.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (cache, up) = (required(inputs, 0, "past_cache")?, required(inputs, 1, "update")?);
        let (cs, us) = (cache.shape(), up.shape());
        let axis = norm_axis(self.axis, cs.len())?;
        if cs.len() != us.len() || (0..cs.len()).any(|a| if a == axis { us[a] > cs[a] } else { us[a] != cs[a] }) || axis == 0 {
            return Err(format!("update {us:?} does not fit past_cache {cs:?} along axis {axis}"));
        }
        let writes = match optional(inputs, 2) {
            Some(w) => w.to_i64_vec().ok_or("write_indices must be integers")?,
            None => vec![0; cs[0]],
        };
        if writes.len() != cs[0] {
            return Err("write_indices needs one start per batch entry".into());
        }
        if up.dtype() != cache.dtype() {
            return Err(format!("update is {} but past_cache is {}", up.dtype(), cache.dtype()));
        }
        let (cst, ust) = (strides(cs), strides(us));
        let inner = numel(&cs[axis + 1..]);
        let prefix = numel(&cs[..axis]);
        let mut picks: Vec<Pick> = (0..cache.len()).map(Pick::Own).collect();
        for p in 0..prefix {
            let batch = p / numel(&cs[1..axis]).max(1);
            for s in 0..us[axis] {
                let mut at = writes[batch].saturating_add(s as i64);
                if self.circular {
                    at = at.rem_euclid(cs[axis] as i64);
                }
                let at = usize::try_from(at)
                    .ok()
                    .filter(|&a| a < cs[axis])
                    .ok_or_else(|| format!("write position {at} is outside the cache"))?;
                let (dst, src) = (p * cs[axis] * inner + at * cst[axis], p * us[axis] * inner + s * ust[axis]);
                for e in 0..inner {
                    picks[dst + e] = Pick::Other(src + e);
                }
            }
        }
        let out = cache.data().pick(up.data(), picks.into_iter()).expect("types checked above");
        Ok(vec![Tensor::from_parts(cs.to_vec(), out)])
    }
    op_any!();
}
