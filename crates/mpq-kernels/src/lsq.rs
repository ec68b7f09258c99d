//! LSQ, Learned Step Size Quantization (Esser et al., "Learned Step Size Quantization",
//! ICLR 2020), as a candle custom op on `(x, step)` with the paper's gradients.
//!
//! Forward: `ŷ = round_half_even(clamp(x/s, −Qn, Qp))·s`. Backward, with `v = x/s`:
//!
//! - `∂ŷ/∂x = 1` if `−Qn < v < Qp`, else `0` (straight-through inside the range);
//! - `∂ŷ/∂s = round(v) − v` if `−Qn < v < Qp`, `−Qn` if `v ≤ −Qn`, `Qp` if `v ≥ Qp`;
//! - `grad_s = g·Σ grad·∂ŷ/∂s`, summed to the step's shape, with the caller's gradient scale
//!   `g` (the paper's `1/√(N·Qp)`, see [`lsq_grad_scale`]).
//!
//! The step is per tensor (`[1]` or `[]`) or per channel along axis 0 (`[C]` for `x` of shape
//! `[C, …]`). The `f32` CPU path is a rayon loop; other devices and dtypes use [`lsq_slow`],
//! a composition of candle ops with the same values and gradients.

use crate::fake_quant::{clamp_like_candle, round_half_even};
use candle::{DType, Shape, Tensor};
use rayon::prelude::*;

use crate::op::{Arg, CpuOp, Grad, Op, apply3_no_bwd, same_len};

/// Elements per rayon task for per-tensor steps.
const BLOCK: usize = 8192;

/// LSQ integer bounds `(Qn, Qp)` for `bits` bits: signed `(2^(b−1), 2^(b−1) − 1)`, unsigned
/// `(0, 2^b − 1)`. The clamp range is `[−Qn, Qp]`.
///
/// # Panics
///
/// If `bits` is 0 or above 24 (beyond which `f32` no longer holds every integer code).
pub fn lsq_bounds(bits: u32, signed: bool) -> (f32, f32) {
    assert!(
        (1..=24).contains(&bits),
        "lsq_bounds: bits must be in 1..=24, got {bits}"
    );
    if signed {
        let h = (1u32 << (bits - 1)) as f32;
        (h, h - 1.0)
    } else {
        (0.0, ((1u32 << bits) - 1) as f32)
    }
}

/// The LSQ step-gradient scale `g = 1/√(N·Qp)` for a quantized tensor of `n` elements (for
/// activations `n` includes the batch).
pub fn lsq_grad_scale(n: usize, qp: f32) -> f32 {
    (1.0 / ((n as f64) * f64::from(qp)).sqrt()) as f32
}

/// The LSQ step initialisation `2·mean(|x|)/√Qp` (accumulated in `f64`); `0.0` for an empty
/// slice, which callers must not use as a step.
pub fn lsq_init_step(x: &[f32], qp: f32) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let mean = x.iter().map(|v| f64::from(v.abs())).sum::<f64>() / x.len() as f64;
    (2.0 * mean / f64::from(qp).sqrt()) as f32
}

#[derive(Clone, Copy, Debug)]
struct Lsq {
    qn: f32,
    qp: f32,
    grad_scale: f32,
}

impl Lsq {
    /// Chunk length for rayon given the channel count and the elements per channel.
    fn block(channels: usize, inner: usize) -> usize {
        if channels == 1 { BLOCK } else { inner.max(1) }
    }

    /// `(round(clamp(x/s)) + 0)·s`: the `+ 0` turns a code of `−0` into `+0`, so the
    /// result has the same bits as the uniform quantizer `s·(clamp(round(x/s) + z) − z)`
    /// with `z = 0` that export uses (not just the same value).
    #[inline]
    fn quantize(&self, x: f32, s: f32) -> f32 {
        (clamp_like_candle(x / s, -self.qn, self.qp).round_ties_even() + 0.0) * s
    }

    /// `(∂ŷ/∂x, ∂ŷ/∂s)` at `x` for step `s`.
    #[inline]
    fn derivatives(&self, x: f32, s: f32) -> (f32, f32) {
        let v = x / s;
        if v <= -self.qn {
            (0.0, -self.qn)
        } else if v >= self.qp {
            (0.0, self.qp)
        } else {
            (1.0, v.round_ties_even() - v)
        }
    }
}

struct LsqBackward(Lsq);

/// Elements per channel, after checking that `steps` values fit `n` elements.
fn inner_len(n: usize, steps: usize) -> candle::Result<usize> {
    if steps == 0 || !n.is_multiple_of(steps) {
        candle::bail!("lsq: {steps} steps do not divide {n} elements")
    }
    Ok(n / steps)
}

impl CpuOp<2> for Lsq {
    fn name(&self) -> &'static str {
        "mpq-lsq"
    }

    fn forward(&self, [x, step]: [Arg<'_>; 2]) -> candle::Result<(Vec<f32>, Shape)> {
        let (shape, x, step) = (x.shape(), x.f32()?, step.f32()?);
        let inner = inner_len(x.len(), step.len())?;
        let block = Self::block(step.len(), inner);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .enumerate()
            .with_min_len((BLOCK / block).max(1))
            .for_each(|(j, (o, xs))| {
                let s = step[j * block / inner.max(1)];
                for (o, &x) in o.iter_mut().zip(xs) {
                    *o = self.quantize(x, s);
                }
            });
        Ok((out, shape))
    }

    fn backward(&self, g: Grad<'_, 2>) -> candle::Result<[Option<Tensor>; 2]> {
        let [x, step] = g.args;
        let n = x.elem_count();
        let c = step.elem_count();
        let both = apply3_no_bwd(x, step, g.dy, LsqBackward(*self))?;
        let gx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let gs = both.narrow(0, n, c)?.reshape(step.shape())?;
        Ok([Some(gx), Some(gs)])
    }
}

