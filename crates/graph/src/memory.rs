//! Handing freed memory back to the system while plans are made: a lowering frees each weight
//! as it packs it ([`crate::TypedGraph::release_constant`]), and the program's allocator, told
//! here, returns those pages at once instead of keeping them in its free lists.

use std::sync::atomic::{AtomicU64, Ordering};

/// A function the program registers to hand memory its allocator holds freed back to the system
/// (octet's binaries: mimalloc's `mi_collect`), so that weights freed while a plan is made lower
/// the peak resident memory instead of waiting in the allocator's free lists.
static RETURN_FREED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();
/// Bytes freed since the last call of the registered function.
static FREED: AtomicU64 = AtomicU64::new(0);
/// How many freed bytes make it worth calling (the call walks the allocator's heaps).
const RETURN_EVERY: u64 = 4 << 20;

/// Registers the function of [`freed`] (once per process; later calls are ignored).
pub fn set_return_freed_memory(f: fn()) {
    let _ = RETURN_FREED.set(f);
}

/// Notes that `bytes` of large tensors were freed; every few MiB, calls the registered function.
pub fn freed(bytes: u64) {
    if FREED.fetch_add(bytes, Ordering::Relaxed) + bytes >= RETURN_EVERY {
        FREED.store(0, Ordering::Relaxed);
        if let Some(f) = RETURN_FREED.get() {
            f();
        }
    }
}
