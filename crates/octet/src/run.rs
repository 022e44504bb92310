//! `octet run`: run a model on .npy inputs and write .npy outputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use octet_graph::Tensor;
pub use octet_runtime::Engine;
use octet_runtime::Session;

use crate::calib_data::Preprocess;
use crate::inputs::{bind, InputArg};
use crate::npy;

/// Loads a model into a session that uses `threads` threads. The int8 engine holds the
/// quantized weights once, packed in its plans, and reads the file again to plan other input
/// shapes ([`Session::reloadable`]).
pub fn open(model: &Path, threads: usize, engine: Engine) -> Result<Session> {
    let graph = octet_onnx::load_for_inference(model)?.graph;
    let path = model.to_path_buf();
    let reload: octet_runtime::Reload = std::sync::Arc::new(move || {
        octet_onnx::load_for_inference(&path)
            .map(|m| m.graph)
            .map_err(|e| octet_graph::Error::Invalid(format!("reading the model again: {e}")))
    });
    Ok(session(graph, threads, engine)?.reloadable(reload))
}

/// The image transform recorded in a model's metadata by `octet quantize --calib FOLDER`
/// ([`Preprocess::METADATA_KEY`]), if any.
pub fn recorded_preprocess(model: &Path) -> Result<Option<Preprocess>> {
    let m = octet_onnx::load_for_inference(model)?;
    m.proto
        .metadata_props
        .iter()
        .find(|e| e.key.as_deref() == Some(Preprocess::METADATA_KEY))
        .map(|e| {
            Preprocess::from_json(e.value.as_deref().unwrap_or_default())
                .with_context(|| format!("'{}': metadata '{}'", model.display(), Preprocess::METADATA_KEY))
        })
        .transpose()
}

/// A session on a model held in memory (its bytes, e.g. shipped to a worker that cannot read
/// the file). External data is looked up in `base`.
pub fn open_bytes(bytes: &[u8], base: &Path, threads: usize, engine: Engine) -> Result<Session> {
    let graph = octet_onnx::load_bytes(bytes, Path::new("<model bytes>"), base)?.graph;
    session(graph, threads, engine)
}

/// A session for an imported graph.
pub fn session(graph: octet_graph::Graph, threads: usize, engine: Engine) -> Result<Session> {
    Ok(Session::new(graph, threads, engine)?)
}

/// Where each output goes: `--output` names a `.npy` file for one output, a `.npz` for all of
/// them, or a folder (one NAME.npy each).
pub fn output_paths(out: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    if npy::is_npz(out) || (names.len() == 1 && !out.is_dir()) {
        return Ok(vec![out.to_path_buf()]);
    }
    if !out.is_dir() {
        if out.extension().is_some_and(|e| e == "npy") {
            bail!("the model has {} outputs ({}); --output must be a folder or a .npz", names.len(), names.join(", "));
        }
        std::fs::create_dir_all(out).with_context(|| format!("cannot create folder '{}'", out.display()))?;
    }
    Ok(names.iter().map(|n| out.join(format!("{}.npy", sanitize(n)))).collect())
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// One output as written.
pub struct Written {
    pub name: String,
    pub path: PathBuf,
    pub tensor: Tensor,
}

/// Runs the model and writes its outputs; returns each with its name and the path it went to.
pub fn run(model: &Path, inputs: &[InputArg], output: &Path, threads: usize, engine: Engine) -> Result<Vec<Written>> {
    let session = open(model, threads, engine)?;
    let tensors = bind(session.graph(), inputs)?;
    let names = session.graph().output_names();
    let paths = output_paths(output, &names)?;
    let outs = session.run(tensors)?;
    if npy::is_npz(output) {
        let named: Vec<(&str, &Tensor)> = names.iter().copied().zip(&outs).collect();
        npy::write_npz(output, &named)?;
    } else {
        for (p, t) in paths.iter().zip(&outs) {
            npy::write(p, t)?;
        }
    }
    let paths = paths.into_iter().cycle();
    Ok(names.iter().zip(paths).zip(outs).map(|((n, path), tensor)| Written { name: n.to_string(), path, tensor }).collect())
}
