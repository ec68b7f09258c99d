//! Direct AVX-512 convolution for dense convs with dilation 1 (all of ResNet's), used for the
//! forward pass and, with transposed weights, for the input gradient.
//!
//! im2col copies every input value `kh·kw` times and hands the GEMM a `k x oh·ow` matrix to
//! pack again; on ResNet-20 that copying (and col2im's scatter in the backward pass) took a
//! quarter of a training step. Here every output block — 8 output channels x 3 steps of 16
//! output pixels, 24 `zmm` accumulators — is computed straight from the input: per tap and
//! input channel one masked load of 16 input pixels per step feeds 8 fused multiply-adds with
//! broadcast weights. The zero padding is never materialised: lanes whose input pixel lies
//! in the padding are masked off (see [`Plan`]), which also lets "same"-padded planes be
//! walked as runs of 16 consecutive pixels across rows (4 steps for an 8x8 plane, where whole
//! rows took 8 half-empty ones).
//!
//! A correlation is a list of taps, each reading the input at an offset, so strided convs
//! are stride-1 correlations too: the forward pass reads the polyphase split of the input
//! (phase `(a, b)` holds the pixels `(i·sh + a, j·sw + b)`; each tap reads one phase), and
//! the input gradient computes each phase of `dx` from the taps that reach it. ResNet-20's
//! 3x3 stride-2 convs went from 41–59 GFLOP/s under im2col + GEMM to 100–150 GFLOP/s
//! forward and input gradient. The weight gradient is in `direct_gw`.
//!
//! Runs only where AVX-512F was detected (and the scalar fallback is not forced); elsewhere,
//! and for dilated, grouped or unstrided 1x1 convs, `conv_gemm` does the work.

use std::mem::MaybeUninit;

use crate::params::ConvGeom;
use crate::polyphase::{gather_row, scatter_row};
use crate::scratch::with_scratch;
use crate::simd::{Isa, isa};

/// Output channels per register block of a correlation (forward, input gradient).
const CB: usize = 8;
/// 16-pixel steps per register block of a correlation: `CB x STEPS` accumulators, so each
/// broadcast weight feeds `STEPS` fused multiply-adds.
const STEPS: usize = 3;
/// Output pixels per register (one `zmm` of f32).
const LANES: usize = 16;
/// Register blocks of steps per tile of output pixels (every output-channel block runs over
/// one tile before the next): 12 steps, 192 pixels.
const TILE_GROUPS: usize = 4;

/// Whether the forward pass and input gradient of `g` can run here: dense convs with
/// dilation 1 other than unstrided 1x1 ones (a plain GEMM).
pub(crate) fn usable(g: &ConvGeom) -> bool {
    isa() == Isa::Avx512 && g.p.dilation == [1, 1] && g.p.groups == 1 && !g.is_pointwise()
}

/// One tap of a correlation: input pixel `(y + di, x + dj)` of the planes starting `base`
/// floats into the input, which hold `h x w` real pixels (beyond them: the zero padding).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tap {
    base: usize,
    di: isize,
    dj: isize,
    h: usize,
    w: usize,
}

/// The input layout of a correlation: `ci` channels, `chan` floats apart, each a plane whose
/// rows are `row` floats apart (the planes of a tap start at its `base`).
#[derive(Clone, Copy, Debug)]
struct Layout {
    ci: usize,
    chan: usize,
    row: usize,
}

