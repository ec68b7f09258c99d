//! Direct AVX-512 convolution for stride-1, dilation-1 dense convs (the 3x3 convs of ResNets),
//! used for the forward pass and, with flipped and transposed weights, for the input gradient.
//!
//! im2col copies every input value `kh·kw` times and hands the GEMM a `k x oh·ow` matrix to
//! pack again; on ResNet-20 that copying (and col2im's scatter in the backward pass) took a
//! quarter of a training step. Here every output block — 8 output channels x 3 steps of 16
//! output pixels, 24 `zmm` accumulators — is computed straight from the input: per tap and
//! input channel one masked load of 16 input pixels per step feeds 8 fused multiply-adds with
//! broadcast weights. The zero padding is never materialised: lanes whose input pixel lies
//! in the padding are masked off (see [`Plan`]), which also lets "same"-padded planes be
//! walked as runs of 16 consecutive pixels across rows (4 steps for an 8x8 plane, where whole
//! rows took 8 half-empty ones). The weight gradient of these convs (and of strided ones) is
//! in `direct_gw`.
//!
//! Runs only where AVX-512F was detected (and the scalar fallback is not forced); elsewhere,
//! and for strided, dilated, grouped or pointwise convs, `conv_gemm` does the work.

use std::mem::MaybeUninit;

use crate::params::ConvGeom;
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

    fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// How a correlation walks its output plane: 16-lane steps, and for every step and tap the
/// lanes whose input lies inside the (unpadded) input plane.
///
/// Lane `l` of a step is output pixel `(y, x)`; for tap `(ki, kj)` it reads input pixel
/// `(y + ki − ph, x + kj − pw)`, which is `off + l + ki·w + kj` counted from the plane's
/// start when the step's lanes are consecutive input pixels too: always for a piece of one
/// row, and for runs across rows when output rows are as wide as input rows (`ow = w`, the
/// "same" padding of ResNet's 3x3 convs). Lanes whose input pixel falls outside the plane
/// (the zero padding) are masked off and read as zero, so the input is never copied into a
/// padded buffer.
struct Plan {
    steps: Vec<Step>,
    /// `masks[step · taps + tap]`: the lanes that read the input at that tap.
    masks: Vec<u16>,
    /// Input offset of each tap `(ki, kj)` relative to a step's `off`: `ki·w + kj`.
    tap_off: Vec<isize>,
}

/// One 16-lane step: lane `l` (of `store`) is output `dst + l`, and reads input `off + l +
/// tap_off[t]` at tap `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    off: isize,
    store: u16,
    dst: usize,
}

