//! `octet-fuzz`: mutation fuzzing of the inputs octet takes from strangers, on the stable
//! toolchain (no sanitizer or coverage instrumentation: cargo-fuzz needs nightly).
//!
//! A supervisor runs the targets in a worker process. Before each execution the worker writes the
//! input to `OUT/current`; a panic is caught and saved as a crash; an abort, a signal or a hang
//! (no progress for `--hang-seconds`) kills the worker, and the supervisor saves `current` as the
//! crash and starts a new worker. Without coverage, the worker keeps a mutated input in its
//! corpus when it produces an outcome not seen before (the success shape, or the error message
//! with its numbers and quoted names blanked), which steers mutation past the first parse
//! errors; the number of distinct outcomes is reported as the (coarse) coverage figure.
//!
//! Targets: `onnx` (import + `octet check`), `npy` (the .npy/.npz reader), `image` (calibration
//! image decoding and resizing), `run` (small valid models run on both engines with inputs of
//! mutated shape and values: NaN, infinities, huge, zero-sized batches).

mod mutate;
mod targets;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::mutate::Rng;
use crate::targets::Target;

#[derive(Parser)]
#[command(name = "octet-fuzz", about = "Mutation fuzzing of octet's readers and runtime (stable toolchain).")]
struct Args {
    /// What to fuzz: onnx, npy, image or run (several: comma-separated; `all` for every one).
    #[arg(default_value = "all")]
    targets: String,
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seed corpus folder (one subfolder per target).
    #[arg(long, default_value = "tools/fuzz/corpus")]
    corpus: PathBuf,
    /// Where crashes, the current input and statistics go.
    #[arg(long, default_value = "target/fuzz-out")]
    out: PathBuf,
    /// A worker that makes no progress for this long is a hang.
    #[arg(long, default_value_t = 20)]
    hang_seconds: u64,
    /// Random seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Run the target once on this file (a saved crash) and print the outcome; a panic shows
    /// with its backtrace.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Run as the worker of a supervisor (internal).
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let targets: Vec<Target> = match Target::parse_list(&args.targets) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seed = args
        .seed
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    if let Some(file) = &args.replay {
        let input = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read '{}': {e}", file.display());
                return ExitCode::FAILURE;
            }
        };
        let scratch = args.out.join(targets[0].name()).join("scratch");
        let _ = std::fs::create_dir_all(&scratch);
        println!("{}", targets[0].execute(&input, &scratch));
        return ExitCode::SUCCESS;
    }
    if args.worker {
        return worker(targets[0], &args, seed);
    }
    let mut crashes = 0;
    for t in targets {
        match supervise(t, &args, seed) {
            Ok(c) => crashes += c,
            Err(e) => {
                eprintln!("error: {t:?}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if crashes > 0 {
        eprintln!("{crashes} crash(es): see {}", args.out.join("crashes").display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs workers for `target` until `--seconds` have passed; returns the crashes found.
fn supervise(target: Target, args: &Args, seed: u64) -> anyhow::Result<usize> {
    let dir = args.out.join(target.name());
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(args.out.join("crashes"))?;
    for stale in ["stats", "stats.outcomes"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut crashes = 0;
    let mut restart = 0u64;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
        // /proc/self/exe is this very binary even after a rebuild replaced the file.
        let exe = if Path::new("/proc/self/exe").exists() { PathBuf::from("/proc/self/exe") } else { std::env::current_exe()? };
        let mut child = Command::new(exe)
            .args([target.name(), "--worker", "--seconds", &left.to_string()])
            .arg("--corpus")
            .arg(&args.corpus)
            .arg("--out")
            .arg(&args.out)
            .args(["--seed", &(seed ^ restart.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()?;
        restart += 1;
        let current = dir.join("current");
        // The clock of a hang starts at the spawn, at the worker's last input, or when this
        // supervisor last woke after being suspended (a stopped machine is no hang).
        let mut since = std::time::SystemTime::now();
        let mut last_check = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if last_check.elapsed() > Duration::from_secs(2) {
                since = std::time::SystemTime::now();
            }
            last_check = Instant::now();
            let progress = std::fs::metadata(&current).and_then(|m| m.modified()).map_or(since, |t| t.max(since));
            if progress.elapsed().unwrap_or_default() > Duration::from_secs(args.hang_seconds) {
                child.kill()?;
                child.wait()?;
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let kind = match status {
            Some(s) if s.success() => continue,
            Some(s) if s.code() == Some(3) => {
                crashes += 1;
                continue;
            }
            Some(s) => format!("exit {s}"),
            None => "hang".to_string(),
        };
        let saved = save_crash(&args.out, target, &std::fs::read(&current).unwrap_or_default(), &kind)?;
        eprintln!("{}: {kind} on {}", target.name(), saved.display());
        crashes += 1;
    }
    if let Ok(stats) = std::fs::read_to_string(dir.join("stats")) {
        println!("{}: {}", target.name(), stats.trim());
    }
    Ok(crashes)
}

/// FNV-1a of an input, to name the files it is saved in.
fn fnv(input: &[u8]) -> u64 {
    input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn save_crash(out: &Path, target: Target, input: &[u8], kind: &str) -> anyhow::Result<PathBuf> {
    let path = out.join("crashes").join(format!("{}-{:016x}", target.name(), fnv(input)));
    std::fs::write(&path, input)?;
    std::fs::write(path.with_extension("txt"), kind)?;
    Ok(path)
}

/// Where the last panic happened, with the octet frames of its backtrace.
static PANIC_AT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The worker loop: mutate, execute, keep inputs with new outcomes. Exits 3 after saving a
/// caught panic (the supervisor counts it and restarts), 0 when the time is up.
fn worker(target: Target, args: &Args, seed: u64) -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::force_capture().to_string();
        let ours: Vec<&str> = backtrace.lines().filter(|l| l.contains("octet") && !l.contains("octet_fuzz")).take(12).collect();
        *PANIC_AT.lock().unwrap_or_else(|e| e.into_inner()) = format!("{at}\n{}", ours.join("\n"));
    }));
    let dir = args.out.join(target.name());
    let scratch = dir.join("scratch");
    let _ = std::fs::create_dir_all(&scratch);
    let grown = dir.join("corpus");
    let _ = std::fs::create_dir_all(&grown);
    let mut corpus = target.seeds(&args.corpus);
    corpus.extend(Target::files(&grown));
    if corpus.is_empty() {
        eprintln!("no seeds for {}", target.name());
        return ExitCode::FAILURE;
    }
    let stats_path = dir.join("stats");
    let (mut seen, mut execs, mut total_before) = load_stats(&stats_path);
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    // Every seed first, unmutated: the corpus holds the inputs of past crashes, so each run is
    // also their regression test.
    let mut replay = corpus.clone().into_iter();
    while Instant::now() < deadline {
        let input = match replay.next() {
            Some(seed) => seed,
            None => {
                let parent = &corpus[rng.below(corpus.len())];
                let other = &corpus[rng.below(corpus.len())];
                mutate::mutate(parent, other, &mut rng)
            }
        };
        let _ = std::fs::write(dir.join("current"), &input);
        let outcome = std::panic::catch_unwind(|| target.execute(&input, &scratch));
        execs += 1;
        match outcome {
            Ok(signature) => {
                if seen.insert(signature) {
                    let _ = std::fs::write(grown.join(format!("{:016x}", fnv(&input))), &input);
                    corpus.push(input);
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let at = PANIC_AT.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let _ = save_crash(&args.out, target, &input, &format!("panic: {message} at {at}"));
                write_stats(&stats_path, &seen, execs, total_before + started.elapsed().as_secs_f64());
                return ExitCode::from(3);
            }
        }
        if execs % 256 == 0 {
            write_stats(&stats_path, &seen, execs, total_before + started.elapsed().as_secs_f64());
        }
    }
    total_before += started.elapsed().as_secs_f64();
    write_stats(&stats_path, &seen, execs, total_before);
    ExitCode::SUCCESS
}

/// Statistics across workers of one target: distinct outcomes, executions, seconds.
fn load_stats(path: &Path) -> (HashSet<String>, u64, f64) {
    let text = std::fs::read_to_string(path.with_extension("outcomes")).unwrap_or_default();
    let seen = text.lines().map(String::from).collect();
    let stats = std::fs::read_to_string(path).unwrap_or_default();
    let field = |k: &str| stats.split(", ").find_map(|f| f.strip_suffix(k)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0);
    (seen, field(" executions") as u64, field(" s"))
}

fn write_stats(path: &Path, seen: &HashSet<String>, execs: u64, seconds: f64) {
    let mut outcomes: Vec<&String> = seen.iter().collect();
    outcomes.sort();
    let _ = std::fs::write(path.with_extension("outcomes"), outcomes.iter().map(|s| format!("{s}\n")).collect::<String>());
    let _ = std::fs::write(
        path,
        format!("{execs} executions, {:.0} s, {:.0} exec/s, {} distinct outcomes", seconds, execs as f64 / seconds.max(1e-9), seen.len()),
    );
}
