//! The recurrent layers of the ONNX spec's "rnn" group: RNN, GRU and LSTM, forward, reverse
//! or bidirectional, with sequence lengths, initial states, peepholes, clipping, the batch-first
//! layout and every activation the spec lists. Computed in f64.

use super::elementwise::from_f64;
use crate::error::OpResult;
use crate::op::{optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl CellKind {
    fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Gru { .. } => 3,
            CellKind::Lstm { .. } => 4,
        }
    }
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            CellKind::Rnn => &["Tanh"],
            CellKind::Gru { .. } => &["Sigmoid", "Tanh"],
            CellKind::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

/// One of the activation functions the rnn ops accept, with its alpha and beta.
#[derive(Clone, Debug)]
pub struct Activation {
    name: String,
    alpha: Option<f64>,
    beta: Option<f64>,
}

impl Activation {
    fn apply(&self, x: f64) -> f64 {
        let (a, b) = (self.alpha, self.beta);
        match self.name.to_ascii_lowercase().as_str() {
            "sigmoid" => 1.0 / (1.0 + (-x).exp()),
            "tanh" => x.tanh(),
            "relu" => x.max(0.0),
            "affine" => a.unwrap_or(1.0) * x + b.unwrap_or(0.0),
            "leakyrelu" => {
                if x < 0.0 {
                    a.unwrap_or(0.01) * x
                } else {
                    x
                }
            }
            "thresholdedrelu" => {
                if x > a.unwrap_or(1.0) {
                    x
                } else {
                    0.0
                }
            }
            "scaledtanh" => a.unwrap_or(1.0) * (b.unwrap_or(1.0) * x).tanh(),
            "hardsigmoid" => (a.unwrap_or(0.2) * x + b.unwrap_or(0.5)).clamp(0.0, 1.0),
            "elu" => {
                if x < 0.0 {
                    a.unwrap_or(1.0) * x.exp_m1()
                } else {
                    x
                }
            }
            "softsign" => x / (1.0 + x.abs()),
            "softplus" => x.exp().ln_1p(),
            _ => unreachable!("checked when built"),
        }
    }
}

const ACTIVATIONS: &[&str] =
    &["sigmoid", "tanh", "relu", "affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu", "softsign", "softplus"];

/// The activations of every direction, from the node's attributes (defaults per cell kind).
pub fn activations(
    kind: CellKind,
    names: Option<Vec<String>>,
    alpha: Option<Vec<f32>>,
    beta: Option<Vec<f32>>,
    directions: usize,
) -> OpResult<Vec<Activation>> {
    let per_dir = kind.default_activations().len();
    let names =
        names.unwrap_or_else(|| kind.default_activations().iter().cycle().take(per_dir * directions).map(|s| s.to_string()).collect());
    if names.len() != per_dir * directions {
        return Err(format!("{} activations for {directions} direction(s); expected {}", names.len(), per_dir * directions));
    }
    // alpha and beta list one value per activation that takes them, in order.
    let takes_alpha = |n: &str| matches!(n, "affine" | "leakyrelu" | "thresholdedrelu" | "scaledtanh" | "hardsigmoid" | "elu");
    let takes_beta = |n: &str| matches!(n, "affine" | "scaledtanh" | "hardsigmoid");
    let (mut ai, mut bi) = (0, 0);
    names
        .into_iter()
        .map(|name| {
            let lower = name.to_ascii_lowercase();
            if !ACTIVATIONS.contains(&lower.as_str()) {
                return Err(format!("unknown activation '{name}'"));
            }
            let pick = |list: &Option<Vec<f32>>, i: &mut usize, takes: bool| {
                let v = takes.then(|| list.as_ref().and_then(|l| l.get(*i)).map(|&x| x as f64)).flatten();
                *i += usize::from(takes && v.is_some());
                v
            };
            let alpha = pick(&alpha, &mut ai, takes_alpha(&lower));
            let beta = pick(&beta, &mut bi, takes_beta(&lower));
            Ok(Activation { name, alpha, beta })
        })
        .collect()
}

#[derive(Debug)]
pub struct Recurrent {
    pub kind: CellKind,
    pub directions: usize,
    pub reverse_only: bool,
    pub hidden: Option<usize>,
    pub activations: Vec<Activation>,
    pub clip: Option<f64>,
    pub batch_first: bool,
    pub outputs: usize,
}

/// Sequence length, batch, input size, hidden size.
struct Dims {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
}

