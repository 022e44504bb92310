//! The losses of the ONNX spec's "math" group: NegativeLogLikelihoodLoss and
//! SoftmaxCrossEntropyLoss (the latter with its optional log-probability output).

use super::elementwise::from_f64;
use crate::error::OpResult;
use crate::op::{optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReduction {
    None,
    Sum,
    Mean,
}

/// `-log_prob[n, target[n, d], d]` per element, weighted, then reduced; with `softmax`, the
/// input is first turned into log-probabilities along axis 1.
#[derive(Debug)]
pub struct Loss {
    pub softmax: bool,
    pub reduction: LossReduction,
    pub ignore_index: Option<i64>,
    pub outputs: usize,
}

impl Loss {
    fn loss_shape(&self, target: &[usize]) -> Vec<usize> {
        if self.reduction == LossReduction::None {
            target.to_vec()
        } else {
            vec![]
        }
    }
}

impl Op for Loss {
    fn name(&self) -> &'static str {
        if self.softmax {
            "SoftmaxCrossEntropyLoss"
        } else {
            "NegativeLogLikelihoodLoss"
        }
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, t) = (required(inputs, 0, "input")?, required(inputs, 1, "target")?);
        if x.shape.len() < 2 || !x.dtype.is_float() || t.dtype.is_float() {
            return Err(format!("needs float scores of rank ≥ 2 and integer targets, got {} {:?} and {}", x.dtype, x.shape, t.dtype));
        }
        let want: Vec<usize> = x.shape.iter().enumerate().filter(|&(a, _)| a != 1).map(|(_, &d)| d).collect();
        if t.shape != want {
            return Err(format!("target {:?} must have the shape {want:?}", t.shape));
        }
        let mut out = vec![Fact::new(x.dtype, self.loss_shape(&t.shape))];
        if self.softmax && self.outputs > 1 {
            out.push(Fact::new(x.dtype, x.shape.clone()));
        }
        Ok(out)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (x, t) = (required(inputs, 0, "input")?, required(inputs, 1, "target")?);
        let s = x.shape();
        let (n, c, d) = (s[0], s[1], numel(&s[2..]));
        let mut v = x.to_f64_vec();
        if self.softmax {
            for b in 0..n {
                for j in 0..d {
                    let at = |k: usize| (b * c + k) * d + j;
                    let max = (0..c).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..c).map(|k| (v[at(k)] - max).exp()).sum();
                    let log = sum.ln();
                    for k in 0..c {
                        v[at(k)] = v[at(k)] - max - log;
                    }
                }
            }
        }
        let target = t.to_i64_vec().ok_or("target must be integers")?;
        let weight = optional(inputs, 2).map(|w| w.to_f64_vec());
        if weight.as_ref().is_some_and(|w| w.len() != c) {
            return Err(format!("weight must hold {c} values"));
        }
        let (mut losses, mut weights) = (Vec::with_capacity(n * d), Vec::with_capacity(n * d));
        for b in 0..n {
            for j in 0..d {
                let class = target[b * d + j];
                if Some(class) == self.ignore_index {
                    losses.push(0.0);
                    weights.push(0.0);
                    continue;
                }
                let k = usize::try_from(class)
                    .ok()
                    .filter(|&k| k < c)
                    .ok_or_else(|| format!("target {class} is not a class index below {c}"))?;
                let w = weight.as_ref().map_or(1.0, |w| w[k]);
                losses.push(-v[(b * c + k) * d + j] * w);
                weights.push(w);
            }
        }
        let loss = match self.reduction {
            LossReduction::None => losses,
            LossReduction::Sum => vec![losses.iter().sum()],
            LossReduction::Mean if weight.is_some() || self.ignore_index.is_some() => {
                vec![losses.iter().sum::<f64>() / weights.iter().sum::<f64>()]
            }
            LossReduction::Mean => vec![losses.iter().sum::<f64>() / losses.len().max(1) as f64],
        };
        let dtype = x.dtype();
        let mut out = vec![Tensor::from_parts(self.loss_shape(t.shape()), from_f64(dtype, loss))];
        if self.softmax && self.outputs > 1 {
            out.push(Tensor::from_parts(s.to_vec(), from_f64(dtype, v)));
        }
        Ok(out)
    }
    op_any!();
}
