//! End-to-end fixtures (timm ViT, DeiT distilled, DINOv2-style, the seed's attention module;
//! TorchScript and dynamo exporters) against ONNX Runtime and PyTorch outputs, made by
//! `tools/fixtures/make_model_fixtures.py`.

#[path = "../../cli/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use octet::npy;
use octet_graph::ops::view::View;
use octet_graph::Tensor;
use octet_runtime::{Engine, Session};

const FIXTURES: &[&str] = &[
    "vit_ts",
    "vit_dynamo",
    "deit_distilled_ts",
    "dinov2_ts",
    "vit_gelu_tanh_dynamo",
    "seed_attention_ts",
    "seed_attention_dynamo",
    "vit_opset16_ts",
    "bert_like_dynamo",
];

fn dir(name: &str) -> PathBuf {
    common::root().join("tests/fixtures").join(name)
}

fn session(name: &str) -> Session {
    let model = octet_onnx::load(&dir(name).join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
    Session::new(model.graph, 2, Engine::Reference).unwrap()
}

/// Samples `[from, to)` of the first axis.
fn batch_slice(t: &Tensor, from: usize, to: usize) -> Tensor {
    let mut v = View::of(t.shape());
    v.base = from as isize * v.strides[0];
    v.shape[0] = to - from;
    v.copy(t)
}

#[test]
fn fixtures_match_onnxruntime_and_pytorch() {
    for name in FIXTURES {
        let d = dir(name);
        let input = npy::read(&d.join("input.npy")).unwrap();
        let out = session(name).run(vec![input]).unwrap_or_else(|e| panic!("{name}: {e}"));
        for reference in ["ort.npy", "torch.npy"] {
            let want = npy::read(&d.join(reference)).unwrap();
            let err = common::relative_error(&out[0], &want);
            println!("{name} vs {reference}: {err:.2e}");
            assert!(err < 1e-4, "{name}: relative error {err:.2e} against {reference}");
        }
    }
}

#[test]
fn symbolic_batch_takes_any_batch_size() {
    for name in ["vit_ts", "vit_dynamo", "seed_attention_ts"] {
        let d = dir(name);
        let input = npy::read(&d.join("input.npy")).unwrap();
        let want = npy::read(&d.join("ort.npy")).unwrap();
        let s = session(name);
        let n = input.shape()[0];
        for (from, to) in [(0, 1), (n - 1, n)] {
            let out = s.run(vec![batch_slice(&input, from, to)]).unwrap();
            let err = common::relative_error(&out[0], &batch_slice(&want, from, to));
            assert!(err < 1e-4, "{name} samples {from}..{to}: {err:.2e}");
        }
        let doubled = npy::read(&d.join("input.npy")).unwrap();
        let cat = octet_graph::Data::concat(&[doubled.data(), input.data()]).unwrap();
        let mut shape = input.shape().to_vec();
        shape[0] *= 2;
        let out = s.run(vec![Tensor::from_parts(shape, cat)]).unwrap();
        assert_eq!(out[0].shape()[0], 2 * want.shape()[0], "{name}: batch {}", 2 * n);
        assert!(common::relative_error(&batch_slice(&out[0], n, 2 * n), &want) < 1e-4);
    }
}

/// Op types executed by the plan (after folding and fusion).
fn planned_ops(name: &str) -> Vec<&'static str> {
    let model = octet_onnx::load(&dir(name).join("model.onnx")).unwrap();
    let input = npy::read(&dir(name).join("input.npy")).unwrap();
    let typed = octet_runtime::specialize(&model.graph, &[input.shape().to_vec()], Engine::Reference).unwrap();
    typed.verify().unwrap();
    typed.nodes.iter().map(|n| n.op.name()).collect()
}

#[test]
fn decomposed_layer_norm_and_tanh_gelu_are_fused() {
    let ops = planned_ops("vit_opset16_ts");
    for gone in ["ReduceMean", "Pow", "Sqrt", "Sub", "Tanh"] {
        assert!(!ops.contains(&gone), "vit_opset16_ts: {gone} still runs: {ops:?}");
    }
    assert_eq!(ops.iter().filter(|o| **o == "LayerNormalization").count(), 3, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == "Gelu").count(), 1, "{ops:?}");
}

#[test]
fn shape_arithmetic_is_folded_and_gelu_is_fused() {
    for name in ["vit_ts", "deit_distilled_ts", "dinov2_ts", "vit_dynamo"] {
        let ops = planned_ops(name);
        // Concat stays: it joins the class token to the patch tokens.
        for folded in ["Shape", "Unsqueeze", "ConstantOfShape", "Equal", "Where", "Cast", "Constant", "Erf", "Sqrt"] {
            assert!(!ops.contains(&folded), "{name}: {folded} still runs: {ops:?}");
        }
        assert!(ops.contains(&"Gelu"), "{name}: no fused Gelu in {ops:?}");
    }
}
