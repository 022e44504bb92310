//! The `octet` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use octet_cli::inputs::InputArg;
use octet_cli::{bench, check, ops_table, run};

/// octet: quantize vision transformers to int8 and run them fast on CPUs.
#[derive(Parser)]
#[command(name = "octet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Md,
    Json,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[derive(Subcommand)]
enum Command {
    /// Run an ONNX model on .npy inputs and write its outputs as .npy.
    Run {
        /// The model (.onnx). External weight files are looked up next to it.
        model: PathBuf,
        /// An input: FILE.npy for a single-input model, or NAME=FILE.npy. Repeat for several inputs.
        #[arg(short, long = "input", required = true)]
        inputs: Vec<InputArg>,
        /// Where to write: a .npy file for a single output, a folder for several (one NAME.npy each).
        #[arg(short, long)]
        output: PathBuf,
        /// Threads to use [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
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
        /// Also report the time spent in each op type.
        #[arg(long)]
        profile: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run { model, inputs, output, threads, json } => {
            let threads = threads.unwrap_or_else(default_threads);
            let start = std::time::Instant::now();
            let written = run::run(&model, &inputs, &output, threads)?;
            if json {
                let outs: Vec<_> = written.iter().map(|(p, t)| serde_json::json!({"path": p, "shape": t.shape(), "dtype": t.dtype()})).collect();
                println!("{}", serde_json::json!({"outputs": outs, "seconds": start.elapsed().as_secs_f64(), "threads": threads}));
            } else {
                for (p, t) in &written {
                    println!("wrote {} ({} {:?})", p.display(), t.dtype(), t.shape());
                }
            }
        }
        Command::Ops { format } => match format {
            Format::Text => print!("{}", ops_table::text()),
            Format::Md => print!("{}", ops_table::markdown()),
            Format::Json => println!("{}", ops_table::json()),
        },
        Command::Check { model, batch, all, json } => {
            let report = check::check(&model, batch)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text(all));
            }
        }
        Command::Bench { model, input, batch, threads, iters, warmup, json, profile } => {
            let r = bench::bench(&model, input.as_ref(), batch, threads, iters, warmup, !json && std::io::stderr().is_terminal(), profile)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
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
                for p in &r.profile {
                    println!("  {:<20} {:>8.2} ms/run  {:>5.1} %", p.op, p.ms_per_run, p.share * 100.0);
                }
            }
        }
    }
    Ok(())
}
