//! Allocator settings for training-shaped workloads on glibc.
//!
//! Every forward and backward pass allocates and frees the same few large buffers
//! (activations, gradients, im2col matrices: 1–10 MB each at batch 128). With glibc's defaults
//! each of them is a fresh `mmap` (the dynamic mmap threshold starts at 128 KiB) or is trimmed
//! back to the kernel on free, so every pass pays page faults and zeroing on first touch: on
//! ResNet-20 at batch 128 that was 10–13% of a training step in `perf`, and keeping freed memory
//! in the process made `mpq bench`'s forward 1.4x and forward+backward 1.25x faster (see
//! `docs/benchmarks.md`).

/// Tells glibc's `malloc` to serve buffers up to 32 MiB from the heap, never to trim freed
/// memory back to the kernel, and to use one arena, so the large buffers of one pass are reused
/// by the next instead of being mapped, faulted in and zeroed again. Peak memory is unchanged
/// (freed memory is reused, not added to); the resident size stays at its peak until exit.
///
/// Call it once, early (the CLI does, before any work). A no-op on other C libraries; returns
/// whether every setting was accepted.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes malloc's tuning parameters; it is thread-safe in
        // glibc and takes plain integers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
