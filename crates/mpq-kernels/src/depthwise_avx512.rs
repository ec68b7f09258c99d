//! Depthwise stride-1 convolution planes with AVX-512 (MobileNetV2's 3x3 depthwise convs):
//! forward, input gradient (the same correlation with the flipped kernel) and weight gradient.
//!
//! The portable loops of `depthwise` add one tap at a time into the output row (nine
//! read-modify-write passes per row for 3x3) and reduce the weight gradient with a dot product
//! per tap and row. Here each 16-pixel piece of an output row is accumulated in one register
//! over all taps and stored once, and the weight gradient keeps one register per tap over all
//! rows and images of a channel, reduced once at the end. Borders are masked loads: a lane
//! whose input column falls in the padding is masked off (reads as 0, and a masked-off lane
//! is never accessed).

use std::mem::MaybeUninit;

use crate::params::ConvGeom;
use crate::simd::{Isa, isa};

/// Lanes of one register.
const LANES: usize = 16;
/// Output rows a correlation accumulates at once.
const ROWS: usize = 4;
/// Most taps a kernel may have here (one accumulator each in the weight gradient).
pub(crate) const MAX_TAPS: usize = 9;

/// Whether `g` (a depthwise conv) can use these kernels, for all three passes.
pub(crate) fn usable(g: &ConvGeom) -> bool {
    isa() == Isa::Avx512
        && g.p.stride == [1, 1]
        && g.p.dilation == [1, 1]
        && g.kh * g.kw <= MAX_TAPS
        && g.p.padding[0] < g.kh
        && g.p.padding[1] < g.kw
}

/// One stride-1 correlation of a plane: `src` is `h x w`, padded by `(ph, pw)`, the kernel
/// `kh x kw`, the output `oh x ow`.
#[derive(Clone, Copy)]
pub(crate) struct Plane {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Plane {
    /// The forward correlation of `g` (stride 1, dilation 1).
    pub(crate) fn forward(g: &ConvGeom) -> Self {
        Plane {
            h: g.h,
            w: g.w,
            kh: g.kh,
            kw: g.kw,
            ph: g.p.padding[0],
            pw: g.p.padding[1],
            oh: g.oh,
            ow: g.ow,
        }
    }
    /// The input gradient of `g`: `dy` (`o` planes of `oh x ow`) correlated with the filters
    /// flipped and transposed, padded by `k − 1 − p`, gives `dx` (`c` planes of `h x w`).
    pub(crate) fn input_grad(g: &ConvGeom) -> Self {
        Plane {
            h: g.oh,
            w: g.ow,
            kh: g.kh,
            kw: g.kw,
            ph: g.kh - 1 - g.p.padding[0],
            pw: g.kw - 1 - g.p.padding[1],
            oh: g.h,
            ow: g.w,
        }
    }
}

/// Lanes `lo..hi` of a piece starting at output column `x0` with `n` lanes whose input column
/// `x0 + lane + kj − pw` lies inside `0..w`, as a mask.
#[inline(always)]
fn column_mask(x0: usize, n: usize, kj: usize, pw: usize, w: usize) -> u16 {
    let first = x0 as isize + kj as isize - pw as isize; // input column of lane 0
    let lo = (-first).clamp(0, n as isize) as usize;
    let hi = (w as isize - first).clamp(0, n as isize) as usize;
    if lo >= hi {
        0
    } else {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
    }
}

/// `out = bias + Σ_taps k[t] · shifted src` for one plane (every element written).
pub(crate) fn correlate(
    src: &[f32],
    k: &[f32],
    bias: f32,
    out: &mut [MaybeUninit<f32>],
    pl: &Plane,
) {
    assert!(src.len() >= pl.h * pl.w && out.len() >= pl.oh * pl.ow);
    assert!(k.len() >= pl.kh * pl.kw);
    assert!(pl.oh + pl.kh <= pl.h + 2 * pl.ph + 1 && pl.ow + pl.kw <= pl.w + 2 * pl.pw + 1);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(std::is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F was just detected; the asserts bound every access (see the
        // function's contract).
        unsafe { correlate_avx512(src, k, bias, out, pl) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = bias;
        unreachable!("only selected on x86-64 with AVX-512")
    }
}

/// # Safety
/// AVX-512F; `src` holds `h·w`, `out` `oh·ow`, `k` `kh·kw` values. Loads read only lanes whose
/// input row and column lie inside the plane (rows are skipped, columns masked); stores
/// write lanes `< n` of output pieces inside their row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn correlate_avx512(
    src: &[f32],
    k: &[f32],
    bias: f32,
    out: &mut [MaybeUninit<f32>],
    pl: &Plane,
) {
    use std::arch::x86_64::*;
    let base = src.as_ptr();
    let mut oy0 = 0;
    while oy0 < pl.oh {
        // ROWS output rows at once: independent accumulators hide the FMA latency.
        let rows = (pl.oh - oy0).min(ROWS);
        let mut x0 = 0;
        while x0 < pl.ow {
            let n = (pl.ow - x0).min(LANES);
            let mut acc = [_mm512_set1_ps(bias); ROWS];
            for ki in 0..pl.kh {
                for kj in 0..pl.kw {
                    let m = column_mask(x0, n, kj, pl.pw, pl.w);
                    if m == 0 {
                        continue;
                    }
                    let wv = _mm512_set1_ps(k[ki * pl.kw + kj]);
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
                        let iy = (oy0 + r + ki) as isize - pl.ph as isize;
                        if iy < 0 || iy >= pl.h as isize {
                            continue;
                        }
                        // Column of lane 0; masked-off lanes may lie outside the row (and
                        // the slice), so the pointer is formed with wrapping arithmetic and
                        // never dereferenced there.
                        let off = iy * pl.w as isize + x0 as isize + kj as isize - pl.pw as isize;
                        // SAFETY: only lanes in `m` are read, and they lie inside row `iy`.
                        let v = unsafe { _mm512_maskz_loadu_ps(m, base.wrapping_offset(off)) };
                        *a = _mm512_fmadd_ps(wv, v, *a);
                    }
                }
            }
            let m: __mmask16 = if n == LANES { !0 } else { (1u16 << n) - 1 };
            for (r, a) in acc.iter().enumerate().take(rows) {
                // SAFETY: lanes `< n` of the piece lie inside output row `oy0 + r`.
                unsafe {
                    let dst = out.as_mut_ptr().add((oy0 + r) * pl.ow + x0).cast::<f32>();
                    _mm512_mask_storeu_ps(dst, m, *a);
                }
            }
            x0 += n;
        }
        oy0 += rows;
    }
}

/// Per-tap partial sums of one channel's weight gradient.
pub(crate) struct TapSums {
    lanes: [[f32; LANES]; MAX_TAPS],
}

impl TapSums {
    pub(crate) fn new() -> Self {
        TapSums {
            lanes: [[0.0; LANES]; MAX_TAPS],
        }
    }

