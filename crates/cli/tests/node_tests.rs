//! The ONNX backend node tests for the supported operators (exported from the `onnx` wheel by
//! `tools/fixtures/make_node_tests.py`). `tests/node/manifest.json` records which pass and why
//! the others fail; this test fails when a case does not match its manifest entry either way.
//! `OCTET_UPDATE_MANIFEST=1` rewrites the manifest from the current results.

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

#[test]
fn onnx_backend_node_tests_match_manifest() {
    let node_dir = common::root().join("tests/node");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(node_dir.join("cases.json")).unwrap()).unwrap();
    let manifest_path = node_dir.join("manifest.json");
    let manifest: BTreeMap<String, String> =
        std::fs::read_to_string(&manifest_path).ok().map(|s| serde_json::from_str(&s).unwrap()).unwrap_or_default();
    let mut results = BTreeMap::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (rtol, atol) = (case["rtol"].as_f64().unwrap_or(1e-3), case["atol"].as_f64().unwrap_or(1e-7));
        let outcome = std::panic::catch_unwind(|| common::run_node_case(&node_dir.join(name), rtol, atol))
            .unwrap_or_else(|_| Err("PANIC".to_string()));
        let prefix = format!("{}/", node_dir.display());
        results.insert(
            name.to_string(),
            match outcome {
                Ok(()) => "pass".to_string(),
                Err(e) => format!("fail: {}", e.replace(&prefix, "")),
            },
        );
    }
    let passed = results.values().filter(|v| *v == "pass").count();
    println!("{passed} of {} node tests pass", results.len());
    let mut per_op: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for case in cases["cases"].as_array().unwrap() {
        let entry = per_op.entry(case["op_type"].as_str().unwrap()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(results[case["name"].as_str().unwrap()] == "pass");
    }
    for (op, (n, ok)) in &per_op {
        println!("  {op:<32} {ok:>3} of {n:>3}");
    }
    if std::env::var_os("OCTET_UPDATE_MANIFEST").is_some() {
        std::fs::write(&manifest_path, serde_json::to_string_pretty(&results).unwrap() + "\n").unwrap();
        return;
    }
    let mut mismatches = Vec::new();
    for (name, got) in &results {
        assert!(!got.contains("PANIC"), "{name} panicked: an error must be reported, never a panic");
        let want = manifest.get(name).map(String::as_str).unwrap_or("(not in manifest)");
        if (want == "pass") != (got == "pass") {
            mismatches.push(format!("{name}: manifest says '{want}', got '{got}'"));
        }
    }
    assert!(mismatches.is_empty(), "node tests differ from tests/node/manifest.json:\n{}", mismatches.join("\n"));
}

/// The same cases through the door users use: one `octet run` process per case, every input
/// named on the command line, every output written to one `.npz` and read back. Each case passes
/// through the CLI exactly when it passes through the session (every element type is read and
/// written, models without inputs run).
#[test]
fn onnx_backend_node_tests_pass_through_octet_run() {
    let node_dir = common::root().join("tests/node");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(node_dir.join("cases.json")).unwrap()).unwrap();
    let manifest: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(node_dir.join("manifest.json")).unwrap()).unwrap();
    let scratch = common::Scratch::new("node-cli");
    let mut mismatches = Vec::new();
    let mut passed = 0;
    let all = cases["cases"].as_array().unwrap();
    for case in all {
        let name = case["name"].as_str().unwrap();
        let (rtol, atol) = (case["rtol"].as_f64().unwrap_or(1e-3), case["atol"].as_f64().unwrap_or(1e-7));
        let outcome = common::run_node_case_cli(
            std::path::Path::new(env!("CARGO_BIN_EXE_octet")),
            &node_dir.join(name),
            &scratch.path(&format!("{name}.npz")),
            rtol,
            atol,
        );
        passed += usize::from(outcome.is_ok());
        if outcome.is_ok() != (manifest.get(name).map(String::as_str) == Some("pass")) {
            mismatches
                .push(format!("{name}: through octet run {outcome:?}, manifest '{}'", manifest.get(name).map_or("(none)", |s| s.as_str())));
        }
    }
    println!("{passed} of {} node tests pass through `octet run`", all.len());
    assert!(mismatches.is_empty(), "octet run differs from the session on:\n{}", mismatches.join("\n"));
}
