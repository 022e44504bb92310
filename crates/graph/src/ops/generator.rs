//! Ops of the ONNX spec's "generator" group besides Constant and ConstantOfShape: Range, EyeLike.

use crate::error::OpResult;
use crate::op::{required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{DType, Data, Tensor};

/// `start, start + delta, …` up to (not including) `limit`; the length depends on the values,
/// so the operands must be constants (or graph inputs, planned by value).
#[derive(Debug)]
pub struct Range;

fn range_len(start: f64, limit: f64, delta: f64) -> OpResult<usize> {
    if delta == 0.0 || !(start.is_finite() && limit.is_finite() && delta.is_finite()) {
        return Err(format!("Range({start}, {limit}, {delta}) has no finite length"));
    }
    let n = ((limit - start) / delta).ceil().max(0.0);
    if n > 1e10 {
        return Err(format!("Range({start}, {limit}, {delta}) has {n} elements"));
    }
    Ok(n as usize)
}

fn scalars(inputs: &[Option<&Tensor>]) -> OpResult<[f64; 3]> {
    let get = |i, what| required(inputs, i, what)?.scalar_value().ok_or_else(|| format!("{what} must be a scalar"));
    Ok([get(0, "start")?, get(1, "limit")?, get(2, "delta")?])
}

impl Op for Range {
    fn name(&self) -> &'static str {
        "Range"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0, 1, 2]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let start = required(inputs, 0, "start")?;
        let get = |i, what| {
            required(inputs, i, what)?
                .const_scalar()
                .ok_or_else(|| format!("{what} must be a constant scalar (it is computed at run time)"))
        };
        let n = range_len(get(0, "start")?, get(1, "limit")?, get(2, "delta")?)?;
        Ok(vec![Fact::new(start.dtype, vec![n])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let dtype = required(inputs, 0, "start")?.dtype();
        let [start, limit, delta] = scalars(inputs)?;
        let n = range_len(start, limit, delta)?;
        crate::limits::check_tensor(dtype, &[n]).map_err(|m| format!("output {m}"))?;
        let data = if dtype.is_float() {
            Data::from_fn(dtype, n, |i| start + i as f64 * delta)
        } else {
            let (s, d) = (start as i64, delta as i64);
            Data::from_i64s(dtype, &(0..n as i64).map(|i| s.wrapping_add(i.wrapping_mul(d))).collect::<Vec<_>>())
        };
        Ok(vec![Tensor::from_parts(vec![n], data)])
    }
    op_any!();
}

/// A 2-D tensor shaped like the input with ones on diagonal `k`, of `dtype` (default: the
/// input's).
#[derive(Debug)]
pub struct EyeLike {
    pub dtype: Option<DType>,
    pub k: i64,
}

impl Op for EyeLike {
    fn name(&self) -> &'static str {
        "EyeLike"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        if x.shape.len() != 2 {
            return Err(format!("EyeLike takes a 2-D input, got {:?}", x.shape));
        }
        Ok(vec![Fact::new(self.dtype.unwrap_or(x.dtype), x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let [r, c] = x.shape() else { return Err(format!("EyeLike takes a 2-D input, got {:?}", x.shape())) };
        let (r, c, k) = (*r, *c, self.k);
        let data = Data::from_fn(self.dtype.unwrap_or(x.dtype()), r * c, |i| f64::from(u8::from((i % c) as i64 - (i / c) as i64 == k)));
        Ok(vec![Tensor::from_parts(vec![r, c], data)])
    }
    op_any!();
}

/// HannWindow, HammingWindow, BlackmanWindow: a window of `size` samples, periodic or symmetric.
#[derive(Debug)]
pub struct Window {
    pub kind: WindowKind,
    pub periodic: bool,
    pub dtype: DType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

impl Window {
    fn len(size: &Tensor) -> OpResult<usize> {
        let n = size.scalar_value().ok_or("size must be a scalar")?;
        if !(0.0..=1e9).contains(&n) {
            return Err(format!("window size {n} is out of range"));
        }
        Ok(n as usize)
    }
}

impl Op for Window {
    fn name(&self) -> &'static str {
        match self.kind {
            WindowKind::Hann => "HannWindow",
            WindowKind::Hamming => "HammingWindow",
            WindowKind::Blackman => "BlackmanWindow",
        }
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let size = required(inputs, 0, "size")?.value.clone().ok_or("size must be known when the model is planned")?;
        Ok(vec![Fact::new(self.dtype, vec![Self::len(&size)?])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let n = Self::len(required(inputs, 0, "size")?)?;
        crate::limits::check_tensor(self.dtype, &[n]).map_err(|m| format!("output {m}"))?;
        let denom = if self.periodic { n as f64 } else { n as f64 - 1.0 };
        let tau = std::f64::consts::TAU;
        let data = Data::from_fn(self.dtype, n, |i| {
            let x = i as f64 / denom;
            match self.kind {
                WindowKind::Hann => (std::f64::consts::PI * x).sin().powi(2),
                WindowKind::Hamming => 25.0 / 46.0 - (1.0 - 25.0 / 46.0) * (tau * x).cos(),
                WindowKind::Blackman => 0.42 - 0.5 * (tau * x).cos() + 0.08 * (2.0 * tau * x).cos(),
            }
        });
        Ok(vec![Tensor::from_parts(vec![n], data)])
    }
    op_any!();
}

/// The (dft_length / 2 + 1) × num_mel_bins matrix of triangular mel filters.
#[derive(Debug)]
pub struct MelWeightMatrix {
    pub dtype: DType,
}

impl MelWeightMatrix {
    fn args(inputs: &[Option<&Tensor>]) -> OpResult<[f64; 5]> {
        let get = |i: usize, what: &str| required(inputs, i, what)?.scalar_value().ok_or_else(|| format!("{what} must be a scalar"));
        Ok([
            get(0, "num_mel_bins")?,
            get(1, "dft_length")?,
            get(2, "sample_rate")?,
            get(3, "lower_edge_hertz")?,
            get(4, "upper_edge_hertz")?,
        ])
    }
}

impl Op for MelWeightMatrix {
    fn name(&self) -> &'static str {
        "MelWeightMatrix"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[0, 1, 2, 3, 4]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        super::layout::infer_by_value(self, inputs)
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let [bins, dft, rate, lo, hi] = Self::args(inputs)?;
        if !(1.0..=1e5).contains(&bins) || !(1.0..=1e7).contains(&dft) || rate <= 0.0 {
            return Err(format!("num_mel_bins {bins}, dft_length {dft} and sample_rate {rate} are out of range"));
        }
        let (bins, dft) = (bins as usize, dft as i64);
        let spec_bins = dft as usize / 2 + 1;
        crate::limits::check_tensor(DType::F64, &[spec_bins, bins]).map_err(|m| format!("output {m}"))?;
        let mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / std::f64::consts::LN_10;
        let (lo_mel, hi_mel) = (mel(lo), mel(hi));
        let step = (hi_mel - lo_mel) / (bins + 2) as f64;
        let edges: Vec<i64> = (0..bins + 2)
            .map(|i| {
                let hz = 700.0 * ((i as f64 * step + lo_mel) / 2595.0 * std::f64::consts::LN_10).exp_m1();
                (((dft + 1) as f64 * hz) / rate).floor() as i64
            })
            .collect();
        let mut out = vec![0.0f64; spec_bins * bins];
        let mut set = |j: i64, i: usize, v: f64| -> OpResult<()> {
            let j = usize::try_from(j).ok().filter(|&j| j < spec_bins).ok_or_else(|| format!("mel edge {j} is outside the spectrum"))?;
            out[j * bins + i] = v;
            Ok(())
        };
        for i in 0..bins {
            let (l, c, h) = (edges[i], edges[i + 1], edges[i + 2]);
            if c == l {
                set(c, i, 1.0)?;
            } else {
                for j in l..=c {
                    set(j, i, (j - l) as f64 / (c - l) as f64)?;
                }
            }
            if h > c {
                for j in c..h {
                    set(j, i, (h - j) as f64 / (h - c) as f64)?;
                }
            }
        }
        Ok(vec![Tensor::from_parts(vec![spec_bins, bins], super::elementwise::from_f64(self.dtype, out))])
    }
    op_any!();
}
