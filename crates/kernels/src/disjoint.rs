//! An output buffer written by the tasks of one parallel loop, each in its own part.

/// A raw pointer to an output buffer shared by the tasks of one parallel loop, each of which
/// writes elements no other task writes. It borrows nothing: whoever creates it keeps the buffer
/// alive and unread until the loop ends.
#[derive(Clone, Copy)]
pub struct DisjointWrites<T>(*mut T);

// SAFETY: the tasks write disjoint elements (the contract of `at` and `write`), so sharing the
// pointer between threads is sharing `&mut` access to disjoint parts of one buffer.
unsafe impl<T: Send> Send for DisjointWrites<T> {}
unsafe impl<T: Send> Sync for DisjointWrites<T> {}

impl<T> DisjointWrites<T> {
    /// Shares `out` (which must outlive every use of the result).
    pub fn new(out: &mut [T]) -> DisjointWrites<T> {
        DisjointWrites(out.as_mut_ptr())
    }

    /// Shares `out`, whose elements the tasks initialise (so `T` values may be written to it).
    pub fn uninit(out: &mut [std::mem::MaybeUninit<T>]) -> DisjointWrites<T> {
        DisjointWrites(out.as_mut_ptr() as *mut T)
    }

    /// The address `offset` elements in (a method, so that closures capture the whole wrapper
    /// rather than its raw pointer).
    ///
    /// # Safety
    /// `offset` lies inside the buffer, and what the caller writes there no other task writes.
    pub unsafe fn at(self, offset: usize) -> *mut T {
        self.0.add(offset)
    }

    /// Copies `values` to elements `at .. at + values.len()`.
    ///
    /// # Safety
    /// Those elements lie inside the buffer and no other task writes them.
    pub unsafe fn write(self, at: usize, values: &[T])
    where
        T: Copy,
    {
        std::ptr::copy_nonoverlapping(values.as_ptr(), self.at(at), values.len());
    }
}
