//! Output buffers that their kernel writes completely, allocated without zeroing.
//!
//! `vec![0.0; n]` costs a `memset` of every output (and with freed memory kept by the
//! allocator, that memset is not hidden in the kernel's zero pages): in a ResNet-20 forward
//! pass it was 11% of the time, for buffers whose every element the kernel then overwrote.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A vector of `len` floats, every one of them written by `fill`.
///
/// # Safety
/// `fill` must write every element of the slice it is given (reading none before writing
/// it); otherwise the returned vector holds uninitialised floats.
pub(crate) unsafe fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is at least `len`, and the caller guarantees `fill` initialised
    // all of its first `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// [`filled`] plane by plane in parallel: `fill(i, plane)` gets the `i`-th run of `p` floats
/// (the last one shorter if `p` does not divide `len`), at least 16384 floats per rayon task.
/// Empty when `p` is 0.
///
/// # Safety
/// `fill` must write every element of each plane it is given.
pub(crate) unsafe fn filled_planes(
    len: usize,
    p: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    if p == 0 {
        return Vec::new();
    }
    let min_len = (16384 / p).max(1);
    // SAFETY: the planes cover the buffer and the caller guarantees `fill` writes each one.
    unsafe {
        filled(len, |out| {
            out.par_chunks_mut(p)
                .enumerate()
                .with_min_len(min_len)
                .for_each(|(i, o)| fill(i, o))
        })
    }
}
