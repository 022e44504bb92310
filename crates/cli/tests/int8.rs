//! The int8 engine: every lowered kernel against its `dq → float op → q` reference (fed the
//! reference's own inputs), on every ISA tier this machine has; whole models against the QDQ
//! reference; identical bits across tiers.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use octet::npy;
use octet_graph::{Tensor, ValueId};
use octet_kernels::Isa;
use octet_runtime::{Engine, Hooks, Session};

fn octet(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_octet")).args(args).envs(env.iter().copied()).output().expect("run octet");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "octet {args:?} panicked:\n{stderr}");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn fixture(name: &str) -> PathBuf {
    common::root().join("tests/fixtures").join(name)
}

/// Quantizes a fixture (calibrating on its own input) into cargo's temp folder for tests (in
/// `target/`, replaced by the next run: the same model, calibration and preset write the same
/// file; written under this process's name, then renamed into place, so that concurrent runs
/// never read a half-written file), once per process. `preset` is the preset's name, then any
/// further flags (`"full-int8 --int8-softmax"`).
fn qdq(name: &str, preset: &str) -> PathBuf {
    static DONE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let tag = preset.replace(' ', "");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join(format!("octet-int8-{name}-{tag}.onnx"));
    let mut done = DONE.lock().unwrap();
    if !done.contains(&out) {
        let model = fixture(name).join("model.onnx");
        let input = fixture(name).join("input.npy");
        let mine = dir.join(format!("octet-int8-{name}-{tag}-{}.onnx", std::process::id()));
        let mut args =
            vec!["quantize", model.to_str().unwrap(), "--calib", input.to_str().unwrap(), "-o", mine.to_str().unwrap(), "--preset"];
        args.extend(preset.split(' '));
        let (ok, _, err) = octet(&args, &[]);
        assert!(ok, "quantize {name} {preset}: {err}");
        for ext in ["onnx", "ranges.json"] {
            let _ = std::fs::rename(mine.with_extension(ext), out.with_extension(ext));
        }
        done.push(out.clone());
    }
    out
}

/// Every value a run computes.
#[derive(Default)]
struct Record(HashMap<ValueId, Tensor>);

impl Hooks for Record {
    fn value(&mut self, v: ValueId, t: &Tensor) -> octet_graph::Result<()> {
        self.0.insert(v, t.clone());
        Ok(())
    }
}

fn int8_session(model: &Path, isa: Isa) -> Session {
    int8_session_threads(model, isa, 1)
}

fn int8_session_threads(model: &Path, isa: Isa, threads: usize) -> Session {
    let m = octet_onnx::load(model).unwrap();
    Session::new(m.graph, threads, Engine::Int8).unwrap().with_isa(isa)
}

fn reference_session(model: &Path) -> Session {
    Session::new(octet_onnx::load(model).unwrap().graph, 1, Engine::Reference).unwrap()
}

fn tiers() -> Vec<Isa> {
    let t: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
    println!("ISA tiers on this machine: {:?}", t.iter().map(|i| i.name()).collect::<Vec<_>>());
    t
}

/// Largest difference in integer codes, or in units of `max |ref|` for f32.
fn code_diff(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let d = g.iter().zip(&w).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    if got.dtype().is_float() {
        d / w.iter().fold(1e-12f64, |m, v| m.max(v.abs()))
    } else {
        d
    }
}

