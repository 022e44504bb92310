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

/// The If of `tests/fixtures/control_flow/qdq_if.onnx` (a QDQ Linear in its then-branch, its
/// weights and quantization parameters initializers of the enclosing graph): each plan binds
/// the branch's constants in, the branch's own plan lowers its pattern to the int8 Linear, and
/// both engines give ONNX Runtime's outputs on both branches.
#[test]
fn subgraph_bodies_run_through_the_pass_list() {
    use octet_graph::{DType, Fact};
    use octet_runtime::passes::plan_graph;
    use octet_runtime::subgraphs::plan_body;
    use octet_runtime::Target;

    let d = dir("control_flow");
    let model = octet_onnx::load(&d.join("qdq_if.onnx")).unwrap();
    let target = Target { engine: Engine::Int8, isa: None, observed: false };
    let outer = plan_graph(&model.graph, Default::default(), &[Fact::new(DType::F32, vec![2, 8, 16])], target).unwrap();
    let node = outer.nodes.iter().find(|n| n.op.name() == "If").expect("the If stays: its condition is computed");
    let then_branch = node.op.subgraphs()[0].clone();
    let captured: Vec<&str> = then_branch.captured.iter().map(|&v| then_branch.graph.names[v].as_str()).collect();
    assert_eq!(captured, ["xq"], "the weights, scales and zero points are bound in; only the computed codes stay captured");
    assert_eq!(node.inputs.len(), 1 + 2, "cond and the codes each branch reads");
    let body = plan_body(&then_branch, &[Fact::new(DType::U8, vec![2, 8, 16])], target).unwrap();
    let ops: Vec<&str> = body.nodes.iter().map(|n| n.op.name()).collect();
    assert!(ops.contains(&"QLinear") && !ops.contains(&"MatMul"), "the branch's plan: {ops:?}");

    for engine in [Engine::Int8, Engine::Reference] {
        let session = Session::new(model.graph.clone(), 1, engine).unwrap();
        for suffix in ["", "_else"] {
            let x = npy::read(&d.join(format!("input{suffix}.npy"))).unwrap();
            let want = &npy::read_npz(&d.join(format!("qdq_ort{suffix}.npz"))).unwrap()[0].1;
            for run in 0..2 {
                let got = session.run(vec![x.clone()]).unwrap();
                let (g, w) = (got[0].as_f32().unwrap(), want.as_f32().unwrap());
                let worst = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                // One output step is 0.02; the int8 kernel and ONNX Runtime may round a tie apart.
                assert!(worst <= 0.0201, "{engine:?} {suffix} run {run}: largest difference {worst}");
            }
        }
    }
}

/// A float model's If reads a weight of the enclosing graph (`W3`): the branch gets it as its
/// own constant, packed for the float matmul, as the enclosing graph's MatMul weights are.
#[test]
fn captured_weights_are_bound_and_packed_in_subgraph_plans() {
    use octet_graph::{DType, Fact};
    use octet_runtime::passes::plan_graph;
    use octet_runtime::subgraphs::plan_body;
    use octet_runtime::Target;

    let model = octet_onnx::load(&dir("control_flow").join("model.onnx")).unwrap();
    let target = Target { engine: Engine::Reference, isa: None, observed: false };
    let outer = plan_graph(&model.graph, Default::default(), &[Fact::new(DType::F32, vec![2, 8, 16])], target).unwrap();
    let node = outer.nodes.iter().find(|n| n.op.name() == "If").unwrap();
    let then_branch = node.op.subgraphs()[0].clone();
    let names =
        |b: &octet_graph::ops::control_flow::Body| -> Vec<String> { b.captured.iter().map(|&v| b.graph.names[v].clone()).collect() };
    assert!(!names(&then_branch).contains(&"W3".to_string()), "{:?}", names(&then_branch));
    // The node reads cond, then the then-branch's captured values, then the else-branch's.
    let facts: Vec<Fact> = (0..then_branch.captured.len()).map(|k| outer.fact(node.inputs[1 + k].unwrap()).clone()).collect();
    let body = plan_body(&then_branch, &facts, target).unwrap();
    let ops: Vec<&str> = body.nodes.iter().map(|n| n.op.name()).collect();
    assert!(ops.contains(&"PackedMatMul"), "{ops:?}");
}

/// Float attention (`MatMul → [scale] → Softmax → MatMul`, with the data movement that made its
/// operands and the Transpose of the heads after it) runs fused per head in the plans nobody
/// observes, within float rounding of the nodes it replaces, which observed plans keep (reading
/// an operand through strides may round the scores' sums differently).
#[test]
fn float_attention_runs_fused_within_rounding_of_its_nodes() {
    struct Observe;
    impl octet_runtime::Hooks for Observe {}
    for name in FIXTURES {
        let s = session(name);
        let x = npy::read(&dir(name).join("input.npy")).unwrap();
        let count = |observed: bool| {
            let plan = s.plan(std::slice::from_ref(&x), observed).unwrap();
            plan.graph.nodes.iter().filter(|n| n.op.name() == "FusedAttention").count()
        };
        let (fused, observed) = (count(false), count(true));
        println!("{name}: {fused} attention nodes fused");
        assert!(fused > 0 || *name == "bert_like_dynamo", "{name}: no attention fused");
        assert_eq!(observed, 0, "{name}: an observed plan fused away the values a hook reads");
        let (a, b) = (s.run(vec![x.clone()]).unwrap(), s.run_hooked(vec![x], &mut Observe).unwrap());
        let err = common::relative_error(&a[0], &b[0]);
        println!("{name}: relative difference {err:.2e}");
        assert!(err < 1e-6, "{name}: fused and unfused outputs differ by {err:.2e}");
    }
}

/// The residual Adds after a ViT block's projections run in the Linears' epilogues in plans
/// nobody observes (a PackedMatMul with a residual input; the kernel test checks the sum is the
/// Add's), and not in observed plans, whose hooks read the Linears' own outputs. (DINOv2's
/// LayerScale Mul sits between its projections and the Adds: not fused.)
#[test]
fn residual_adds_run_in_the_linears_epilogues_of_unobserved_plans() {
    for name in FIXTURES.iter().filter(|n| n.contains("vit") || n.contains("deit")) {
        let s = session(name);
        let x = npy::read(&dir(name).join("input.npy")).unwrap();
        let count = |observed: bool| {
            let plan = s.plan(std::slice::from_ref(&x), observed).unwrap();
            let with_residual = |n: &&octet_graph::Node| n.op.downcast::<octet_graph::ops::nn::PackedMatMul>().is_some_and(|m| m.residual);
            plan.graph.nodes.iter().filter(with_residual).count()
        };
        let (fused, observed) = (count(false), count(true));
        println!("{name}: {fused} residual Adds fused");
        assert!(fused >= 2, "{name}: the residual Adds of the blocks were not fused ({fused})");
        assert_eq!(observed, 0, "{name}: an observed plan fused away the values a hook reads");
    }
}
