//! im2col / col2im for one image and one channel group.
//!
//! The column matrix has `cg * kh * kw` rows (channel-major, then kernel row, then kernel
//! column, matching the weight layout `[o, cg, kh, kw]`) and `oh * ow` columns.

use crate::params::ConvGeom;
use crate::simd::multiversion;

/// Range of output positions `o` whose input index `o * stride + off` lies in `0..len`,
/// where `off = tap * dilation - pad` may be negative.
#[inline(always)]
pub(crate) fn valid_range(out: usize, stride: usize, off: isize, len: usize) -> (usize, usize) {
    let s = stride as isize;
    // smallest o with o*s + off >= 0
    let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
    // largest o with o*s + off <= len-1, plus one
    let hi = if (len as isize) - off <= 0 {
        0
    } else {
        ((len as isize - 1 - off) / s + 1).min(out as isize)
    };
    let lo = lo.min(out as isize) as usize;
    (lo, (hi.max(lo as isize)) as usize)
}

/// For each kernel tap `(ki, kj)` in weight order: the offsets `offh`, `offw` of its input
/// row and column from the output's (`tap·dilation − padding`) and the output rows
/// `ylo..yhi` and columns `xlo..xhi` whose input lies inside the image. A macro, so the body
/// is compiled inside each `multiversion!` loop (a closure would keep baseline code).
macro_rules! for_each_tap {
    ($g:expr, |$offh:ident, ($ylo:ident, $yhi:ident), $offw:ident, ($xlo:ident, $xhi:ident)| $body:block) => {{
        let g: &ConvGeom = $g;
        for ki in 0..g.kh {
            let $offh = (ki * g.p.dilation[0]) as isize - g.p.padding[0] as isize;
            let ($ylo, $yhi) = valid_range(g.oh, g.p.stride[0], $offh, g.h);
            for kj in 0..g.kw {
                let $offw = (kj * g.p.dilation[1]) as isize - g.p.padding[1] as isize;
                let ($xlo, $xhi) = valid_range(g.ow, g.p.stride[1], $offw, g.w);
                $body
            }
        }
    }};
}

multiversion! {
    /// Fills `col` (`k x ohw`) from the `cg` input planes in `x` (`cg x h x w`).
    pub(crate) fn im2col(x: &[f32], col: &mut [f32], g: &ConvGeom) = im2col_impl;
}

#[inline(always)]
fn im2col_impl(x: &[f32], col: &mut [f32], g: &ConvGeom) {
    let (ow, hw, [sh, sw]) = (g.ow, g.hw(), g.p.stride);
    let mut rows = col.chunks_exact_mut(g.ohw());
    for c in 0..g.cg() {
        let plane = &x[c * hw..(c + 1) * hw];
        for_each_tap!(g, |offh, (ylo, yhi), offw, (xlo, xhi)| {
            let row = rows.next().expect("col should have k rows");
            zero(&mut row[..ylo * ow]);
            zero(&mut row[yhi * ow..]);
            for y in ylo..yhi {
                let out = &mut row[y * ow..(y + 1) * ow];
                let iy = (y * sh) as isize + offh;
                let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                zero(&mut out[..xlo]);
                zero(&mut out[xhi..]);
                if xlo < xhi {
                    let start = (xlo * sw) as isize + offw;
                    let start = start as usize;
                    if sw == 1 {
                        // A plain loop: rows are short, so a memcpy call would dominate.
                        for (o, s) in out[xlo..xhi].iter_mut().zip(&src[start..]) {
                            *o = *s;
                        }
                    } else {
                        for (i, o) in out[xlo..xhi].iter_mut().enumerate() {
                            *o = src[start + i * sw];
                        }
                    }
                }
            }
        });
    }
}

/// Zeroes a short slice without a `memset` call.
#[inline(always)]
fn zero(s: &mut [f32]) {
    for v in s {
        *v = 0.0;
    }
}

multiversion! {
    /// Adds `col` (`k x ohw`) back into the `cg` input-gradient planes `dx` (`cg x h x w`).
    pub(crate) fn col2im_add(col: &[f32], dx: &mut [f32], g: &ConvGeom) = col2im_impl;
}

#[inline(always)]
fn col2im_impl(col: &[f32], dx: &mut [f32], g: &ConvGeom) {
    let (ow, hw, [sh, sw]) = (g.ow, g.hw(), g.p.stride);
    let mut rows = col.chunks_exact(g.ohw());
    for c in 0..g.cg() {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for_each_tap!(g, |offh, (ylo, yhi), offw, (xlo, xhi)| {
            let row = rows.next().expect("col should have k rows");
            if xlo >= xhi {
                continue;
            }
            for y in ylo..yhi {
                let src = &row[y * ow + xlo..y * ow + xhi];
                let iy = ((y * sh) as isize + offh) as usize;
                let start = ((xlo * sw) as isize + offw) as usize;
                let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                if sw == 1 {
                    for (d, s) in dst[start..start + src.len()].iter_mut().zip(src) {
                        *d += s;
                    }
                } else {
                    for (i, s) in src.iter().enumerate() {
                        dst[start + i * sw] += s;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    #[test]
    fn valid_range_matches_brute_force() {
        for out in 0..6 {
            for stride in 1..4 {
                for off in -4isize..4 {
                    for len in 0..8 {
                        let ok: Vec<usize> = (0..out)
                            .filter(|&o| {
                                let i = (o * stride) as isize + off;
                                i >= 0 && i < len as isize
                            })
                            .collect();
                        let (lo, hi) = valid_range(out, stride, off, len);
                        assert_eq!(
                            ok,
                            (lo..hi).collect::<Vec<_>>(),
                            "{out} {stride} {off} {len}"
                        );
                    }
                }
            }
        }
    }
}