#[test]
fn every_lowered_kernel_matches_its_qdq_reference_on_every_tier() {
    let mut seen: HashMap<String, (usize, f64)> = HashMap::new();
    for (name, preset) in [
        ("seed_attention_ts", "full-int8"),
        ("seed_attention_ts", "int8-gemm"),
        ("vit_ts", "full-int8"),
        ("vit_ts", "int8-gemm"),
        ("seed_attention_ts", "full-int8 --int8-softmax --int8-residual"),
        ("vit_ts", "full-int8 --int8-softmax --int8-residual"),
        ("vit_ts", "full-int8 --activation-epilogue"),
        ("dinov2_ts", "full-int8"),
        ("bert_like_dynamo", "full-int8"),
        ("vit_opset16_ts", "full-int8"),
        ("cnn_gap", "full-int8"),
    ] {
        let model = qdq(name, preset);
        let input = npy::read(&fixture(name).join("input.npy")).unwrap();
        let mut reference = Record::default();
        reference_session(&model).run_hooked(vec![input.clone()], &mut reference).unwrap();
        for isa in tiers() {
            let session = int8_session(&model, isa);
            let plan = session.plan(std::slice::from_ref(&input), true).unwrap();
            let g = &plan.graph;
            for node in g.nodes.iter().filter(|n| n.op.kernel().is_some()) {
                // Values a rewrite created (a table moved before a Transpose) have no reference.
                let known = |v: &ValueId| g.fact(*v).is_constant() || reference.0.contains_key(v);
                if !node.inputs.iter().flatten().all(known) || !node.outputs.iter().all(known) {
                    continue;
                }
                let ins: Vec<Option<Tensor>> = node
                    .inputs
                    .iter()
                    .map(|v| v.map(|v| g.fact(v).value.as_deref().cloned().or_else(|| reference.0.get(&v).cloned()).unwrap()))
                    .collect();
                let refs: Vec<Option<&Tensor>> = ins.iter().map(Option::as_ref).collect();
                let outs = node.op.eval(&refs, &octet_graph::EvalCtx::default()).unwrap();
                for (o, &v) in outs.iter().zip(&node.outputs) {
                    let want = &reference.0[&v];
                    let d = code_diff(o, want);
                    let kernel = node.op.kernel().unwrap();
                    let exact = matches!(node.op.name(), "QTable" | "QBinary")
                        || kernel.ends_with("on 8-bit data")
                        || kernel.starts_with("f32 LayerNorm rows");
                    // A table fused into a GEMM's epilogue maps one step before it to at most its
                    // largest jump between neighbouring codes.
                    let table_jump =
                        node.op.downcast::<octet_runtime::lower::kernels::QLinear>().and_then(|l| l.epilogue.table.as_ref()).map(|t| {
                            t.windows(2)
                                .map(|w| (w[0] as i8 as i32 - w[1] as i8 as i32).abs().max((w[0] as i32 - w[1] as i32).abs()))
                                .max()
                                .unwrap_or(1)
                                .max(1) as f64
                        });
                    let bound = if exact {
                        0.0
                    } else if o.dtype().is_float() {
                        1e-3
                    } else {
                        table_jump.unwrap_or(1.0)
                    };
                    assert!(
                        d <= bound,
                        "{name} {preset} {}: {} ({}) differs from its reference by {d} (bound {bound})",
                        isa.name(),
                        node.name,
                        node.op.kernel().unwrap()
                    );
                    let forms: Vec<&str> = [
                        ("heads written interleaved", "heads interleaved"),
                        ("read in place", "read in place"),
                        ("written [N, pixels, channels]", "pixels major"),
                    ]
                    .into_iter()
                    .filter(|(says, _)| kernel.contains(says))
                    .map(|(_, form)| form)
                    .collect();
                    let kind =
                        if forms.is_empty() { node.op.name().to_string() } else { format!("{} ({})", node.op.name(), forms.join(", ")) };
                    let e = seen.entry(kind).or_default();
                    e.0 += 1;
                    e.1 = e.1.max(d);
                }
            }
        }
    }
    let mut kinds: Vec<_> = seen.iter().collect();
    kinds.sort_by(|a, b| a.0.cmp(b.0));
    for (k, (n, d)) in &kinds {
        println!("{k:<20} {n:>4} node checks, largest difference {d}");
    }
    for k in [
        "QLinear",
        "QConv",
        "QConv (pixels major)",
        "QAttention",
        "QAttention (heads interleaved, read in place)",
        "QLayerNorm",
        "QBinary",
        "QTable",
        "QGlobalAveragePool",
        "Transpose",
        "Reshape",
    ] {
        assert!(seen.contains_key(k), "no {k} was lowered in the fixtures");
    }
}

