//! Slow reference implementations built only from plain candle ops: the oracles the fast
//! kernels are tested against (candle's `rms_norm_slow` idiom). They work on any device and
//! dtype and are differentiable through candle's own autograd.

use crate::params::{Conv2dParams, ConvGeom};
use candle::{D, Result, Tensor};

/// Reference for [`crate::conv2d`]: sums, over kernel taps, a gathered input view times the
/// tap's weight slice (grouped batched matmul). Same arguments and shapes as the fast op.
pub fn conv2d_slow(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &Conv2dParams,
) -> Result<Tensor> {
    let g = ConvGeom::new(x, w, p)?;
    let (groups, cg, og) = (p.groups, g.cg(), g.og());
    let dev = x.device();
    let xp = x
        .pad_with_zeros(2, p.padding[0], p.padding[0])?
        .pad_with_zeros(3, p.padding[1], p.padding[1])?
        .contiguous()?;
    let index = |out: usize, stride: usize, off: usize| {
        let ids: Vec<u32> = (0..out).map(|o| (o * stride + off) as u32).collect();
        Tensor::from_vec(ids, out, dev)
    };
    let mut acc: Option<Tensor> = None;
    for ki in 0..g.kh {
        let rows = xp
            .index_select(&index(g.oh, p.stride[0], ki * p.dilation[0])?, 2)?
            .contiguous()?;
        for kj in 0..g.kw {
            let patch = rows
                .index_select(&index(g.ow, p.stride[1], kj * p.dilation[1])?, 3)?
                .reshape((g.n, groups, cg, g.ohw()))?;
            let wk = w
                .narrow(2, ki, 1)?
                .narrow(3, kj, 1)?
                .reshape((groups, og, cg))?;
            let term = wk.broadcast_matmul(&patch)?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
    }
    let y = acc
        .expect("a conv kernel should have at least one tap")
        .reshape(g.out_dims())?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, g.o, 1, 1))?),
        None => Ok(y),
    }
}

/// `[c]` per-channel vector reshaped to broadcast against `[n, c, ...]` of rank `rank`.
fn per_channel(v: &Tensor, rank: usize) -> Result<Tensor> {
    let mut dims = vec![1; rank];
    dims[1] = v.elem_count();
    v.reshape(dims)
}

/// Reference for [`crate::batch_norm_train`]: mean and biased variance over all axes but 1,
/// returned detached as `[c]` alongside the output.
pub fn batch_norm_train_slow(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    // [n, c, ...] -> [c, n * rest] so every statistic is a last-axis reduction.
    let flat = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centered = flat.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = centered.broadcast_div(&(var.clone() + eps)?.sqrt()?)?;
    let y = xhat
        .broadcast_mul(&gamma.reshape((c, 1))?)?
        .broadcast_add(&beta.reshape((c, 1))?)?;
    let mut dims = x.dims().to_vec();
    dims.swap(0, 1);
    let y = y.reshape(dims)?.transpose(0, 1)?.contiguous()?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// Reference for [`crate::batch_norm_eval`]: `(x − mean) / √(var + eps) · γ + β` with the
/// running statistics treated as constants.
pub fn batch_norm_eval_slow(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let r = x.rank();
    let istd = (var.detach() + eps)?.sqrt()?.recip()?;
    x.broadcast_sub(&per_channel(&mean.detach(), r)?)?
        .broadcast_mul(&per_channel(&istd, r)?)?
        .broadcast_mul(&per_channel(gamma, r)?)?
        .broadcast_add(&per_channel(beta, r)?)
}
