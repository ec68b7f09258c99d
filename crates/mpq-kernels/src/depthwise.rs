//! Depthwise conv2d (one input and one output channel per group) as direct loops over
//! planes: forward, input gradient, weight/bias gradient. Stride-1 kernels of up to 9 taps
//! run the AVX-512 planes of `depthwise_avx512` where the CPU has them.

use crate::depthwise_avx512 as fast;
use crate::im2col::valid_range;
use crate::params::ConvGeom;
use crate::simd::multiversion;
use crate::uninit::filled;
use rayon::prelude::*;

/// Planes per rayon task, so tiny planes (7x7) are not one task each.
fn min_planes(plane: usize) -> usize {
    (4096 / plane.max(1)).max(1)
}

/// Forward depthwise conv.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let (hw, p, kk) = (g.hw(), g.ohw(), g.kh * g.kw);
    if fast::usable(g) {
        let pl = fast::Plane::forward(g);
        // SAFETY: the planes cover the output and `correlate` writes all of its plane.
        return unsafe {
            filled(g.n * g.o * p, |y| {
                y.par_chunks_mut(p)
                    .enumerate()
                    .with_min_len(min_planes(p))
                    .for_each(|(i, yp)| {
                        let c = i % g.o;
                        let b = bias.map_or(0.0, |b| b[c]);
                        fast::correlate(
                            &x[i * hw..(i + 1) * hw],
                            &w[c * kk..(c + 1) * kk],
                            b,
                            yp,
                            &pl,
                        )
                    })
            })
        };
    }
    let mut y = vec![0f32; g.n * g.o * p];
    y.par_chunks_mut(p)
        .enumerate()
        .with_min_len(min_planes(p))
        .for_each(|(i, yp)| {
            let c = i % g.o;
            let xp = &x[i * hw..(i + 1) * hw];
            let wk = &w[c * kk..(c + 1) * kk];
            yp.fill(bias.map_or(0.0, |b| b[c]));
            fwd_plane(xp, wk, yp, g);
        });
    y
}

/// Input gradient of the depthwise conv.
pub(crate) fn grad_input(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (hw, p, kk) = (g.hw(), g.ohw(), g.kh * g.kw);
    if fast::usable(g) {
        let pl = fast::Plane::input_grad(g);
        // Each channel's kernel flipped in both axes.
        let flipped: Vec<f32> = (0..g.c)
            .flat_map(|c| (0..kk).rev().map(move |t| w[c * kk + t]))
            .collect();
        // SAFETY: as in `forward`.
        return unsafe {
            filled(g.n * g.c * hw, |dx| {
                dx.par_chunks_mut(hw)
                    .enumerate()
                    .with_min_len(min_planes(hw))
                    .for_each(|(i, dxp)| {
                        let c = i % g.c;
                        let k = &flipped[c * kk..(c + 1) * kk];
                        fast::correlate(&dy[i * p..(i + 1) * p], k, 0.0, dxp, &pl)
                    })
            })
        };
    }
    let mut dx = vec![0f32; g.n * g.c * hw];
    dx.par_chunks_mut(hw)
        .enumerate()
        .with_min_len(min_planes(hw))
        .for_each(|(i, dxp)| {
            let c = i % g.c;
            let dyp = &dy[i * p..(i + 1) * p];
            let wk = &w[c * kk..(c + 1) * kk];
            grad_input_plane(dyp, wk, dxp, g);
        });
    dx
}

/// Weight gradient `[c, 1, kh, kw]` and optional bias gradient `[c]` of the depthwise conv.
pub(crate) fn grad_weight(
    x: &[f32],
    dy: &[f32],
    g: &ConvGeom,
    want_bias: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (hw, p, kk) = (g.hw(), g.ohw(), g.kh * g.kw);
    let per_channel: Vec<(Vec<f32>, f32)> = (0..g.c)
        .into_par_iter()
        .map(|c| {
            let mut dwk = vec![0f32; kk];
            let mut db = 0f32;
            let mut sums = fast::usable(g).then(fast::TapSums::new);
            for n in 0..g.n {
                let i = n * g.c + c;
                let xp = &x[i * hw..(i + 1) * hw];
                let dyp = &dy[i * p..(i + 1) * p];
                match &mut sums {
                    Some(s) => s.add_plane(xp, dyp, g),
                    None => grad_weight_plane(xp, dyp, &mut dwk, g),
                }
                if want_bias {
                    db += dyp.iter().sum::<f32>();
                }
            }
            if let Some(s) = &sums {
                for (t, d) in dwk.iter_mut().enumerate() {
                    *d = s.total(t);
                }
            }
            (dwk, db)
        })
        .collect();
    let mut dw = Vec::with_capacity(g.c * kk);
    let mut db = Vec::with_capacity(g.c);
    for (k, b) in per_channel {
        dw.extend_from_slice(&k);
        db.push(b);
    }
    (dw, want_bias.then_some(db))
}

