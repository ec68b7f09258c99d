//! Direct AVX-512 convolution for stride-1, dilation-1 dense convs (the 3x3 convs of ResNets),
//! used for the forward pass and, with flipped and transposed weights, for the input gradient.
//!
//! im2col copies every input value `kh·kw` times and hands the GEMM a `k x oh·ow` matrix to
//! pack again; on ResNet-20 that copying (and col2im's scatter in the backward pass) took a
//! quarter of a training step. Here each image is copied once into a zero-padded buffer and
//! every output block — 16 output channels x 16 consecutive output pixels of one row, sixteen
//! `zmm` accumulators — is computed straight from it: per input channel and tap one (masked)
//! load of 16 input pixels feeds 16 fused multiply-adds with broadcast weights. Planes whose
//! rows are narrower than 16 (8x8 feature maps) are walked as runs of 16 consecutive positions
//! of the plane at the padded width instead, the few lanes that fall into the padding computed
//! and dropped (a compressing store): 5 steps for an 8x8 plane where whole rows took 8
//! half-empty ones. The weight gradient of these convs (and of strided ones) is in
//! `direct_gw`.
//!
//! Runs only where AVX-512F was detected (and the scalar fallback is not forced); elsewhere,
//! and for strided, dilated, grouped or pointwise convs, `conv_gemm` does the work.

use std::mem::MaybeUninit;

use crate::params::ConvGeom;
use crate::scratch::with_scratch;
use crate::simd::{Isa, isa};

/// Output channels per register block of a correlation (forward, input gradient).
const CB: usize = 8;
/// 16-pixel steps per register block of a correlation: `CB x STEPS` accumulators, so each
/// broadcast weight feeds `STEPS` fused multiply-adds.
const STEPS: usize = 3;
/// Output pixels per register (one `zmm` of f32).
const LANES: usize = 16;

/// Whether the forward pass of `g` can run here (and, with the same geometry, the input
/// gradient).
pub(crate) fn usable(g: &ConvGeom) -> bool {
    isa() == Isa::Avx512
        && g.p.stride == [1, 1]
        && g.p.dilation == [1, 1]
        && g.p.groups == 1
        && !g.is_pointwise()
        // The input gradient pads by k − 1 − p, which must not be negative.
        && g.p.padding[0] < g.kh
        && g.p.padding[1] < g.kw
}

/// One stride-1 correlation problem: `ci` input planes of `h x w`, padded by `(ph, pw)`,
/// correlated with `co` filters of `ci x kh x kw`, giving `co` planes of `oh x ow`.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) ci: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) co: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Shape {
    /// The forward correlation of `g` (stride 1, dilation 1).
    pub(crate) fn forward(g: &ConvGeom) -> Self {
        Shape {
            ci: g.c,
            h: g.h,
            w: g.w,
            co: g.o,
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
        Shape {
            ci: g.o,
            h: g.oh,
            w: g.ow,
            co: g.c,
            kh: g.kh,
            kw: g.kw,
            ph: g.kh - 1 - g.p.padding[0],
            pw: g.kw - 1 - g.p.padding[1],
            oh: g.h,
            ow: g.w,
        }
    }

    /// The 16-lane steps that cover an output plane, in output order, whichever way takes
    /// fewer: row pieces (each row cut into 16 pixels, the last piece masked), or, for planes
    /// narrower than a register (8x8 maps would fill half of every vector), runs of 16
    /// consecutive positions of the plane laid out at the padded width, whose lanes past
    /// a row's `ow` pixels are computed and dropped (`valid`).
    fn steps(&self) -> Vec<Step> {
        let (ow, wp) = (self.ow, self.padded_w());
        let full = |n: usize| -> u16 { if n >= LANES { !0 } else { (1u16 << n) - 1 } };
        let rows: Vec<Step> = (0..self.oh)
            .flat_map(|y| {
                (0..ow).step_by(LANES).map(move |x0| {
                    let n = (ow - x0).min(LANES);
                    Step {
                        off: y * wp + x0,
                        load: full(n),
                        valid: full(n),
                        dst: y * ow + x0,
                    }
                })
            })
            .collect();
        if self.oh == 0 || ow == 0 {
            return rows;
        }
        let grid = (self.oh - 1) * wp + ow;
        if grid.div_ceil(LANES) >= rows.len() {
            return rows;
        }
        (0..grid)
            .step_by(LANES)
            .map(|start| {
                let n = (grid - start).min(LANES);
                let valid = (0..n)
                    .filter(|i| (start + i) % wp < ow)
                    .fold(0u16, |m, i| m | (1 << i));
                Step {
                    off: start,
                    load: full(n),
                    valid,
                    dst: start / wp * ow + (start % wp).min(ow),
                }
            })
            .collect()
    }

    fn padded_h(&self) -> usize {
        self.h + 2 * self.ph
    }
    fn padded_w(&self) -> usize {
        self.w + 2 * self.pw
    }
    fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// One 16-lane step of an output plane: lanes `load` read the padded input from offset
/// `off` (plus the tap's offset); lanes `valid` are outputs, written in lane order to the
/// plane's consecutive positions from `dst`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    off: usize,
    load: u16,
    valid: u16,
    dst: usize,
}

