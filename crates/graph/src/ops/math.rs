//! Non-elementwise ops of the ONNX spec's "math" group: CumSum, CumProd, TopK.

use crate::error::OpResult;
use crate::op::{norm_axis, required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, DType, Data, Tensor};

/// Running sum or product along an axis (`exclusive`: shifted by one; `reverse`: from the end).
#[derive(Debug)]
pub struct Cumulative {
    pub product: bool,
    pub exclusive: bool,
    pub reverse: bool,
}

impl Op for Cumulative {
    fn name(&self) -> &'static str {
        if self.product {
            "CumProd"
        } else {
            "CumSum"
        }
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "x")?;
        if x.dtype == DType::Bool {
            return Err(format!("{} is not defined for bool", self.name()));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "x")?;
        let axis = required(inputs, 1, "axis")?.to_i64_vec().and_then(|v| v.first().copied()).ok_or("axis must be an integer scalar")?;
        let s = x.shape();
        let axis = norm_axis(axis, s.len())?;
        let (n, inner) = (s[axis], numel(&s[axis + 1..]));
        let outer = numel(&s[..axis]);
        let identity = if self.product { 1.0 } else { 0.0 };
        let combine = |a: f64, b: f64| if self.product { a * b } else { a + b };
        let v = x.to_f64_vec();
        let mut out = vec![0.0; v.len()];
        for o in 0..outer {
            for j in 0..inner {
                let mut acc = identity;
                for step in 0..n {
                    let i = if self.reverse { n - 1 - step } else { step };
                    let at = (o * n + i) * inner + j;
                    if self.exclusive {
                        out[at] = acc;
                        acc = combine(acc, v[at]);
                    } else {
                        acc = combine(acc, v[at]);
                        out[at] = acc;
                    }
                }
            }
        }
        Ok(vec![Tensor::from_parts(s.to_vec(), super::elementwise::from_f64(x.dtype(), out))])
    }
    op_any!();
}

/// The `k` largest (or smallest) elements along an axis, sorted, and their int64 indices; ties
/// keep the lower index first.
#[derive(Debug)]
pub struct TopK {
    pub axis: i64,
    pub largest: bool,
    /// Before opset 10, `k` was an attribute.
    pub k_attr: Option<i64>,
}

impl TopK {
    fn shape(&self, s: &[usize], k: i64) -> OpResult<(usize, usize, Vec<usize>)> {
        let axis = norm_axis(self.axis, s.len())?;
        if k < 0 || k as usize > s[axis] {
            return Err(format!("k = {k} is out of range for an axis of {}", s[axis]));
        }
        let mut out = s.to_vec();
        out[axis] = k as usize;
        Ok((axis, k as usize, out))
    }
}

