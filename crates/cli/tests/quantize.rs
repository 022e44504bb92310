//! Post-training quantization end to end: QDQ files from `octet quantize`, their accuracy
//! against fp32, determinism, round trips, QDQ files made by other tools, bad calibration data.

mod common;

use common::Scratch;

use std::path::{Path, PathBuf};
use std::process::Command;

use octet::npy;
use octet_graph::Tensor;
use octet_runtime::{Engine, Session};

fn fixture(name: &str, file: &str) -> PathBuf {
    common::root().join("tests/fixtures").join(name).join(file)
}

fn octet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_octet")).args(args).output().expect("run octet");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "octet {args:?} panicked:\n{stderr}");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Standard-normal-ish samples (sum of uniforms), deterministic.
fn random(shape: Vec<usize>, seed: u64) -> Tensor {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let n = shape.iter().product();
    Tensor::f32(shape, (0..n).map(|_| (0..4).map(|_| next()).sum::<f32>() * 1.732 - 3.464).collect())
}

fn run(model: &Path, input: Tensor) -> Tensor {
    let m = octet_onnx::load(model).unwrap();
    Session::new(m.graph, 2, Engine::Reference).unwrap().run(vec![input]).unwrap().remove(0)
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

/// Quantizes a fixture with calibration data of `n` random samples; returns the QDQ path.
fn quantize(dir: &Scratch, fixture_name: &str, sample_shape: &[usize], n: usize, extra: &[&str]) -> PathBuf {
    let mut shape = vec![n];
    shape.extend_from_slice(sample_shape);
    let calib = dir.path(&format!("{fixture_name}-calib.npy"));
    npy::write(&calib, &random(shape, 7)).unwrap();
    let tag: String = extra.join("").chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let out = dir.path(&format!("{fixture_name}{tag}.int8.onnx"));
    let model = fixture(fixture_name, "model.onnx");
    let mut args = vec!["quantize", s(&model), "--calib", s(&calib), "-o", s(&out)];
    args.extend_from_slice(extra);
    let (ok, _, err) = octet(&args);
    assert!(ok, "quantize {fixture_name} {extra:?}: {err}");
    out
}

#[test]
fn seed_attention_quantizes_with_both_matmuls_and_the_scalar_multiply() {
    let d = Scratch::new("quant-seed");
    let q = quantize(&d, "seed_attention_ts", &[16, 128], 16, &[]);
    let (ok, out, err) = octet(&["check", s(&q), "--json"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let status =
        |name: &str| r["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()["status"].as_str().unwrap().to_string();
    for node in ["/MatMul", "/MatMul_1", "/Mul", "/qkv/MatMul", "/proj/MatMul"] {
        assert_eq!(status(node), "int8", "{node} in {out}");
    }
    let why = |name: &str| r["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()["why"].as_str().unwrap().to_string();
    let fused = octet_runtime::lower::FUSIONS.iter().find(|f| f.pattern.contains("f32 softmax")).unwrap();
    assert!(why("/Softmax").contains(fused.pattern), "the attention fusion that runs it: {}", why("/Softmax"));
    let x = npy::read(&fixture("seed_attention_ts", "input.npy")).unwrap();
    let c = cosine(&run(&q, x.clone()), &npy::read(&fixture("seed_attention_ts", "ort.npy")).unwrap());
    println!("seed attention int8-gemm cosine vs fp32: {c:.5}");
    assert!(c >= 0.999, "cosine {c}");
    let dynamo = quantize(&d, "seed_attention_dynamo", &[16, 128], 16, &[]);
    assert!(cosine(&run(&dynamo, x), &npy::read(&fixture("seed_attention_dynamo", "ort.npy")).unwrap()) >= 0.999);
}

#[test]
fn vits_keep_accuracy_with_both_presets() {
    let d = Scratch::new("quant-vit");
    for (name, shape) in [
        ("vit_ts", vec![3, 224, 224]),
        ("vit_dynamo", vec![3, 224, 224]),
        ("deit_distilled_ts", vec![3, 224, 224]),
        ("dinov2_ts", vec![3, 112, 112]),
    ] {
        let x = npy::read(&fixture(name, "input.npy")).unwrap();
        let fp32 = npy::read(&fixture(name, "ort.npy")).unwrap();
        let gemm = quantize(&d, name, &shape, 8, &["--preset", "int8-gemm"]);
        let c = cosine(&run(&gemm, x.clone()), &fp32);
        let full = quantize(&d, name, &shape, 8, &["--preset", "full-int8"]);
        let cf = cosine(&run(&full, x.clone()), &fp32);
        println!("{name}: cosine vs fp32, int8-gemm {c:.5}, full-int8 {cf:.5}");
        assert!(c >= 0.999, "{name} int8-gemm cosine {c}");
        assert!(cf >= 0.999, "{name} full-int8 cosine {cf}");
        let bytes =
            |p: &Path| std::fs::metadata(p).unwrap().len() + std::fs::metadata(p.with_extension("onnx.data")).map(|m| m.len()).unwrap_or(0);
        let ratio = bytes(&fixture(name, "model.onnx")) as f64 / bytes(&gemm) as f64;
        assert!(ratio > 2.5, "{name}: the QDQ file is only {ratio:.2}× smaller");
    }
}

#[test]
fn every_observer_runs_and_calibration_is_deterministic() {
    let d = Scratch::new("quant-observers");
    let x = npy::read(&fixture("seed_attention_ts", "input.npy")).unwrap();
    let fp32 = npy::read(&fixture("seed_attention_ts", "ort.npy")).unwrap();
    for obs in ["minmax", "percentile", "entropy", "mse"] {
        let a = quantize(&d, "seed_attention_ts", &[16, 128], 8, &["--observer", obs, "--preset", "full-int8"]);
        let bytes = std::fs::read(&a).unwrap();
        let b = quantize(&d, "seed_attention_ts", &[16, 128], 8, &["--observer", obs, "--preset", "full-int8", "--threads", "1"]);
        assert_eq!(bytes, std::fs::read(&b).unwrap(), "{obs}: two calibrations differ");
        let c = cosine(&run(&a, x.clone()), &fp32);
        println!("seed attention full-int8 --observer {obs}: cosine {c:.5}");
        assert!(c > 0.99, "{obs}: cosine {c}");
    }
}

#[test]
fn reduce_range_writes_seven_bit_weights_and_keeps_accuracy() {
    let d = Scratch::new("quant-reduce-range");
    let x = npy::read(&fixture("vit_ts", "input.npy")).unwrap();
    let fp32 = npy::read(&fixture("vit_ts", "ort.npy")).unwrap();
    for extra in [&["--reduce-range", "--preset", "int8-gemm"][..], &["--reduce-range", "--preset", "int8-gemm", "--per-tensor"][..]] {
        let q = quantize(&d, "vit_ts", &[3, 224, 224], 8, extra);
        let m = octet_onnx::load(&q).unwrap();
        let widest = m
            .graph
            .nodes
            .iter()
            .filter(|n| n.op.name() == "DequantizeLinear")
            .filter_map(|n| m.graph.constants.get(&n.inputs[0]?).cloned())
            .filter_map(|t| match t.data() {
                octet_graph::Data::I8(v) => v.iter().map(|&c| (c as i32).abs()).max(),
                _ => None,
            })
            .max()
            .expect("s8 weights");
        assert_eq!(widest, 64, "{extra:?}: weight codes reach ±{widest}, want [-64, 64]");
        let c = cosine(&run(&q, x.clone()), &fp32);
        println!("vit_ts int8 {extra:?}: cosine vs fp32 {c:.5}");
        assert!(c >= 0.999, "{extra:?}: cosine {c}");
        let (ok, out, err) = octet(&["check", s(&q), "--json"]);
        assert!(ok, "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(r["notes"].as_array().unwrap().iter().all(|n| !n.as_str().unwrap().contains("saturate")), "{}", r["notes"]);
    }
    let full = quantize(&d, "vit_ts", &[3, 224, 224], 8, &[]);
    let (_, out, _) = octet(&["check", s(&full)]);
    assert!(out.contains("note: weights use the full s8 range"), "{out}");
}

#[test]
fn exclude_and_per_tensor() {
    let d = Scratch::new("quant-exclude");
    // With an 8-bit softmax, so that P·V is an int8 op to exclude (by default P stays float and
    // P·V runs inside int8 attention whatever --exclude says of it).
    let q = quantize(
        &d,
        "seed_attention_ts",
        &[16, 128],
        4,
        &["--int8-softmax", "--exclude", "^/MatMul_1$", "--exclude", "Softmax", "--per-tensor"],
    );
    let (_, out, _) = octet(&["check", s(&q), "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let status =
        |name: &str| r["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()["status"].as_str().unwrap().to_string();
    assert_eq!(status("/MatMul_1"), "float");
    assert_eq!(status("/MatMul"), "int8");
    let m = octet_onnx::load(&q).unwrap();
    let qdq = |n: &&octet_onnx::proto::NodeProto| matches!(n.op_type(), "QuantizeLinear" | "DequantizeLinear");
    let axis_attrs = m.proto.graph.unwrap().node.iter().filter(qdq).filter(|n| n.attribute.iter().any(|a| a.name() == "axis")).count();
    assert_eq!(axis_attrs, 0, "--per-tensor must not write per-axis parameters");
}

#[test]
fn import_export_import_is_identical() {
    let d = Scratch::new("quant-roundtrip");
    let q = quantize(&d, "vit_dynamo", &[3, 224, 224], 2, &["--preset", "full-int8"]);
    for path in [q.clone(), fixture("peer_qdq/vit_ts_nncf", "model.onnx"), fixture("vit_dynamo", "model.onnx")] {
        let a = octet_onnx::load(&path).unwrap();
        let mut proto = a.proto.clone();
        octet_onnx::inline_external_data(&mut proto, &a.base).unwrap();
        let again = d.path("again.onnx");
        octet_onnx::save(&proto, &again).unwrap();
        let b = octet_onnx::load(&again).unwrap();
        let (ga, gb) = (&a.graph, &b.graph);
        assert_eq!(ga.names, gb.names);
        assert_eq!(ga.nodes.len(), gb.nodes.len());
        for (x, y) in ga.nodes.iter().zip(&gb.nodes) {
            assert_eq!((&x.name, x.op.name(), &x.inputs, &x.outputs), (&y.name, y.op.name(), &y.inputs, &y.outputs));
            assert_eq!(format!("{:?}", x.op), format!("{:?}", y.op));
        }
        assert_eq!(ga.constants.len(), gb.constants.len());
        for (v, t) in &ga.constants {
            assert!(**t == *gb.constants[v], "constant '{}' changed", ga.names[*v]);
        }
    }
}

#[test]
fn qdq_models_from_other_tools_match_onnxruntime() {
    for name in ["seed_attention_ts_ort_u8s8", "seed_attention_ts_ort_s8s8", "seed_attention_ts_nncf", "vit_ts_ort_u8s8", "vit_ts_nncf"] {
        let dir = common::root().join("tests/fixtures/peer_qdq").join(name);
        let got = run(&dir.join("model.onnx"), npy::read(&dir.join("input.npy")).unwrap());
        let err = common::relative_error(&got, &npy::read(&dir.join("ort.npy")).unwrap());
        println!("{name}: relative error vs ONNX Runtime {err:.2e}");
        assert!(err < 1e-5, "{name}: {err}");
    }
}

#[test]
fn bad_calibration_data_gets_clear_errors() {
    let d = Scratch::new("quant-bad");
    let model = fixture("seed_attention_ts", "model.onnx");
    let out = d.path("out.onnx");
    let try_calib = |calib: &Path, needles: &[&str]| {
        let (ok, _, err) = octet(&["quantize", s(&model), "--calib", s(calib), "-o", s(&out)]);
        assert!(!ok, "calibrating on {} succeeded", calib.display());
        for n in needles {
            assert!(err.contains(n), "error lacks '{n}':\n{err}");
        }
        assert!(!out.exists(), "a failed quantize left its output");
    };
    let mut nan = random(vec![4, 16, 128], 1);
    nan.as_f32_mut().unwrap()[2 * 16 * 128 + 5] = f32::NAN;
    npy::write(&d.path("nan.npy"), &nan).unwrap();
    try_calib(&d.path("nan.npy"), &["calibration sample 2", "input 'input'", "NaN"]);
    npy::write(&d.path("shape.npy"), &random(vec![4, 16, 64], 1)).unwrap();
    try_calib(&d.path("shape.npy"), &["[1, 16, 64]", "[batch, 16, 128]"]);
    npy::write(&d.path("ints.npy"), &Tensor::i64(vec![2, 16, 128], vec![0; 2 * 16 * 128])).unwrap();
    try_calib(&d.path("ints.npy"), &["int64", "float32"]);
    try_calib(&common::root().join("tests/fixtures/images_bad"), &["not_an_image.jpg", "not a readable JPEG or PNG image"]);
    std::fs::create_dir_all(d.path("empty")).unwrap();
    try_calib(&d.path("empty"), &["holds no .jpg, .jpeg or .png files"]);
    try_calib(&d.path("absent.npy"), &["absent.npy"]);
    let peer = common::root().join("tests/fixtures/peer_qdq/seed_attention_ts_nncf/model.onnx");
    npy::write(&d.path("ok.npy"), &random(vec![2, 16, 128], 1)).unwrap();
    let (ok, _, err) = octet(&["quantize", s(&peer), "--calib", s(&d.path("ok.npy")), "-o", s(&out)]);
    assert!(!ok && err.contains("already quantized"), "{err}");
}

#[test]
fn zero_range_tensors_get_valid_parameters() {
    let d = Scratch::new("quant-zeros");
    let calib = d.path("zeros.npy");
    npy::write(&calib, &Tensor::f32(vec![2, 16, 128], vec![0.0; 2 * 16 * 128])).unwrap();
    let out = d.path("zeros.int8.onnx");
    let model = fixture("seed_attention_ts", "model.onnx");
    let (ok, _, err) = octet(&["quantize", s(&model), "--calib", s(&calib), "-o", s(&out), "--preset", "full-int8"]);
    assert!(ok, "{err}");
    let y = run(&out, Tensor::f32(vec![1, 16, 128], vec![0.0; 16 * 128]));
    assert!(y.as_f32().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn images_are_preprocessed_like_timm() {
    let dir = common::root().join("tests/fixtures/images");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for size in [64u32, 224] {
        let files: Vec<String> =
            meta["expected_files_by_size"][size.to_string()].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
        let want = npy::read(&dir.join(format!("expected_{size}.npy"))).unwrap();
        let p = octet::calib_data::Preprocess { size, ..Default::default() };
        let per = 3 * (size * size) as usize;
        for (i, f) in files.iter().enumerate() {
            let got = octet::calib_data::preprocess_image(&dir.join(f), &p).unwrap();
            let w = &want.as_f32().unwrap()[i * per..(i + 1) * per];
            let diffs: Vec<f32> = got.as_f32().unwrap().iter().zip(w).map(|(a, b)| (a - b).abs()).collect();
            let max = diffs.iter().cloned().fold(0.0, f32::max);
            let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
            println!("{f} at {size}: max |diff| {max:.4}, mean {mean:.5}");
            // PNG decodes identically and the resize is Pillow's, so PNGs match exactly; JPEG
            // decoders differ by a few 8-bit levels (one level is 1/255/std ≈ 0.017 here).
            if f.ends_with(".png") {
                assert!(max < 1e-6, "{f} at {size}: max {max}");
            } else {
                assert!(mean < 0.01 && max < 0.1, "{f} at {size}: max {max}, mean {mean}");
            }
        }
    }
}

/// A model whose If, Loop and Scan bodies read values of the enclosing graph that nothing else
/// reads (a Concat output, a quantized Linear's output): the written file keeps their producers,
/// loads in octet and runs on both engines, both branches, close to ONNX Runtime's float output.
#[test]
fn values_read_only_inside_subgraphs_survive_quantization() {
    let d = Scratch::new("quant-control-flow");
    for preset in ["full-int8", "int8-gemm"] {
        let q = quantize(&d, "control_flow", &[8, 16], 24, &["--preset", preset]);
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(q.with_extension("ranges.json")).unwrap()).unwrap();
        assert!(report["summary"]["ops_quantized"].as_u64().unwrap() >= 2, "{report}");
        let proto = octet_onnx::load(&q).unwrap().proto;
        octet_onnx::scope::validate(&proto).unwrap();
        let kept: Vec<&str> = proto.graph.as_ref().unwrap().node.iter().map(|n| n.name()).collect();
        assert!(kept.contains(&"/dec/Concat_5") && kept.contains(&"/dec/Tanh") && kept.contains(&"/scan/Sigmoid"), "{kept:?}");
        for suffix in ["", "_else"] {
            let input = fixture("control_flow", &format!("input{suffix}.npy"));
            let want = npy::read_npz(&fixture("control_flow", &format!("ort{suffix}.npz"))).unwrap();
            for engine in [&[][..], &["--reference"][..]] {
                let out = d.path(&format!("out{suffix}{}.npz", engine.len()));
                let mut args = vec!["run", s(&q), "--input", s(&input), "-o", s(&out)];
                args.extend_from_slice(engine);
                let (ok, _, err) = octet(&args);
                assert!(ok, "{args:?}: {err}");
                for ((name, got), (wname, w)) in npy::read_npz(&out).unwrap().iter().zip(&want) {
                    assert_eq!(name, wname);
                    let c = cosine(got, w);
                    assert!(c > 0.999, "{preset} {suffix} {engine:?} output {name}: cosine {c}");
                }
            }
        }
    }
}

/// `octet quantize` checks the file before it writes it and reports the check, in text and JSON.
#[test]
fn quantize_reports_its_check_on_held_back_samples() {
    let d = Scratch::new("quant-verify");
    let calib = d.path("calib.npy");
    npy::write(&calib, &random(vec![20, 16, 128], 3)).unwrap();
    let model = fixture("seed_attention_ts", "model.onnx");
    let out = d.path("q.onnx");
    let (ok, text, err) = octet(&["quantize", s(&model), "--calib", s(&calib), "-o", s(&out)]);
    assert!(ok, "{err}");
    assert!(text.contains("checked: the file loads and runs in octet") && text.contains("4 held-back sample(s)"), "{text}");
    let (ok, json, err) = octet(&["quantize", s(&model), "--calib", s(&calib), "-o", s(&out), "--calib-samples", "8", "--json"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let v = &r["verification"];
    assert_eq!((v["samples"].as_u64(), v["held_back"].as_bool(), r["samples"].as_u64()), (Some(4), Some(true), Some(8)), "{json}");
    let cosine = v["outputs"][0]["int8_worst"].as_f64().unwrap();
    assert!(cosine > 0.99 && cosine <= 1.0 + 1e-9, "{json}");
}
