//! `octet._octet`: the native half of the Python package. Every feature lives in octet's crates;
//! this module only converts arrays and errors and releases the GIL around the work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use numpy::{PyArrayDyn, PyArrayMethods};
use octet::calib_data::Preprocess;
use octet::run::Engine;
use octet_graph::{DType, Data, Dim, Tensor};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

#[global_allocator]
static GLOBAL: octet::Allocator = mimalloc::MiMalloc;

/// An ELF constructor: it runs before the first allocation (elsewhere mimalloc keeps its defaults).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = octet::configure_allocator;

pyo3::create_exception!(_octet, Error, PyException, "Every error octet raises: the message is the one the `octet` command prints.");
pyo3::create_exception!(_octet, ModelError, Error, "The model file cannot be read, is not ONNX, or uses something octet does not support.");
pyo3::create_exception!(_octet, InputError, Error, "Inputs or data do not fit the model: names, dtypes, shapes, values.");

/// Maps an error of the crates to the Python exception of its kind, with the full message.
fn py_err(e: anyhow::Error) -> PyErr {
    let message = format!("{e:#}");
    if e.downcast_ref::<octet_onnx::ImportError>().is_some() {
        return ModelError::new_err(message);
    }
    match e.downcast_ref::<octet_graph::Error>() {
        Some(octet_graph::Error::Input(_)) => InputError::new_err(message),
        Some(octet_graph::Error::UnsupportedOp { .. }) => ModelError::new_err(message),
        _ => Error::new_err(message),
    }
}

fn input_err(message: String) -> PyErr {
    InputError::new_err(message)
}

/// A numpy array (any layout, read-only or not) as a tensor: one copy, in logical order (a
/// memcpy when the array is C-contiguous).
fn to_tensor(a: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    macro_rules! try_dtype {
        ($t:ty, $variant:ident) => {
            if let Ok(arr) = a.cast::<PyArrayDyn<$t>>() {
                let view = arr.readonly();
                let v = view.as_array();
                let data = match v.as_slice() {
                    Some(s) => s.to_vec(),
                    None => v.iter().copied().collect(),
                };
                return Ok(Tensor::from_parts(v.shape().to_vec(), Data::$variant(data)));
            }
        };
    }
    try_dtype!(f32, F32);
    try_dtype!(f64, F64);
    try_dtype!(i64, I64);
    try_dtype!(i32, I32);
    try_dtype!(half::f16, F16);
    try_dtype!(i16, I16);
    try_dtype!(i8, I8);
    try_dtype!(u64, U64);
    try_dtype!(u32, U32);
    try_dtype!(u16, U16);
    try_dtype!(u8, U8);
    try_dtype!(bool, Bool);
    let kind = a.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| a.get_type().to_string());
    Err(input_err(format!("{what} is {kind}; octet takes numpy arrays of float32, float64, float16, signed or unsigned integers, or bool")))
}

/// A tensor as a numpy array that owns the tensor's buffer (no copy).
fn to_array<'py>(py: Python<'py>, t: Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape = t.shape().to_vec();
    macro_rules! arr {
        ($v:expr) => {
            numpy::PyArray1::from_vec(py, $v).reshape(shape)?.into_any()
        };
    }
    Ok(match t.into_data() {
        Data::F32(v) => arr!(v),
        Data::F64(v) => arr!(v),
        Data::I64(v) => arr!(v),
        Data::I32(v) => arr!(v),
        Data::F16(v) => arr!(v),
        Data::I16(v) => arr!(v),
        Data::I8(v) => arr!(v),
        Data::U64(v) => arr!(v),
        Data::U32(v) => arr!(v),
        Data::U16(v) => arr!(v),
        Data::U8(v) => arr!(v),
        Data::Bool(v) => arr!(v),
    })
}

fn numpy_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "tensor(float)",
        DType::F64 => "tensor(double)",
        DType::I64 => "tensor(int64)",
        DType::I32 => "tensor(int32)",
        DType::F16 => "tensor(float16)",
        DType::I16 => "tensor(int16)",
        DType::I8 => "tensor(int8)",
        DType::U64 => "tensor(uint64)",
        DType::U32 => "tensor(uint32)",
        DType::U16 => "tensor(uint16)",
        DType::U8 => "tensor(uint8)",
        DType::Bool => "tensor(bool)",
    }
}

