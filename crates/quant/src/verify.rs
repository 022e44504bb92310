//! The check a quantized model passes before it is written: it keeps ONNX's rules for names in
//! every graph and subgraph, octet imports it, both engines (int8 kernels and the float QDQ
//! reference) plan and run it on samples calibration did not see, and its outputs are compared
//! with the float model's. A model that fails is never written.

use std::path::Path;

use octet_graph::{Error, Graph, Tensor};
use octet_onnx::proto::ModelProto;
use octet_runtime::{Engine, Session};
use serde::Serialize;

/// Samples [`hold_back`] keeps from calibration for the check.
pub const HELD_BACK: usize = 4;

/// Splits samples into those calibration uses and those the check runs. Load up to
/// `limit + HELD_BACK` samples: with a `limit` the samples past it are held back; without one,
/// the last [`HELD_BACK`] are when there are more than `4 · HELD_BACK`. Otherwise all calibrate
/// and the check runs the first ones (`held_back` is false).
pub fn hold_back(mut samples: Vec<Vec<Tensor>>, limit: Option<usize>) -> (Vec<Vec<Tensor>>, Vec<Vec<Tensor>>, bool) {
    let keep = match limit {
        Some(n) if samples.len() > n => Some(n),
        None if samples.len() > 4 * HELD_BACK => Some(samples.len() - HELD_BACK),
        _ => None,
    };
    if let Some(keep) = keep {
        let mut check = samples.split_off(keep);
        check.truncate(HELD_BACK);
        return (samples, check, true);
    }
    let check = samples.iter().take(HELD_BACK).cloned().collect();
    (samples, check, false)
}

/// How one output of the quantized model agrees with the float model's.
#[derive(Clone, Debug, Serialize)]
pub struct OutputCheck {
    pub name: String,
    /// Per sample, the cosine similarity of the flattened outputs (float outputs), or the share
    /// of equal elements (integer and bool outputs): the worst and the mean over samples.
    pub int8_worst: f64,
    pub int8_mean: f64,
    /// The same for the float QDQ reference (every Q/DQ run as written).
    pub reference_worst: f64,
    /// "cosine" or "equal".
    pub measure: &'static str,
}

/// What the check ran and found.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub samples: usize,
    /// Whether the samples were held back from calibration (else they are calibration samples).
    pub held_back: bool,
    pub outputs: Vec<OutputCheck>,
}

impl Verification {
    /// One line for reports.
    pub fn text(&self) -> String {
        let outs: Vec<String> = self
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "'{}' {} worst {:.5}, mean {:.5} (QDQ reference worst {:.5})",
                    o.name, o.measure, o.int8_worst, o.int8_mean, o.reference_worst
                )
            })
            .collect();
        let on = if self.held_back {
            format!("{} held-back sample(s)", self.samples)
        } else {
            format!("{} calibration sample(s) (too few to hold any back)", self.samples)
        };
        format!("checked: the file loads and runs in octet on the int8 and reference engines; against float on {on}: {}\n", outs.join("; "))
    }
}

