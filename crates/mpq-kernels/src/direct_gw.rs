//! Direct AVX-512 weight gradient of dense convs (any stride, dilation 1), vectorised over
//! output channels.
//!
//! `dw[o, c, ki, kj] = Σ_{n, y, x} dy[n, o, y, x] · xp[n, c, y·sh + ki, x·sw + kj]` (`xp` the
//! zero-padded input). The first direct kernel (`direct::GradWeight`) kept 16 lanes of
//! partial sums per weight, vectorised over output pixels: 2.4 MB of accumulators for a
//! 64x64x3x3 conv, streamed through per image, so ResNet-20's 64-channel convs reached 49
//! GFLOP/s. Here a register holds 16 output channels of one weight position: `dy` is
//! transposed per tile of output pixels to `[pixel][o]`, and each input value is broadcast
//! into fused multiply-adds with one or two such vectors. The accumulators are the weight
//! gradient itself (`[c][tap][o]`, 147 KB for 64x64x3x3, in L2), and since the input is
//! read one value at a time, the stride only changes which value: strided convs take the
//! same path.
//!
//! Runs only where AVX-512F was detected (and the scalar fallback is not forced).

use crate::params::ConvGeom;
use crate::scratch::with_scratch;
use crate::simd::{Isa, isa};

/// Output channels per register.
const LANES: usize = 16;
/// Bytes of the transposed `dy` tile a register block walks (kept in L1).
const TILE_BYTES: usize = 16 * 1024;
/// Kernel taps per register block (one kernel row's consecutive taps).
const TAPS: usize = 3;

/// Registers of output channels and input channels per register block, for `o` output
/// channels, `c` input channels and kernel rows of `kw` taps: 24 accumulators (2
/// registers x 4 channels x 3 taps, 1 x 8 x 3; 2 x 12 x 1 or 1 x 24 x 1 for 1x1 kernels), or
/// fewer where the layer has only 1 to 3 input channels (an RGB or grey image), which are
/// taken as one block rather than padded with zero planes. Only the shapes [`dispatch`]
/// instantiates are returned.
fn block_shape(o: usize, c: usize, kw: usize) -> (usize, usize) {
    let regs = if o > LANES { 2 } else { 1 };
    let full = if kw == 1 { 24 / regs } else { 8 / regs };
    (regs, if c <= 3 { c } else { full })
}

/// Runs `block.run::<R, C, J>(offs)` for the runtime `(R, C, J)` (the shapes
/// [`block_shape`] picks, with 1 to 3 taps).
macro_rules! dispatch {
    ($b:expr, $offs:expr, $shape:expr) => {
        dispatch!(@arms $b, $offs, $shape;
            (2, 4, 3), (2, 4, 2), (2, 4, 1), (1, 8, 3), (1, 8, 2), (1, 8, 1),
            (2, 12, 1), (1, 24, 1),
            (2, 1, 3), (2, 1, 2), (2, 1, 1), (2, 2, 3), (2, 2, 2), (2, 2, 1),
            (2, 3, 3), (2, 3, 2), (2, 3, 1), (1, 1, 3), (1, 1, 2), (1, 1, 1),
            (1, 2, 3), (1, 2, 2), (1, 2, 1), (1, 3, 3), (1, 3, 2), (1, 3, 1))
    };
    (@arms $b:expr, $offs:expr, $shape:expr; $(($r:literal, $c:literal, $j:literal)),*) => {
        match $shape {
            $(($r, $c, $j) => $b.run::<$r, $c, $j>($offs),)*
            other => unreachable!("no register block {other:?}"),
        }
    };
}

/// Whether the weight gradient of `g` can run here.
pub(crate) fn usable(g: &ConvGeom) -> bool {
    isa() == Isa::Avx512 && g.p.dilation == [1, 1] && g.p.groups == 1
}

/// Weight gradient of a chunk of images, accumulated as `[c][tap][o]` (output channels
/// padded to whole register blocks).
pub(crate) struct GradWeight {
    g: ConvGeom,
    /// Output channels padded to whole register blocks.
    op: usize,
    /// Input channels padded to whole register blocks (the padding planes are zero).
    cp: usize,
    /// Output channel registers per block (1 or 2) and input channels per block.
    regs: usize,
    chans: usize,
    /// Offset of each output pixel's first tap in a padded input plane.
    offs: Vec<usize>,
    acc: Vec<f32>,
}