/// How a correlation walks its `oh x ow` output plane: 16-lane steps, and for every step and
/// tap the lanes whose input lies inside the real input pixels.
///
/// Lane `l` of a step is output pixel `(y, x)` and reads, at a tap, input `(y + di, x +
/// dj)`: `off + l + base + di·row + dj` when the step's lanes are consecutive input pixels
/// too: always for a piece of one row, and for runs across rows when output rows are as long
/// as input rows (`ow = row`, the "same" padding of ResNet's 3x3 convs). Lanes whose input
/// pixel falls outside (the zero padding) are masked off and read as zero, so the input is
/// never copied into a padded buffer.
struct Plan {
    steps: Vec<Step>,
    /// `masks[step · taps + tap]`: the lanes that read the input at that tap.
    masks: Vec<u16>,
    /// Input offset of each tap relative to a step's `off`: `base + di·row + dj`.
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
    fn new(oh: usize, ow: usize, row: usize, taps: &[Tap]) -> Self {
        // Output pixels of each step: runs of 16 consecutive pixels of the plane when
        // `ow = row`, else pieces of rows.
        let pieces: Vec<Vec<(usize, usize)>> = if ow == row {
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
        let mut steps = Vec::with_capacity(pieces.len());
        let mut masks = Vec::with_capacity(pieces.len() * taps.len());
        for px in &pieces {
            let (y0, x0) = px[0];
            steps.push(Step {
                off: (y0 * row + x0) as isize,
                store: if px.len() >= LANES {
                    !0
                } else {
                    (1u16 << px.len()) - 1
                },
                dst: y0 * ow + x0,
            });
            for t in taps {
                let m = px.iter().enumerate().fold(0u16, |m, (l, &(y, x))| {
                    let (iy, ix) = (y as isize + t.di, x as isize + t.dj);
                    let inside = (0..t.h as isize).contains(&iy) && (0..t.w as isize).contains(&ix);
                    if inside { m | 1 << l } else { m }
                });
                masks.push(m);
            }
        }
        let tap_off = taps
            .iter()
            .map(|t| t.base as isize + t.di * row as isize + t.dj)
            .collect();
        Plan {
            steps,
            masks,
            tap_off,
        }
    }
}

/// Packs filters `f(o, c, t)` (tap `t` of the correlation's list) as `[o / CB][c][t][o %
/// CB]`, zero-padding the last block of output channels.
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

/// A packed correlation: `co` output planes of `oh x ow` from the input `layout`, through
/// the list of taps.
struct Correlation {
    layout: Layout,
    co: usize,
    oh: usize,
    ow: usize,
    taps: usize,
    plan: Plan,
    packed: Vec<f32>,
    /// Floats of input the taps may read (`ci` channels from every tap's base).
    input_len: usize,
}

impl Correlation {
    /// `f(o, c, t)`: the weight of output `o`, input channel `c` at tap `t`.
    fn new(
        layout: Layout,
        (co, oh, ow): (usize, usize, usize),
        taps: &[Tap],
        f: impl Fn(usize, usize, usize) -> f32,
    ) -> Self {
        let input_len = taps
            .iter()
            .map(|t| {
                t.base
                    + layout.ci.saturating_sub(1) * layout.chan
                    + t.h.saturating_sub(1) * layout.row
                    + t.w
            })
            .max()
            .unwrap_or(0);
        Correlation {
            plan: Plan::new(oh, ow, layout.row, taps),
            packed: pack(co, layout.ci, taps.len(), f),
            layout,
            co,
            oh,
            ow,
            taps: taps.len(),
            input_len,
        }
    }

    /// Correlates one image: `out[co, oh, ow]` (every element written, plus `bias`, plus
    /// `onto` (laid out as `out`), zero where `mask` (as `out`) is 0) from the input `x` (in
    /// the correlation's layout).
    fn image(
        &self,
        x: &[f32],
        (bias, onto): (Option<&[f32]>, Option<&[f32]>),
        mask: Option<&[u8]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                std::is_x86_feature_detected!("avx512f"),
                "direct conv needs AVX-512"
            );
            assert!(self.packed.len() >= self.co.div_ceil(CB) * self.layout.ci * self.taps * CB);
            assert!(x.len() >= self.input_len && out.len() >= self.co * self.oh * self.ow);
            assert!(self.plan.masks.len() == self.plan.steps.len() * self.taps);
            assert!(bias.is_none_or(|b| b.len() >= self.co));
            assert!(mask.is_none_or(|m| m.len() >= self.co * self.oh * self.ow));
            assert!(onto.is_none_or(|m| m.len() >= self.co * self.oh * self.ow));
            // SAFETY: AVX-512F was detected just above; the asserts above and the plan's
            // construction bound every access `correlate_avx512` makes (see its comments).
            unsafe { self.correlate_avx512(x, (bias, onto), mask, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, bias, onto, mask, out);
            unreachable!("direct conv is only selected on x86-64 with AVX-512")
        }
    }