/// Checks `proto`, the quantized form of `float` (`base`: where external data would be), on
/// `samples` (`held_back`: whether calibration saw them). The error names the node that breaks a rule or fails to plan or run.
pub fn verify(
    proto: &ModelProto,
    base: &Path,
    float: &Graph,
    samples: &[Vec<Tensor>],
    held_back: bool,
    threads: usize,
) -> Result<Verification, Error> {
    let refuse =
        |what: String| Error::Invalid(format!("the quantized model {what}; octet wrote no file (please report this with the model)"));
    octet_onnx::scope::validate(proto).map_err(|e| refuse(format!("breaks ONNX's rules: {e}")))?;
    let bytes = prost::Message::encode_to_vec(proto);
    let quantized =
        octet_onnx::load_bytes(&bytes, Path::new("(quantized model)"), base).map_err(|e| refuse(format!("does not import: {e}")))?.graph;
    let reference = Session::new(quantized.clone(), threads, Engine::Reference)
        .map_err(|e| refuse(format!("does not load on the reference engine: {e}")))?;
    let int8 = Session::new(quantized, threads, Engine::Int8).map_err(|e| refuse(format!("does not load on the int8 engine: {e}")))?;
    let float_session = Session::new(float.clone(), threads, Engine::Reference)?;
    let names: Vec<String> = float.output_names().into_iter().map(String::from).collect();
    let mut per_output: Vec<(Vec<f64>, Vec<f64>, &'static str)> = vec![(vec![], vec![], "cosine"); names.len()];
    for sample in samples {
        let want = float_session.run(sample.clone())?;
        let got = int8.run(sample.clone()).map_err(|e| refuse(format!("fails on the int8 engine: {e}")))?;
        let got_ref = reference.run(sample.clone()).map_err(|e| refuse(format!("fails on the reference engine: {e}")))?;
        for (k, w) in want.iter().enumerate() {
            let (measure, a) = similarity(w, &got[k]).map_err(|m| refuse(format!("gives output '{}' {m} on the int8 engine", names[k])))?;
            let (_, b) =
                similarity(w, &got_ref[k]).map_err(|m| refuse(format!("gives output '{}' {m} on the reference engine", names[k])))?;
            per_output[k].0.push(a);
            per_output[k].1.push(b);
            per_output[k].2 = measure;
        }
    }
    let worst = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let outputs = names
        .into_iter()
        .zip(per_output)
        .map(|(name, (a, b, measure))| OutputCheck {
            name,
            int8_worst: worst(&a),
            int8_mean: a.iter().sum::<f64>() / a.len().max(1) as f64,
            reference_worst: worst(&b),
            measure,
        })
        .collect();
    Ok(Verification { samples: samples.len(), held_back, outputs })
}

/// Cosine similarity of two float tensors (1 when both are zero), or the share of equal
/// elements of two integer or bool tensors; an error when type or shape differ.
fn similarity(want: &Tensor, got: &Tensor) -> Result<(&'static str, f64), String> {
    if want.dtype() != got.dtype() || want.shape() != got.shape() {
        return Err(format!("of {} {:?} where the float model gives {} {:?}", got.dtype(), got.shape(), want.dtype(), want.shape()));
    }
    let (x, y) = (want.to_f64_vec(), got.to_f64_vec());
    if !want.dtype().is_float() {
        let equal = x.iter().zip(&y).filter(|(a, b)| a == b).count();
        return Ok(("equal", if x.is_empty() { 1.0 } else { equal as f64 / x.len() as f64 }));
    }
    let cosine = crate::evaluate::cosine(x.into_iter().zip(y));
    Ok(("cosine", if cosine.is_nan() { -1.0 } else { cosine }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> octet_onnx::OnnxModel {
        octet_onnx::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/control_flow/model.onnx")).unwrap()
    }

    fn sample() -> Vec<Tensor> {
        vec![Tensor::f32(vec![1, 8, 16], (0..128).map(|i| (i as f32 * 0.37).sin()).collect())]
    }

    #[test]
    fn a_model_whose_subgraph_reads_a_removed_value_is_refused_naming_the_node() {
        let model = fixture();
        let ok = verify(&model.proto, &model.base, &model.graph, &[sample()], false, 1).unwrap();
        assert!(ok.outputs.iter().all(|o| o.int8_worst > 0.999999 && o.measure == "cosine"), "{ok:?}");
        let mut broken = model.proto.clone();
        broken.graph.as_mut().unwrap().node.retain(|n| n.name() != "/dec/Concat_5");
        let err = verify(&broken, &model.base, &model.graph, &[sample()], false, 1).unwrap_err().to_string();
        assert!(err.contains("node 'then/MatMul' (MatMul) reads 'c'") && err.contains("octet wrote no file"), "{err}");
    }

    #[test]
    fn held_back_samples_are_those_past_the_limit_or_the_last_four() {
        let samples = |n: usize| (0..n).map(|i| vec![Tensor::f32(vec![1], vec![i as f32])]).collect::<Vec<_>>();
        let first = |v: &[Vec<Tensor>]| v.iter().map(|s| s[0].as_f32().unwrap()[0] as usize).collect::<Vec<_>>();
        let (cal, check, held) = hold_back(samples(20), None);
        assert_eq!((cal.len(), first(&check), held), (16, vec![16, 17, 18, 19], true));
        let (cal, check, held) = hold_back(samples(10), Some(8));
        assert_eq!((cal.len(), first(&check), held), (8, vec![8, 9], true));
        let (cal, check, held) = hold_back(samples(16), None);
        assert_eq!((cal.len(), first(&check), held), (16, vec![0, 1, 2, 3], false));
    }
}