impl GradWeight {
    /// An empty accumulator for `g` (which must be [`usable`]).
    pub(crate) fn new(g: &ConvGeom) -> Self {
        let (regs, chans) = block_shape(g.o, g.c, g.kw);
        // Whole register blocks, so the last block's registers stay inside each row.
        let op = g.o.div_ceil(regs * LANES) * regs * LANES;
        let cp = g.c.div_ceil(chans) * chans;
        let [sh, sw] = g.p.stride;
        let wp = g.w + 2 * g.p.padding[1];
        let offs = (0..g.oh)
            .flat_map(|y| (0..g.ow).map(move |x| y * sh * wp + x * sw))
            .collect();
        let acc = vec![0f32; cp * g.kh * g.kw * op];
        GradWeight {
            g: *g,
            op,
            cp,
            regs,
            chans,
            offs,
            acc,
        }
    }

    fn padded(&self) -> (usize, usize) {
        let p = self.g.p.padding;
        (self.g.h + 2 * p[0], self.g.w + 2 * p[1])
    }

    /// Adds image `x[c, h, w]`, `dy[o, oh, ow]`.
    pub(crate) fn add_image(&mut self, x: &[f32], dy: &[f32]) {
        let g = self.g;
        let (hp, wp) = self.padded();
        let plane = g.oh * g.ow;
        assert!(x.len() >= g.c * g.h * g.w && dy.len() >= g.o * plane);
        let tile = (TILE_BYTES / 4 / (self.regs * LANES)).max(1);
        let xp_len = self.cp * hp * wp;
        with_scratch(xp_len + tile * self.op, |buf| {
            let (xp, dyt) = buf.split_at_mut(xp_len);
            pad(x, xp, &g, self.cp);
            for start in (0..plane).step_by(tile) {
                let n = (plane - start).min(tile);
                transpose(dy, dyt, g.o, self.op, plane, start, n);
                #[cfg(target_arch = "x86_64")]
                {
                    assert!(
                        std::is_x86_feature_detected!("avx512f"),
                        "direct conv needs AVX-512"
                    );
                    // SAFETY: AVX-512F was detected just above; `block` documents the bounds
                    // it relies on, which `new`, `pad` and `transpose` establish.
                    unsafe { self.tile_avx512(xp, dyt, start..start + n) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("direct conv is only selected on x86-64 with AVX-512")
            }
        })
    }

    /// Every register block of one tile of output pixels (`dyt` holds their `dy`).
    ///
    /// # Safety
    /// AVX-512F; `xp` holds `cp` padded planes, `dyt` `n x op` values; every offset plus the
    /// largest tap offset `(kh − 1)·wp + kw − 1` lies inside a padded plane.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512(&mut self, xp: &[f32], dyt: &[f32], pixels: std::ops::Range<usize>) {
        let g = self.g;
        let offs = &self.offs[pixels];
        let (hp, wp) = self.padded();
        assert!(
            self.op.is_multiple_of(self.regs * LANES)
                && self.cp.is_multiple_of(self.chans)
                && self.acc.len() >= self.cp * g.kh * g.kw * self.op
                && dyt.len() >= offs.len() * self.op
                && xp.len() >= self.cp * hp * wp,
            "weight-gradient blocks must lie inside their buffers"
        );
        let (op, taps) = (self.op, g.kh * g.kw);
        for ob in (0..op).step_by(self.regs * LANES) {
            for cb in (0..self.cp).step_by(self.chans) {
                for ki in 0..g.kh {
                    let mut kj = 0;
                    while kj < g.kw {
                        let j = (g.kw - kj).min(TAPS);
                        let b = Block {
                            x: xp[(cb * hp + ki) * wp + kj..].as_ptr(),
                            plane: hp * wp,
                            dy: dyt[ob..].as_ptr(),
                            op,
                            acc: self.acc[(cb * taps + ki * g.kw + kj) * op + ob..].as_mut_ptr(),
                            c_stride: taps * op,
                        };
                        // SAFETY: the caller's contract; the block's channels, taps and
                        // output registers are inside `acc` (`cp·taps·op` values).
                        unsafe { dispatch!(b, offs, (self.regs, self.chans, j)) }
                        kj += j;
                    }
                }
            }
        }
    }

    /// The summed gradient `dw[o, c, kh, kw]`, added to `dw`.
    pub(crate) fn finish_into(&self, dw: &mut [f32]) {
        let g = &self.g;
        let taps = g.kh * g.kw;
        for o in 0..g.o {
            for c in 0..g.c {
                for t in 0..taps {
                    dw[(o * g.c + c) * taps + t] += self.acc[(c * taps + t) * self.op + o];
                }
            }
        }
    }
}

/// One register block: `R` registers of output channels x `C` input channels x `J`
/// consecutive taps of one kernel row.
struct Block {
    /// First channel's padded plane, at the block's first tap.
    x: *const f32,
    /// Floats per padded plane.
    plane: usize,
    /// The tile's transposed `dy` at the block's first output channel (`op` per pixel).
    dy: *const f32,
    op: usize,
    /// Accumulators of the block's first channel and tap (taps `op` apart, channels
    /// `c_stride`).
    acc: *mut f32,
    c_stride: usize,
}

impl Block {
    /// # Safety
    /// AVX-512F; `x + c·plane + off + j` is readable for every channel `c < C`, tap `j < J`
    /// and `off` in `offs`; `dy + p·op + r·16 ..+16` for every pixel `p` and register `r < R`;
    /// `acc + c·c_stride + j·op + r·16 ..+16` readable and writable.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const R: usize, const C: usize, const J: usize>(&self, offs: &[usize]) {
        use std::arch::x86_64::*;
        // SAFETY: the contract above bounds every pointer.
        unsafe {
            let mut a = [[[_mm512_setzero_ps(); R]; J]; C];
            for (c, taps) in a.iter_mut().enumerate() {
                for (j, regs) in taps.iter_mut().enumerate() {
                    for (r, v) in regs.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(
                            self.acc.add(c * self.c_stride + j * self.op + r * LANES),
                        );
                    }
                }
            }
            let mut p = 0;
            while p < offs.len() {
                let off = offs[p];
                // With one register of output channels, two neighbouring pixels of a row
                // share their taps' inputs (pixel p + 1 at tap j reads what pixel p reads
                // at tap j + 1): J + 1 broadcasts feed 2·J·C fused multiply-adds, where
                // broadcasts alone would keep the load ports as busy as the FMA units.
                if R == 1 && p + 1 < offs.len() && offs[p + 1] == off + 1 {
                    let d0 = _mm512_loadu_ps(self.dy.add(p * self.op));
                    let d1 = _mm512_loadu_ps(self.dy.add((p + 1) * self.op));
                    let xo = self.x.add(off);
                    for (c, taps) in a.iter_mut().enumerate() {
                        let xc = xo.add(c * self.plane);
                        let mut xv = [_mm512_setzero_ps(); TAPS + 1];
                        for (k, v) in xv.iter_mut().enumerate().take(J + 1) {
                            *v = _mm512_set1_ps(*xc.add(k));
                        }
                        for (j, regs) in taps.iter_mut().enumerate() {
                            regs[0] = _mm512_fmadd_ps(d0, xv[j], regs[0]);
                            regs[0] = _mm512_fmadd_ps(d1, xv[j + 1], regs[0]);
                        }
                    }
                    p += 2;
                    continue;
                }
                let mut d = [_mm512_setzero_ps(); R];
                for (r, v) in d.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(self.dy.add(p * self.op + r * LANES));
                }
                let xo = self.x.add(off);
                for (c, taps) in a.iter_mut().enumerate() {
                    let xc = xo.add(c * self.plane);
                    for (j, regs) in taps.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(*xc.add(j));
                        for (v, dv) in regs.iter_mut().zip(&d) {
                            *v = _mm512_fmadd_ps(*dv, xv, *v);
                        }
                    }
                }
                p += 1;
            }
            for (c, taps) in a.iter().enumerate() {
                for (j, regs) in taps.iter().enumerate() {
                    for (r, v) in regs.iter().enumerate() {
                        _mm512_storeu_ps(
                            self.acc.add(c * self.c_stride + j * self.op + r * LANES),
                            *v,
                        );
                    }
                }
            }
        }
    }
}