impl Recurrent {
    fn dims(&self, x: &[usize], w: &[usize], r: &[usize]) -> OpResult<Dims> {
        let g = self.kind.gates();
        if x.len() != 3 || w.len() != 3 || r.len() != 3 {
            return Err(format!("X {x:?}, W {w:?} and R {r:?} must be 3-D"));
        }
        let (seq, batch) = if self.batch_first { (x[1], x[0]) } else { (x[0], x[1]) };
        let hidden = self.hidden.unwrap_or(r[2]);
        if w[0] != self.directions || r[0] != self.directions || w[1] != g * hidden || r[1] != g * hidden || r[2] != hidden || w[2] != x[2]
        {
            return Err(format!("W {w:?} and R {r:?} do not fit X {x:?} with {} direction(s) and hidden size {hidden}", self.directions));
        }
        Ok(Dims { seq, batch, input: x[2], hidden })
    }

    fn output_shapes(&self, d: &Dims) -> Vec<Vec<usize>> {
        let nd = self.directions;
        let (y, h) = if self.batch_first {
            (vec![d.batch, d.seq, nd, d.hidden], vec![d.batch, nd, d.hidden])
        } else {
            (vec![d.seq, nd, d.batch, d.hidden], vec![nd, d.batch, d.hidden])
        };
        let mut out = vec![y, h.clone()];
        if matches!(self.kind, CellKind::Lstm { .. }) {
            out.push(h);
        }
        out.truncate(self.outputs.max(1));
        out
    }

    fn clip(&self, v: f64) -> f64 {
        self.clip.map_or(v, |c| v.clamp(-c, c))
    }
}