/// An input as Python sees it: name, shape (ints, dim names or None) and ONNX type string.
type InputSpec<'py> = (String, Vec<Bound<'py, PyAny>>, &'static str);

/// A loaded model, shared by any number of Python threads.
#[pyclass(frozen, module = "octet._octet")]
struct Session {
    inner: Arc<octet_runtime::Session>,
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (model, threads, reference=false))]
    fn new(py: Python<'_>, model: &Bound<'_, PyAny>, threads: usize, reference: bool) -> PyResult<Session> {
        let engine = if reference { Engine::Reference } else { Engine::Int8 };
        let inner = if let Ok(b) = model.cast::<pyo3::types::PyBytes>() {
            let bytes = b.as_bytes().to_vec();
            py.detach(|| octet::run::open_bytes(&bytes, Path::new("."), threads.max(1), engine))
        } else {
            let path: PathBuf = model.extract().map_err(|_| input_err("the model must be a path or the bytes of an ONNX file".into()))?;
            py.detach(|| octet::run::open(&path, threads.max(1), engine))
        }
        .map_err(py_err)?;
        Ok(Session { inner: Arc::new(inner) })
    }

    /// `[(name, shape, type)]`: symbolic dims are their names, or None when unnamed.
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<InputSpec<'py>>> {
        let g = self.inner.graph();
        g.inputs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let dims = x
                    .dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Ok(n.into_pyobject(py)?.into_any()),
                        Dim::Symbol(s) if s.is_empty() => Ok(py.None().into_bound(py)),
                        Dim::Symbol(s) => Ok(s.into_pyobject(py)?.into_any()),
                    })
                    .collect::<PyResult<_>>()?;
                Ok((g.input_name(i).to_string(), dims, numpy_type(x.dtype)))
            })
            .collect()
    }

    fn output_names(&self) -> Vec<String> {
        self.inner.graph().output_names().into_iter().map(String::from).collect()
    }

    /// Runs on arrays given in input order; the GIL is released while the model runs.
    fn run<'py>(&self, py: Python<'py>, feeds: Vec<Bound<'py, PyAny>>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let names: Vec<String> = (0..self.inner.graph().inputs.len()).map(|i| self.inner.graph().input_name(i).to_string()).collect();
        let tensors = feeds
            .iter()
            .enumerate()
            .map(|(i, a)| to_tensor(a, &format!("input '{}'", names.get(i).map_or("?", |s| s.as_str()))))
            .collect::<PyResult<Vec<_>>>()?;
        let session = self.inner.clone();
        let outs = py.detach(move || session.run(tensors)).map_err(|e| py_err(e.into()))?;
        outs.into_iter().map(|t| to_array(py, t)).collect()
    }
}

/// Named arrays of stacked samples from a dict `{input name: ndarray}`.
fn stacks(data: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Tensor)>> {
    data.iter()
        .map(|(k, v)| {
            let name: String = k.extract()?;
            let t = to_tensor(&v, &format!("data for input '{name}'"))?;
            Ok((name, t))
        })
        .collect()
}