impl Op for TopK {
    fn name(&self) -> &'static str {
        "TopK"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        let k = match self.k_attr {
            Some(k) => k,
            None => required(inputs, 1, "K")?.const_ints().and_then(|v| v.first().copied()).ok_or("K must be a constant")?,
        };
        let (_, _, shape) = self.shape(&x.shape, k)?;
        Ok(vec![Fact::new(x.dtype, shape.clone()), Fact::new(DType::I64, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let k = match self.k_attr {
            Some(k) => k,
            None => required(inputs, 1, "K")?.to_i64_vec().and_then(|v| v.first().copied()).ok_or("K must be an integer")?,
        };
        let s = x.shape();
        let (axis, k, shape) = self.shape(s, k)?;
        let (n, inner, outer) = (s[axis], numel(&s[axis + 1..]), numel(&s[..axis]));
        let v = x.to_f64_vec();
        let mut picks = Vec::with_capacity(outer * k * inner);
        let mut idx_out = vec![0i64; outer * k * inner];
        let mut order: Vec<usize> = Vec::with_capacity(n);
        for o in 0..outer {
            for j in 0..inner {
                order.clear();
                order.extend(0..n);
                let at = |i: usize| v[(o * n + i) * inner + j];
                order.sort_by(|&a, &b| {
                    let c = at(a).partial_cmp(&at(b)).unwrap_or(std::cmp::Ordering::Equal);
                    let c = if self.largest { c.reverse() } else { c };
                    c.then(a.cmp(&b))
                });
                for (r, &i) in order[..k].iter().enumerate() {
                    idx_out[(o * k + r) * inner + j] = i as i64;
                }
            }
        }
        for o in 0..outer {
            for r in 0..k {
                for j in 0..inner {
                    let i = idx_out[(o * k + r) * inner + j] as usize;
                    picks.push((o * n + i) * inner + j);
                }
            }
        }
        let gathered: Data = x.data().gather(picks.into_iter());
        Ok(vec![Tensor::from_parts(shape.clone(), gathered), Tensor::i64(shape, idx_out)])
    }
    op_any!();
}

/// Determinant of each square matrix in the last two axes (LU with partial pivoting, f64).
#[derive(Debug)]
pub struct Det;

impl Op for Det {
    fn name(&self) -> &'static str {
        "Det"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "X")?;
        let r = x.shape.len();
        if r < 2 || x.shape[r - 1] != x.shape[r - 2] || !x.dtype.is_float() {
            return Err(format!("Det takes float square matrices, got {} {:?}", x.dtype, x.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape[..r - 2].to_vec())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "X")?;
        let s = x.shape();
        let n = s[s.len() - 1];
        let v = x.to_f64_vec();
        let dets: Vec<f64> = v
            .chunks(n * n)
            .map(|m| {
                let mut a = m.to_vec();
                let mut det = 1.0;
                for c in 0..n {
                    let p = (c..n).max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs())).unwrap_or(c);
                    if a[p * n + c] == 0.0 {
                        return 0.0;
                    }
                    if p != c {
                        for k in 0..n {
                            a.swap(p * n + k, c * n + k);
                        }
                        det = -det;
                    }
                    det *= a[c * n + c];
                    for r in c + 1..n {
                        let f = a[r * n + c] / a[c * n + c];
                        for k in c..n {
                            a[r * n + k] -= f * a[c * n + k];
                        }
                    }
                }
                det
            })
            .collect();
        Ok(vec![Tensor::from_parts(s[..s.len() - 2].to_vec(), super::elementwise::from_f64(x.dtype(), dets))])
    }
    op_any!();
}

/// Einstein summation over any equation (`...` broadcasting, implicit output in sorted label
/// order), by direct loops over every label: for the small contractions models use it for.
#[derive(Debug)]
pub struct Einsum {
    pub equation: String,
}

/// A parsed equation: per input its axis labels, then the output's (`'.'`-free; ellipsis axes
/// get labels from 'A' on).
struct EinsumPlan {
    inputs: Vec<Vec<char>>,
    output: Vec<char>,
    sizes: std::collections::BTreeMap<char, usize>,
}

impl Einsum {
    fn plan(&self, shapes: &[&[usize]]) -> OpResult<EinsumPlan> {
        let eq: String = self.equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l.to_string(), Some(r.to_string())),
            None => (eq.clone(), None),
        };
        let terms: Vec<&str> = lhs.split(',').collect();
        if terms.len() != shapes.len() {
            return Err(format!("equation '{}' has {} operands, got {}", self.equation, terms.len(), shapes.len()));
        }
        let ellipsis_rank =
            terms.iter().zip(shapes).map(|(t, s)| if t.contains("...") { s.len() + 3 - t.len() } else { 0 }).max().unwrap_or(0);
        let ell: Vec<char> = (0..ellipsis_rank).map(|i| (b'A' + i as u8) as char).collect();
        let expand = |t: &str, rank: usize| -> OpResult<Vec<char>> {
            match t.split_once("...") {
                Some((a, b)) => {
                    let n = rank.checked_sub(a.len() + b.len()).ok_or_else(|| format!("term '{t}' has more labels than axes"))?;
                    Ok(a.chars().chain(ell[ellipsis_rank - n..].iter().copied()).chain(b.chars()).collect())
                }
                None => Ok(t.chars().collect()),
            }
        };
        let mut sizes = std::collections::BTreeMap::new();
        let mut inputs = Vec::new();
        for (t, s) in terms.iter().zip(shapes) {
            let labels = expand(t, s.len())?;
            if labels.len() != s.len() || labels.iter().any(|c| !c.is_ascii_alphabetic()) {
                return Err(format!("term '{t}' does not label the {} axes of its operand", s.len()));
            }
            for (&c, &d) in labels.iter().zip(s.iter()) {
                let e = sizes.entry(c).or_insert(d);
                if *e == 1 {
                    *e = d;
                } else if d != 1 && *e != d {
                    return Err(format!("label '{c}' has sizes {e} and {d}"));
                }
            }
            inputs.push(labels);
        }
        let output = match rhs {
            Some(r) => expand(&r, ellipsis_rank + r.replace("...", "").len())?,
            None => {
                let counts = inputs.iter().flatten().fold(std::collections::BTreeMap::new(), |mut m, c| {
                    *m.entry(*c).or_insert(0) += 1;
                    m
                });
                ell.iter().copied().chain(counts.iter().filter(|(c, n)| **n == 1 && c.is_ascii_lowercase()).map(|(c, _)| *c)).collect()
            }
        };
        if let Some(c) = output.iter().find(|c| !sizes.contains_key(c)) {
            return Err(format!("output label '{c}' appears in no operand"));
        }
        Ok(EinsumPlan { inputs, output, sizes })
    }
}