/// Copies the `c` planes of `x` into `cp ≥ c` zero-bordered planes of `xp` (planes past `c`
/// all zero). Each padded row is written in 16-lane pieces whose lanes past the input row
/// read as zero (masked loads), instead of a `memcpy` and two `memset` calls per row of 8–32
/// values (5% of a training step).
fn pad(x: &[f32], xp: &mut [f32], g: &ConvGeom, cp: usize) {
    let [ph, pw] = g.p.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    assert!(x.len() >= g.c * g.h * g.w && xp.len() >= cp * hp * wp);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is there (`usable`); the assert above bounds the planes `pad_avx512`
    // walks.
    unsafe {
        pad_avx512(x, xp, g, cp)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct conv is only selected on x86-64 with AVX-512")
}

/// # Safety
/// AVX-512F; `x` holds `c` planes of `h x w`, `xp` `cp` padded planes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pad_avx512(x: &[f32], xp: &mut [f32], g: &ConvGeom, cp: usize) {
    use std::arch::x86_64::*;
    let [ph, pw] = g.p.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    for c in 0..cp {
        for yp in 0..hp {
            let dst = xp[(c * hp + yp) * wp..][..wp].as_mut_ptr();
            // The input row, if this padded row has one.
            let src = (c < g.c && (ph..ph + g.h).contains(&yp))
                .then(|| x[(c * g.h + yp - ph) * g.w..][..g.w].as_ptr());
            for j in (0..wp).step_by(LANES) {
                let n = (wp - j).min(LANES);
                let store: __mmask16 = if n == LANES { !0 } else { (1 << n) - 1 };
                // Lanes `l` with input column `j + l − pw` in `0..w`.
                let lo = pw.saturating_sub(j).min(LANES);
                let hi = (pw + g.w).saturating_sub(j).min(n);
                let load: __mmask16 = if hi > lo {
                    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
                } else {
                    0
                };
                // SAFETY: enabled load lanes are input columns `0..w` of the row; the store
                // lanes are inside the padded row. Disabled lanes are not accessed.
                unsafe {
                    let v = match src {
                        Some(src) if load != 0 => {
                            _mm512_maskz_loadu_ps(load, src.wrapping_add(j).wrapping_sub(pw))
                        }
                        _ => _mm512_setzero_ps(),
                    };
                    _mm512_mask_storeu_ps(dst.add(j), store, v);
                }
            }
        }
    }
}