/// `quantize(model, output, data, options)`: `data` is a path (str) or a dict of stacked arrays;
/// `options` a dict of the `octet quantize` flags. Returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (model, output, data, preset="full-int8", reduce_range=false, per_tensor=false, exclude=Vec::new(), samples=None, threads=None, progress=true, int8_softmax=false, activation_epilogue=false, int8_residual=false, adaptive_rounding=false, uint16_inputs=None, transform=None, record_transform=false))]
#[allow(clippy::too_many_arguments)]
fn quantize(
    py: Python<'_>,
    model: PathBuf,
    output: PathBuf,
    data: &Bound<'_, PyAny>,
    preset: &str,
    reduce_range: bool,
    per_tensor: bool,
    exclude: Vec<String>,
    samples: Option<usize>,
    threads: Option<usize>,
    progress: bool,
    int8_softmax: bool,
    activation_epilogue: bool,
    int8_residual: bool,
    adaptive_rounding: bool,
    uint16_inputs: Option<bool>,
    transform: Option<String>,
    record_transform: bool,
) -> PyResult<String> {
    let preprocess = transform_arg(transform.as_deref())?;
    let preset = match preset {
        "full-int8" => octet_quant::Preset::FullInt8,
        "int8-gemm" => octet_quant::Preset::Int8Gemm,
        other => return Err(input_err(format!("preset '{other}' is not one of full-int8, int8-gemm"))),
    };
    let exclude = exclude
        .iter()
        .map(|e| regex::Regex::new(e).map_err(|err| input_err(format!("exclude '{e}': {err}"))))
        .collect::<PyResult<Vec<_>>>()?;
    let calib_path: Option<PathBuf> = data.extract().ok();
    let calib_stacks = match &calib_path {
        Some(_) => None,
        None => Some(stacks(data.cast::<PyDict>().map_err(|_| input_err("data must be a path or a dict of arrays".into()))?)?),
    };
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    py.detach(move || {
        let calib = match (&calib_path, calib_stacks) {
            (Some(p), _) => octet::quantize::Calibration::Path(p),
            (None, Some(s)) => octet::quantize::Calibration::Stacks(s),
            (None, None) => unreachable!("one of the two is set"),
        };
        let request = octet::quantize::Request {
            model: &model,
            calib,
            output: &output,
            options: octet_quant::Options {
                per_channel: !per_tensor,
                reduce_range,
                exclude,
                int8_softmax,
                activation_epilogue,
                int8_residual,
                adaptive_rounding,
                uint16_inputs: match uint16_inputs {
                    None => octet_quant::annotate::WideInputs::default_for(preset),
                    Some(true) => octet_quant::annotate::WideInputs::FloatProduced,
                    Some(false) => octet_quant::annotate::WideInputs::Off,
                },
                ..octet_quant::Options::new(preset)
            },
            method: octet_quant::Method::Auto,
            preprocess,
            record_preprocess: record_transform,
            samples,
            threads,
            progress,
            target: None,
        };
        let report = octet::quantize::quantize(&request)?;
        Ok(serde_json::to_string(&report)?)
    })
    .map_err(py_err)
}

/// How every node of the model runs, as JSON (`octet check --json`).
#[pyfunction]
#[pyo3(signature = (model, batch=1))]
fn check(py: Python<'_>, model: PathBuf, batch: usize) -> PyResult<String> {
    py.detach(|| Ok(serde_json::to_string(&octet::check::check(&model, batch)?)?)).map_err(py_err)
}

/// The operator support matrix as JSON (`octet ops --format json`).
#[pyfunction]
fn ops() -> PyResult<String> {
    Ok(octet::ops_table::json())
}

/// The result of `compare`: the report as JSON, its text and its HTML page.
#[pyclass(frozen, module = "octet._octet")]
struct Comparison {
    report: octet::compare::Report,
}

#[pymethods]
impl Comparison {
    fn json(&self) -> PyResult<String> {
        serde_json::to_string(&self.report).map_err(|e| Error::new_err(e.to_string()))
    }
    #[pyo3(signature = (top=20))]
    fn text(&self, top: usize) -> String {
        self.report.text(top)
    }
    fn html(&self) -> String {
        octet::html::page(&self.report)
    }
}

/// Compares a float model and its quantized version on `data` (a path or a dict of stacked
/// arrays), with optional integer `labels`.
#[pyfunction]
#[pyo3(signature = (float_model, quantized_model, data, labels=None, batch=8, node_samples=64, threads=None, progress=true, transform=None))]
#[allow(clippy::too_many_arguments)]
fn compare(
    py: Python<'_>,
    float_model: PathBuf,
    quantized_model: PathBuf,
    data: &Bound<'_, PyAny>,
    labels: Option<Vec<i64>>,
    batch: usize,
    node_samples: usize,
    threads: Option<usize>,
    progress: bool,
    transform: Option<String>,
) -> PyResult<Comparison> {
    let preprocess = transform_arg(transform.as_deref())?;
    let path: Option<PathBuf> = data.extract().ok();
    let arrays = match &path {
        Some(_) => None,
        None => Some(stacks(data.cast::<PyDict>().map_err(|_| input_err("data must be a path or a dict of arrays".into()))?)?),
    };
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let report = py
        .detach(move || {
            let graph = octet_onnx::load_for_inference(&float_model)?.graph;
            let samples = match (&path, &arrays) {
                (Some(p), _) => octet::calib_data::load(p, &graph, &preprocess, None)?,
                (None, Some(s)) => octet::calib_data::from_stacks(s, &graph, None, "the data")?,
                (None, None) => unreachable!("one of the two is set"),
            };
            if let Some(l) = &labels {
                anyhow::ensure!(l.len() >= samples.len(), "{} labels for {} samples", l.len(), samples.len());
            }
            let data = octet::compare::Data { samples, labels };
            let request = octet::compare::Request {
                float: &float_model,
                quantized: &quantized_model,
                data: &data,
                batch: batch.max(1),
                node_samples,
                threads,
                progress,
            };
            octet::compare::compare(&request)
        })
        .map_err(py_err)?;
    Ok(Comparison { report })
}

