//! Uniform affine fake quantization (quantize-dequantize) with a clipped straight-through
//! backward, as a candle custom op.
//!
//! `y = s·(clamp(round_half_even(x/s) + z, qmin, qmax) − z)`, per tensor or per channel along
//! one axis. The straight-through estimator with the clip mask (Bengio et al., "Estimating or
//! Propagating Gradients Through Stochastic Neurons for Conditional Computation", 2013; the
//! clipped form as in Jacob et al., "Quantization and Training of Neural Networks for
//! Efficient Integer-Arithmetic-Only Inference", CVPR 2018) gives
//! `∂y/∂x = 1[qmin ≤ round_half_even(x/s) + z ≤ qmax]`; scale and zero-point are constants.
//! The same rounding (round half to even) is used by the LSQ op [`crate::lsq()`] and by
//! export, so the fake-quantized values equal what a deployed integer kernel computes.
//!
//! The `f32` CPU path is a rayon loop; other devices and dtypes use [`fake_quant_slow`]'s
//! composition of candle ops with the same gradient built from a detached surrogate.

use candle::{DType, Shape, Tensor};
use rayon::prelude::*;

use crate::op::{Arg, CpuOp, Grad, Op, apply2_no_bwd, same_len};

/// Elements per rayon task in the per-tensor loops.
const BLOCK: usize = 8192;

/// Rounds every element to the nearest integer, ties to even (`f32::round_ties_even`), from
/// plain candle ops (candle's own `round` rounds ties away from zero). Any float dtype.
pub fn round_half_even(v: &Tensor) -> candle::Result<Tensor> {
    let r = v.round()?;
    // `v - floor(v)` is exact in floating point, so ties are detected exactly; `v / 2` is
    // exact too, and `2·round(v/2)` is the even neighbour of a tie.
    let tie = (v - v.floor()?)?.eq(0.5)?;
    // `h + h` rather than `h * 2.0`: candle's scalar multiply is an affine op whose `+ 0`
    // would turn `-0.0` into `0.0`.
    let h = (v * 0.5)?.round()?;
    let even = (&h + &h)?;
    tie.where_cond(&even, &r)
}

/// Clamp with candle's `maximum` then `minimum` semantics, so the fast path and the candle-op
/// path agree bit for bit.
#[inline]
pub(crate) fn clamp_like_candle(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi { hi } else { v }
}

/// Per-element parameters of a per-channel or per-tensor quantizer over a contiguous buffer.
#[derive(Clone, Debug)]
struct Params {
    scale: Vec<f32>,
    zero_point: Vec<f32>,
    qmin: f32,
    qmax: f32,
    /// Number of channels (1 for per-tensor).
    channels: usize,
    /// Elements after the channel axis (product of the trailing dims).
    inner: usize,
}

impl Params {
    #[inline]
    fn channel_params(&self, c: usize) -> (f32, f32) {
        let s = self.scale[if self.scale.len() == 1 { 0 } else { c }];
        let z = self.zero_point[if self.zero_point.len() == 1 { 0 } else { c }];
        (s, z)
    }

    /// Chunk length for rayon and the channel of chunk `j`.
    fn block(&self) -> usize {
        if self.channels == 1 {
            BLOCK
        } else {
            self.inner.max(1)
        }
    }

    fn channel_of_block(&self, j: usize) -> usize {
        if self.channels == 1 {
            0
        } else {
            j % self.channels
        }
    }

    /// Integer code before clipping: `round_half_even(x/s) + z`.
    #[inline]
    fn code(x: f32, s: f32, z: f32) -> f32 {
        (x / s).round_ties_even() + z
    }
}

struct FakeQuant(Params);

struct FakeQuantBackward(Params);

impl CpuOp<1> for FakeQuant {
    fn name(&self) -> &'static str {
        "mpq-fake-quant"
    }

    fn forward(&self, [x]: [Arg<'_>; 1]) -> candle::Result<(Vec<f32>, Shape)> {
        let (shape, x) = (x.shape(), x.f32()?);
        let p = &self.0;
        let mut out = vec![0f32; x.len()];
        let block = p.block();
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .enumerate()
            .with_min_len((BLOCK / block).max(1))
            .for_each(|(j, (o, xs))| {
                let (s, z) = p.channel_params(p.channel_of_block(j));
                for (o, &x) in o.iter_mut().zip(xs) {
                    let q = clamp_like_candle(Params::code(x, s, z), p.qmin, p.qmax);
                    *o = (q - z) * s;
                }
            });
        Ok((out, shape))
    }

    fn backward(&self, g: Grad<'_, 1>) -> candle::Result<[Option<Tensor>; 1]> {
        let [arg] = g.args;
        Ok([Some(apply2_no_bwd(
            arg,
            g.dy,
            FakeQuantBackward(self.0.clone()),
        )?)])
    }
}

impl CpuOp<2> for FakeQuantBackward {
    fn name(&self) -> &'static str {
        "mpq-fake-quant-backward"
    }

    fn forward(&self, [x, g]: [Arg<'_>; 2]) -> candle::Result<(Vec<f32>, Shape)> {
        let (shape, x, g) = (x.shape(), x.f32()?, g.f32()?);
        same_len("fake_quant", x, g)?;
        let p = &self.0;
        let mut out = vec![0f32; x.len()];
        let block = p.block();
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(g.par_chunks(block)))
            .enumerate()
            .with_min_len((BLOCK / block).max(1))
            .for_each(|(j, (o, (xs, gs)))| {
                let (s, z) = p.channel_params(p.channel_of_block(j));
                for ((o, &x), &g) in o.iter_mut().zip(xs).zip(gs) {
                    let q = Params::code(x, s, z);
                    *o = if q >= p.qmin && q <= p.qmax { g } else { 0.0 };
                }
            });
        Ok((out, shape))
    }
}

