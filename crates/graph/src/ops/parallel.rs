//! Splitting an op's output by rows over the session's rayon pool.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Outputs smaller than this many elements are computed on the calling thread: handing them to
/// the pool costs more than it saves.
pub const MIN_PARALLEL: usize = 1 << 15;

/// A new vector of `n` elements in rows of `row_len`, filled by `fill(first_row, block)` over
/// blocks of whole rows: one block per thread of the current pool when `threads > 1` and there
/// are at least [`MIN_PARALLEL`] elements in two rows or more, else one block on the calling
/// thread. The memory is not initialised first (zeroing a large reused buffer cost as much as
/// the work); `fill` must write every element of its block.
pub fn fill_row_blocks<T: Send>(n: usize, row_len: usize, threads: usize, fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let rows = n / row_len.max(1);
    let blocks = &mut out.spare_capacity_mut()[..n];
    if threads < 2 || n < MIN_PARALLEL || rows < 2 {
        fill(0, blocks);
    } else {
        let block = rows.div_ceil(threads) * row_len;
        blocks.par_chunks_mut(block).enumerate().for_each(|(i, part)| fill(i * block / row_len, part));
    }
    // SAFETY: the blocks cover all `n` elements, and `fill` wrote every element of its block.
    unsafe { out.set_len(n) };
    out
}
