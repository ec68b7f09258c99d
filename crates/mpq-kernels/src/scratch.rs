//! Per-thread reusable scratch buffers (im2col matrices), so hot loops do not allocate.

use std::cell::Cell;

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with a scratch slice of `len` floats (contents unspecified).
///
/// The buffer is taken out of the thread-local slot while `f` runs, so a nested call (for
/// example a rayon job stolen during a parallel GEMM) gets a fresh buffer instead of a
/// borrow conflict.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(Cell::take);
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|s| {
        let prev = s.take();
        s.set(if prev.len() > buf.len() { prev } else { buf });
    });
    r
}