impl Plan {
    fn new(s: &Shape) -> Self {
        let (oh, ow, w, h) = (s.oh, s.ow, s.w as isize, s.h as isize);
        // Output pixels of each step: runs of 16 consecutive pixels of the plane when
        // `ow = w`, else pieces of rows.
        let pieces: Vec<Vec<(usize, usize)>> = if ow == s.w {
            let n = oh * ow;
            (0..n)
                .step_by(LANES)
                .map(|p0| {
                    (p0..(p0 + LANES).min(n))
                        .map(|p| (p / ow, p % ow))
                        .collect()
                })
                .collect()
        } else {
            (0..oh)
                .flat_map(|y| {
                    (0..ow)
                        .step_by(LANES)
                        .map(move |x0| (x0..(x0 + LANES).min(ow)).map(|x| (y, x)).collect())
                })
                .collect()
        };
        let taps = s.taps();
        let (ph, pw) = (s.ph as isize, s.pw as isize);
        let mut steps = Vec::with_capacity(pieces.len());
        let mut masks = Vec::with_capacity(pieces.len() * taps);
        for px in &pieces {
            let (y0, x0) = px[0];
            steps.push(Step {
                off: (y0 as isize - ph) * w + (x0 as isize - pw),
                store: if px.len() >= LANES {
                    !0
                } else {
                    (1u16 << px.len()) - 1
                },
                dst: y0 * ow + x0,
            });
            for ki in 0..s.kh as isize {
                for kj in 0..s.kw as isize {
                    let m = px.iter().enumerate().fold(0u16, |m, (l, &(y, x))| {
                        let (iy, ix) = (y as isize + ki - ph, x as isize + kj - pw);
                        let inside = (0..h).contains(&iy) && (0..w).contains(&ix);
                        if inside { m | 1 << l } else { m }
                    });
                    masks.push(m);
                }
            }
        }
        let tap_off = (0..s.kh)
            .flat_map(|ki| (0..s.kw).map(move |kj| (ki * s.w + kj) as isize))
            .collect();
        Plan {
            steps,
            masks,
            tap_off,
        }
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

/// A packed correlation: filters and the plan of its output plane.
struct Correlation {
    s: Shape,
    plan: Plan,
    packed: Vec<f32>,
}

impl Correlation {
    fn new(s: Shape, packed: Vec<f32>) -> Self {
        Correlation {
            plan: Plan::new(&s),
            s,
            packed,
        }
    }

    /// Correlates one image: `out[co, oh, ow]` (every element written, plus `bias`) from
    /// `x[ci, h, w]`.
    fn image(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [MaybeUninit<f32>]) {
        let s = &self.s;
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                std::is_x86_feature_detected!("avx512f"),
                "direct conv needs AVX-512"
            );
            assert!(self.packed.len() >= s.co.div_ceil(CB) * s.ci * s.taps() * CB);
            assert!(x.len() >= s.ci * s.h * s.w && out.len() >= s.co * s.oh * s.ow);
            assert!(self.plan.masks.len() == self.plan.steps.len() * s.taps());
            assert!(bias.is_none_or(|b| b.len() >= s.co));
            // SAFETY: AVX-512F was detected just above; the asserts above and the plan's
            // construction bound every access `correlate_avx512` makes (see its comments).
            unsafe { self.correlate_avx512(x, bias, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, bias, out);
            unreachable!("direct conv is only selected on x86-64 with AVX-512")
        }
    }

    /// The register-blocked loop nest: every block of [`CB`] output channels x [`STEPS`]
    /// steps is accumulated in registers over all taps and input channels.
    ///
    /// # Safety
    /// AVX-512F must be available; `x` holds `ci` planes of `h x w`, `out` at least
    /// `co·oh·ow` values, `bias` (if any) `co`. Every lane a mask enables reads an input
    /// pixel inside its plane ([`Plan::new`]); lanes it disables are not read (a masked
    /// load does not touch them, whatever their address).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn correlate_avx512(
        &self,
        x: &[f32],
        bias: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let s = &self.s;
        let taps = s.taps();
        let steps = &self.plan.steps;
        for b in 0..s.co.div_ceil(CB) {
            let valid = (s.co - b * CB).min(CB);
            let mut init = [0f32; CB];
            if let Some(bias) = bias {
                init[..valid].copy_from_slice(&bias[b * CB..b * CB + valid]);
            }
            let wb = &self.packed[b * s.ci * taps * CB..(b + 1) * s.ci * taps * CB];
            let out_b = &mut out[b * CB * s.oh * s.ow..];
            let mut first = 0;
            while first < steps.len() {
                let p = (steps.len() - first).min(STEPS);
                let blk = Block {
                    x,
                    wb,
                    init: &init,
                    valid,
                    first,
                };
                // SAFETY: the caller's contract; steps `first..first + p` exist.
                unsafe {
                    match p {
                        3 => self.block::<3>(&blk, out_b),
                        2 => self.block::<2>(&blk, out_b),
                        _ => self.block::<1>(&blk, out_b),
                    }
                }
                first += p;
            }
        }
    }