/// Dot product with 8 independent accumulators so it vectorizes without fast-math.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Valid `(input row, tap row)` pairs of output row `oy`, then per tap column the output
/// span `xlo..xhi` and the input column `start` of `xlo`. Expanded inline by each kernel.
macro_rules! taps {
    ($g:expr, |$oy:ident, $iy:ident, $t:ident, $xlo:ident, $xhi:ident, $start:ident| $body:block) => {{
        let g: &ConvGeom = $g;
        let [sh, sw] = g.p.stride;
        let [dh, dw] = g.p.dilation;
        let [ph, pw] = g.p.padding;
        for $oy in 0..g.oh {
            for ki in 0..g.kh {
                let iy = (($oy * sh + ki * dh) as isize) - ph as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let $iy = iy as usize;
                for kj in 0..g.kw {
                    let offw = (kj * dw) as isize - pw as isize;
                    let ($xlo, $xhi) = valid_range(g.ow, sw, offw, g.w);
                    if $xlo < $xhi {
                        let $start = (($xlo * sw) as isize + offw) as usize;
                        let $t = ki * g.kw + kj;
                        $body
                    }
                }
            }
        }
    }};
}

multiversion! {
    /// `yp += Σ_taps w · shifted xp` for one plane.
    fn fwd_plane(xp: &[f32], wk: &[f32], yp: &mut [f32], g: &ConvGeom) = fwd_plane_impl;
}

#[inline(always)]
fn fwd_plane_impl(xp: &[f32], wk: &[f32], yp: &mut [f32], g: &ConvGeom) {
    let sw = g.p.stride[1];
    taps!(g, |oy, iy, t, xlo, xhi, start| {
        let wv = wk[t];
        let src = &xp[iy * g.w..(iy + 1) * g.w];
        let dst = &mut yp[oy * g.ow + xlo..oy * g.ow + xhi];
        if sw == 1 {
            for (d, s) in dst.iter_mut().zip(&src[start..]) {
                *d += wv * s;
            }
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                *d += wv * src[start + j * sw];
            }
        }
    })
}

multiversion! {
    /// `dxp += Σ_taps w · scattered dyp` for one plane.
    fn grad_input_plane(dyp: &[f32], wk: &[f32], dxp: &mut [f32], g: &ConvGeom) = grad_input_plane_impl;
}

#[inline(always)]
fn grad_input_plane_impl(dyp: &[f32], wk: &[f32], dxp: &mut [f32], g: &ConvGeom) {
    let sw = g.p.stride[1];
    taps!(g, |oy, iy, t, xlo, xhi, start| {
        let wv = wk[t];
        let src = &dyp[oy * g.ow + xlo..oy * g.ow + xhi];
        let dst = &mut dxp[iy * g.w..(iy + 1) * g.w];
        if sw == 1 {
            for (d, s) in dst[start..].iter_mut().zip(src) {
                *d += wv * s;
            }
        } else {
            for (j, s) in src.iter().enumerate() {
                dst[start + j * sw] += wv * s;
            }
        }
    })
}

multiversion! {
    /// `dwk[tap] += Σ dyp · shifted xp` for one plane.
    fn grad_weight_plane(xp: &[f32], dyp: &[f32], dwk: &mut [f32], g: &ConvGeom) = grad_weight_plane_impl;
}

#[inline(always)]
fn grad_weight_plane_impl(xp: &[f32], dyp: &[f32], dwk: &mut [f32], g: &ConvGeom) {
    let sw = g.p.stride[1];
    taps!(g, |oy, iy, t, xlo, xhi, start| {
        let d = &dyp[oy * g.ow + xlo..oy * g.ow + xhi];
        let src = &xp[iy * g.w..(iy + 1) * g.w];
        dwk[t] += if sw == 1 {
            dot(d, &src[start..start + d.len()])
        } else {
            let mut acc = 0f32;
            for (j, dv) in d.iter().enumerate() {
                acc += dv * src[start + j * sw];
            }
            acc
        };
    })
}
