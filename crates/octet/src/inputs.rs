//! Binding `--input` arguments to a model's inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use octet_graph::{Dim, Graph, Tensor};

use crate::npy;

/// One `--input` argument: `x.npy`, `NAME=x.npy`, or `all.npz` (one array per input, by name).
#[derive(Clone, Debug)]
pub struct InputArg {
    pub name: Option<String>,
    pub path: PathBuf,
}

impl std::str::FromStr for InputArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok(InputArg { name: Some(n.into()), path: p.into() }),
            Some(_) => Err(format!("'{s}' is not NAME=FILE.npy")),
            None => Ok(InputArg { name: None, path: s.into() }),
        }
    }
}

/// Reads the `.npy` and `.npz` files and orders them as the graph's inputs, checking names,
/// dtypes and ranks (exact shapes are checked when the plan is made). A model without inputs
/// takes none.
pub fn bind(graph: &Graph, args: &[InputArg]) -> Result<Vec<Tensor>> {
    let names: Vec<&str> = (0..graph.inputs.len()).map(|i| graph.input_name(i)).collect();
    let mut slots: Vec<Option<Tensor>> = vec![None; names.len()];
    let mut put = |i: usize, t: Tensor, from: &Path| -> Result<()> {
        if slots[i].is_some() {
            bail!("input '{}' is given twice", names[i]);
        }
        let input = &graph.inputs[i];
        if t.dtype() != input.dtype {
            bail!("'{}' holds {} values; input '{}' of the model takes {}", from.display(), t.dtype(), names[i], input.dtype);
        }
        slots[i] = Some(t);
        Ok(())
    };
    let unknown = |n: &str| {
        anyhow::anyhow!(
            "the model has no input '{n}'; its inputs are: {}",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )
    };
    for (k, a) in args.iter().enumerate() {
        if a.name.is_none() && npy::is_npz(&a.path) {
            let arrays = npy::read_npz(&a.path)?;
            let single = arrays.len() == 1 && names.len() == 1;
            for (n, t) in arrays {
                let i = if single {
                    0
                } else {
                    names.iter().position(|m| *m == n).ok_or_else(|| unknown(&n)).with_context(|| format!("in '{}'", a.path.display()))?
                };
                put(i, t, &a.path)?;
            }
            continue;
        }
        let i = match &a.name {
            Some(n) => names.iter().position(|m| m == n).ok_or_else(|| unknown(n))?,
            None if names.is_empty() => bail!("the model takes no inputs; run it without --input"),
            None if args.len() == 1 && names.len() == 1 => 0,
            None if names.len() > 1 => bail!(
                "the model has {} inputs ({}); name each one: --input NAME=FILE.npy, or pass one .npz holding an array per input",
                names.len(),
                names.join(", ")
            ),
            None => k,
        };
        put(i, npy::read(&a.path)?, &a.path)?;
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.with_context(|| {
                format!(
                    "missing input '{}' {} ({}): pass --input {}=FILE.npy",
                    names[i],
                    graph.inputs[i].describe_dims(),
                    graph.inputs[i].dtype,
                    names[i]
                )
            })
        })
        .collect()
}

/// A deterministic pseudo-random input for every model input, symbolic dims set to `batch`.
pub fn synthetic(graph: &Graph, batch: usize) -> Result<Vec<Tensor>> {
    graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            if !input.dtype.is_float() {
                bail!("input '{}' is {}: pass real data with --input", graph.input_name(i), input.dtype);
            }
            let shape: Vec<usize> = input
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbol(_) => batch,
                })
                .collect();
            let n: usize = shape.iter().product();
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let v = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
                })
                .collect();
            Ok(Tensor::f32(shape, v))
        })
        .collect()
}
