//! The fuzz targets: how a mutated input reaches octet, and the outcome it gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use octet::run::Engine;
use octet_graph::{DType, Data, Dim, Tensor};
use octet_runtime::Session;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Onnx,
    Npy,
    Image,
    Run,
}

impl Target {
    const ALL: [Target; 4] = [Target::Onnx, Target::Npy, Target::Image, Target::Run];

    pub fn name(self) -> &'static str {
        match self {
            Target::Onnx => "onnx",
            Target::Npy => "npy",
            Target::Image => "image",
            Target::Run => "run",
        }
    }

    pub fn parse_list(s: &str) -> Result<Vec<Target>, String> {
        if s == "all" {
            return Ok(Target::ALL.to_vec());
        }
        s.split(',')
            .map(|n| {
                Target::ALL
                    .into_iter()
                    .find(|t| t.name() == n.trim())
                    .ok_or_else(|| format!("no target '{n}': choose onnx, npy, image, run or all"))
            })
            .collect()
    }

    /// The seed inputs: every file in `corpus/<name>/`.
    pub fn seeds(self, corpus: &Path) -> Vec<Vec<u8>> {
        Target::files(&corpus.join(self.name()))
    }

    /// The contents of every file in `dir`, in name order.
    pub fn files(dir: &Path) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// Runs the target on `input` (files go to `scratch`); returns the outcome's signature.
    pub fn execute(self, input: &[u8], scratch: &Path) -> String {
        let result = match self {
            Target::Onnx => onnx(input, scratch),
            Target::Npy => npy(input, scratch),
            Target::Image => image(input, scratch),
            Target::Run => run(input),
        };
        match result {
            Ok(s) => format!("ok {s}"),
            Err(e) => signature(&format!("{e:#}")),
        }
    }
}

/// An error message with numbers, quoted names and bracketed contents blanked and cut short, so
/// that one kind of error is one outcome whatever the values in it.
fn signature(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let (mut quoted, mut depth) = (false, 0usize);
    for c in message.chars() {
        match c {
            '\'' | '"' if depth == 0 => {
                quoted = !quoted;
                out.push('\'');
            }
            _ if quoted => {}
            '[' | '{' | '(' => {
                if depth == 0 {
                    out.push(c);
                }
                depth += 1;
            }
            ']' | '}' | ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    out.push(c);
                }
            }
            _ if depth > 0 => {}
            '0'..='9' => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            _ => out.push(c),
        }
    }
    out.chars().take(96).collect()
}

fn onnx(input: &[u8], scratch: &Path) -> anyhow::Result<String> {
    let path = scratch.join("model.onnx");
    std::fs::write(&path, input)?;
    let report = octet::check::check(&path, 1 + input.len() % 2)?;
    Ok(format!("{} nodes, {} quantized op kinds", report.nodes.len().min(16), report.quantized_ops.len()))
}

fn npy(input: &[u8], scratch: &Path) -> anyhow::Result<String> {
    if input.starts_with(b"PK") {
        let path = scratch.join("x.npz");
        std::fs::write(&path, input)?;
        let arrays = octet::npy::read_npz(&path)?;
        return Ok(format!("npz of {}", arrays.len().min(8)));
    }
    let path = scratch.join("x.npy");
    std::fs::write(&path, input)?;
    let t = octet::npy::read(&path)?;
    Ok(format!("{} rank {}", t.dtype(), t.rank()))
}

fn image(input: &[u8], scratch: &Path) -> anyhow::Result<String> {
    let path = scratch.join("image");
    std::fs::write(&path, input)?;
    let t = octet::calib_data::preprocess_image(&path, &octet::calib_data::Preprocess::default())?;
    Ok(format!("{:?}", t.shape()))
}

/// Models the `run` target draws from: the ONNX node tests, the small fixtures, and the QDQ
/// models in `tools/fuzz/models` (made by `octet quantize`, so both int8 kernels and the
/// reference run).
fn run_models() -> &'static [PathBuf] {
    static MODELS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    MODELS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut models: Vec<PathBuf> = std::fs::read_dir(root.join("tests/node"))
            .map(|d| d.flatten().map(|e| e.path().join("model.onnx")).filter(|p| p.exists()).collect())
            .unwrap_or_default();
        models.sort();
        for f in ["seed_attention_ts/model.onnx", "hostile/qdq_relu.onnx"] {
            models.push(root.join("tests/fixtures").join(f));
        }
        if let Ok(d) = std::fs::read_dir(root.join("tools/fuzz/models")) {
            let mut qdq: Vec<PathBuf> = d.flatten().map(|e| e.path()).collect();
            qdq.sort();
            models.extend(qdq);
        }
        models
    })
}

