//! The `octet` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use octet::inputs::InputArg;
use octet::{bench, calib_data, check, compare, ops_table, quantize, run};
use octet_quant::{Method, Options, Preset};

#[global_allocator]
static GLOBAL: octet::Allocator = mimalloc::MiMalloc;

/// An ELF constructor: it runs before the first allocation (elsewhere mimalloc keeps its defaults).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = octet::configure_allocator;

/// octet: quantize vision transformers to int8 and run them fast on CPUs.
#[derive(Parser)]
#[command(name = "octet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest tensor a model may create, e.g. 8G (default: the memory available now; also set by
    /// OCTET_MAX_MEMORY). A model whose shapes exceed it is refused with the node, op, shape and
    /// bytes, before anything that large is allocated.
    #[arg(long, global = true, value_parser = parse_max_memory)]
    max_memory: Option<u64>,
}

fn parse_interpolation(s: &str) -> Result<calib_data::Interpolation, String> {
    s.parse()
}

fn parse_max_memory(s: &str) -> Result<u64, String> {
    octet_graph::limits::parse_size(s)
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Md,
    Json,
}

/// `println!` that ends the program quietly when stdout is closed (e.g. piped into `head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// `print!` with the same handling as [`out!`].
macro_rules! out_raw {
    ($($t:tt)*) => {{
        use std::io::Write;
        if let Err(e) = write!(std::io::stdout().lock(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[derive(Clone, Copy, ValueEnum)]
enum PresetArg {
    Int8Gemm,
    FullInt8,
}

/// A choice whose default depends on other flags.
#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    Auto,
    On,
    Off,
}

impl Switch {
    /// `--uint16-inputs`: auto is the preset's default.
    fn wide_inputs(self, preset: Preset) -> octet_quant::annotate::WideInputs {
        use octet_quant::annotate::WideInputs;
        match self {
            Switch::Auto => WideInputs::default_for(preset),
            Switch::On => WideInputs::FloatProduced,
            Switch::Off => WideInputs::Off,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SoftmaxGridArg {
    Fixed,
    Calibrated,
}

#[derive(Clone, Copy, ValueEnum)]
enum ObserverArg {
    /// Per tensor kind: MSE-optimal clipping for unary-op and scalar-multiply outputs, min/max
    /// elsewhere (ranges that hold on data calibration never saw); with --int8-softmax, softmax
    /// inputs clipped below at their 1st percentile.
    Auto,
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

/// How image folders are turned into tensors (timm's eval transform).
#[derive(clap::Args)]
struct ImageArgs {
    /// Image side after the crop (images only).
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// The shorter side is resized to image-size / crop-pct before the center crop.
    #[arg(long, default_value_t = 0.875)]
    crop_pct: f32,
    #[arg(long, default_value = "bicubic", value_parser = parse_interpolation)]
    interpolation: calib_data::Interpolation,
    /// Per-channel mean, R,G,B.
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [0.485, 0.456, 0.406])]
    mean: Vec<f32>,
    /// Per-channel standard deviation, R,G,B.
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [0.229, 0.224, 0.225])]
    std: Vec<f32>,
}

impl ImageArgs {
    fn preprocess(&self) -> calib_data::Preprocess {
        let (m, s) = (&self.mean, &self.std);
        calib_data::Preprocess {
            size: self.image_size,
            crop_pct: self.crop_pct,
            interpolation: self.interpolation,
            mean: [m[0], m[1], m[2]],
            std: [s[0], s[1], s[2]],
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Quantize the Fashion-MNIST ViT that ships with octet and show what it gives: fp32 vs
    /// int8 top-1 on the shipped test images, the share of nodes running int8, the speed-up, and
    /// an HTML report. Trains and downloads nothing.
    Demo {
        /// The folder with model.onnx, calib.npz, test.npz and labels.npy [default: tests/fixtures/fashion_vit].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where to write the quantized model and report.html.
        #[arg(long, default_value = "target/octet-demo")]
        out: PathBuf,
        /// Threads to use [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an ONNX model on .npy inputs and write its outputs as .npy.
    Run {
        /// The model (.onnx). External weight files are looked up next to it.
        model: PathBuf,
        /// An input: FILE.npy for a single-input model, NAME=FILE.npy, or FILE.npz holding one
        /// array per input (by name). Repeat for several inputs; leave out for a model without
        /// inputs. Every element type ONNX tensors have in NumPy: float16/32/64, signed and
        /// unsigned 8- to 64-bit integers, bool.
        #[arg(short, long = "input")]
        inputs: Vec<InputArg>,
        /// Where to write: a .npy file for a single output, a .npz for all of them (one array
        /// per output name), or a folder (one NAME.npy each).
        #[arg(short, long)]
        output: PathBuf,
        /// Threads to use [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Run quantized models in float between dq and q (the reference) instead of int8 kernels.
        #[arg(long)]
        reference: bool,
        /// Print a JSON summary instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the operator support matrix (generated from the op registry).
    Ops {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Say, for every node of a model, how it runs and why; refuse unsupported models clearly.
    Check {
        model: PathBuf,
        /// The size given to symbolic input dims (e.g. the batch) while checking.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Also list the nodes folded at load or fused into others.
        #[arg(long)]
        all: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Calibrate on real data and write a standard ONNX QDQ model (int8).
    Quantize {
        /// The float model (.onnx).
        model: PathBuf,
        /// Calibration data: a .npy of samples stacked on the first axis, a .npz with one such
        /// array per input, or a folder of JPEG/PNG images (preprocessed as timm's eval transform).
        #[arg(long)]
        calib: PathBuf,
        /// The QDQ model to write (.onnx); the chosen ranges go next to it as .ranges.json.
        /// Before it is written, the model is checked: ONNX's rules for every graph and subgraph,
        /// import, both engines run on samples held back from calibration (the last 4 when there
        /// are more than 16, or those past --calib-samples), outputs compared with float. A model
        /// that fails is not written.
        #[arg(short, long)]
        output: PathBuf,
        /// full-int8: every op with an int8 rule (fastest; holds accuracy with the default remedies,
        /// doc/quantization.md section 9); int8-gemm: Linear, Conv, attention matmuls and scalar
        /// multiplies only, the rest float.
        #[arg(long, value_enum, default_value = "full-int8")]
        preset: PresetArg,
        /// How activation ranges are chosen.
        #[arg(long, value_enum, default_value = "auto")]
        observer: ObserverArg,
        /// The percentile for --observer percentile.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// One scale per weight tensor instead of per output channel.
        #[arg(long)]
        per_tensor: bool,
        /// 7-bit weights in [-64, 64], as ONNX Runtime's reduce_range: ONNX Runtime's int8 kernels
        /// are then exact on CPUs without VNNI, and octet's AVX2 tier runs them on vpmaddubsw
        /// (faster there). Costs weight precision (doc/quantization.md).
        #[arg(long)]
        reduce_range: bool,
        /// Quantize attention logits and probabilities to 8 bits too. By default they stay float
        /// between the two int8 attention matmuls: 8 bits lose what pretrained attention needs
        /// (doc/quantization.md, section 9).
        #[arg(long)]
        int8_softmax: bool,
        /// Run the activation after a Linear or Conv (GELU …) in the product's epilogue, in f32,
        /// quantized once. By default the product's output is quantized and the activation runs
        /// as a 256-entry table on it: faster, and as accurate on the real models measured
        /// (doc/quantization.md, section 9).
        #[arg(long)]
        activation_epilogue: bool,
        /// 16-bit (uint16) codes for Linear inputs that 8 bits serve badly: LayerNorm outputs
        /// that the residual stream also reads (post-LN encoders such as BERT, where smoothing
        /// cannot move their outlier channels), and with `on` the outputs of other float ops (the
        /// MLP's hidden activations after a float GELU, the attention context before the output
        /// projection). Those Linears take twice the time; the file is raised to opset 21, which
        /// 16-bit Q/DQ need (doc/quantization.md, section 9). auto: the LayerNorm outputs with
        /// full-int8, both kinds with int8-gemm; off: none.
        #[arg(long, value_enum, default_value = "auto")]
        uint16_inputs: Switch,
        /// Quantize the residual stream (the Adds between blocks, their addends and the
        /// LayerNorms' inputs) to 8 bits too: faster, but pretrained transformers carry outlier
        /// channels there. By default it stays float and the products write it from their
        /// epilogues (doc/quantization.md, section 9).
        #[arg(long)]
        int8_residual: bool,
        /// Choose each Linear's weight codes to lower its output error on the calibration inputs
        /// (coordinate descent on the inputs' covariance) instead of rounding each weight to its
        /// nearest code. Lowers the weights' error on data calibration never saw by about a
        /// third on DINOv2-S; costs quantize time (doc/quantization.md, section 9).
        #[arg(long)]
        adaptive_rounding: bool,
        /// Softmax output grid with --int8-softmax: fixed [0, 1] or calibrated [0, largest
        /// probability seen].
        #[arg(long, value_enum, default_value = "calibrated")]
        softmax_grid: SoftmaxGridArg,
        /// Do not migrate outlier scale from LayerNorms into the next Linears (SmoothQuant).
        #[arg(long)]
        no_smooth: bool,
        /// Quantize the residual stream even where it has outlier channels.
        #[arg(long)]
        no_wide_residual: bool,
        /// Keep Linear biases as trained (no correction for the mean error of quantized weights).
        #[arg(long)]
        no_bias_correction: bool,
        /// Keep nodes float whose name or op type matches this regular expression (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Calibrate on at most this many samples (up to 4 more are read for the check).
        #[arg(long)]
        calib_samples: Option<usize>,
        /// Keep the fewest, most sensitive ops float until int8 top-1 accuracy on --eval is
        /// within this many points of float (needs --eval and --labels).
        #[arg(long, requires_all = ["eval", "labels"])]
        target_drop: Option<f64>,
        /// Labelled evaluation data for --target-drop (.npy, .npz or a folder of images).
        #[arg(long)]
        eval: Option<PathBuf>,
        /// Class labels of --eval (.npy, 1-D integers).
        #[arg(long)]
        labels: Option<PathBuf>,
        #[command(flatten)]
        images: ImageArgs,
        /// Threads to use [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Compare a quantized model with its float original on real data: top-1 agreement (and
    /// accuracy with labels), output cosine and SQNR, and the SQNR of every node's activations,
    /// most harmful first.
    Compare {
        /// The float model (.onnx).
        float: PathBuf,
        /// The quantized model (.onnx, QDQ), run on octet's int8 kernels.
        quantized: PathBuf,
        /// Evaluation data, as for `quantize --calib`: .npy, .npz or a folder of images.
        #[arg(long)]
        data: PathBuf,
        /// Class labels (.npy, 1-D integers, one per sample) for top-1 accuracy.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Use at most this many samples.
        #[arg(long)]
        samples: Option<usize>,
        /// Samples per run.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Samples for the per-node comparison (it keeps every activation of a batch in memory).
        #[arg(long, default_value_t = 128)]
        node_samples: usize,
        /// Nodes listed in the text report.
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// Also write a self-contained HTML report (per-node chart, activation histograms).
        #[arg(long)]
        html: Option<PathBuf>,
        #[command(flatten)]
        images: ImageArgs,
        /// Threads to use [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time a model: median and p90 latency and images per second.
    Bench {
        model: PathBuf,
        /// Input .npy (FILE.npy or NAME=FILE.npy); without it a synthetic input is used.
        #[arg(short, long)]
        input: Option<InputArg>,
        /// Batch size of the synthetic input.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Threads to use.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Untimed runs first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Print one JSON line: {"median_ms", "p90_ms", "images_per_s", "threads", ...}.
        #[arg(long)]
        json: bool,
        /// Also report where the time goes: by op type (`--profile` alone or `--profile=ops`),
        /// by node (`--profile=nodes`), or by layer (`--profile=layers`: nodes whose names differ
        /// only in their outermost layer index, as `/blocks/blocks.3/mlp/fc1/MatMul` and
        /// `/blocks/blocks.4/mlp/fc1/MatMul`, summed on one line). Nodes are those octet runs: an
        /// int8 kernel carries the name of the node it was lowered at. The text shows the 30
        /// largest lines, `--json` all.
        #[arg(
            long,
            value_name = "BY",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "ops",
            value_parser = ["ops", "nodes", "layers"]
        )]
        profile: Option<String>,
        /// Also measure this CPU's int8 peak (each microkernel's instruction mix in registers,
        /// about 0.1 s each) and report the run's share of it: the model's operations (two per
        /// multiply-add of its matrix products and convolutions) per second over the peak
        /// times the threads.
        #[arg(long)]
        peak: bool,
        /// Run quantized models in float between dq and q (the reference) instead of int8 kernels.
        #[arg(long)]
        reference: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(bytes) = cli.max_memory {
        octet_graph::limits::set_max_tensor_bytes(bytes);
    }
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn engine(reference: bool) -> run::Engine {
    if reference {
        run::Engine::Reference
    } else {
        run::Engine::Int8
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run { model, inputs, output, threads, reference, json } => {
            let threads = threads.unwrap_or_else(default_threads);
            let start = std::time::Instant::now();
            let written = run::run(&model, &inputs, &output, threads, engine(reference))?;
            if json {
                let outs: Vec<_> = written
                    .iter()
                    .map(|w| serde_json::json!({"name": w.name, "path": w.path, "shape": w.tensor.shape(), "dtype": w.tensor.dtype()}))
                    .collect();
                out!("{}", serde_json::json!({"outputs": outs, "seconds": start.elapsed().as_secs_f64(), "threads": threads}));
            } else {
                for w in &written {
                    out!("wrote {} to {} ({} {:?})", w.name, w.path.display(), w.tensor.dtype(), w.tensor.shape());
                }
            }
        }
        Command::Demo { dir, out, threads, json } => {
            let dir = dir.unwrap_or_else(octet::demo::default_dir);
            let report = octet::demo::demo(&dir, &out, threads.unwrap_or_else(default_threads), !json && std::io::stderr().is_terminal())?;
            if json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                out_raw!("{}", report.text());
            }
        }
        Command::Ops { format } => match format {
            Format::Text => out_raw!("{}", ops_table::text()),
            Format::Md => out_raw!("{}", ops_table::markdown()),
            Format::Json => out!("{}", ops_table::json()),
        },
        Command::Check { model, batch, all, json } => {
            let report = check::check(&model, batch)?;
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out_raw!("{}", report.text(all));
            }
        }
        Command::Quantize {
            model,
            calib,
            output,
            preset,
            observer,
            percentile,
            per_tensor,
            reduce_range,
            int8_softmax,
            activation_epilogue,
            uint16_inputs,
            int8_residual,
            adaptive_rounding,
            softmax_grid,
            no_smooth,
            no_wide_residual,
            no_bias_correction,
            exclude,
            calib_samples,
            target_drop,
            eval,
            labels,
            images,
            threads,
            json,
        } => {
            let exclude = exclude
                .iter()
                .map(|e| regex::Regex::new(e).with_context(|| format!("--exclude '{e}' is not a valid regular expression")))
                .collect::<Result<_>>()?;
            let preset = match preset {
                PresetArg::Int8Gemm => Preset::Int8Gemm,
                PresetArg::FullInt8 => Preset::FullInt8,
            };
            let method = match observer {
                ObserverArg::Auto => Method::Auto,
                ObserverArg::Minmax => Method::MinMax,
                ObserverArg::Percentile => Method::Percentile(percentile),
                ObserverArg::Entropy => Method::Entropy,
                ObserverArg::Mse => Method::Mse,
            };
            let eval_data = match (&eval, target_drop) {
                (Some(e), Some(_)) => Some(compare::load_data(
                    e,
                    labels.as_deref(),
                    &octet_onnx::load_for_inference(&model)?.graph,
                    &images.preprocess(),
                    None,
                )?),
                _ => None,
            };
            let request = quantize::Request {
                target: target_drop.zip(eval_data.as_ref()).map(|(drop, data)| quantize::Target { drop, data }),
                model: &model,
                calib: quantize::Calibration::Path(&calib),
                output: &output,
                options: Options {
                    per_channel: !per_tensor,
                    reduce_range,
                    exclude,
                    smooth: !no_smooth,
                    wide_residual: !no_wide_residual,
                    bias_correction: !no_bias_correction,
                    softmax_calibrated: matches!(softmax_grid, SoftmaxGridArg::Calibrated),
                    int8_softmax,
                    activation_epilogue,
                    uint16_inputs: uint16_inputs.wide_inputs(preset),
                    int8_residual,
                    adaptive_rounding,
                    ..Options::new(preset)
                },
                method,
                preprocess: images.preprocess(),
                record_preprocess: false,
                samples: calib_samples,
                threads: threads.unwrap_or_else(default_threads),
                progress: !json && std::io::stderr().is_terminal(),
            };
            let report = quantize::quantize(&request)?;
            if json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                out_raw!("{}", report.text());
            }
        }
        Command::Compare { float, quantized, data, labels, samples, batch, node_samples, top, html, images, threads, json } => {
            let graph = octet_onnx::load_for_inference(&float)?.graph;
            let data = compare::load_data(&data, labels.as_deref(), &graph, &images.preprocess(), samples)?;
            let request = compare::Request {
                float: &float,
                quantized: &quantized,
                data: &data,
                batch,
                node_samples,
                threads: threads.unwrap_or_else(default_threads),
                progress: !json && std::io::stderr().is_terminal(),
            };
            let report = compare::compare(&request)?;
            if let Some(path) = &html {
                octet::write_atomically(path, octet::html::page(&report).as_bytes())?;
            }
            if json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                out_raw!("{}", report.text(top));
                if let Some(path) = &html {
                    out!("report: {}", path.display());
                }
            }
        }
        Command::Bench { model, input, batch, threads, iters, warmup, json, profile, peak, reference } => {
            let progress = !json && std::io::stderr().is_terminal();
            let profile = profile.map(|by| by.parse()).transpose()?;
            let request = bench::Request { input, batch, threads, iters, warmup, progress, profile, peak, engine: engine(reference) };
            let r = bench::bench(&model, &request)?;
            if json {
                out!("{}", serde_json::to_string(&r)?);
            } else {
                out!(
                    "{}: batch {}, {} thread(s), {} runs: median {:.2} ms, p90 {:.2} ms, min {:.2} ms, {:.1} images/s",
                    model.display(),
                    r.batch,
                    r.threads,
                    r.iters,
                    r.median_ms,
                    r.p90_ms,
                    r.min_ms,
                    r.images_per_s
                );
                if let Some(p) = &r.peak {
                    let operations = format!("  {:.2} G operations", p.operations as f64 / 1e9);
                    match (p.kernel, p.gops, p.share) {
                        (Some(kernel), Some(gops), Some(share)) => out!(
                            "{operations}; int8 peak ({} tier, {kernel}): {gops:.0} GOP/s per thread; this run: {:.0} % of it",
                            p.tier,
                            share * 100.0
                        ),
                        _ => out!("{operations}; the {} tier has no instruction mix to take a peak of", p.tier),
                    }
                }
                const SHOWN: usize = 30;
                for p in r.profile.iter().take(SHOWN) {
                    match &p.name {
                        None => out!("  {:<20} {:>8.2} ms/run  {:>5.1} %", p.op, p.ms_per_run, p.share * 100.0),
                        Some(name) => {
                            out!("  {:<56} {:<18} {:>4}× {:>8.3} ms/run  {:>5.1} %", name, p.op, p.nodes, p.ms_per_run, p.share * 100.0)
                        }
                    }
                }
                if r.profile.len() > SHOWN {
                    out!("  … {} more lines (--json lists them all)", r.profile.len() - SHOWN);
                }
            }
        }
    }
    Ok(())
}
