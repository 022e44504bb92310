//! Splitting an op's output by rows over the session's rayon pool.

use std::mem::MaybeUninit;

use octet_kernels::DisjointWrites;
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

/// A new vector of `chunks` blocks of `rows × cols` elements laid out `[B, rows, H, cols]` for
/// `chunks = B·H`: block `i = b·H + h` (the rows `(b, ·, h)`, `H·cols` apart) is computed by
/// `fill(i, block)` into a contiguous scratch block on its thread, whose rows are then copied to
/// their places. Chunks go over the current pool when `threads > 1`. The output is not zeroed
/// first: the copies write all of it. (Attention heads written in the layout the heads are
/// merged from, `[.., S, H, D]`, instead of `[.., H, S, D]` and a Transpose.)
pub fn fill_interleaved_chunks<T: Copy + Default + Send>(
    chunks: usize,
    heads: usize,
    rows: usize,
    cols: usize,
    threads: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let len = chunks * rows * cols;
    let mut data = Vec::with_capacity(len);
    let (heads, per) = (heads.max(1), rows * cols);
    let out = DisjointWrites::uninit(&mut data.spare_capacity_mut()[..len]);
    let write = |block: &mut Vec<T>, i: usize| {
        block.resize(per, T::default());
        fill(i, block);
        let (b, h) = (i / heads, i % heads);
        for (r, row) in block.chunks_exact(cols.max(1)).enumerate().take(rows) {
            // SAFETY: chunk i's rows (b, r, h) lie inside `data` (chunks·rows·cols elements,
            // chunks = B·H), and no other chunk writes them.
            unsafe { out.write(((b * rows + r) * heads + h) * cols, row) };
        }
    };
    if threads > 1 {
        (0..chunks).into_par_iter().for_each_init(Vec::new, write);
    } else {
        let mut block = Vec::new();
        (0..chunks).for_each(|i| write(&mut block, i));
    }
    // SAFETY: chunk i wrote rows (b, 0..rows, h) in full, and the chunks b·H + h cover every row
    // of `data`.
    unsafe { data.set_len(len) };
    data
}