impl CpuOp<3> for LsqBackward {
    fn name(&self) -> &'static str {
        "mpq-lsq-backward"
    }

    /// Returns `grad_x` (flattened) followed by `grad_step`, as one `[N + C]` buffer.
    fn forward(&self, [x, step, g]: [Arg<'_>; 3]) -> candle::Result<(Vec<f32>, Shape)> {
        let (x, step, g) = (x.f32()?, step.f32()?, g.f32()?);
        same_len("lsq", x, g)?;
        let (n, c) = (x.len(), step.len());
        let inner = inner_len(n, c)?;
        let block = Lsq::block(c, inner);
        let mut out = vec![0f32; n + c];
        let (gx, gs) = out.split_at_mut(n);
        // One f64 partial sum per chunk, reduced in chunk order: deterministic for any
        // number of threads.
        let partials: Vec<f64> = gx
            .par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(g.par_chunks(block)))
            .enumerate()
            .with_min_len((BLOCK / block).max(1))
            .map(|(j, (o, (xs, gs)))| {
                let s = step[j * block / inner.max(1)];
                let mut acc = 0f64;
                for ((o, &x), &g) in o.iter_mut().zip(xs).zip(gs) {
                    let (dx, ds) = self.0.derivatives(x, s);
                    *o = g * dx;
                    acc += f64::from(g) * f64::from(ds);
                }
                acc
            })
            .collect();
        let mut sums = vec![0f64; c];
        for (j, p) in partials.iter().enumerate() {
            sums[j * block / inner.max(1)] += p;
        }
        for (o, s) in gs.iter_mut().zip(sums) {
            *o = (f64::from(self.0.grad_scale) * s) as f32;
        }
        Ok((out, Shape::from(n + c)))
    }
}

/// Checks `step` against `x`; returns whether it is per channel.
fn check(x: &Tensor, step: &Tensor, qn: f32, qp: f32) -> candle::Result<bool> {
    if qn.is_nan() || qp.is_nan() || -qn > qp {
        candle::bail!("lsq: need -Qn <= Qp, got Qn = {qn}, Qp = {qp}")
    }
    let c = step.elem_count();
    if c == 1 {
        return Ok(false);
    }
    if step.rank() == 1 && x.rank() >= 1 && x.dim(0)? == c {
        return Ok(true);
    }
    candle::bail!(
        "lsq: step of shape {:?} is neither per-tensor nor per-channel (axis 0) for {:?}",
        step.dims(),
        x.dims()
    )
}

/// LSQ fake quantization `ŷ = round_half_even(clamp(x/s, −Qn, Qp))·s` with the paper's
/// gradients for both `x` and `step` (see the module docs).
///
/// - `step`: `[1]` or `[]` (per tensor) or `[C]` per channel along axis 0 of `x`; a `Var` to
///   learn it. Keep it positive.
/// - `qn`, `qp`: the bounds from [`lsq_bounds`] (`qn ≥ 0`; the clamp range is `[−qn, qp]`).
/// - `grad_scale`: multiplies the step gradient, normally [`lsq_grad_scale`]`(x.elem_count(),
///   qp)` (per channel: the elements per channel).
///
/// The `f32` CPU path is a custom op; other devices and dtypes use [`lsq_slow`].
pub fn lsq(x: &Tensor, step: &Tensor, qn: f32, qp: f32, grad_scale: f32) -> candle::Result<Tensor> {
    check(x, step, qn, qp)?;
    if !x.device().is_cpu() || x.dtype() != DType::F32 || step.dtype() != DType::F32 {
        return lsq_slow(x, step, qn, qp, grad_scale);
    }
    x.contiguous()?
        .apply_op2(&step.contiguous()?, Op(Lsq { qn, qp, grad_scale }))
}

/// Reference LSQ from plain candle ops (any device and float dtype; `step` is converted to
/// `x`'s dtype), same arguments, values and gradients as [`lsq`]. The gradients come from a
/// surrogate whose extra terms are exactly zero in the forward:
/// `ŷ + (x·m − detach(x·m)) + (s·d − detach(s·d))` with the constant inside-mask `m` and
/// `d = g·∂ŷ/∂s`.
pub fn lsq_slow(
    x: &Tensor,
    step: &Tensor,
    qn: f32,
    qp: f32,
    grad_scale: f32,
) -> candle::Result<Tensor> {
    let per_channel = check(x, step, qn, qp)?;
    let mut dims = vec![1usize; x.rank()];
    if per_channel {
        dims[0] = step.elem_count();
    }
    let s = step
        .to_dtype(x.dtype())?
        .to_device(x.device())?
        .reshape(dims)?;
    let (xd, sd) = (x.detach(), s.detach());
    let v = xd.broadcast_div(&sd)?;
    let r = round_half_even(&v.clamp(-qn, qp)?)?;
    let y = r.broadcast_mul(&sd)?;
    let dtype = x.dtype();
    let lo = v.le(-qn)?.to_dtype(dtype)?;
    let hi = v.ge(qp)?.to_dtype(dtype)?;
    let inside = ((1.0 - &lo)? - &hi)?;
    let dyds = (((&inside * (r - &v)?)? - (lo * f64::from(qn))?)? + (hi * f64::from(qp))?)?;
    let d = (dyds * f64::from(grad_scale))?;
    let xm = (x * inside)?;
    let sm = s.broadcast_mul(&d)?;
    (y + (&xm - xm.detach())?)? + (&sm - sm.detach())?
}