/// `dyt[p][o] = dy[o][start + p]` for `p < n`, output channels `o ≥ co` (up to `op`) zero:
/// 16x16 blocks in registers, partial blocks one value at a time.
fn transpose(
    dy: &[f32],
    dyt: &mut [f32],
    co: usize,
    op: usize,
    plane: usize,
    start: usize,
    n: usize,
) {
    assert!(dy.len() >= co * plane && start + n <= plane && dyt.len() >= n * op && co <= op);
    for o0 in (0..co).step_by(LANES) {
        for p0 in (0..n).step_by(LANES) {
            let (on, pn) = ((co - o0).min(LANES), (n - p0).min(LANES));
            #[cfg(target_arch = "x86_64")]
            if on == LANES && pn == LANES {
                // SAFETY: AVX-512F is there (`usable`); rows `o0..o0 + 16` of `dy` hold
                // pixels `start + p0 ..+16` and rows `p0..p0 + 16` of `dyt` channels
                // `o0..o0 + 16` (the assert above).
                unsafe {
                    transpose16(
                        dy[o0 * plane + start + p0..].as_ptr(),
                        plane,
                        dyt[p0 * op + o0..].as_mut_ptr(),
                        op,
                    )
                };
                continue;
            }
            for o in o0..o0 + on {
                let src = &dy[o * plane + start + p0..][..pn];
                for (p, &v) in src.iter().enumerate() {
                    dyt[(p0 + p) * op + o] = v;
                }
            }
        }
    }
    if co < op {
        for p in 0..n {
            dyt[p * op + co..(p + 1) * op].fill(0.0);
        }
    }
}

