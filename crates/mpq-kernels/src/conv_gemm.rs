//! Dense and grouped conv2d as im2col + GEMM: forward, input gradient, weight/bias gradient.
//! Dense convs with dilation 1 (other than unstrided 1x1 ones, a plain GEMM) run all three
//! through the direct AVX-512 kernels of `direct` and `direct_gw` instead, where the CPU has
//! them.
//!
//! Work is split over the batch (one image per task, GEMMs single-threaded inside) when the
//! batch can keep every rayon thread busy, and over the GEMM itself otherwise.

use crate::direct;
use crate::direct_gw;
use crate::im2col::{col2im_add, im2col};
use crate::params::ConvGeom;
use crate::scratch::with_scratch;
use crate::simd::{Mat, sgemm};
use crate::uninit::filled;
use rayon::prelude::*;

/// Whether to parallelize over images (true) or inside each GEMM (false).
fn batch_parallel(n: usize) -> bool {
    let t = rayon::current_num_threads();
    t > 1 && n >= 2 * t
}

/// Runs `f(image, out_chunk, par_gemm)` for each image's `per`-sized chunk of `out`.
fn for_each_image<T: Send, F>(out: &mut [T], per: usize, n: usize, f: F)
where
    F: Fn(usize, &mut [T], bool) + Sync,
{
    if per == 0 {
        return;
    }
    if batch_parallel(n) {
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, o)| f(i, o, false));
    } else {
        for (i, o) in out.chunks_mut(per).enumerate() {
            f(i, o, true)
        }
    }
}

/// Forward conv: `y[n, o, oh, ow]` from `x[n, c, h, w]`, `w[o, cg, kh, kw]`, optional bias;
/// zero where the optional `mask` (laid out as `y`) is 0.
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    mask: Option<&[u8]>,
    g: &ConvGeom,
) -> Vec<f32> {
    let (cg, og, k, hw, p) = (g.cg(), g.og(), g.k(), g.hw(), g.ohw());
    if direct::usable(g) {
        let f = direct::Forward::new(w, g);
        // SAFETY: the images' chunks cover the output and `Forward::image` writes all of its
        // chunk.
        return unsafe {
            filled(g.n * g.o * p, |y| {
                for_each_image(y, g.o * p, g.n, |n, yn, _| {
                    let mn = mask.map(|m| &m[n * g.o * p..(n + 1) * g.o * p]);
                    f.image(&x[n * g.c * hw..(n + 1) * g.c * hw], bias, mn, yn)
                })
            })
        };
    }
    let mut y = vec![0f32; g.n * g.o * p];
    let col_len = if g.is_pointwise() { 0 } else { k * p };
    for_each_image(&mut y, g.o * p, g.n, |n, yn, par| {
        let xn = &x[n * g.c * hw..(n + 1) * g.c * hw];
        with_scratch(col_len, |col| {
            for gi in 0..g.p.groups {
                let xg = &xn[gi * cg * hw..(gi + 1) * cg * hw];
                let yg = &mut yn[gi * og * p..(gi + 1) * og * p];
                let wg = &w[gi * og * k..(gi + 1) * og * k];
                let accumulate = match bias {
                    Some(b) => {
                        for (row, &bv) in yg.chunks_exact_mut(p).zip(&b[gi * og..]) {
                            row.fill(bv);
                        }
                        true
                    }
                    None => false,
                };
                let rhs = if g.is_pointwise() {
                    Mat::rows(xg, p)
                } else {
                    im2col(xg, col, g);
                    Mat::rows(col, p)
                };
                sgemm(og, p, k, yg, p, accumulate, Mat::rows(wg, k), rhs, par);
            }
        });
        if let Some(m) = mask {
            zero_masked(yn, &m[n * g.o * p..(n + 1) * g.o * p]);
        }
    });
    y
}

/// Input gradient: `dx[n, c, h, w]` from `dy[n, o, oh, ow]` and `w[o, cg, kh, kw]`, plus
/// `onto` (a gradient `dx` adds to, laid out as `dx`) if given, zero where `mask` (as `dx`)
/// is 0.
pub(crate) fn grad_input(
    dy: &[f32],
    w: &[f32],
    onto: Option<&[f32]>,
    mask: Option<&[u8]>,
    g: &ConvGeom,
) -> Vec<f32> {
    let (cg, og, k, hw, p) = (g.cg(), g.og(), g.k(), g.hw(), g.ohw());
    if direct::usable(g) {
        let f = direct::GradInput::new(w, g);
        // SAFETY: as in `forward`: `GradInput::image` writes all of its chunk.
        return unsafe {
            filled(g.n * g.c * hw, |dx| {
                for_each_image(dx, g.c * hw, g.n, |n, dxn, _| {
                    let on = onto.map(|o| &o[n * g.c * hw..(n + 1) * g.c * hw]);
                    let mn = mask.map(|m| &m[n * g.c * hw..(n + 1) * g.c * hw]);
                    f.image(&dy[n * g.o * p..(n + 1) * g.o * p], on, mn, dxn)
                })
            })
        };
    }
    let mut dx = match onto {
        Some(o) => o[..g.n * g.c * hw].to_vec(),
        None => vec![0f32; g.n * g.c * hw],
    };
    let col_len = if g.is_pointwise() { 0 } else { k * p };
    for_each_image(&mut dx, g.c * hw, g.n, |n, dxn, par| {
        let dyn_ = &dy[n * g.o * p..(n + 1) * g.o * p];
        with_scratch(col_len, |col| {
            for gi in 0..g.p.groups {
                let dyg = &dyn_[gi * og * p..(gi + 1) * og * p];
                let dxg = &mut dxn[gi * cg * hw..(gi + 1) * cg * hw];
                let wt = Mat::transposed(&w[gi * og * k..(gi + 1) * og * k], k);
                if g.is_pointwise() {
                    sgemm(k, p, og, dxg, p, onto.is_some(), wt, Mat::rows(dyg, p), par);
                } else {
                    sgemm(k, p, og, col, p, false, wt, Mat::rows(dyg, p), par);
                    col2im_add(col, dxg, g);
                }
            }
        })
    });
    if let Some(m) = mask {
        zero_masked(&mut dx, m);
    }
    dx
}

