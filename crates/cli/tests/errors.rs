//! Every kind of bad input gets a clear error naming what is wrong — never a panic, and never a
//! half-written output file.

mod common;

use common::Scratch;

use std::path::Path;
use std::process::Command;

use octet_onnx::proto::ModelProto;
use prost::Message;

fn octet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_octet")).args(args).output().expect("run octet");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "octet {args:?} panicked:\n{stderr}");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Runs octet, expects failure with every one of `needles` in the error, and no output file.
fn fails_with(args: &[&str], needles: &[&str]) {
    let (ok, _, err) = octet(args);
    assert!(!ok, "octet {args:?} succeeded");
    for n in needles {
        assert!(err.contains(n), "octet {args:?}: error lacks '{n}':\n{err}");
    }
    if let Some(i) = args.iter().position(|a| *a == "-o") {
        assert!(!Path::new(args[i + 1]).exists(), "a failed run left '{}' behind", args[i + 1]);
    }
}

fn fixture(name: &str, file: &str) -> String {
    common::root().join("tests/fixtures").join(name).join(file).display().to_string()
}

fn seed_model() -> ModelProto {
    ModelProto::decode(std::fs::read(fixture("seed_attention_ts", "model.onnx")).unwrap().as_slice()).unwrap()
}

fn save(m: &ModelProto, path: &str) {
    std::fs::write(path, m.encode_to_vec()).unwrap();
}

/// A float32 .npy of the given shape written with octet's own writer.
fn npy_f32(path: &str, shape: Vec<usize>) {
    let n = shape.iter().product();
    octet::npy::write(Path::new(path), &octet_graph::Tensor::f32(shape, vec![0.5; n])).unwrap();
}

#[test]
fn not_an_onnx_file() {
    let s = Scratch::new("errors-notonnx");
    std::fs::write(s.text("readme.onnx"), "this is plain text, not a protobuf\n").unwrap();
    let x = fixture("seed_attention_ts", "input.npy");
    fails_with(&["run", &s.text("readme.onnx"), "-i", &x, "-o", &s.text("out.npy")], &["is not an ONNX model"]);
    fails_with(&["check", &s.text("readme.onnx")], &["is not an ONNX model"]);
}

