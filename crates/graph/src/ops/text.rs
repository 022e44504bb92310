//! TfIdfVectorizer (ONNX "nn" group) on integer token ids; string pools are not supported.

use std::collections::{HashMap, HashSet};

use crate::error::OpResult;
use crate::op::{required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{DType, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    Tf,
    Idf,
    TfIdf,
}

/// Counts the pool's n-grams (lengths `min..=max`, skips up to `max_skip`) in each row of
/// token ids and writes term frequencies, IDF weights or both to `ngram_indexes` positions.
#[derive(Debug)]
pub struct TfIdfVectorizer {
    pub weighting: Weighting,
    pub min_gram: usize,
    pub max_gram: usize,
    pub max_skip: usize,
    /// Every pool n-gram of an accepted length → its output position.
    grams: HashMap<Vec<i64>, usize>,
    /// Every prefix of those n-grams (a walk stops where none continues).
    prefixes: HashSet<Vec<i64>>,
    pub output_size: usize,
    pub weights: Vec<f32>,
}

impl TfIdfVectorizer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weighting: Weighting,
        min_gram: usize,
        max_gram: usize,
        max_skip: usize,
        counts: &[i64],
        indexes: &[i64],
        pool: &[i64],
        weights: Vec<f32>,
    ) -> OpResult<TfIdfVectorizer> {
        let output_size = indexes.iter().copied().max().map_or(0, |m| m.max(-1) + 1) as usize;
        let (mut grams, mut prefixes) = (HashMap::new(), HashSet::new());
        let mut id = 0usize;
        for (i, &start) in counts.iter().enumerate() {
            let n = i + 1;
            let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
            let (start, end) =
                (usize::try_from(start).map_err(|_| "negative ngram_counts")?, usize::try_from(end).map_err(|_| "negative ngram_counts")?);
            if end < start || end > pool.len() {
                return Err(format!("ngram_counts {counts:?} do not fit a pool of {}", pool.len()));
            }
            for gram in pool[start..end].chunks_exact(n) {
                if (min_gram..=max_gram).contains(&n) {
                    let at = *indexes.get(id).ok_or("ngram_indexes is shorter than the pool")?;
                    grams.insert(gram.to_vec(), usize::try_from(at).map_err(|_| "negative ngram index")?);
                    for k in 1..=n {
                        prefixes.insert(gram[..k].to_vec());
                    }
                }
                id += 1;
            }
        }
        Ok(TfIdfVectorizer { weighting, min_gram, max_gram, max_skip, grams, prefixes, output_size, weights })
    }

    fn count_row(&self, row: &[i64], freq: &mut [f64]) {
        let mut start_size = self.min_gram;
        for skip in 1..=self.max_skip + 1 {
            for start in 0..row.len() {
                if start + skip * start_size.saturating_sub(1) >= row.len() {
                    break;
                }
                let mut gram = Vec::new();
                let mut at = start;
                while gram.len() < self.max_gram && at < row.len() {
                    gram.push(row[at]);
                    if !self.prefixes.contains(&gram) {
                        break;
                    }
                    if gram.len() >= start_size {
                        if let Some(&o) = self.grams.get(&gram) {
                            freq[o] += 1.0;
                        }
                    }
                    at += skip;
                }
            }
            if start_size == 1 {
                start_size = 2;
                if start_size > self.max_gram {
                    break;
                }
            }
        }
    }
}

impl Op for TfIdfVectorizer {
    fn name(&self) -> &'static str {
        "TfIdfVectorizer"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        if x.dtype.is_float() || !(1..=2).contains(&x.shape.len()) {
            return Err(format!("X must be 1-D or 2-D integer token ids, got {} {:?}", x.dtype, x.shape));
        }
        let shape = if x.shape.len() == 1 { vec![self.output_size] } else { vec![x.shape[0], self.output_size] };
        Ok(vec![Fact::new(DType::F32, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let fact = self.infer(&[Some(&Fact::new(x.dtype(), x.shape().to_vec()))])?.remove(0);
        let ids = x.to_i64_vec().expect("integer");
        let rows = if x.rank() == 1 { 1 } else { x.shape()[0] };
        let width = ids.len() / rows.max(1);
        let mut out = vec![0.0f64; rows * self.output_size];
        for (r, freq) in out.chunks_mut(self.output_size.max(1)).enumerate().take(rows) {
            self.count_row(&ids[r * width..(r + 1) * width], freq);
            for (i, f) in freq.iter_mut().enumerate() {
                let w = self.weights.get(i).map(|&w| w as f64);
                *f = match (self.weighting, w) {
                    (Weighting::Tf, _) | (Weighting::TfIdf, None) => *f,
                    (Weighting::Idf, w) => {
                        if *f > 0.0 {
                            w.unwrap_or(1.0)
                        } else {
                            0.0
                        }
                    }
                    (Weighting::TfIdf, Some(w)) => *f * w,
                };
            }
        }
        Ok(vec![Tensor::f32(fact.shape, out.into_iter().map(|v| v as f32).collect())])
    }
    op_any!();
}