/// Transposes the 16x16 block at `src` (rows `src_stride` apart) into `dst` (rows
/// `dst_stride` apart): three rounds of in-register shuffles.
///
/// # Safety
/// AVX-512F; 16 rows of 16 floats readable at `src`, writable at `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let mut r = [_mm512_setzero_ps(); LANES];
        for (i, v) in r.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(src.add(i * src_stride));
        }
        // Pairs of rows interleaved within 128-bit lanes: [a0 b0 a1 b1 | a4 b4 a5 b5 | ..].
        let mut t = [_mm512_setzero_ps(); LANES];
        for i in (0..LANES).step_by(2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        // Quads: r[4q + j] holds column j of rows 4q..4q + 4 in each 128-bit lane.
        for q in (0..LANES).step_by(4) {
            r[q] = _mm512_shuffle_ps::<0x44>(t[q], t[q + 2]);
            r[q + 1] = _mm512_shuffle_ps::<0xEE>(t[q], t[q + 2]);
            r[q + 2] = _mm512_shuffle_ps::<0x44>(t[q + 1], t[q + 3]);
            r[q + 3] = _mm512_shuffle_ps::<0xEE>(t[q + 1], t[q + 3]);
        }
        // 128-bit lanes: even lanes of the first and second quad of rows, then odd ones.
        for j in 0..4 {
            for h in 0..2 {
                let (a, b) = (r[8 * h + j], r[8 * h + 4 + j]);
                t[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                t[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(a, b);
            }
        }
        for j in 0..8 {
            r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
            r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[8 + j]);
        }
        for (i, v) in r.iter().enumerate() {
            _mm512_storeu_ps(dst.add(i * dst_stride), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Conv2dParams;

    fn geom(c: usize, hw: usize, o: usize, k: [usize; 2], stride: usize, pad: usize) -> ConvGeom {
        let p = Conv2dParams::square(stride, pad, 1, 1);
        ConvGeom::from_dims(&[1, c, hw, hw + 1], &[o, c, k[0], k[1]], &p).expect("valid shape")
    }

    /// `dw` by the defining sum, in f64.
    fn naive(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f64> {
        let mut dw = vec![0f64; g.o * g.c * g.kh * g.kw];
        for o in 0..g.o {
            for c in 0..g.c {
                for ki in 0..g.kh {
                    for kj in 0..g.kw {
                        let mut s = 0f64;
                        for y in 0..g.oh {
                            for xx in 0..g.ow {
                                let iy =
                                    (y * g.p.stride[0] + ki) as isize - g.p.padding[0] as isize;
                                let ix =
                                    (xx * g.p.stride[1] + kj) as isize - g.p.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[(c * g.h + iy as usize) * g.w + ix as usize];
                                s += f64::from(dy[(o * g.oh + y) * g.ow + xx]) * f64::from(xv);
                            }
                        }
                        dw[((o * g.c + c) * g.kh + ki) * g.kw + kj] = s;
                    }
                }
            }
        }
        dw
    }

    #[test]
    fn every_register_block_shape_matches_the_defining_sum() {
        if isa() != Isa::Avx512 {
            return;
        }
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // Output channels around one and two registers (partial blocks), input channels
        // 1-3 (one block), 5 (padded planes) and 13; kernels 1x1, 3x3, 5x5 (taps 3 + 2) and
        // 1x2; strides 1-3.
        for o in [1, 16, 17, 33, 40] {
            for c in [1, 3, 5, 13] {
                for (k, stride, pad) in [
                    ([3, 3], 1, 1),
                    ([1, 1], 2, 0),
                    ([5, 5], 1, 2),
                    ([3, 3], 2, 1),
                    ([1, 2], 3, 0),
                ] {
                    let g = geom(c, 9, o, k, stride, pad);
                    let x: Vec<f32> = (0..c * g.h * g.w).map(|_| next()).collect();
                    let dy: Vec<f32> = (0..o * g.oh * g.ow).map(|_| next()).collect();
                    let mut gw = GradWeight::new(&g);
                    gw.add_image(&x, &dy);
                    gw.add_image(&x, &dy);
                    let mut dw = vec![0f32; o * c * k[0] * k[1]];
                    gw.finish_into(&mut dw);
                    for (i, (&got, want)) in dw.iter().zip(naive(&x, &dy, &g)).enumerate() {
                        let want = 2.0 * want;
                        assert!(
                            (f64::from(got) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "o {o} c {c} k {k:?} stride {stride}: dw[{i}] = {got}, want {want}"
                        );
                    }
                }
            }
        }
    }
}
