//! The ONNX spec's "object detection" group: NonMaxSuppression.

use crate::error::OpResult;
use crate::op::{optional, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::Tensor;

/// Greedy per-class suppression of boxes whose IoU with a kept higher-scoring box exceeds the
/// threshold; returns (batch, class, box) rows. Its output size depends on the values, which
/// must be known when the model is planned.
#[derive(Debug)]
pub struct NonMaxSuppression {
    pub center_point_box: bool,
}

impl NonMaxSuppression {
    /// (x_min, x_max, y_min, y_max) of a box.
    fn extent(&self, b: &[f64]) -> (f64, f64, f64, f64) {
        if self.center_point_box {
            (b[0] - b[2] / 2.0, b[0] + b[2] / 2.0, b[1] - b[3] / 2.0, b[1] + b[3] / 2.0)
        } else {
            (b[1].min(b[3]), b[1].max(b[3]), b[0].min(b[2]), b[0].max(b[2]))
        }
    }
    fn suppresses(&self, a: &[f64], b: &[f64], threshold: f64) -> bool {
        let (ax0, ax1, ay0, ay1) = self.extent(a);
        let (bx0, bx1, by0, by1) = self.extent(b);
        let (ix0, ix1, iy0, iy1) = (ax0.max(bx0), ax1.min(bx1), ay0.max(by0), ay1.min(by1));
        if ix1 <= ix0 || iy1 <= iy0 {
            return false;
        }
        let inter = (ix1 - ix0) * (iy1 - iy0);
        let (area_a, area_b) = ((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0));
        let union = area_a + area_b - inter;
        if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
            return false;
        }
        inter / union > threshold
    }
}

impl Op for NonMaxSuppression {
    fn name(&self) -> &'static str {
        "NonMaxSuppression"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0, 1, 2, 3, 4]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        super::layout::infer_by_value(self, inputs)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (boxes, scores) = (required(inputs, 0, "boxes")?, required(inputs, 1, "scores")?);
        let (bs, ss) = (boxes.shape(), scores.shape());
        if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
            return Err(format!("boxes {bs:?} and scores {ss:?} must be (B, N, 4) and (B, C, N)"));
        }
        let first = |i: usize| optional(inputs, i).and_then(|t| t.to_f64_vec().first().copied());
        let max_out = first(2).unwrap_or(0.0).max(0.0) as usize;
        let iou = first(3).unwrap_or(0.0);
        let score_threshold = first(4);
        let (bv, sv) = (boxes.to_f64_vec(), scores.to_f64_vec());
        let (nb, nc, n) = (bs[0], ss[1], bs[1]);
        let mut rows = Vec::new();
        for b in 0..nb {
            let bx = |i: usize| &bv[(b * n + i) * 4..][..4];
            for c in 0..nc {
                let sc = &sv[(b * nc + c) * n..][..n];
                let mut cand: Vec<usize> = (0..n).filter(|&i| score_threshold.is_none_or(|t| sc[i] > t)).collect();
                cand.sort_by(|&x, &y| sc[y].total_cmp(&sc[x]).then(x.cmp(&y)));
                let mut kept: Vec<usize> = Vec::new();
                for i in cand {
                    if kept.len() >= max_out {
                        break;
                    }
                    if kept.iter().all(|&k| !self.suppresses(bx(i), bx(k), iou)) {
                        kept.push(i);
                        rows.extend([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        Ok(vec![Tensor::i64(vec![rows.len() / 3, 3], rows)])
    }
    op_any!();
}