/// `v[i] = 0` where `mask[i] == 0` (a frozen ReLU applied after the fact, where a kernel
/// could not apply it as it wrote `v`).
pub(crate) fn zero_masked(v: &mut [f32], mask: &[u8]) {
    v.iter_mut()
        .zip(mask)
        .filter(|(_, m)| **m == 0)
        .for_each(|(x, _)| *x = 0.0);
}

/// Weight gradient `dw[o, cg, kh, kw]` and, if asked, bias gradient `db[o]`, from
/// `x[n, c, h, w]` and `dy[n, o, oh, ow]`.
pub(crate) fn grad_weight(
    x: &[f32],
    dy: &[f32],
    g: &ConvGeom,
    want_bias: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (cg, og, k, hw, p) = (g.cg(), g.og(), g.k(), g.hw(), g.ohw());
    let col_len = if g.is_pointwise() { 0 } else { k * p };
    let nb = if want_bias { g.o } else { 0 };
    // Accumulates image `n` into `acc = [dw (o*k) | db (nb)]`.
    let add_image = |acc: &mut [f32], n: usize, par: bool| {
        let xn = &x[n * g.c * hw..(n + 1) * g.c * hw];
        let dyn_ = &dy[n * g.o * p..(n + 1) * g.o * p];
        let (dw, db) = acc.split_at_mut(g.o * k);
        with_scratch(col_len, |col| {
            for gi in 0..g.p.groups {
                let xg = &xn[gi * cg * hw..(gi + 1) * cg * hw];
                let dyg = &dyn_[gi * og * p..(gi + 1) * og * p];
                let dwg = &mut dw[gi * og * k..(gi + 1) * og * k];
                let rhs = if g.is_pointwise() {
                    Mat::transposed(xg, p)
                } else {
                    im2col(xg, col, g);
                    Mat::transposed(col, p)
                };
                sgemm(og, k, p, dwg, k, true, Mat::rows(dyg, p), rhs, par);
            }
        });
        for (b, row) in db.iter_mut().zip(dyn_.chunks_exact(p)) {
            *b += row.iter().sum::<f32>();
        }
    };
    let len = g.o * k + nb;
    if direct_gw::usable(g) && !g.is_pointwise() {
        let mut dw = sum_over_chunks(g.n, len, batch_parallel(g.n), |images| {
            let mut gw = direct_gw::GradWeight::new(g);
            let mut acc = vec![0f32; len];
            for n in images {
                let dyn_ = &dy[n * g.o * p..(n + 1) * g.o * p];
                gw.add_image(&x[n * g.c * hw..(n + 1) * g.c * hw], dyn_);
                for (b, row) in acc[g.o * k..].iter_mut().zip(dyn_.chunks_exact(p)) {
                    *b += row.iter().sum::<f32>();
                }
            }
            gw.finish_into(&mut acc[..g.o * k]);
            acc
        });
        let db = want_bias.then(|| dw.split_off(g.o * k));
        return (dw, db);
    }
    let acc = if batch_parallel(g.n) {
        sum_over_chunks(g.n, len, true, |images| {
            let mut acc = vec![0f32; len];
            for n in images {
                add_image(&mut acc, n, false);
            }
            acc
        })
    } else {
        let mut acc = vec![0f32; len];
        for n in 0..g.n {
            add_image(&mut acc, n, true);
        }
        acc
    };
    let mut dw = acc;
    let db = want_bias.then(|| dw.split_off(g.o * k));
    (dw, db)
}

/// `Σ_chunks chunk(images)` over fixed chunks of the `n` images, each accumulated by
/// `chunk` in image order and summed in chunk order, so the result does not depend on how
/// rayon schedules the work (reproducible runs); the chunks run in parallel if `parallel`.
fn sum_over_chunks<F>(n: usize, len: usize, parallel: bool, chunk: F) -> Vec<f32>
where
    F: Fn(std::ops::Range<usize>) -> Vec<f32> + Sync,
{
    const CHUNKS: usize = 8;
    let per = n.div_ceil(CHUNKS).max(1);
    let range = |c: usize| c * per..((c + 1) * per).min(n);
    let partial: Vec<Vec<f32>> = if parallel {
        (0..n.div_ceil(per))
            .into_par_iter()
            .map(|c| chunk(range(c)))
            .collect()
    } else {
        (0..n.div_ceil(per)).map(|c| chunk(range(c))).collect()
    };
    let mut acc = vec![0f32; len];
    for part in &partial {
        acc.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    acc
}
