//! octet's library API: what the two shells, the `octet` command (`crates/cli`) and the Python
//! package (`crates/python`), both call. Each feature lives here once; the shells only parse
//! arguments and print (the CLI) or convert arrays and errors (Python).
//!
//! - [`run`]: open a session on a model file, run it on .npy/.npz inputs, write the outputs;
//! - [`quantize`]: calibrate and write a QDQ model, with the report both shells print;
//! - [`compare`], [`html`]: int8 against float on real data, and its HTML report;
//! - [`check`]: how each node of a model runs and why; [`ops_table`]: the support matrix;
//! - [`bench`], [`demo`]: timing, and the shipped Fashion-MNIST demo;
//! - [`calib_data`], [`inputs`], [`npy`]: the data readers (.npy, .npz, image folders).

pub mod bench;
pub mod calib_data;
pub mod check;
pub mod compare;
pub mod demo;
pub mod html;
pub mod inputs;
pub mod npy;
pub mod ops_table;
pub mod quantize;
pub mod run;

/// The global allocator of octet's binaries (the `octet` command and the Python module): large
/// tensors are allocated and freed on every run, and mimalloc keeps their pages instead of
/// returning them to the OS and faulting them in again (glibc's malloc does, above its mmap
/// threshold; measured in doc/kernels.md, *Memory*). Register [`configure_allocator`] as a
/// constructor (`.init_array`), so that it runs before the first allocation.
pub type Allocator = mimalloc::MiMalloc;

/// Sets up mimalloc for octet: arena memory committed page by page as it is used, not a whole
/// arena when it is reserved (its default on Linux, which holds resident memory that holds
/// nothing); freed pages kept for a second before they go back to the system, not 10 ms (a run
/// frees and allocates the same tensors every few milliseconds); and freed weights handed back
/// to the system at once while a plan packs them ([`octet_graph::memory::freed`], a forced
/// collection that does not wait for the delay). Measured in doc/kernels.md, *Memory*.
pub extern "C" fn configure_allocator() {
    /// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc's `mi_option_t`
    /// (v2 and v3 alike).
    const ARENA_EAGER_COMMIT: i32 = 4;
    const PURGE_DELAY: i32 = 15;
    const PURGE_DELAY_MS: std::ffi::c_long = 1000;
    extern "C" {
        fn mi_option_set(option: i32, value: std::ffi::c_long);
        fn mi_collect(force: bool);
    }
    fn collect() {
        // SAFETY: mimalloc is linked; collecting is thread-safe.
        unsafe { mi_collect(true) }
    }
    // SAFETY: mimalloc is linked (it is `Allocator`); setting an option is thread-safe and
    // affects arenas reserved afterwards.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
    }
    octet_graph::memory::set_return_freed_memory(collect);
}

/// Writes `bytes` to a temporary file next to `path` (named after it and this process), then
/// renames it into place, so a failed write never leaves a half-written file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_extension(format!("{ext}.tmp{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write '{}'", path.display()))
}