type Sessions = (Session, Session);

fn sessions(i: usize) -> anyhow::Result<std::sync::Arc<Sessions>> {
    static CACHE: Mutex<Option<HashMap<usize, std::sync::Arc<Sessions>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(&i) {
        return Ok(s.clone());
    }
    let graph = octet_onnx::load_for_inference(&run_models()[i])?.graph;
    let s = std::sync::Arc::new((octet::run::session(graph.clone(), 1, Engine::Int8)?, octet::run::session(graph, 1, Engine::Reference)?));
    map.insert(i, s.clone());
    Ok(s)
}

/// Values that break arithmetic: NaN, infinities, extremes, signed zero, subnormals.
const SPECIAL: [f32; 8] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 3.0e38, -3.0e38, 1.0e-45];

/// The input bytes are a recipe: the first picks a model, then each byte in turn sizes a dim
/// (symbolic dims 0–4, declared dims now and then off by one or zero) or makes a value.
fn run(recipe: &[u8]) -> anyhow::Result<String> {
    let models = run_models();
    let mut bytes = recipe.iter().copied().chain(std::iter::repeat(0x5a));
    let model = bytes.next().unwrap_or(0) as usize % models.len();
    let s = sessions(model)?;
    let graph = s.0.graph();
    let mut inputs = Vec::new();
    for input in &graph.inputs {
        let shape: Vec<usize> = input
            .dims
            .iter()
            .map(|d| {
                let b = bytes.next().unwrap_or(0);
                match d {
                    Dim::Symbol(_) => (b % 5) as usize,
                    Dim::Fixed(n) if b == 0xff => n + 1,
                    Dim::Fixed(_) if b == 0xfe => 0,
                    Dim::Fixed(n) => *n,
                }
            })
            .collect();
        let n: usize = shape.iter().product();
        if n > 1 << 20 {
            anyhow::bail!("recipe asks for {n} elements");
        }
        let mut value = || bytes.next().unwrap_or(0);
        let data = match input.dtype {
            DType::F32 => Data::F32(
                (0..n)
                    .map(|_| {
                        let b = value();
                        if b < 8 {
                            SPECIAL[b as usize]
                        } else {
                            (b as f32 - 128.0) / 16.0
                        }
                    })
                    .collect(),
            ),
            DType::F64 => Data::F64(
                (0..n)
                    .map(|_| {
                        let b = value();
                        if b < 8 {
                            SPECIAL[b as usize] as f64
                        } else {
                            (b as f64 - 128.0) / 16.0
                        }
                    })
                    .collect(),
            ),
            DType::I64 => Data::I64(
                (0..n)
                    .map(|_| {
                        let b = value();
                        if b == 0xff {
                            i64::MAX
                        } else if b == 0xfe {
                            i64::MIN
                        } else {
                            b as i64 - 128
                        }
                    })
                    .collect(),
            ),
            DType::I32 => Data::I32((0..n).map(|_| value() as i32 - 128).collect()),
            DType::I8 => Data::I8((0..n).map(|_| value() as i8).collect()),
            DType::U8 => Data::U8((0..n).map(|_| value()).collect()),
            DType::Bool => Data::Bool((0..n).map(|_| value() & 1 == 1).collect()),
            other => {
                let v: Vec<f64> = (0..n).map(|_| value() as f64 - 128.0).collect();
                Data::from_fn(other, n, |i| v[i])
            }
        };
        inputs.push(Tensor::from_parts(shape, data));
    }
    let a = s.0.run(inputs.clone());
    let b = s.1.run(inputs);
    let name = models[model].parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(match (a, b) {
        (Ok(_), Ok(_)) => format!("{name} ran"),
        (Err(e), _) | (_, Err(e)) => signature(&format!("{name}: {e}")),
    })
}