    /// Adds `Σ dy[oy, ox] · x[oy + ki − ph, ox + kj − pw]` for every tap of one plane.
    pub(crate) fn add_plane(&mut self, x: &[f32], dy: &[f32], g: &ConvGeom) {
        let pl = Plane::forward(g);
        assert!(x.len() >= pl.h * pl.w && dy.len() >= pl.oh * pl.ow);
        assert!(pl.kh * pl.kw <= MAX_TAPS);
        #[cfg(target_arch = "x86_64")]
        {
            assert!(std::is_x86_feature_detected!("avx512f"));
            // SAFETY: AVX-512F was just detected; the asserts bound every access. The 3x3
            // instance has constant tap indices, so its accumulators stay in registers.
            unsafe {
                if (pl.kh, pl.kw) == (3, 3) {
                    grad_weight_avx512::<3, 3>(x, dy, &mut self.lanes, &pl)
                } else {
                    grad_weight_avx512::<0, 0>(x, dy, &mut self.lanes, &pl)
                }
            }
        }
    }

    /// The gradient of tap `t`.
    pub(crate) fn total(&self, t: usize) -> f32 {
        self.lanes[t].iter().sum()
    }
}

/// `KH x KW` taps (`0, 0`: the plane's own, at run time).
///
/// # Safety
/// AVX-512F; `x` holds `h·w` and `dy` `oh·ow` values, `kh·kw ≤ MAX_TAPS`, and `KH, KW` are
/// `0, 0` or the plane's kernel. Loads are masked as in [`correlate_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn grad_weight_avx512<const KH: usize, const KW: usize>(
    x: &[f32],
    dy: &[f32],
    lanes: &mut [[f32; LANES]; MAX_TAPS],
    pl: &Plane,
) {
    use std::arch::x86_64::*;
    let (kh, kw) = if KH == 0 { (pl.kh, pl.kw) } else { (KH, KW) };
    let taps = kh * kw;
    let mut acc = [_mm512_setzero_ps(); MAX_TAPS];
    // SAFETY: `lanes[t]` holds 16 floats.
    unsafe {
        for (t, a) in acc.iter_mut().enumerate().take(taps) {
            *a = _mm512_loadu_ps(lanes[t].as_ptr());
        }
    }
    let base = x.as_ptr();
    for oy in 0..pl.oh {
        let mut x0 = 0;
        while x0 < pl.ow {
            let n = (pl.ow - x0).min(LANES);
            let nm: __mmask16 = if n == LANES { !0 } else { (1u16 << n) - 1 };
            // SAFETY: lanes `< n` lie inside row `oy` of `dy`.
            let dv = unsafe { _mm512_maskz_loadu_ps(nm, dy.as_ptr().add(oy * pl.ow + x0)) };
            for ki in 0..kh {
                let iy = oy as isize + ki as isize - pl.ph as isize;
                if iy < 0 || iy >= pl.h as isize {
                    continue;
                }
                for kj in 0..kw {
                    let m = column_mask(x0, n, kj, pl.pw, pl.w);
                    if m == 0 {
                        continue;
                    }
                    let off = iy * pl.w as isize + x0 as isize + kj as isize - pl.pw as isize;
                    // SAFETY: only lanes in `m` are read, and they lie inside row `iy`.
                    let v = unsafe { _mm512_maskz_loadu_ps(m, base.wrapping_offset(off)) };
                    let t = ki * kw + kj;
                    acc[t] = _mm512_fmadd_ps(dv, v, acc[t]);
                }
            }
            x0 += n;
        }
    }
    // SAFETY: as above.
    unsafe {
        for (t, a) in acc.iter().enumerate().take(taps) {
            _mm512_storeu_ps(lanes[t].as_mut_ptr(), *a);
        }
    }
}