impl Step {
    /// Whether the valid lanes are the low ones (a plain masked store suffices).
    fn dense(&self) -> bool {
        self.valid & self.valid.wrapping_add(1) == 0
    }
}

/// Packs filters `f(o, c, t)` (tap `t = ki·kw + kj`) as `[o / CB][c][t][o % CB]`, zero-padding
/// the last block of output channels.
fn pack(co: usize, ci: usize, taps: usize, f: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let blocks = co.div_ceil(CB);
    let mut p = vec![0f32; blocks * ci * taps * CB];
    for o in 0..co {
        let (b, l) = (o / CB, o % CB);
        for c in 0..ci {
            for t in 0..taps {
                p[((b * ci + c) * taps + t) * CB + l] = f(o, c, t);
            }
        }
    }
    p
}

/// Copies `ci` planes of `x` into `xp` with a zero border of `(ph, pw)`.
fn pad_into(x: &[f32], xp: &mut [f32], s: &Shape) {
    let (hp, wp) = (s.padded_h(), s.padded_w());
    for c in 0..s.ci {
        let dst = &mut xp[c * hp * wp..(c + 1) * hp * wp];
        dst[..s.ph * wp].fill(0.0);
        dst[(s.ph + s.h) * wp..].fill(0.0);
        for y in 0..s.h {
            let row = &mut dst[(y + s.ph) * wp..(y + s.ph + 1) * wp];
            row[..s.pw].fill(0.0);
            row[s.pw..s.pw + s.w].copy_from_slice(&x[(c * s.h + y) * s.w..][..s.w]);
            row[s.pw + s.w..].fill(0.0);
        }
    }
}

/// Correlates one image: `out[co, oh, ow]` (every element written, plus `bias`) from
/// `x[ci, h, w]`.
fn correlate(
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
    s: &Shape,
) {
    let len = s.ci * s.padded_h() * s.padded_w();
    with_scratch(len, |xp| {
        pad_into(x, xp, s);
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                std::is_x86_feature_detected!("avx512f"),
                "direct conv needs AVX-512"
            );
            assert!(packed.len() >= s.co.div_ceil(CB) * s.ci * s.taps() * CB);
            assert!(out.len() >= s.co * s.oh * s.ow);
            assert!(s.oh + s.kh - 1 <= s.padded_h() && s.ow + s.kw - 1 <= s.padded_w());
            // SAFETY: AVX-512F was detected just above; the asserts above bound every access
            // `correlate_avx512` makes (see its comments).
            unsafe { correlate_avx512(xp, packed, bias, out, s) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (packed, bias, out);
            unreachable!("direct conv is only selected on x86-64 with AVX-512")
        }
    })
}