/// The image transform from the JSON the Python layer passes (`None`: timm's defaults).
fn transform_arg(json: Option<&str>) -> PyResult<Preprocess> {
    json.map_or(Ok(Preprocess::default()), |j| Preprocess::from_json(j).map_err(|e| input_err(format!("transform: {e:#}"))))
}

/// One image (a path, the encoded bytes of a JPEG or PNG, or a decoded uint8 `[h, w, 3]` array)
/// through the transform calibration uses for image folders: a float32 array `[1, 3, size, size]`,
/// bit for bit what `octet quantize --calib FOLDER` feeds the model (from a decoded array: when
/// its decoder agrees with octet's).
#[pyfunction]
#[pyo3(signature = (image, transform=None, name=None))]
fn preprocess<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    transform: Option<String>,
    name: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let p = transform_arg(transform.as_deref())?;
    let tensor = if let Ok(b) = image.cast::<pyo3::types::PyBytes>() {
        let bytes = b.as_bytes().to_vec();
        let what = name.unwrap_or_else(|| "image bytes".into());
        py.detach(|| octet::calib_data::preprocess_bytes(&bytes, &what, &p))
    } else if let Ok(arr) = image.cast::<PyArrayDyn<u8>>() {
        let view = arr.readonly();
        let a = view.as_array();
        let &[h, w, 3] = a.shape() else {
            return Err(input_err(format!("a decoded image must be a uint8 array [height, width, 3], not {:?}", a.shape())));
        };
        let rgb: Vec<u8> = a.iter().copied().collect();
        let what = name.unwrap_or_else(|| "image array".into());
        let (w, h) = (u32::try_from(w).map_err(|e| input_err(e.to_string()))?, u32::try_from(h).map_err(|e| input_err(e.to_string()))?);
        py.detach(|| octet::calib_data::preprocess_rgb(rgb, w, h, &what, &p))
    } else {
        let path: PathBuf = image
            .extract()
            .map_err(|_| input_err("image must be a path, the bytes of a JPEG or PNG file, or a uint8 array [height, width, 3]".into()))?;
        py.detach(|| octet::calib_data::preprocess_image(&path, &p))
    }
    .map_err(|e| InputError::new_err(format!("{e:#}")))?;
    to_array(py, tensor)
}

/// The image transform `octet quantize` recorded in a model's metadata (JSON), if any.
#[pyfunction]
fn recorded_transform(py: Python<'_>, model: PathBuf) -> PyResult<Option<String>> {
    py.detach(|| octet::run::recorded_preprocess(&model)).map(|p| p.map(|p| p.to_json())).map_err(py_err)
}

/// The int8 kernel tier this CPU uses (`OCTET_ISA` can force a lower one).
#[pyfunction]
fn isa() -> PyResult<&'static str> {
    octet_kernels::Isa::selected().map(|i| i.name()).map_err(Error::new_err)
}

#[pymodule]
fn _octet(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add("InputError", m.py().get_type::<InputError>())?;
    m.add_class::<Session>()?;
    m.add_class::<Comparison>()?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(recorded_transform, m)?)?;
    m.add_function(wrap_pyfunction!(ops, m)?)?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    m.add_function(wrap_pyfunction!(isa, m)?)?;
    Ok(())
}
