//! Helpers shared by the integration tests of the CLI and of the library (crates/octet/tests).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use octet_graph::Tensor;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// `max |a − b| / max |b|`, the relative error measure of the fixtures.
pub fn relative_error(got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    g.iter().zip(&w).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Elementwise `|a − b| ≤ atol + rtol·|b|` (NaNs must match), as the ONNX backend tests check.
pub fn all_close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    for (i, (a, b)) in got.to_f64_vec().into_iter().zip(want.to_f64_vec()).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
        if !ok {
            return Err(format!("element {i}: {a}, expected {b}"));
        }
    }
    Ok(())
}

/// A temporary folder removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("octet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// [`Scratch::path`] as text, for command lines.
    pub fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one exported ONNX backend node test (`model.onnx`, `input_<i>.npy`, `output_<i>.npy`)
/// on a float session and compares as the backend test runner does.
pub fn run_node_case(dir: &Path, rtol: f64, atol: f64) -> Result<(), String> {
    let model = octet_onnx::load(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let n_in = model.graph.inputs.len();
    let read = |name: String| octet::npy::read(&dir.join(name)).map_err(|e| e.to_string());
    let inputs = (0..n_in).map(|i| read(format!("input_{i}.npy"))).collect::<Result<Vec<_>, _>>()?;
    let session = octet_runtime::Session::new(model.graph, 1, octet_runtime::Engine::Reference).map_err(|e| e.to_string())?;
    let outputs = session.run(inputs).map_err(|e| e.to_string())?;
    for (i, got) in outputs.iter().enumerate() {
        let want = read(format!("output_{i}.npy"))?;
        all_close(got, &want, rtol, atol).map_err(|e| format!("output {i}: {e}"))?;
    }
    Ok(())
}

/// [`run_node_case`] through the `octet` binary at `octet`: `octet run model.onnx -i
/// NAME=input_<i>.npy … -o out` (`out` a `.npz`), then the outputs read back and compared.
pub fn run_node_case_cli(octet: &Path, dir: &Path, out: &Path, rtol: f64, atol: f64) -> Result<(), String> {
    let model = octet_onnx::load(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let mut args = vec![
        "run".to_string(),
        dir.join("model.onnx").display().to_string(),
        "--threads".into(),
        "1".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    for i in 0..model.graph.inputs.len() {
        args.extend(["-i".to_string(), format!("{}={}", model.graph.input_name(i), dir.join(format!("input_{i}.npy")).display())]);
    }
    let run = std::process::Command::new(octet).args(&args).output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    if stderr.contains("panicked") {
        return Err(format!("PANIC: {stderr}"));
    }
    if !run.status.success() {
        return Err(stderr.trim().to_string());
    }
    let outputs = octet::npy::read_npz(out).map_err(|e| e.to_string())?;
    if outputs.len() != model.graph.outputs.len() {
        return Err(format!("{} outputs written, the model has {}", outputs.len(), model.graph.outputs.len()));
    }
    for (i, (_, got)) in outputs.iter().enumerate() {
        let want = octet::npy::read(&dir.join(format!("output_{i}.npy"))).map_err(|e| e.to_string())?;
        all_close(got, &want, rtol, atol).map_err(|e| format!("output {i}: {e}"))?;
    }
    Ok(())
}
