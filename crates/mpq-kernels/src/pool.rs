//! 2-D max and average pooling with padding and any stride, forward and backward, as candle
//! custom ops (candle's own pooling has no padding and no backward when kernel != stride).
//! Semantics follow PyTorch `nn.MaxPool2d` (padding acts as -inf) and `nn.AvgPool2d`
//! (`count_include_pad=True`, floor mode).

use candle::{Shape, Tensor};
use rayon::prelude::*;

use crate::op::{Arg, CpuOp, Grad, Op, apply2_no_bwd};

/// Window of a pooling: kernel, stride and padding per spatial dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding along height and width.
    pub padding: [usize; 2],
}

impl PoolParams {
    /// Output height and width for an input of `h` x `w`, or `None` when the window does not fit.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let oh = (h + 2 * self.padding[0]).checked_sub(self.kernel[0])? / self.stride[0] + 1;
        let ow = (w + 2 * self.padding[1]).checked_sub(self.kernel[1])? / self.stride[1] + 1;
        Some((oh, ow))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Max,
    Avg,
}

struct Pool {
    p: PoolParams,
    kind: Kind,
}

struct PoolBackward {
    p: PoolParams,
    kind: Kind,
}

fn dims4(a: Arg<'_>) -> candle::Result<(usize, usize, usize, usize)> {
    a.layout.shape().dims4()
}

/// Visits the window of output `(oy, ox)`: calls `f(iy, ix)` for every in-bounds input pixel.
#[inline]
fn window(
    p: &PoolParams,
    h: usize,
    w: usize,
    oy: usize,
    ox: usize,
    mut f: impl FnMut(usize, usize),
) {
    let y0 = (oy * p.stride[0]) as isize - p.padding[0] as isize;
    let x0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
    for ky in 0..p.kernel[0] as isize {
        let iy = y0 + ky;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        for kx in 0..p.kernel[1] as isize {
            let ix = x0 + kx;
            if ix < 0 || ix >= w as isize {
                continue;
            }
            f(iy as usize, ix as usize);
        }
    }
}

impl CpuOp<1> for Pool {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Max => "mpq-max-pool2d",
            Kind::Avg => "mpq-avg-pool2d",
        }
    }

    fn forward(&self, [x]: [Arg<'_>; 1]) -> candle::Result<(Vec<f32>, Shape)> {
        let (n, c, h, w) = dims4(x)?;
        let x = x.f32()?;
        let Some((oh, ow)) = self.p.out_hw(h, w) else {
            candle::bail!("pooling window larger than the padded input {h}x{w}")
        };
        let area = (self.p.kernel[0] * self.p.kernel[1]) as f32;
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(o, plane)| {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let v = match self.kind {
                            Kind::Max => {
                                let mut m = f32::NEG_INFINITY;
                                window(&self.p, h, w, oy, ox, |iy, ix| {
                                    m = m.max(plane[iy * w + ix])
                                });
                                m
                            }
                            Kind::Avg => {
                                let mut s = 0f32;
                                window(&self.p, h, w, oy, ox, |iy, ix| s += plane[iy * w + ix]);
                                s / area
                            }
                        };
                        o[oy * ow + ox] = v;
                    }
                }
            });
        Ok((out, Shape::from((n, c, oh, ow))))
    }

    fn backward(&self, g: Grad<'_, 1>) -> candle::Result<[Option<Tensor>; 1]> {
        let [arg] = g.args;
        let back = PoolBackward {
            p: self.p,
            kind: self.kind,
        };
        Ok([Some(apply2_no_bwd(arg, g.dy, back)?)])
    }
}