/// The register-blocked loop nest: output pixels are cut into 16-lane steps
/// ([`Shape::steps`]), and every block of [`CB`] output channels x [`STEPS`] steps
/// is accumulated in registers over all input channels and taps.
///
/// # Safety
/// AVX-512F must be available. `xp` holds `ci` padded planes of `padded_h x padded_w`,
/// `packed` the packed filters of `co.div_ceil(CB)` blocks, `out` at least `co·oh·ow` values,
/// and `oh + kh − 1 ≤ padded_h`, `ow + kw − 1 ≤ padded_w`. Loads read lanes `< n` of
/// `xp[row + x0 + kj ..]` with `x0 + n ≤ ow`, so the last lane read is
/// `x0 + n − 1 + kw − 1 ≤ padded_w − 1`: inside the row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn correlate_avx512(
    xp: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
    s: &Shape,
) {
    let steps = s.steps();
    let taps = s.taps();
    for b in 0..s.co.div_ceil(CB) {
        let valid = (s.co - b * CB).min(CB);
        let mut init = [0f32; CB];
        if let Some(bias) = bias {
            init[..valid].copy_from_slice(&bias[b * CB..b * CB + valid]);
        }
        let wb = &packed[b * s.ci * taps * CB..(b + 1) * s.ci * taps * CB];
        let out_b = &mut out[b * CB * s.oh * s.ow..];
        let mut chunks = steps.chunks_exact(STEPS);
        for group in chunks.by_ref() {
            // SAFETY: the caller's contract; `group` holds STEPS steps of this image.
            unsafe { correlate_block::<STEPS>(xp, wb, &init, valid, group, out_b, s) }
        }
        match chunks.remainder() {
            [] => {}
            // SAFETY: as above, with 1 or 2 steps.
            [one] => unsafe { correlate_block::<1>(xp, wb, &init, valid, &[*one], out_b, s) },
            two => unsafe { correlate_block::<2>(xp, wb, &init, valid, two, out_b, s) },
        }
    }
}

/// One register block: channels `0..valid` of the block `wb` at the `P` steps `group`,
/// written to `out` (the block's first channel plane onwards).
///
/// # Safety
/// As [`correlate_avx512`]; `group.len() == P`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn correlate_block<const P: usize>(
    xp: &[f32],
    wb: &[f32],
    init: &[f32; CB],
    valid: usize,
    group: &[Step],
    out: &mut [MaybeUninit<f32>],
    s: &Shape,
) {
    use std::arch::x86_64::*;
    let (hp, wp, taps) = (s.padded_h(), s.padded_w(), s.taps());
    let plane = s.oh * s.ow;
    let mut masks: [__mmask16; P] = [0; P];
    let mut offs = [0usize; P];
    for (p, st) in group.iter().enumerate() {
        masks[p] = st.load;
        offs[p] = st.off;
    }
    let mut acc = [[_mm512_setzero_ps(); P]; CB];
    for (l, row) in acc.iter_mut().enumerate() {
        for a in row.iter_mut() {
            *a = _mm512_set1_ps(init[l]);
        }
    }
    // SAFETY: the caller's contract bounds every pointer below.
    unsafe {
        for c in 0..s.ci {
            let wc = wb.as_ptr().add(c * taps * CB);
            let xc = xp.as_ptr().add(c * hp * wp);
            for ki in 0..s.kh {
                for kj in 0..s.kw {
                    let tap = ki * wp + kj;
                    let mut v = [_mm512_setzero_ps(); P];
                    for p in 0..P {
                        v[p] = _mm512_maskz_loadu_ps(masks[p], xc.add(offs[p] + tap));
                    }
                    let wt = wc.add((ki * s.kw + kj) * CB);
                    for (l, row) in acc.iter_mut().enumerate() {
                        let w = _mm512_set1_ps(*wt.add(l));
                        for p in 0..P {
                            row[p] = _mm512_fmadd_ps(w, v[p], row[p]);
                        }
                    }
                }
            }
        }
        for (l, row) in acc.iter().enumerate().take(valid) {
            for (p, st) in group.iter().enumerate() {
                let dst = out.as_mut_ptr().add(l * plane + st.dst).cast::<f32>();
                if st.dense() {
                    _mm512_mask_storeu_ps(dst, st.valid, row[p]);
                } else {
                    _mm512_mask_compressstoreu_ps(dst.cast(), st.valid, row[p]);
                }
            }
        }
    }
}

/// Forward conv of one image per call, through [`correlate`].
pub(crate) struct Forward {
    packed: Vec<f32>,
    s: Shape,
}