#[test]
fn truncated_protobuf() {
    let s = Scratch::new("errors-truncated");
    let bytes = std::fs::read(fixture("seed_attention_ts", "model.onnx")).unwrap();
    std::fs::write(s.text("half.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&["check", &s.text("half.onnx")], &["is not an ONNX model", "truncated or corrupt"]);
}

#[test]
fn unsupported_opset() {
    let s = Scratch::new("errors-opset");
    let mut m = seed_model();
    m.opset_import.iter_mut().for_each(|o| o.version = Some(29));
    save(&m, &s.text("new.onnx"));
    fails_with(&["check", &s.text("new.onnx")], &["declares opset 29", "opsets 1 to 28"]);
    m.opset_import.iter_mut().for_each(|o| o.version = Some(5));
    save(&m, &s.text("old.onnx"));
    fails_with(&["check", &s.text("old.onnx")], &["needs opset", "the model declares 5"]);
}

#[test]
fn unsupported_op_names_node_op_opset_and_closest() {
    let s = Scratch::new("errors-op");
    let mut m = seed_model();
    let g = m.graph.as_mut().unwrap();
    let node = g.node.iter_mut().find(|n| n.op_type() == "Softmax").unwrap();
    node.op_type = Some("StringSplit".into());
    let node_name = node.name().to_string();
    save(&m, &s.text("stringsplit.onnx"));
    let needles = [node_name.as_str(), "'StringSplit'", "opset 17", "closest supported: Split", "octet ops"];
    fails_with(&["check", &s.text("stringsplit.onnx")], &needles);
    let x = fixture("seed_attention_ts", "input.npy");
    fails_with(&["run", &s.text("stringsplit.onnx"), "-i", &x, "-o", &s.text("out.npy")], &needles);
}

#[test]
fn wrong_input_shape_and_dtype() {
    let s = Scratch::new("errors-input");
    let model = fixture("vit_ts", "model.onnx");
    npy_f32(&s.text("small.npy"), vec![1, 3, 32, 32]);
    fails_with(
        &["run", &model, "-i", &s.text("small.npy"), "-o", &s.text("out.npy")],
        &["input 'input'", "[1, 3, 32, 32]", "[batch, 3, 224, 224]"],
    );
    npy_f32(&s.text("rank.npy"), vec![3, 224, 224]);
    fails_with(&["run", &model, "-i", &s.text("rank.npy"), "-o", &s.text("out.npy")], &["[3, 224, 224]", "expects"]);
    octet::npy::write(
        Path::new(&s.text("f64.npy")),
        &octet_graph::Tensor::from_parts(vec![1, 3, 224, 224], octet_graph::Data::F64(vec![0.0; 3 * 224 * 224])),
    )
    .unwrap();
    fails_with(&["run", &model, "-i", &s.text("f64.npy"), "-o", &s.text("out.npy")], &["holds float64 values", "takes float32"]);
}

#[test]
fn missing_and_unknown_inputs() {
    let s = Scratch::new("errors-missing");
    let model = common::root().join("tests/node/test_add/model.onnx").display().to_string();
    let x = common::root().join("tests/node/test_add/input_0.npy").display().to_string();
    fails_with(&["run", &model, "-i", &format!("x={x}"), "-o", &s.text("out.npy")], &["missing input 'y'", "--input y=FILE.npy"]);
    fails_with(&["run", &model, "-i", &format!("z={x}"), "-o", &s.text("out.npy")], &["no input 'z'", "x, y"]);
    fails_with(&["run", &model, "-i", &x, "-o", &s.text("out.npy")], &["has 2 inputs", "NAME=FILE.npy"]);
    fails_with(
        &["run", &model, "-i", &format!("x={}", s.text("absent.npy")), "-i", &format!("y={x}"), "-o", &s.text("out.npy")],
        &["cannot open", "absent.npy"],
    );
}

#[test]
fn absent_external_data() {
    let s = Scratch::new("errors-external");
    std::fs::copy(fixture("vit_dynamo", "model.onnx"), s.text("model.onnx")).unwrap();
    fails_with(&["check", &s.text("model.onnx")], &["external data file", "model.onnx.data", "cannot be read"]);
}

#[test]
fn malformed_npy() {
    let s = Scratch::new("errors-npy");
    let model = fixture("seed_attention_ts", "model.onnx");
    std::fs::write(s.text("garbage.npy"), b"\x93NUMPY garbage that is no header").unwrap();
    fails_with(&["run", &model, "-i", &s.text("garbage.npy"), "-o", &s.text("out.npy")], &["garbage.npy", "not a valid .npy file"]);
    let good = std::fs::read(fixture("seed_attention_ts", "input.npy")).unwrap();
    std::fs::write(s.text("cut.npy"), &good[..good.len() - 100]).unwrap();
    fails_with(&["run", &model, "-i", &s.text("cut.npy"), "-o", &s.text("out.npy")], &["cut.npy", "truncated"]);
    octet::npy::write(Path::new(&s.text("ints.npy")), &octet_graph::Tensor::i64(vec![1, 16, 128], vec![1; 16 * 128])).unwrap();
    fails_with(&["run", &model, "-i", &s.text("ints.npy"), "-o", &s.text("out.npy")], &["holds int64 values", "takes float32"]);
}

#[test]
fn run_writes_outputs_and_json() {
    let s = Scratch::new("errors-ok");
    let model = fixture("seed_attention_ts", "model.onnx");
    let x = fixture("seed_attention_ts", "input.npy");
    let (ok, out, err) = octet(&["run", &model, "-i", &x, "-o", &s.text("y.npy"), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([1, 16, 128]));
    let got = octet::npy::read(Path::new(&s.text("y.npy"))).unwrap();
    let want = octet::npy::read(Path::new(&fixture("seed_attention_ts", "ort.npy"))).unwrap();
    assert!(common::relative_error(&got, &want) < 1e-4);
}

#[test]
fn operators_doc_is_generated_from_the_registry() {
    let (ok, md, _) = octet(&["ops", "--format", "md"]);
    assert!(ok);
    let doc = std::fs::read_to_string(common::root().join("doc/operators.md")).unwrap_or_default();
    assert!(
        doc == md,
        "doc/operators.md is stale: regenerate it with `cargo run --release -p octet-cli -- ops --format md > doc/operators.md`"
    );
    let (_, json, _) = octet(&["ops", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["op"].as_str().unwrap()).collect();
    for op in ["MatMul", "Softmax", "LayerNormalization", "Gelu", "QuantizeLinear", "DequantizeLinear", "Resize", "Conv"] {
        assert!(names.contains(&op), "{op} missing from `octet ops`");
    }
}

#[test]
fn check_reports_every_node() {
    let (ok, out, err) = octet(&["check", &fixture("vit_ts", "model.onnx"), "--json"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = r["nodes"].as_array().unwrap();
    let file_nodes = octet_onnx::load(Path::new(&fixture("vit_ts", "model.onnx"))).unwrap().graph.nodes.len();
    assert_eq!(nodes.len(), file_nodes);
    let status =
        |op: &str| -> Vec<String> { nodes.iter().filter(|n| n["op"] == op).map(|n| n["status"].as_str().unwrap().to_string()).collect() };
    assert!(status("Shape").iter().all(|s| s == "folded"));
    assert!(status("Erf").iter().all(|s| s == "fused"));
    assert!(status("MatMul").iter().all(|s| s == "float"));
    let erf = nodes.iter().find(|n| n["op"] == "Erf").unwrap();
    assert!(erf["why"].as_str().unwrap().contains("runs as one op"), "{erf}");
}

/// The dynamo ViT fixture (weights in `model.onnx.data`) copied into `dir`, with the first
/// external initializer's `key` set to `value`; returns the model path and that initializer's name.
fn external_variant(dir: &Path, key: &str, value: &str) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fixture("vit_dynamo", "model.onnx.data"), dir.join("model.onnx.data")).unwrap();
    let mut m = ModelProto::decode(std::fs::read(fixture("vit_dynamo", "model.onnx")).unwrap().as_slice()).unwrap();
    let init = m.graph.as_mut().unwrap().initializer.iter_mut().find(|t| !t.external_data.is_empty()).unwrap();
    let entry = init.external_data.iter_mut().find(|e| e.key() == key).unwrap();
    entry.value = Some(value.to_string());
    let name = init.name().to_string();
    let path = dir.join("model.onnx").display().to_string();
    save(&m, &path);
    (path, name)
}

#[test]
fn external_data_stays_inside_the_model_folder() {
    let s = Scratch::new("errors-external-escape");
    let inner = s.path("models/vit");
    let (ok_model, _) = external_variant(&inner, "location", "model.onnx.data");
    assert!(octet(&["check", &ok_model]).0, "the unmodified copy loads");

    let (m, name) = external_variant(&inner, "location", "../../../../../../../../etc/passwd");
    fails_with(&["check", &m], &[&name, "'../../../../../../../../etc/passwd'", "leaves the model's folder"]);
    let (m, name) = external_variant(&inner, "location", "/etc/hostname");
    fails_with(&["check", &m], &[&name, "'/etc/hostname'", "not a path relative"]);

    std::fs::write(s.path("models/secret.bin"), vec![7u8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink(s.path("models/secret.bin"), inner.join("link.data")).unwrap();
    let (m, name) = external_variant(&inner, "location", "link.data");
    let (ok, _, err) = octet(&["check", &m]);
    assert!(!ok && err.contains(&name) && err.contains("outside the model's folder"), "{err}");
    assert!(!err.contains("1048576"), "the error must not reveal the foreign file's size: {err}");

    let (m, name) = external_variant(&inner, "offset", "999999999999");
    fails_with(&["check", &m], &[&name, "reach past its end"]);
    let (m, _) = external_variant(&inner, "offset", "0");
    let (m2, name) = external_variant(&inner, "length", "18446744073709551615");
    assert_eq!(m, m2);
    fails_with(&["check", &m2], &[&name, "reach past its end"]);
}

fn hostile(name: &str) -> String {
    common::root().join("tests/fixtures/hostile").join(format!("{name}.onnx")).display().to_string()
}

#[test]
fn allocation_bombs_are_refused_before_allocating() {
    let s = Scratch::new("errors-bombs");
    for (model, shape, op, dims) in [
        ("expand", vec![1], "Expand", "[100000, 100000, 100000]"),
        ("constant_of_shape", vec![1], "ConstantOfShape", "[1000000, 1000000, 1000000]"),
        ("resize", vec![1, 1, 2, 2], "Resize", "[1, 1, 2000000000, 2000000000]"),
    ] {
        npy_f32(&s.text("x.npy"), shape);
        let needles = ["node 'bomb'", op, dims, "bytes, more than the limit", "--max-memory"];
        fails_with(&["run", &hostile(model), "-i", &s.text("x.npy"), "-o", &s.text("out.npy")], &needles);
        fails_with(&["check", &hostile(model)], &["node 'bomb'", op, dims]);
    }
    npy_f32(&s.text("x.npy"), vec![1]);
    fails_with(&["run", &hostile("reshape_overflow"), "-i", &s.text("x.npy"), "-o", &s.text("out.npy")], &["node 'bomb'", "Reshape"]);
    // Inside an If's branch (which returns a scalar), the branch's node is named, under the If.
    let needles = ["node 'branch' (If)", "node 'bomb' (ConstantOfShape)", "[100000, 100000, 100000]", "more than the limit"];
    fails_with(&["run", &hostile("if_branch_bomb"), "-i", &s.text("x.npy"), "-o", &s.text("out.npy")], &needles);
    fails_with(&["check", &hostile("if_branch_bomb")], &needles);
}

#[test]
fn the_tensor_limit_is_set_by_flag_or_environment() {
    let s = Scratch::new("errors-limit");
    let (model, x) = (fixture("vit_ts", "model.onnx"), fixture("vit_ts", "input.npy"));
    fails_with(
        &["run", &model, "-i", &x, "-o", &s.text("out.npy"), "--max-memory", "1180K"],
        &[
            "node '/blocks/blocks.0/mlp/fc1/MatMul' (PackedMatMul)",
            "output shape [2, 197, 768] of float32 needs 1210368 bytes, more than the limit of 1208320 bytes",
        ],
    );
    fails_with(
        &["--max-memory", "1K", "run", &model, "-i", &x, "-o", &s.text("out.npy")],
        &["input.npy", "header shape [2, 3, 224, 224] of float32 needs 1204224 bytes"],
    );
    fails_with(&["check", &model, "--max-memory", "lots"], &["'lots' is not a size"]);
    let out = Command::new(env!("CARGO_BIN_EXE_octet")).args(["check", &model]).env("OCTET_MAX_MEMORY", "100K").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("more than the limit of 102400 bytes"), "{err}");
    assert!(octet(&["run", &model, "-i", &x, "-o", &s.text("out.npy"), "--max-memory", "64M"]).0, "a sufficient limit runs");
}

#[test]
fn quantized_models_refuse_non_finite_inputs_float_models_propagate_them() {
    let s = Scratch::new("errors-nan");
    let model = hostile("qdq_relu");
    let (x_path, out_path) = (s.text("x.npy"), s.text("out.npy"));
    for (bad, what) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        octet::npy::write(&s.path("x.npy"), &octet_graph::Tensor::f32(vec![1, 4], vec![0.5, bad, 1.0, 2.0])).unwrap();
        for engine in [&[][..], &["--reference"][..]] {
            let mut args = vec!["run", model.as_str(), "-i", &x_path, "-o", &out_path];
            args.extend_from_slice(engine);
            fails_with(&args, &["input 'x' holds", what, "flat index 1", "no 8-bit code"]);
        }
    }
    let float = common::root().join("tests/node/test_add/model.onnx").display().to_string();
    let shape = octet::npy::read(&common::root().join("tests/node/test_add/input_0.npy")).unwrap().shape().to_vec();
    let n: usize = shape.iter().product();
    let mut x = vec![1.0f32; n];
    x[3] = f32::NAN;
    octet::npy::write(&s.path("a.npy"), &octet_graph::Tensor::f32(shape.clone(), x)).unwrap();
    octet::npy::write(&s.path("b.npy"), &octet_graph::Tensor::f32(shape, vec![2.0; n])).unwrap();
    let (ok, _, err) =
        octet(&["run", &float, "-i", &format!("x={}", s.text("a.npy")), "-i", &format!("y={}", s.text("b.npy")), "-o", &s.text("sum.npy")]);
    assert!(ok, "{err}");
    let sum = octet::npy::read(&s.path("sum.npy")).unwrap();
    let v = sum.as_f32().unwrap();
    assert!(v[3].is_nan() && v.iter().enumerate().all(|(i, x)| i == 3 || *x == 3.0), "{v:?}");
}

#[test]
fn images_whose_resize_would_exhaust_memory_are_refused() {
    let s = Scratch::new("errors-image-bomb");
    std::fs::create_dir_all(s.path("calib")).unwrap();
    image::RgbImage::new(1_000_000, 1).save(s.path("calib/strip.png")).unwrap();
    let args = ["quantize", &fixture("vit_ts", "model.onnx"), "--calib", &s.text("calib"), "-o", &s.text("q.onnx")];
    fails_with(&args, &["strip.png", "(1000000×1) resized for the crop", "more than the limit"]);
}

/// Runs a hostile fixture on named inputs; returns (success, stderr, output if any).
fn run_hostile(s: &Scratch, model: &str, inputs: &[(&str, octet_graph::Tensor)]) -> (bool, String, Option<octet_graph::Tensor>) {
    let mut args = vec!["run".to_string(), hostile(model)];
    for (name, t) in inputs {
        let p = s.path(&format!("{name}.npy"));
        octet::npy::write(&p, t).unwrap();
        args.extend(["-i".to_string(), format!("{name}={}", p.display())]);
    }
    args.extend(["-o".to_string(), s.text("y.npy")]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = octet(&argv);
    (ok, err, ok.then(|| octet::npy::read(&s.path("y.npy")).unwrap()))
}

#[test]
fn fuzzer_findings_stay_fixed() {
    use octet_graph::{Data, Tensor};
    let s = Scratch::new("errors-fuzz-regressions");
    let (ok, err, y) = run_hostile(&s, "int64_add_overflow", &[("x", Tensor::from_parts(vec![2], Data::I64(vec![1, -1])))]);
    assert!(ok, "{err}");
    assert!(y.unwrap().data() == &Data::I64(vec![i64::MIN, i64::MAX]), "integer Add wraps around as in ONNX Runtime");
    let x = Tensor::f32(vec![2, 3], vec![1.0; 6]);
    for shape in [vec![1i64 << 62, 1 << 62, 0], vec![-1, 1 << 62, 1 << 62], vec![i64::MAX, 2, 3]] {
        let (ok, err, _) =
            run_hostile(&s, "reshape_input_shape", &[("x", x.clone()), ("shape", Tensor::from_parts(vec![3], Data::I64(shape.clone())))]);
        assert!(!ok && err.contains("node 'reshape' (Reshape)"), "{shape:?}: {err}");
    }
    let x = Tensor::f32(vec![1, 1, 2, 2], vec![1.0; 4]);
    for bad in [f32::INFINITY, f32::NAN, -2.0, 0.0] {
        let (ok, err, _) =
            run_hostile(&s, "resize_input_scales", &[("x", x.clone()), ("scales", Tensor::f32(vec![4], vec![1.0, 1.0, bad, 2.0]))]);
        assert!(!ok && err.contains("must be finite and positive"), "{bad}: {err}");
    }
    fails_with(&["check", &hostile("conv_zero_stride")], &["node 'conv' (Conv)", "stride 0 must be at least 1"]);
    fails_with(&["check", &hostile("conv_empty_kernel")], &["node 'conv' (Conv)", "empty spatial axis"]);
    let (ok, err, y) = run_hostile(&s, "resize_input_scales", &[("x", x), ("scales", Tensor::f32(vec![4], vec![1.0, 1.0, 0.1, 1e30]))]);
    assert!(ok, "an empty output is computed, not allocated for the other axis: {err}");
    assert_eq!(y.unwrap().shape()[2], 0);
    let (ok, err, _) = run_hostile(&s, "qdq_empty_zero_point", &[("x", Tensor::f32(vec![1, 4], vec![1.0; 4]))]);
    assert!(!ok && err.contains("node 'q' (QuantizeLinear)") && err.contains("0 zero point(s) for 1 scale(s)"), "{err}");
    let (ok, err, y) = run_hostile(&s, "linear_empty_k", &[("x", Tensor::f32(vec![2, 0], vec![]))]);
    let y = y.unwrap_or_else(|| panic!("a Linear over K = 0 sums nothing: {err}"));
    assert!(ok && y.shape() == [2, 4] && y.as_f32().unwrap().iter().all(|&v| v == 0.0), "{y:?}");
}

#[test]
fn models_doc_lists_every_zoo_model_with_both_exporters() {
    let root = common::root();
    let list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("tools/zoo/models.json")).unwrap()).unwrap();
    let doc = std::fs::read_to_string(root.join("doc/models.md")).unwrap_or_default();
    let rows: Vec<(String, String)> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| model") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect();
    let mut want = Vec::new();
    for m in list["models"].as_array().unwrap() {
        for exporter in ["torchscript", "dynamo"] {
            want.push((m["name"].as_str().unwrap().to_string(), exporter.to_string()));
        }
    }
    assert!(rows == want, "doc/models.md is stale (it must list tools/zoo/models.json, in order, once per exporter): regenerate it with `python tools/zoo/zoo.py`");
}
