//! Runtime CPU-feature dispatch for the hand-written loops, and the safe GEMM wrapper.
//!
//! Loops are written once as plain Rust and compiled twice: as is (the scalar fallback, which
//! runs on any x86-64 or other CPU) and inside an `avx2,fma` (or `avx512f`) function so LLVM
//! vectorizes them wider. [`set_force_scalar`] pins everything, GEMM included, to the
//! fallback so tests can cover it on machines that do have AVX.

use gemm::Parallelism;
use std::sync::atomic::{AtomicBool, Ordering};

static FORCE_SCALAR: AtomicBool = AtomicBool::new(false);

/// Forces (or stops forcing) the scalar fallback for every kernel in this crate.
///
/// Also honoured at start-up through the environment variable `MPQ_KERNELS_SCALAR=1`. The
/// flag is process-wide; the scalar path computes the same values (to rounding), so flipping
/// it while other threads run kernels is harmless.
pub fn set_force_scalar(on: bool) {
    FORCE_SCALAR.store(on, Ordering::Relaxed);
}

/// Whether the scalar fallback is in force (see [`set_force_scalar`]).
pub fn force_scalar() -> bool {
    FORCE_SCALAR.load(Ordering::Relaxed) || env_scalar()
}

fn env_scalar() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| std::env::var("MPQ_KERNELS_SCALAR").is_ok_and(|v| v == "1"))
}

/// The instruction set a dispatched loop runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Baseline code, no runtime-detected extensions.
    Scalar,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512F (with AVX2 and FMA).
    Avx512,
}

/// The best instruction set available now (honouring [`set_force_scalar`]).
pub fn isa() -> Isa {
    if force_scalar() {
        return Isa::Scalar;
    }
    detected()
}

#[cfg(target_arch = "x86_64")]
fn detected() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") {
            Isa::Avx512
        } else if avx2 {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn detected() -> Isa {
    Isa::Scalar
}

/// Defines a safe function that runs the `#[inline(always)]` function `$imp` compiled for
/// the best instruction set available at run time (AVX-512, AVX2+FMA, or baseline).
///
/// `$imp` is inlined into one `#[target_feature]` wrapper per instruction set, so its loops
/// are vectorized for that set; it must not hide its hot loop inside a closure (closures are
/// separate functions and would keep baseline code).
///
/// One `const` generic parameter (`fn name<const C: T>(…)`) is passed on to `$imp::<C>`, so
/// variants of a loop that differ in a compile-time switch share one body.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<const $c:ident : $ct:ty>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $imp:ident;) => {
        $(#[$m])*
        $vis fn $name $(<const $c: $ct>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4 $(<const $c: $ct>)? ($($arg: $ty),*) $(-> $ret)? {
                    $imp $(::<$c>)? ($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3 $(<const $c: $ct>)? ($($arg: $ty),*) $(-> $ret)? {
                    $imp $(::<$c>)? ($($arg),*)
                }
                match $crate::simd::isa() {
                    // SAFETY: `isa()` reports Avx512 only after runtime detection of avx512f,
                    // avx2 and fma.
                    $crate::simd::Isa::Avx512 => return unsafe { v4 $(::<$c>)? ($($arg),*) },
                    // SAFETY: `isa()` reports Avx2 only after runtime detection of avx2, fma.
                    $crate::simd::Isa::Avx2 => return unsafe { v3 $(::<$c>)? ($($arg),*) },
                    $crate::simd::Isa::Scalar => {}
                }
            }
            $imp $(::<$c>)? ($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// A strided row-major-or-not matrix view: element `(i, j)` lives at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows x cols` view (rows `cols` apart).
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `rows x cols` matrix stored in `data`.
    pub(crate) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn fits(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// `dst[m x n] (+)= lhs[m x k] * rhs[k x n]`, `dst` row-major with rows `dst_rs` apart.
///
/// With `accumulate` the product is added to `dst`, otherwise `dst` is overwritten. `par`
/// lets the GEMM split over the rayon pool (use it only when the caller is not parallel).
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the BLAS-style argument list"
)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    par: bool,
) {
    assert!(
        (m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len()) && lhs.fits(m, k) && rhs.fits(k, n),
        "sgemm: operand too small for {m}x{n}x{k}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    if force_scalar() {
        return sgemm_scalar(m, n, k, dst, dst_rs, accumulate, lhs, rhs);
    }
    let threads = rayon::current_num_threads();
    let parallelism = if par && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the assert above proves every index the GEMM touches is inside its slice
    // (strides are non-negative), and `dst` is borrowed mutably so nothing aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Plain-loop GEMM with the same contract as [`sgemm`] (the scalar fallback).
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the BLAS-style argument list"
)]
fn sgemm_scalar(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
) {
    let mut row = vec![0f32; n];
    for i in 0..m {
        row.fill(0.0);
        for p in 0..k {
            let a = lhs.data[i * lhs.rs + p * lhs.cs];
            if rhs.cs == 1 {
                let r = &rhs.data[p * rhs.rs..p * rhs.rs + n];
                for (acc, &b) in row.iter_mut().zip(r) {
                    *acc += a * b;
                }
            } else {
                for (j, acc) in row.iter_mut().enumerate() {
                    *acc += a * rhs.data[p * rhs.rs + j * rhs.cs];
                }
            }
        }
        let d = &mut dst[i * dst_rs..i * dst_rs + n];
        if accumulate {
            for (d, r) in d.iter_mut().zip(&row) {
                *d += r;
            }
        } else {
            d.copy_from_slice(&row);
        }
    }
}