impl Op for Recurrent {
    fn name(&self) -> &'static str {
        match self.kind {
            CellKind::Rnn => "RNN",
            CellKind::Gru { .. } => "GRU",
            CellKind::Lstm { .. } => "LSTM",
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, w, r) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?, required(inputs, 2, "R")?);
        if !x.dtype.is_float() {
            return Err(format!("{} takes floats, got {}", self.name(), x.dtype));
        }
        let d = self.dims(&x.shape, &w.shape, &r.shape)?;
        Ok(self.output_shapes(&d).into_iter().map(|s| Fact::new(x.dtype, s)).collect())
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (xt, wt, rt) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?, required(inputs, 2, "R")?);
        let d = self.dims(xt.shape(), wt.shape(), rt.shape())?;
        let (nd, g, hs, bsz) = (self.directions, self.kind.gates(), d.hidden, d.batch);
        let bias_len = 2 * g * hs;
        let bias = match optional(inputs, 3) {
            Some(b) if b.len() == nd * bias_len => b.to_f64_vec(),
            Some(b) => return Err(format!("B {:?} must be ({nd}, {bias_len})", b.shape())),
            None => vec![0.0; nd * bias_len],
        };
        let lens: Vec<usize> = match optional(inputs, 4) {
            Some(l) => l.to_i64_vec().ok_or("sequence_lens must be integers")?.iter().map(|&v| (v.max(0) as usize).min(d.seq)).collect(),
            None => vec![d.seq; bsz],
        };
        if lens.len() != bsz {
            return Err("sequence_lens needs one length per batch entry".into());
        }
        let state = |i: usize, what: &str| -> OpResult<Vec<f64>> {
            match optional(inputs, i) {
                Some(t) if t.len() == nd * bsz * hs => {
                    let v = t.to_f64_vec();
                    // Stored (dir, batch, hidden), or (batch, dir, hidden) with the batch-first layout.
                    Ok(if self.batch_first {
                        (0..nd * bsz * hs)
                            .map(|k| {
                                let (dir, b, h) = (k / (bsz * hs), (k / hs) % bsz, k % hs);
                                v[(b * nd + dir) * hs + h]
                            })
                            .collect()
                    } else {
                        v
                    })
                }
                Some(t) => Err(format!("{what} {:?} does not hold {nd}×{bsz}×{hs} values", t.shape())),
                None => Ok(vec![0.0; nd * bsz * hs]),
            }
        };
        let (h0, c0) = (state(5, "initial_h")?, state(6, "initial_c")?);
        let peep = match (self.kind, optional(inputs, 7)) {
            (CellKind::Lstm { .. }, Some(p)) if p.len() == nd * 3 * hs => p.to_f64_vec(),
            (CellKind::Lstm { .. }, Some(p)) => return Err(format!("P {:?} must be ({nd}, {})", p.shape(), 3 * hs)),
            _ => vec![0.0; nd * 3 * hs],
        };
        let (x, w, r) = (xt.to_f64_vec(), wt.to_f64_vec(), rt.to_f64_vec());
        let x_at = |t: usize, b: usize| -> &[f64] {
            &x[if self.batch_first { (b * d.seq + t) * d.input } else { (t * bsz + b) * d.input }..][..d.input]
        };
        let per_dir = self.kind.default_activations().len();
        let mut y = vec![0.0f64; d.seq * nd * bsz * hs];
        let (mut yh, mut yc) = (vec![0.0f64; nd * bsz * hs], vec![0.0f64; nd * bsz * hs]);
        for dir in 0..nd {
            let backward = self.reverse_only || dir == 1;
            let (wd, rd) = (&w[dir * g * hs * d.input..][..g * hs * d.input], &r[dir * g * hs * hs..][..g * hs * hs]);
            let (wb, rb) = (&bias[dir * bias_len..][..g * hs], &bias[dir * bias_len + g * hs..][..g * hs]);
            let pd = &peep[dir * 3 * hs..][..3 * hs];
            let acts = &self.activations[dir * per_dir..][..per_dir];
            for b in 0..bsz {
                let mut h = h0[(dir * bsz + b) * hs..][..hs].to_vec();
                let mut c = c0[(dir * bsz + b) * hs..][..hs].to_vec();
                for step in 0..lens[b] {
                    let t = if backward { lens[b] - 1 - step } else { step };
                    let xv = x_at(t, b);
                    // gx[k] = W_k · x + Wb_k, gh[k] = R_k · h + Rb_k for every gate row k.
                    let gx: Vec<f64> =
                        (0..g * hs).map(|k| wd[k * d.input..][..d.input].iter().zip(xv).map(|(a, b)| a * b).sum::<f64>() + wb[k]).collect();
                    let gh: Vec<f64> =
                        (0..g * hs).map(|k| rd[k * hs..][..hs].iter().zip(&h).map(|(a, b)| a * b).sum::<f64>() + rb[k]).collect();
                    let new_h: Vec<f64> = match self.kind {
                        CellKind::Rnn => (0..hs).map(|j| acts[0].apply(self.clip(gx[j] + gh[j]))).collect(),
                        CellKind::Gru { linear_before_reset } => {
                            let z: Vec<f64> = (0..hs).map(|j| acts[0].apply(self.clip(gx[j] + gh[j]))).collect();
                            let rg: Vec<f64> = (0..hs).map(|j| acts[0].apply(self.clip(gx[hs + j] + gh[hs + j]))).collect();
                            (0..hs)
                                .map(|j| {
                                    let cand = if linear_before_reset {
                                        gx[2 * hs + j] + rg[j] * gh[2 * hs + j]
                                    } else {
                                        let rh: f64 = (0..hs).map(|k| rd[(2 * hs + j) * hs + k] * rg[k] * h[k]).sum();
                                        gx[2 * hs + j] + rh + rb[2 * hs + j]
                                    };
                                    (1.0 - z[j]) * acts[1].apply(self.clip(cand)) + z[j] * h[j]
                                })
                                .collect()
                        }
                        CellKind::Lstm { input_forget } => {
                            let mut hn = vec![0.0; hs];
                            for j in 0..hs {
                                let i_g = acts[0].apply(self.clip(gx[j] + gh[j] + pd[j] * c[j]));
                                let f_g = if input_forget {
                                    1.0 - i_g
                                } else {
                                    acts[0].apply(self.clip(gx[2 * hs + j] + gh[2 * hs + j] + pd[2 * hs + j] * c[j]))
                                };
                                let cand = acts[1].apply(self.clip(gx[3 * hs + j] + gh[3 * hs + j]));
                                let cn = f_g * c[j] + i_g * cand;
                                let o_g = acts[0].apply(self.clip(gx[hs + j] + gh[hs + j] + pd[hs + j] * cn));
                                hn[j] = o_g * acts[2].apply(cn);
                                c[j] = cn;
                            }
                            hn
                        }
                    };
                    h = new_h;
                    let at = if self.batch_first { ((b * d.seq + t) * nd + dir) * hs } else { ((t * nd + dir) * bsz + b) * hs };
                    y[at..at + hs].copy_from_slice(&h);
                }
                let at = if self.batch_first { (b * nd + dir) * hs } else { (dir * bsz + b) * hs };
                yh[at..at + hs].copy_from_slice(&h);
                yc[at..at + hs].copy_from_slice(&c);
            }
        }
        let dtype = xt.dtype();
        Ok(self.output_shapes(&d).into_iter().zip([y, yh, yc]).map(|(s, v)| Tensor::from_parts(s, from_f64(dtype, v))).collect())
    }
    op_any!();
}
