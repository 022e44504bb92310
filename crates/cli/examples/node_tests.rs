//! Runs every case that `tools/node_parity.py` wrote (`<dir>/cases.json` and one folder per
//! case) on octet's float session and prints `{case: "pass" | "fail: reason"}` as JSON.
//! A panic is reported as a failure of its case.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: node_tests <dir written by tools/node_parity.py>"));
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).expect("cases.json is JSON");
    std::panic::set_hook(Box::new(|_| {}));
    let mut results = BTreeMap::new();
    for case in cases["cases"].as_array().expect("a case list") {
        let name = case["name"].as_str().expect("a case name");
        let (rtol, atol) = (case["rtol"].as_f64().unwrap_or(1e-3), case["atol"].as_f64().unwrap_or(1e-7));
        let case_dir = dir.join(name);
        let outcome = std::panic::catch_unwind(|| common::run_node_case(&case_dir, rtol, atol)).unwrap_or_else(|_| Err("PANIC".into()));
        let prefix = format!("{}/", dir.display());
        results.insert(
            name.to_string(),
            match outcome {
                Ok(()) => "pass".to_string(),
                Err(e) => format!("fail: {}", e.replace(&prefix, "")),
            },
        );
    }
    println!("{}", serde_json::to_string_pretty(&results).expect("serialisable"));
}