/// The int8 GlobalAveragePool through the doors: `octet check` names its kernel, and `octet run`
/// of the quantized CNN agrees with ONNX Runtime's float output.
#[test]
fn global_average_pool_runs_on_its_int8_kernel_through_the_cli() {
    let model = qdq("cnn_gap", "full-int8");
    let (ok, out, err) = octet(&["check", model.to_str().unwrap(), "--json"], &[]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pool = report["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "pool").expect("the pool node");
    assert_eq!((pool["status"].as_str(), pool["int8"].as_str()), (Some("int8"), Some("int8 kernel")), "{pool}");
    assert!(pool["kernel"].as_str().unwrap().contains("integer sum"), "{pool}");
    let rule = octet_runtime::lower::RULES.iter().find(|r| (r.anchors)("GlobalAveragePool")).unwrap();
    assert_eq!(
        pool["why"].as_str(),
        Some(format!("matched {}: lowered to an int8 kernel", rule.pattern).as_str()),
        "the rule that lowered it"
    );
    let dir = common::Scratch::new("gap");
    let input = fixture("cnn_gap").join("input.npy");
    let (ok, _, err) = octet(&["run", model.to_str().unwrap(), "-i", input.to_str().unwrap(), "-o", &dir.text("y.npy")], &[]);
    assert!(ok, "{err}");
    let got = npy::read(&dir.path("y.npy")).unwrap();
    let want = npy::read(&fixture("cnn_gap").join("ort.npy")).unwrap();
    let c = cosine(&got, &want);
    assert!(c > 0.99, "int8 against ONNX Runtime's float output: cosine {c}");
    assert_eq!(top1(&got), top1(&want));
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

fn top1(t: &Tensor) -> Vec<usize> {
    let n = t.shape()[0];
    let v = t.to_f64_vec();
    let per = v.len() / n;
    (0..n).map(|i| (0..per).max_by(|&a, &b| v[i * per + a].total_cmp(&v[i * per + b])).unwrap()).collect()
}

#[test]
fn fixtures_in_int8_agree_with_the_qdq_reference_and_across_tiers() {
    let mut models: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for name in ["vit_ts", "vit_dynamo", "deit_distilled_ts", "dinov2_ts", "vit_opset16_ts", "seed_attention_ts", "bert_like_dynamo"] {
        for preset in ["int8-gemm", "full-int8"] {
            models.push((format!("{name} {preset}"), qdq(name, preset), fixture(name).join("input.npy")));
        }
    }
    for peer in ["seed_attention_ts_ort_u8s8", "seed_attention_ts_ort_s8s8", "seed_attention_ts_nncf", "vit_ts_ort_u8s8", "vit_ts_nncf"] {
        let d = common::root().join("tests/fixtures/peer_qdq").join(peer);
        models.push((peer.to_string(), d.join("model.onnx"), d.join("input.npy")));
    }
    for (label, model, input) in models {
        let x = npy::read(&input).unwrap();
        let want = reference_session(&model).run(vec![x.clone()]).unwrap().remove(0);
        let mut first: Option<Tensor> = None;
        for isa in tiers() {
            let got = int8_session(&model, isa).run(vec![x.clone()]).unwrap().remove(0);
            let c = cosine(&got, &want);
            if isa == Isa::Scalar {
                println!(
                    "{label}: int8 vs QDQ reference cosine {c:.6}, top-1 {}",
                    if top1(&got) == top1(&want) { "equal" } else { "DIFFERENT" }
                );
            }
            assert!(c >= 0.999, "{label} {}: cosine {c}", isa.name());
            if got.rank() == 2 {
                assert_eq!(top1(&got), top1(&want), "{label} {}: top-1 differs", isa.name());
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert!(f == &got, "{label}: {} gives other bits than scalar", isa.name()),
            }
            let two = int8_session_threads(&model, isa, 2).run(vec![x.clone()]).unwrap().remove(0);
            assert!(first.as_ref() == Some(&two), "{label} {}: 2 threads give other bits than 1", isa.name());
        }
    }
}

#[test]
fn isa_can_be_forced_and_an_unavailable_tier_is_a_clear_error() {
    let model = qdq("seed_attention_ts", "full-int8");
    let m = model.to_str().unwrap();
    for isa in tiers() {
        let (ok, out, err) = octet(&["check", m, "--json"], &[("OCTET_ISA", isa.name())]);
        assert!(ok, "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["isa"], isa.name());
        let kernels: Vec<&str> =
            r["nodes"].as_array().unwrap().iter().filter(|n| n["status"] == "int8").map(|n| n["kernel"].as_str().unwrap()).collect();
        assert!(kernels.iter().any(|k| k.contains(&format!("{}_gemm_u8s8", isa.name()))), "{kernels:?}");
    }
    let (ok, _, err) = octet(&["check", m], &[("OCTET_ISA", "amx")]);
    assert!(!ok && err.contains("OCTET_ISA=amx") && err.contains("scalar, avx2, avx512vnni"), "{err}");
    let (ok, _, err) = octet(
        &["run", m, "-i", fixture("seed_attention_ts").join("input.npy").to_str().unwrap(), "-o", "/dev/null"],
        &[("OCTET_ISA", "sse9")],
    );
    assert!(!ok && err.contains("OCTET_ISA=sse9"), "{err}");
    if !Isa::Avx512Vnni.available() {
        let (ok, _, err) = octet(&["check", m], &[("OCTET_ISA", "avx512vnni")]);
        assert!(!ok && err.contains("does not support"), "{err}");
    }
}

/// A session that hands its quantized weights to its first plan (`octet run`, the Python
/// session) reads the file again for a second input shape, and gives the same bits as a session
/// that keeps them.
#[test]
fn a_session_that_frees_its_weights_plans_other_shapes_from_the_file() {
    let model = qdq("vit_ts", "full-int8");
    let x = npy::read(&fixture("vit_ts").join("input.npy")).unwrap();
    let shape = x.shape().to_vec();
    let per = x.len() / shape[0];
    let one = Tensor::f32([&[1], &shape[1..]].concat(), x.as_f32().unwrap()[..per].to_vec());
    let freeing = octet::run::open(&model, 1, octet::run::Engine::Int8).unwrap();
    let keeping = Session::new(octet_onnx::load(&model).unwrap().graph, 1, Engine::Int8).unwrap();
    for input in [one, x.clone(), x] {
        let (a, b) = (freeing.run(vec![input.clone()]).unwrap(), keeping.run(vec![input]).unwrap());
        assert_eq!(a[0].to_f64_vec(), b[0].to_f64_vec());
    }
    assert!(freeing.graph().constants.len() < keeping.graph().constants.len(), "the weights left the graph");
}

/// `octet bench --peak` counts the model's operations as written (the fixture's timm ViT: patch
/// Conv, then per block qkv, Q·Kᵀ and P·V per head, proj, fc1, fc2; the head reads the class
/// token) and times the mixes of the tier in use, named by it.
#[test]
fn bench_peak_counts_the_models_operations_and_names_the_tiers_mix() {
    let (tokens, dim, heads, depth, classes) = (197u64, 192u64, 3u64, 2u64, 10u64);
    let patch = 196 * dim * 3 * 16 * 16;
    let block = tokens * dim * 3 * dim + 2 * heads * tokens * (dim / heads) * tokens + tokens * dim * dim + 2 * tokens * dim * 4 * dim;
    let per_image = 2 * (patch + depth * block + dim * classes);
    for isa in tiers() {
        for (model, batch) in [(fixture("vit_ts").join("model.onnx"), 2u64), (qdq("vit_ts", "full-int8"), 1)] {
            let (ok, out, err) = octet(
                &["bench", model.to_str().unwrap(), "--iters", "1", "--warmup", "0", "--peak", "--json", "--batch", &batch.to_string()],
                &[("OCTET_ISA", isa.name())],
            );
            assert!(ok, "{err}");
            let peak = &serde_json::from_str::<serde_json::Value>(&out).unwrap()["peak"];
            assert_eq!(peak["operations"], batch * per_image, "{isa:?} {model:?}");
            assert_eq!(peak["tier"], isa.name());
            let kernels = peak["kernels"].as_array().unwrap();
            if isa == Isa::Scalar {
                assert!(kernels.is_empty() && peak["share"].is_null(), "{peak}");
            } else {
                assert!(kernels.iter().all(|k| k[0].as_str().unwrap().starts_with(isa.name()) && k[1].as_f64().unwrap() > 1.0), "{peak}");
                assert!(peak["share"].as_f64().unwrap() > 0.0, "{peak}");
            }
        }
    }
}

/// `octet bench --profile ops|nodes|layers` on the int8 ViT fixture (depth 2): every node of
/// the plan timed once per grouping, the shares adding up to one, and the layers grouping
/// putting each block's Linear, attention and LayerNorm on one line that sums both blocks.
#[test]
fn bench_profile_groups_the_plans_nodes_by_op_node_and_layer() {
    let model = qdq("vit_ts", "full-int8");
    let profile = |by: &str| {
        let (ok, out, err) =
            octet(&["bench", model.to_str().unwrap(), "--iters", "2", "--warmup", "0", &format!("--profile={by}"), "--json"], &[]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["profile"].as_array().unwrap().clone()
    };
    let (ops, nodes, layers) = (profile("ops"), profile("nodes"), profile("layers"));
    let count = |lines: &[serde_json::Value]| lines.iter().map(|l| l["nodes"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(count(&nodes), nodes.len() as u64, "one node per line");
    assert!(count(&ops) == count(&nodes) && count(&layers) == count(&nodes), "the same nodes in every grouping");
    for lines in [&ops, &nodes, &layers] {
        let share: f64 = lines.iter().map(|l| l["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-9, "shares add up to {share}");
        assert!(lines.windows(2).all(|w| w[0]["ms_per_run"].as_f64() >= w[1]["ms_per_run"].as_f64()), "largest first");
    }
    assert!(ops.iter().all(|l| l.get("name").is_none()) && ops.iter().any(|l| l["op"] == "QLinear"));
    let line = |name: &str| layers.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("no {name} in {layers:?}"));
    for (name, op) in [("/blocks/blocks.*/mlp/fc1/MatMul", "QLinear"), ("/blocks/blocks.*/norm1/LayerNormalization", "QLayerNorm")] {
        assert_eq!((line(name)["op"].as_str(), line(name)["nodes"].as_u64()), (Some(op), Some(2)), "{name}");
    }
    assert!(line("/blocks/blocks.*/mlp/fc1/MatMul")["kernel"].as_str().unwrap().contains("gemm_u8s8"));
    let (ok, text, err) = octet(&["bench", model.to_str().unwrap(), "--iters", "1", "--warmup", "0", "--profile=layers"], &[]);
    assert!(ok && text.contains("/blocks/blocks.*/mlp/fc1/MatMul") && text.contains("2×"), "{text}{err}");
    let (ok, text, err) = octet(&["bench", "--iters", "1", "--warmup", "0", "--profile", model.to_str().unwrap()], &[]);
    assert!(ok && text.contains("QLinear"), "--profile before the model groups by op type: {text}{err}");
    let (ok, _, err) = octet(&["bench", model.to_str().unwrap(), "--profile=blocks"], &[]);
    assert!(!ok && err.contains("possible values: ops, nodes, layers"), "{err}");
}
