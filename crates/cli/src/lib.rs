//! The `octet` command-line tool, as a library so that tests drive the same code as the binary.

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

/// Writes `bytes` to a temporary file next to `path`, then renames it into place, so a failed
/// write never leaves a half-written file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write '{}'", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write '{}'", path.display()))
}