/// Flattens a scale or zero-point tensor to `f32` values.
fn values(t: &Tensor) -> candle::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// Checks the arguments; returns (channels, inner).
fn check(
    x: &Tensor,
    scale: &Tensor,
    zero_point: &Tensor,
    qmin: f32,
    qmax: f32,
    axis: Option<usize>,
) -> candle::Result<(usize, usize)> {
    if qmin.is_nan() || qmax.is_nan() || qmin > qmax {
        candle::bail!("fake_quant: need qmin <= qmax, got [{qmin}, {qmax}]")
    }
    let (channels, inner) = match axis {
        None => (1, x.elem_count()),
        Some(a) => {
            let dims = x.dims();
            if a >= dims.len() {
                candle::bail!("fake_quant: axis {a} out of range for shape {:?}", dims)
            }
            (dims[a], dims[a + 1..].iter().product())
        }
    };
    for (name, t) in [("scale", scale), ("zero_point", zero_point)] {
        let n = t.elem_count();
        if n != 1 && (axis.is_none() || n != channels || t.rank() != 1) {
            candle::bail!(
                "fake_quant: {name} of shape {:?} does not fit axis {axis:?} of {:?}",
                t.dims(),
                x.dims()
            )
        }
    }
    Ok((channels, inner))
}

/// Reshapes a per-tensor or per-channel parameter so it broadcasts against `x`.
fn broadcastable(t: &Tensor, x: &Tensor, axis: Option<usize>) -> candle::Result<Tensor> {
    let mut dims = vec![1usize; x.rank()];
    if let (Some(a), n) = (axis, t.elem_count())
        && n != 1
    {
        dims[a] = n;
    }
    t.to_dtype(x.dtype())?.to_device(x.device())?.reshape(dims)
}

/// Fake quantization `y = s·(clamp(round_half_even(x/s) + z, qmin, qmax) − z)`.
///
/// - `scale`, `zero_point`: shape `[1]` or `[]` for per-tensor; with `axis = Some(a)`, shape
///   `[x.dim(a)]` for per-channel (a single-element tensor still broadcasts). `zero_point` is
///   expected to hold integers, in which case this equals `clamp(round(x/s + z))`.
/// - `qmin`, `qmax`: the integer code range, e.g. `[-128, 127]` or `[0, 255]`.
/// - Rounding is round half to even (`f32::round_ties_even`), as export uses.
///
/// Differentiable with respect to `x` only: the straight-through estimator with the clip
/// mask, `∂y/∂x = 1[qmin ≤ round_half_even(x/s) + z ≤ qmax]`. The `f32` CPU path is a custom
/// op; other devices and dtypes compose candle ops with the same values and gradient.
pub fn fake_quant(
    x: &Tensor,
    scale: &Tensor,
    zero_point: &Tensor,
    qmin: f32,
    qmax: f32,
    axis: Option<usize>,
) -> candle::Result<Tensor> {
    let (channels, inner) = check(x, scale, zero_point, qmin, qmax, axis)?;
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return fake_quant_fallback(x, scale, zero_point, qmin, qmax, axis);
    }
    let p = Params {
        scale: values(scale)?,
        zero_point: values(zero_point)?,
        qmin,
        qmax,
        channels,
        inner,
    };
    x.contiguous()?.apply_op1(Op(FakeQuant(p)))
}

/// Reference fake quantization from plain candle ops (any device and float dtype), same
/// arguments and values as [`fake_quant`]. Its forward is the test oracle; it has no
/// straight-through backward (candle drops gradients through rounding).
pub fn fake_quant_slow(
    x: &Tensor,
    scale: &Tensor,
    zero_point: &Tensor,
    qmin: f32,
    qmax: f32,
    axis: Option<usize>,
) -> candle::Result<Tensor> {
    check(x, scale, zero_point, qmin, qmax, axis)?;
    let s = broadcastable(scale, x, axis)?;
    let z = broadcastable(zero_point, x, axis)?;
    let q = round_half_even(&x.broadcast_div(&s)?)?.broadcast_add(&z)?;
    q.clamp(qmin, qmax)?.broadcast_sub(&z)?.broadcast_mul(&s)
}

/// Non-`f32` or non-CPU path: [`fake_quant_slow`]'s values plus the clipped STE, as
/// `y = q + (x·m − detach(x·m))` with the constant mask `m` (the bracket is exactly zero).
fn fake_quant_fallback(
    x: &Tensor,
    scale: &Tensor,
    zero_point: &Tensor,
    qmin: f32,
    qmax: f32,
    axis: Option<usize>,
) -> candle::Result<Tensor> {
    let xd = x.detach();
    let y = fake_quant_slow(&xd, scale, zero_point, qmin, qmax, axis)?;
    let s = broadcastable(scale, x, axis)?;
    let z = broadcastable(zero_point, x, axis)?;
    let code = round_half_even(&xd.broadcast_div(&s)?)?.broadcast_add(&z)?;
    let mask = (code.ge(qmin)? * code.le(qmax)?)?.to_dtype(x.dtype())?;
    let xm = (x * mask)?;
    y + (&xm - xm.detach())?
}
