//! Calibration: runs the float model on sample inputs and feeds every quantized value to its
//! group's observer (two passes when the observer needs a histogram).

use std::collections::HashMap;

use octet_graph::{Error, QType, Tensor, ValueId};
use octet_runtime::{Hooks, Session};

use crate::annotate::{Annotation, ConstantKind, GroupKind};
use crate::observer::{Method, Observer};
use crate::rounding::SecondMoment;

/// Rows that a Linear input's second moment is taken from: an equal share of every calibration
/// run, evenly spaced within it.
const MOMENT_ROWS: usize = 4096;

/// One observer per group of the annotation (`None` for fixed-parameter groups).
pub struct Calibration {
    pub observers: Vec<Option<Observer>>,
    pub samples: usize,
    /// Per-channel (last axis) means of the inputs of Linears with a bias, for bias correction.
    pub means: HashMap<ValueId, Vec<f64>>,
    /// Second moments of the inputs of Linears, for adaptive weight rounding.
    pub moments: HashMap<ValueId, SecondMoment>,
}

struct Collect<'a> {
    member: &'a HashMap<ValueId, (usize, f32)>,
    observers: &'a mut [Option<Observer>],
    names: &'a [String],
    sample: usize,
    histogram: bool,
    /// Channel sums and row counts of the values whose means are wanted.
    sums: &'a mut HashMap<ValueId, (Vec<f64>, u64)>,
    moments: &'a mut HashMap<ValueId, Option<SecondMoment>>,
    /// Rows each run adds to a second moment.
    moment_rows: usize,
    threads: usize,
}

impl Hooks for Collect<'_> {
    fn value(&mut self, v: ValueId, t: &Tensor) -> octet_graph::Result<()> {
        if let (Some((sum, rows)), Some(xs), false) = (self.sums.get_mut(&v), t.as_f32(), self.histogram) {
            let c = t.shape().last().copied().unwrap_or(1).max(1);
            if sum.is_empty() {
                sum.resize(c, 0.0);
            }
            if sum.len() == c {
                for row in xs.chunks_exact(c) {
                    for (s, &x) in sum.iter_mut().zip(row) {
                        *s += x as f64;
                    }
                }
                *rows += (xs.len() / c) as u64;
            }
        }
        if let (Some(slot), Some(xs), false) = (self.moments.get_mut(&v), t.as_f32(), self.histogram) {
            let k = t.shape().last().copied().unwrap_or(1).max(1);
            let m = slot.get_or_insert_with(|| SecondMoment::new(k));
            let rows = xs.len() / k;
            if m.k == k && rows > 0 {
                let stride = rows.div_ceil(self.moment_rows.min(rows));
                let picked: Vec<f32> = xs.chunks_exact(k).step_by(stride).flatten().copied().collect();
                m.add_rows(&picked, self.threads);
            }
        }
        let Some(&(g, f)) = self.member.get(&v) else { return Ok(()) };
        let (Some(obs), Some(xs)) = (self.observers[g].as_mut(), t.as_f32()) else { return Ok(()) };
        if self.histogram {
            obs.observe_histogram(xs, 1.0 / f);
            return Ok(());
        }
        obs.observe_range(xs, 1.0 / f).map_err(|i| {
            Error::Input(format!(
                "calibration sample {}: tensor '{}' holds a non-finite value (NaN or Inf) at element {i}",
                self.sample, self.names[v]
            ))
        })
    }
}

/// Magnitudes from which a value is taken for an additive mask (−10⁴, −10⁹, the float minimum
/// that exporters write for masked positions) rather than an activation.
pub const MASK_MAGNITUDE: f64 = 1e4;

/// Collects the activations that hold NaN, infinities or mask-sized magnitudes.
struct NonFinite<'a> {
    names: &'a [String],
    found: Vec<String>,
}

impl Hooks for NonFinite<'_> {
    fn value(&mut self, v: ValueId, t: &Tensor) -> octet_graph::Result<()> {
        if t.dtype().is_float() && t.to_f64_vec().iter().any(|x| !x.is_finite() || x.abs() >= MASK_MAGNITUDE) {
            self.found.push(self.names[v].clone());
        }
        Ok(())
    }
}