    /// One register block: channels `0..valid` of the filter block `wb` at the `P` steps from
    /// `first`, written to `out` (the block's first channel plane onwards).
    ///
    /// # Safety
    /// As [`Self::correlate_avx512`]; steps `first..first + P` exist.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const P: usize>(&self, blk: &Block<'_>, out: &mut [MaybeUninit<f32>]) {
        use std::arch::x86_64::*;
        let s = &self.s;
        let (taps, plane_in, plane) = (s.taps(), s.h * s.w, s.oh * s.ow);
        let group = &self.plan.steps[blk.first..blk.first + P];
        let mut acc = [[_mm512_setzero_ps(); P]; CB];
        for (l, row) in acc.iter_mut().enumerate() {
            for a in row.iter_mut() {
                *a = _mm512_set1_ps(blk.init[l]);
            }
        }
        // SAFETY: the caller's contract bounds every enabled lane below; disabled lanes are
        // not accessed, so their (possibly out-of-plane) addresses are formed with
        // `wrapping_offset` and never dereferenced.
        unsafe {
            for t in 0..taps {
                let mut masks: [__mmask16; P] = [0; P];
                let mut offs = [0isize; P];
                for p in 0..P {
                    masks[p] = self.plan.masks[(blk.first + p) * taps + t];
                    offs[p] = group[p].off + self.plan.tap_off[t];
                }
                if masks.iter().all(|&m| m == 0) {
                    continue;
                }
                let mut wt = blk.wb.as_ptr().add(t * CB);
                let mut xc = blk.x.as_ptr();
                for _ in 0..s.ci {
                    let mut v = [_mm512_setzero_ps(); P];
                    for p in 0..P {
                        v[p] = _mm512_maskz_loadu_ps(masks[p], xc.wrapping_offset(offs[p]));
                    }
                    for (l, row) in acc.iter_mut().enumerate() {
                        let w = _mm512_set1_ps(*wt.add(l));
                        for p in 0..P {
                            row[p] = _mm512_fmadd_ps(w, v[p], row[p]);
                        }
                    }
                    wt = wt.add(taps * CB);
                    xc = xc.wrapping_add(plane_in);
                }
            }
            for (l, row) in acc.iter().enumerate().take(blk.valid) {
                for (p, st) in group.iter().enumerate() {
                    let dst = out.as_mut_ptr().add(l * plane + st.dst).cast::<f32>();
                    _mm512_mask_storeu_ps(dst, st.store, row[p]);
                }
            }
        }
    }
}

/// The inputs of one register block of a correlation.
struct Block<'a> {
    x: &'a [f32],
    /// The block's packed filters (`[c][t][CB]`).
    wb: &'a [f32],
    init: &'a [f32; CB],
    /// Output channels of the block that exist.
    valid: usize,
    /// Index of the block's first step.
    first: usize,
}

/// Forward conv of one image per call.
pub(crate) struct Forward(Correlation);

impl Forward {
    /// Packs `w[o, c, kh, kw]` for `g` (which must be [`usable`]).
    pub(crate) fn new(w: &[f32], g: &ConvGeom) -> Self {
        let taps = g.kh * g.kw;
        let packed = pack(g.o, g.c, taps, |o, c, t| w[(o * g.c + c) * taps + t]);
        Forward(Correlation::new(Shape::forward(g), packed))
    }

    /// `y[o, oh, ow]` of image `x[c, h, w]`.
    pub(crate) fn image(&self, x: &[f32], bias: Option<&[f32]>, y: &mut [MaybeUninit<f32>]) {
        self.0.image(x, bias, y);
    }
}

/// Input gradient of one image per call: the full correlation of `dy` with the filters
/// flipped in both spatial axes and transposed (`w'[c, o, ki, kj] = w[o, c, kh−1−ki,
/// kw−1−kj]`), padded by `k − 1 − p`.
pub(crate) struct GradInput(Correlation);

impl GradInput {
    /// Packs the flipped filters for `g` (which must be [`usable`]).
    pub(crate) fn new(w: &[f32], g: &ConvGeom) -> Self {
        let taps = g.kh * g.kw;
        let packed = pack(g.c, g.o, taps, |c, o, t| {
            let (ki, kj) = (t / g.kw, t % g.kw);
            let flipped = (g.kh - 1 - ki) * g.kw + (g.kw - 1 - kj);
            w[(o * g.c + c) * taps + flipped]
        });
        GradInput(Correlation::new(Shape::input_grad(g), packed))
    }

    /// `dx[c, h, w]` of image `dy[o, oh, ow]`.
    pub(crate) fn image(&self, dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
        self.0.image(dy, None, dx);
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