impl CpuOp<2> for PoolBackward {
    fn name(&self) -> &'static str {
        "mpq-pool2d-backward"
    }

    fn forward(&self, [x, g]: [Arg<'_>; 2]) -> candle::Result<(Vec<f32>, Shape)> {
        let (n, c, h, w) = dims4(x)?;
        let (_, _, oh, ow) = dims4(g)?;
        let (x, g) = (x.f32()?, g.f32()?);
        let area = (self.p.kernel[0] * self.p.kernel[1]) as f32;
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
            .for_each(|(o, (plane, gp))| {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let gv = gp[oy * ow + ox];
                        match self.kind {
                            Kind::Max => {
                                // The gradient goes to the first maximum, as in PyTorch.
                                let mut best = f32::NEG_INFINITY;
                                let mut at = usize::MAX;
                                window(&self.p, h, w, oy, ox, |iy, ix| {
                                    let v = plane[iy * w + ix];
                                    if v > best || at == usize::MAX {
                                        best = v;
                                        at = iy * w + ix;
                                    }
                                });
                                if at != usize::MAX {
                                    o[at] += gv;
                                }
                            }
                            Kind::Avg => {
                                window(&self.p, h, w, oy, ox, |iy, ix| o[iy * w + ix] += gv / area);
                            }
                        }
                    }
                }
            });
        Ok((out, Shape::from((n, c, h, w))))
    }
}

fn pool(x: &Tensor, p: &PoolParams, kind: Kind) -> candle::Result<Tensor> {
    if p.kernel.contains(&0) || p.stride.contains(&0) {
        candle::bail!("pooling kernel and stride must be positive")
    }
    if !x.device().is_cpu() || x.dtype() != candle::DType::F32 {
        return pool_fallback(x, p, kind);
    }
    x.contiguous()?.apply_op1(Op(Pool { p: *p, kind }))
}

/// Non-CPU devices: candle's pooling (padding emulated; backward only when kernel == stride).
fn pool_fallback(x: &Tensor, p: &PoolParams, kind: Kind) -> candle::Result<Tensor> {
    let mut x = x.clone();
    if p.padding != [0, 0] {
        let fill = match kind {
            Kind::Max => f32::MIN,
            Kind::Avg => 0.0,
        };
        x = pad_value(&x, p.padding, fill)?;
    }
    let k = (p.kernel[0], p.kernel[1]);
    let s = (p.stride[0], p.stride[1]);
    match kind {
        Kind::Max => x.max_pool2d_with_stride(k, s),
        Kind::Avg => x.avg_pool2d_with_stride(k, s),
    }
}

fn pad_value(x: &Tensor, pad: [usize; 2], fill: f32) -> candle::Result<Tensor> {
    let padded = x
        .pad_with_zeros(2, pad[0], pad[0])?
        .pad_with_zeros(3, pad[1], pad[1])?;
    if fill == 0.0 {
        return Ok(padded);
    }
    let ones = x.ones_like()?;
    let inside = ones
        .pad_with_zeros(2, pad[0], pad[0])?
        .pad_with_zeros(3, pad[1], pad[1])?;
    let outside = (1.0 - inside)?;
    padded + (outside * fill as f64)?
}

/// Max pooling `[N, C, H, W] -> [N, C, OH, OW]`; padding acts as -inf; differentiable (the
/// gradient of each window goes to its first maximum).
pub fn max_pool2d(x: &Tensor, p: &PoolParams) -> candle::Result<Tensor> {
    pool(x, p, Kind::Max)
}

/// Average pooling `[N, C, H, W] -> [N, C, OH, OW]`; padded zeros count in the mean
/// (`count_include_pad=True`); differentiable.
pub fn avg_pool2d(x: &Tensor, p: &PoolParams) -> candle::Result<Tensor> {
    pool(x, p, Kind::Avg)
}

/// Reference max pooling from plain candle ops (only for padding 0 and kernel == stride).
pub fn max_pool2d_slow(x: &Tensor, p: &PoolParams) -> candle::Result<Tensor> {
    pool_fallback(x, p, Kind::Max)
}

/// Reference average pooling from plain candle ops (only for kernel == stride).
pub fn avg_pool2d_slow(x: &Tensor, p: &PoolParams) -> candle::Result<Tensor> {
    pool_fallback(x, p, Kind::Avg)
}