/// The names of the values that hold NaN, infinities or magnitudes of at least
/// [`MASK_MAGNITUDE`] on `sample` (additive attention masks and the scores they are added to):
/// an 8-bit grid that spans them has no resolution left for the rest, so they (and the ops that
/// read them) stay float.
pub fn non_finite_values(session: &Session, names: &[String], sample: &[Tensor]) -> Result<Vec<String>, Error> {
    let mut hooks = NonFinite { names, found: Vec::new() };
    session.run_hooked(sample.to_vec(), &mut hooks)?;
    Ok(hooks.found)
}

/// Checks that no calibration input holds NaN or Inf.
pub fn check_finite(samples: &[Vec<Tensor>], input_names: &[&str]) -> Result<(), Error> {
    for (s, inputs) in samples.iter().enumerate() {
        for (t, name) in inputs.iter().zip(input_names) {
            if let Some(i) = t.as_f32().and_then(|xs| xs.iter().position(|x| !x.is_finite())) {
                return Err(Error::Input(format!(
                    "calibration sample {s}: input '{name}' holds a non-finite value (NaN or Inf) at element {i}"
                )));
            }
        }
    }
    Ok(())
}

/// Observes every sample; `progress(done, total)` is called after each run. `means` collects the
/// per-channel means of Linear inputs (bias correction), `moments` their second moments
/// (adaptive rounding).
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    session: &Session,
    ann: &Annotation,
    names: &[String],
    samples: &[Vec<Tensor>],
    method: Method,
    means: bool,
    moments: bool,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration, Error> {
    let mut second: HashMap<ValueId, Option<SecondMoment>> = HashMap::new();
    if moments {
        second.extend(ann.constants.iter().filter_map(|c| linear_input(ann, c)).map(|v| (v, None)));
    }
    let mut sums: HashMap<ValueId, (Vec<f64>, u64)> = HashMap::new();
    if means {
        for c in &ann.constants {
            if let ConstantKind::Bias { input, weight } = c.kind {
                if matches!(ann.constants[weight].kind, ConstantKind::Weight { matrix_output_axis: Some(_), .. }) {
                    sums.insert(input, (Vec::new(), 0));
                }
            }
        }
    }
    let mut member = HashMap::new();
    for (g, group) in ann.groups.iter().enumerate() {
        for &(v, f) in &group.members {
            member.insert(v, (g, f));
        }
    }
    let mut observers: Vec<Option<Observer>> = ann
        .groups
        .iter()
        .map(|g| match g.kind {
            GroupKind::Observed { qtype } => Some(Observer::new(qtype == QType::S8)),
            GroupKind::Fixed(_) => None,
        })
        .collect();
    let passes = if method.needs_histogram() { 2 } else { 1 };
    let total = passes * samples.len();
    for pass in 0..passes {
        if pass == 1 {
            observers.iter_mut().flatten().for_each(Observer::start_histogram);
        }
        for (s, inputs) in samples.iter().enumerate() {
            let mut hooks = Collect {
                member: &member,
                observers: &mut observers,
                names,
                sample: s,
                histogram: pass == 1,
                sums: &mut sums,
                moments: &mut second,
                moment_rows: MOMENT_ROWS.div_ceil(samples.len()),
                threads,
            };
            session.run_hooked(inputs.clone(), &mut hooks)?;
            progress(pass * samples.len() + s + 1, total);
        }
    }
    let means = sums
        .into_iter()
        .filter(|(_, (_, rows))| *rows > 0)
        .map(|(v, (sum, rows))| (v, sum.into_iter().map(|s| s / rows as f64).collect()))
        .collect();
    let moments = second.into_iter().filter_map(|(v, m)| Some((v, m?))).filter(|(_, m)| m.rows > 0).collect();
    Ok(Calibration { observers, samples: samples.len(), means, moments })
}

/// The activation input of the Linear whose 2-D weight `c` is (`None` for other constants).
pub fn linear_input(ann: &Annotation, c: &crate::annotate::ConstantSpec) -> Option<ValueId> {
    let ConstantKind::Weight { matrix_output_axis: Some(_), .. } = c.kind else { return None };
    let unit = &ann.units[ann.unit_of[c.node]?];
    unit.inputs.first().copied()
}