impl Op for Einsum {
    fn name(&self) -> &'static str {
        "Einsum"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let facts: Vec<&Fact> = inputs.iter().flatten().copied().collect();
        let first = facts.first().ok_or("Einsum needs inputs")?;
        let shapes: Vec<&[usize]> = facts.iter().map(|f| f.shape.as_slice()).collect();
        let p = self.plan(&shapes)?;
        Ok(vec![Fact::new(first.dtype, p.output.iter().map(|c| p.sizes[c]).collect())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let first = ts.first().ok_or("Einsum needs inputs")?;
        let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
        let p = self.plan(&shapes)?;
        let labels: Vec<char> = p.sizes.keys().copied().collect();
        let dims: Vec<usize> = labels.iter().map(|c| p.sizes[c]).collect();
        let pos = |c: &char| labels.iter().position(|l| l == c).expect("known label");
        // Per operand, per label: the element stride (0 where the label is absent or broadcast).
        let strides_of = |ls: &[char], shape: &[usize]| -> Vec<usize> {
            let own = crate::tensor::strides(shape);
            let mut st = vec![0usize; labels.len()];
            for (a, c) in ls.iter().enumerate() {
                if shape[a] != 1 {
                    st[pos(c)] += own[a];
                }
            }
            st
        };
        let in_st: Vec<Vec<usize>> = p.inputs.iter().zip(&shapes).map(|(l, s)| strides_of(l, s)).collect();
        let out_shape: Vec<usize> = p.output.iter().map(|c| p.sizes[c]).collect();
        let out_st = strides_of(&p.output, &out_shape);
        let values: Vec<Vec<f64>> = ts.iter().map(|t| t.to_f64_vec()).collect();
        let mut out = vec![0.0f64; numel(&out_shape)];
        let mut idx = vec![0usize; labels.len()];
        for flat in 0..numel(&dims) {
            super::layout::unravel(flat, &dims, &mut idx);
            let mut prod = 1.0;
            for (v, st) in values.iter().zip(&in_st) {
                prod *= v[idx.iter().zip(st).map(|(i, s)| i * s).sum::<usize>()];
            }
            out[idx.iter().zip(&out_st).map(|(i, s)| i * s).sum::<usize>()] += prod;
        }
        Ok(vec![Tensor::from_parts(out_shape, super::elementwise::from_f64(first.dtype(), out))])
    }
    op_any!();
}

/// DFT over one axis of a real (last dim 1) or complex (last dim 2) signal: forward, inverse,
/// one-sided (real-input forward, or Hermitian-input inverse), zero-padded or truncated to
/// `dft_length`. Direct O(n²) sums in f64.
#[derive(Debug)]
pub struct Dft {
    pub inverse: bool,
    pub onesided: bool,
    /// Before opset 20, the axis was an attribute (default 1); from 20 it is input 2 (default -2).
    pub axis_attr: Option<i64>,
}

impl Dft {
    fn plan(&self, s: &[usize], len: Option<i64>, axis: Option<i64>) -> OpResult<(usize, usize, Vec<usize>)> {
        if s.len() < 2 || !matches!(s[s.len() - 1], 1 | 2) {
            return Err(format!("DFT takes a signal whose last axis is 1 (real) or 2 (complex), got {s:?}"));
        }
        let axis = norm_axis(self.axis_attr.or(axis).unwrap_or(-2), s.len())?;
        if axis == s.len() - 1 {
            return Err("the DFT axis cannot be the real/imaginary axis".into());
        }
        let n = match len {
            Some(l) if l > 0 => l as usize,
            Some(l) => return Err(format!("dft_length {l} must be positive")),
            None if self.inverse && self.onesided => 2 * s[axis].saturating_sub(1),
            None => s[axis],
        };
        let mut out = s.to_vec();
        out[axis] = if self.onesided && !self.inverse { n / 2 + 1 } else { n };
        *out.last_mut().expect("rank ≥ 2") = if self.inverse && self.onesided { 1 } else { 2 };
        Ok((axis, n, out))
    }
    fn scalar_of<T>(inputs: &[Option<&T>], i: usize, get: impl Fn(&T) -> Option<Vec<i64>>) -> OpResult<Option<i64>> {
        crate::op::optional(inputs, i)
            .map(|t| get(t).and_then(|v| v.first().copied()).ok_or_else(|| format!("input {i} must be an integer scalar")))
            .transpose()
    }
}

impl Op for Dft {
    fn name(&self) -> &'static str {
        "DFT"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        let (len, axis) = (Self::scalar_of(inputs, 1, |f| f.const_ints())?, Self::scalar_of(inputs, 2, |f| f.const_ints())?);
        Ok(vec![Fact::new(x.dtype, self.plan(&x.shape, len, axis)?.2)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let (len, axis) = (Self::scalar_of(inputs, 1, |t| t.to_i64_vec())?, Self::scalar_of(inputs, 2, |t| t.to_i64_vec())?);
        let s = x.shape();
        let (axis, n, out_shape) = self.plan(s, len, axis)?;
        let (c_in, c_out) = (s[s.len() - 1], out_shape[out_shape.len() - 1]);
        let (m_in, m_out) = (s[axis], out_shape[axis]);
        let outer = numel(&s[..axis]);
        let inner = numel(&s[axis + 1..s.len() - 1]);
        let v = x.to_f64_vec();
        let mut out = vec![0.0f64; numel(&out_shape)];
        let tau = std::f64::consts::TAU;
        for o in 0..outer {
            for j in 0..inner {
                let at = |k: usize| ((o * m_in + k) * inner + j) * c_in;
                let z = |k: usize| -> (f64, f64) {
                    if k < m_in {
                        (v[at(k)], if c_in == 2 { v[at(k) + 1] } else { 0.0 })
                    } else {
                        (0.0, 0.0)
                    }
                };
                for t in 0..m_out {
                    let dst = ((o * m_out + t) * inner + j) * c_out;
                    if self.inverse && self.onesided {
                        // Real signal from a Hermitian spectrum (numpy's irfft).
                        let half = n / 2;
                        let mut acc = z(0).0;
                        for k in 1..=half {
                            let (re, im) = z(k);
                            let th = tau * (k * t) as f64 / n as f64;
                            let w = if n % 2 == 0 && k == half { 1.0 } else { 2.0 };
                            acc += w * if n % 2 == 0 && k == half { re * th.cos() } else { re * th.cos() - im * th.sin() };
                        }
                        out[dst] = acc / n as f64;
                        continue;
                    }
                    let sign = if self.inverse { 1.0 } else { -1.0 };
                    let (mut re, mut im) = (0.0, 0.0);
                    for k in 0..n.min(m_in) {
                        let (a, b) = z(k);
                        let th = sign * tau * ((k * t) % n) as f64 / n as f64;
                        re += a * th.cos() - b * th.sin();
                        im += a * th.sin() + b * th.cos();
                    }
                    let scale = if self.inverse { 1.0 / n as f64 } else { 1.0 };
                    out[dst] = re * scale;
                    out[dst + 1] = im * scale;
                }
            }
        }
        Ok(vec![Tensor::from_parts(out_shape, super::elementwise::from_f64(x.dtype(), out))])
    }
    op_any!();
}
