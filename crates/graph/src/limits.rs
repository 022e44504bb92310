//! How large one tensor may be. Models are untrusted input: every shape, including those computed
//! from a model's data (Expand, ConstantOfShape, Tile, Range, Pad, Resize, …), is checked here with
//! overflow-checked arithmetic when a plan is made, before anything of that size is allocated.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::tensor::DType;

/// The environment variable that sets the limit (bytes, or a number with K, M, G or T).
pub const ENV: &str = "OCTET_MAX_MEMORY";

static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Sets the largest tensor, in bytes, for the rest of the process (`--max-memory`).
pub fn set_max_tensor_bytes(bytes: u64) {
    LIMIT.store(bytes.max(1), Ordering::Relaxed);
}

/// The largest tensor, in bytes: set by [`set_max_tensor_bytes`], else by `OCTET_MAX_MEMORY`,
/// else the memory this machine has available (`MemAvailable`; 16 GiB where that is unknown).
pub fn max_tensor_bytes() -> u64 {
    let set = LIMIT.load(Ordering::Relaxed);
    if set != 0 {
        return set;
    }
    let limit = std::env::var(ENV).ok().and_then(|v| parse_size(&v).ok()).unwrap_or_else(available_memory);
    LIMIT.store(limit.max(1), Ordering::Relaxed);
    limit.max(1)
}

fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
        .unwrap_or(16 << 30)
}

/// Parses `1000000`, `512M`, `4G`, `1.5T` (binary multiples) into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], t[i..].trim_end_matches(['B', 'b', 'i'])),
        None => (t, ""),
    };
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("'{s}' is not a size: use bytes or a number with K, M, G or T")),
    };
    let n: f64 = number.trim().parse().map_err(|_| format!("'{s}' is not a size: use bytes or a number with K, M, G or T"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("'{s}' is not a positive size"));
    }
    Ok((n * factor as f64).min(u64::MAX as f64) as u64)
}

/// The bytes a tensor of `dtype` and `shape` takes, if that fits the limit; else a message naming
/// the shape, the bytes and the limit.
pub fn check_tensor(dtype: DType, shape: &[usize]) -> Result<u64, String> {
    let bytes = shape.iter().try_fold(dtype.size() as u64, |b, &d| b.checked_mul(d as u64));
    let limit = max_tensor_bytes();
    match bytes {
        Some(b) if b <= limit => Ok(b),
        Some(b) => Err(format!(
            "shape {shape:?} of {} needs {b} bytes, more than the limit of {limit} bytes (set it with --max-memory or {ENV})",
            dtype.name()
        )),
        None => Err(format!("shape {shape:?} of {} needs more than 2^64 bytes", dtype.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("lots").is_err() && parse_size("-3G").is_err() && parse_size("0").is_err());
    }

    #[test]
    fn overflowing_shapes_are_refused() {
        assert!(check_tensor(DType::F32, &[1 << 40, 1 << 40]).unwrap_err().contains("2^64"));
        assert!(check_tensor(DType::U8, &[3]).is_ok());
    }
}