    /// The register-blocked loop nest: every block of [`CB`] output channels x [`STEPS`]
    /// steps is accumulated in registers over all taps and input channels.
    ///
    /// # Safety
    /// AVX-512F must be available; `x` holds the input layout (`input_len` floats), `out` at
    /// least `co·oh·ow` values, `mask` and `onto` (if any) as many, `bias` (if any) `co`.
    /// Every lane a mask enables reads a real
    /// input pixel ([`Plan::new`]); lanes it disables are not read (a masked load does not
    /// touch them, whatever their address).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn correlate_avx512(
        &self,
        x: &[f32],
        (bias, onto): (Option<&[f32]>, Option<&[f32]>),
        mask: Option<&[u8]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (ci, taps) = (self.layout.ci, self.taps);
        let steps = &self.plan.steps;
        // Tiles of output pixels outermost, output-channel blocks inside: the input rows
        // under a tile stay in L1 for every block (a 16-channel 32x32 image, 64 KB, was
        // streamed from L2 once per block).
        for t0 in (0..steps.len()).step_by(TILE_GROUPS * STEPS) {
            let end = (t0 + TILE_GROUPS * STEPS).min(steps.len());
            for b in 0..self.co.div_ceil(CB) {
                let valid = (self.co - b * CB).min(CB);
                let mut init = [0f32; CB];
                if let Some(bias) = bias {
                    init[..valid].copy_from_slice(&bias[b * CB..b * CB + valid]);
                }
                let wb = &self.packed[b * ci * taps * CB..(b + 1) * ci * taps * CB];
                let at = b * CB * self.oh * self.ow;
                let out_b = &mut out[at..];
                let mut first = t0;
                while first < end {
                    let p = (end - first).min(STEPS);
                    let blk = Block {
                        x,
                        wb,
                        init: &init,
                        valid,
                        first,
                        mask: mask.map(|m| &m[at..]),
                        onto: onto.map(|m| &m[at..]),
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
        let (taps, chan, plane) = (self.taps, self.layout.chan, self.oh * self.ow);
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
                for _ in 0..self.layout.ci {
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
                    xc = xc.wrapping_add(chan);
                }
            }
            for (l, row) in acc.iter().enumerate().take(blk.valid) {
                for (p, st) in group.iter().enumerate() {
                    let at = l * plane + st.dst;
                    let v = match blk.onto {
                        // The stored lanes of `onto` exist (the contract).
                        Some(o) => _mm512_add_ps(
                            row[p],
                            _mm512_maskz_loadu_ps(st.store, o.as_ptr().add(at)),
                        ),
                        None => row[p],
                    };
                    let v = match blk.mask {
                        Some(m) => {
                            // The step's mask bytes (only the stored lanes exist).
                            let n = st.store.count_ones() as usize;
                            let bytes = if n == LANES {
                                _mm_loadu_si128(m[at..at + LANES].as_ptr().cast())
                            } else {
                                let mut b = [0u8; LANES];
                                for (d, &v) in b.iter_mut().zip(&m[at..at + n]) {
                                    *d = v;
                                }
                                _mm_loadu_si128(b.as_ptr().cast())
                            };
                            let wide = _mm512_cvtepu8_epi32(bytes);
                            _mm512_maskz_mov_ps(_mm512_test_epi32_mask(wide, wide), v)
                        }
                        None => v,
                    };
                    let dst = out.as_mut_ptr().add(at).cast::<f32>();
                    _mm512_mask_storeu_ps(dst, st.store, v);
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
    /// The output mask from the block's first channel plane on, if any.
    mask: Option<&'a [u8]>,
    /// Values the output adds to, from the block's first channel plane on, if any.
    onto: Option<&'a [f32]>,
}

/// `q = floor(a / b)` and `a − q·b` for a positive `b`.
fn div_floor(a: isize, b: usize) -> (isize, usize) {
    let b = b as isize;
    (a.div_euclid(b), a.rem_euclid(b) as usize)
}

/// Pixels `i` with `i·s + phase < n`: the length of one phase of a strided axis.
fn phase_len(n: usize, s: usize, phase: usize) -> usize {
    if phase >= n {
        0
    } else {
        (n - phase).div_ceil(s)
    }
}

/// The polyphase split of a strided conv's input: for stride `(sh, sw)`, phase `(a, b)`
/// holds input pixels `(i·sh + a, j·sw + b)`, so every tap of the strided conv reads one
/// phase at stride 1. Only the phases some tap reads are stored (`slots`).
struct Phases {
    /// `slot[a·sw + b]`: where phase `(a, b)` is stored, if a tap reads it.
    slot: Vec<Option<usize>>,
    /// Rows and columns per stored phase plane (`ceil(h / sh) x ceil(w / sw)`).
    hq: usize,
    wq: usize,
    stored: usize,
}

/// Forward conv of one image per call: stride 1 straight from the input, strided convs
/// from its polyphase split.
pub(crate) struct Forward {
    corr: Correlation,
    g: ConvGeom,
    phases: Option<Phases>,
}

impl Forward {
    /// Packs `w[o, c, kh, kw]` for `g` (which must be [`usable`]).
    pub(crate) fn new(w: &[f32], g: &ConvGeom) -> Self {
        let ([sh, sw], [ph, pw]) = (g.p.stride, g.p.padding);
        let (kh, kw) = (g.kh, g.kw);
        let weight =
            |o: usize, c: usize, ki: usize, kj: usize| w[((o * g.c + c) * kh + ki) * kw + kj];
        if [sh, sw] == [1, 1] {
            let layout = Layout {
                ci: g.c,
                chan: g.h * g.w,
                row: g.w,
            };
            let taps: Vec<Tap> = (0..kh)
                .flat_map(|ki| (0..kw).map(move |kj| (ki, kj)))
                .map(|(ki, kj)| Tap {
                    base: 0,
                    di: ki as isize - ph as isize,
                    dj: kj as isize - pw as isize,
                    h: g.h,
                    w: g.w,
                })
                .collect();
            let corr = Correlation::new(layout, (g.o, g.oh, g.ow), &taps, |o, c, t| {
                weight(o, c, t / kw, t % kw)
            });
            return Forward {
                corr,
                g: *g,
                phases: None,
            };
        }
        let (hq, wq) = (g.h.div_ceil(sh), g.w.div_ceil(sw));
        // Tap (ki, kj) reads input row y·sh + ki − ph = (y + di)·sh + a.
        let split: Vec<(usize, usize, isize, isize)> = (0..kh)
            .flat_map(|ki| (0..kw).map(move |kj| (ki, kj)))
            .map(|(ki, kj)| {
                let (di, a) = div_floor(ki as isize - ph as isize, sh);
                let (dj, b) = div_floor(kj as isize - pw as isize, sw);
                (a, b, di, dj)
            })
            .collect();
        let mut slot = vec![None; sh * sw];
        let mut stored = 0;
        for &(a, b, ..) in &split {
            if slot[a * sw + b].is_none() {
                slot[a * sw + b] = Some(stored);
                stored += 1;
            }
        }
        let layout = Layout {
            ci: g.c,
            chan: hq * wq,
            row: wq,
        };
        let taps: Vec<Tap> = split
            .iter()
            .map(|&(a, b, di, dj)| Tap {
                base: slot[a * sw + b].unwrap_or(0) * g.c * hq * wq,
                di,
                dj,
                h: phase_len(g.h, sh, a),
                w: phase_len(g.w, sw, b),
            })
            .collect();
        let corr = Correlation::new(layout, (g.o, g.oh, g.ow), &taps, |o, c, t| {
            weight(o, c, t / kw, t % kw)
        });
        Forward {
            corr,
            g: *g,
            phases: Some(Phases {
                slot,
                hq,
                wq,
                stored,
            }),
        }
    }

    /// `y[o, oh, ow]` of image `x[c, h, w]`, zero where `mask` (as `y`) is 0.
    pub(crate) fn image(
        &self,
        x: &[f32],
        bias: Option<&[f32]>,
        mask: Option<&[u8]>,
        y: &mut [MaybeUninit<f32>],
    ) {
        let Some(ph) = &self.phases else {
            return self.corr.image(x, (bias, None), mask, y);
        };
        let g = &self.g;
        let [sh, sw] = g.p.stride;
        with_scratch(ph.stored * g.c * ph.hq * ph.wq, |xs| {
            for (k, slot) in ph.slot.iter().enumerate() {
                let Some(slot) = *slot else { continue };
                let (a, b) = (k / sw, k % sw);
                let dst = &mut xs[slot * g.c * ph.hq * ph.wq..][..g.c * ph.hq * ph.wq];
                let wn = phase_len(g.w, sw, b);
                for c in 0..g.c {
                    for i in 0..phase_len(g.h, sh, a) {
                        let src = &x[(c * g.h + i * sh + a) * g.w..][..g.w];
                        gather_row(src, sw, b, &mut dst[(c * ph.hq + i) * ph.wq..][..wn]);
                    }
                }
            }
            self.corr.image(xs, (bias, None), mask, y)
        })
    }
}

/// Input gradient of one image per call: the full correlation of `dy` with the filters
/// flipped and transposed. For a strided conv, each phase `(a, b)` of `dx` (pixels
/// `(i·sh + a, j·sw + b)`) is a stride-1 correlation of `dy` with the taps that reach it,
/// computed apart and interleaved.
pub(crate) struct GradInput {
    /// One correlation per phase of `dx`, in phase order (`None`: no tap reaches it).
    phases: Vec<Option<Correlation>>,
    g: ConvGeom,
}

impl GradInput {
    /// Packs the flipped filters for `g` (which must be [`usable`]).
    pub(crate) fn new(w: &[f32], g: &ConvGeom) -> Self {
        let ([sh, sw], [ph, pw]) = (g.p.stride, g.p.padding);
        let (kh, kw) = (g.kh, g.kw);
        let layout = Layout {
            ci: g.o,
            chan: g.oh * g.ow,
            row: g.ow,
        };
        let mut phases = Vec::with_capacity(sh * sw);
        for a in 0..sh {
            for b in 0..sw {
                // dx(i·sh + a) gets dy(y) through tap ki where y·sh + ki − ph = i·sh + a.
                let mut taps = Vec::new();
                let mut kk = Vec::new();
                for ki in 0..kh {
                    let (di, ra) = div_floor(a as isize + ph as isize - ki as isize, sh);
                    if ra != 0 {
                        continue;
                    }
                    for kj in 0..kw {
                        let (dj, rb) = div_floor(b as isize + pw as isize - kj as isize, sw);
                        if rb != 0 {
                            continue;
                        }
                        taps.push(Tap {
                            base: 0,
                            di,
                            dj,
                            h: g.oh,
                            w: g.ow,
                        });
                        kk.push((ki, kj));
                    }
                }
                let (hn, wn) = (phase_len(g.h, sh, a), phase_len(g.w, sw, b));
                phases.push((!taps.is_empty() && hn * wn > 0).then(|| {
                    Correlation::new(layout, (g.c, hn, wn), &taps, |c, o, t| {
                        let (ki, kj) = kk[t];
                        w[((o * g.c + c) * kh + ki) * kw + kj]
                    })
                }));
            }
        }
        GradInput { phases, g: *g }
    }

    /// `dx[c, h, w]` of image `dy[o, oh, ow]`, plus `onto` (as `dx`) if given, zero where
    /// `mask` (as `dx`) is 0.
    pub(crate) fn image(
        &self,
        dy: &[f32],
        onto: Option<&[f32]>,
        mask: Option<&[u8]>,
        dx: &mut [MaybeUninit<f32>],
    ) {
        let g = &self.g;
        let [sh, sw] = g.p.stride;
        if let [Some(corr)] = self.phases.as_slice() {
            return corr.image(dy, (None, onto), mask, dx);
        }
        if onto.is_some() || mask.is_some() {
            self.image(dy, None, None, dx);
            let n = g.c * g.h * g.w;
            for (i, d) in dx[..n].iter_mut().enumerate() {
                // SAFETY: `image` wrote every element of `dx`.
                let v = unsafe { d.assume_init() } + onto.map_or(0.0, |o| o[i]);
                d.write(if mask.is_some_and(|m| m[i] == 0) {
                    0.0
                } else {
                    v
                });
            }
            return;
        }
        let dx = &mut dx[..g.c * g.h * g.w];
        for (k, phase) in self.phases.iter().enumerate() {
            let (a, b) = (k / sw, k % sw);
            let (hn, wn) = (phase_len(g.h, sh, a), phase_len(g.w, sw, b));
            // Row `i` of channel `c` of the phase goes to every `sw`-th pixel from `b` of
            // row `i·sh + a` of `dx`.
            let rows = (0..g.c).flat_map(|c| (0..hn).map(move |i| (c * g.h + i * sh + a) * g.w));
            let put = |dx: &mut [MaybeUninit<f32>], sub: &[f32]| {
                for (at, src) in rows.clone().zip(sub.chunks_exact(wn.max(1))) {
                    scatter_row(src, sw, b, &mut dx[at..at + g.w]);
                }
            };
            match phase {
                Some(corr) => with_scratch(g.c * hn * wn, |sub| {
                    corr.image(dy, (None, None), None, as_uninit(sub));
                    put(dx, sub);
                }),
                None => with_scratch(g.c * hn * wn, |sub| {
                    sub.fill(0.0);
                    put(dx, sub);
                }),
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