impl Forward {
    /// Packs `w[o, c, kh, kw]` for `g` (which must be [`usable`]).
    pub(crate) fn new(w: &[f32], g: &ConvGeom) -> Self {
        let taps = g.kh * g.kw;
        let packed = pack(g.o, g.c, taps, |o, c, t| w[(o * g.c + c) * taps + t]);
        let s = Shape::forward(g);
        Forward { packed, s }
    }

    /// `y[o, oh, ow]` of image `x[c, h, w]`.
    pub(crate) fn image(&self, x: &[f32], bias: Option<&[f32]>, y: &mut [MaybeUninit<f32>]) {
        correlate(x, &self.packed, bias, y, &self.s);
    }
}

/// Input gradient of one image per call: the full correlation of `dy` with the filters
/// flipped in both spatial axes and transposed (`w'[c, o, ki, kj] = w[o, c, kh−1−ki,
/// kw−1−kj]`), padded by `k − 1 − p`.
pub(crate) struct GradInput {
    packed: Vec<f32>,
    s: Shape,
}

impl GradInput {
    /// Packs the flipped filters for `g` (which must be [`usable`]).
    pub(crate) fn new(w: &[f32], g: &ConvGeom) -> Self {
        let taps = g.kh * g.kw;
        let packed = pack(g.c, g.o, taps, |c, o, t| {
            let (ki, kj) = (t / g.kw, t % g.kw);
            let flipped = (g.kh - 1 - ki) * g.kw + (g.kw - 1 - kj);
            w[(o * g.c + c) * taps + flipped]
        });
        let s = Shape::input_grad(g);
        GradInput { packed, s }
    }

    /// `dx[c, h, w]` of image `dy[o, oh, ow]`.
    pub(crate) fn image(&self, dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
        correlate(dy, &self.packed, None, dx, &self.s);
    }
}

/// A 1x1 unpadded dense conv with a stride above 1 (ResNet's downsample shortcut) as the
/// stride-1 1x1 conv of its subsampled input: the geometry of that conv, where the direct
/// kernels can run it. (im2col + GEMM spent 5 GFLOP/s on these: per image three GEMMs of
/// about 0.3 MFLOP, dominated by packing; ResNet-20's 16→32 shortcut went from 21.6 to
/// 14.2 ms forward+backward at batch 128 in `conv_bench`.)
pub(crate) fn strided_pointwise(g: &ConvGeom) -> Option<ConvGeom> {
    let fits = isa() == Isa::Avx512
        && g.kh == 1
        && g.kw == 1
        && g.p.padding == [0, 0]
        && g.p.dilation == [1, 1]
        && g.p.groups == 1
        && g.p.stride != [1, 1];
    fits.then(|| {
        let mut g1 = *g;
        g1.h = g.oh;
        g1.w = g.ow;
        g1.p.stride = [1, 1];
        g1
    })
}

/// `sub[c, oy, ox] = x[c, oy·sh, ox·sw]` for one image of `g`.
pub(crate) fn subsample(x: &[f32], sub: &mut [f32], g: &ConvGeom) {
    let [sh, sw] = g.p.stride;
    for c in 0..g.c {
        for oy in 0..g.oh {
            let src = &x[(c * g.h + oy * sh) * g.w..][..g.w];
            let dst = &mut sub[(c * g.oh + oy) * g.ow..][..g.ow];
            for (ox, d) in dst.iter_mut().enumerate() {
                *d = src[ox * sw];
            }
        }
    }
}

/// `dx[c, oy·sh, ox·sw] = sub[c, oy, ox]` for one image of `g`; other elements untouched.
pub(crate) fn scatter(sub: &[f32], dx: &mut [f32], g: &ConvGeom) {
    let [sh, sw] = g.p.stride;
    for c in 0..g.c {
        for oy in 0..g.oh {
            let src = &sub[(c * g.oh + oy) * g.ow..][..g.ow];
            let dst = &mut dx[(c * g.h + oy * sh) * g.w..][..g.w];
            for (ox, &s) in src.iter().enumerate() {
                dst[ox * sw] = s;
            }
        }
    }
}

/// `s` viewed as possibly-uninitialised floats, for kernels that write every element.
pub(crate) fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the callers only ever write
    // initialised floats through the view, so `s` stays initialised.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}
