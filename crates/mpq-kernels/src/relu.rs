//! ReLU and ReLU6 as candle custom ops: one pass forward, one pass backward.
//!
//! candle's own `relu` backward builds `grad · (x ≥ 0)` from four ops (zeros, compare, cast,
//! multiply), each a full pass over the activation with a fresh buffer; in a ResNet training
//! step that is 19 activations of 8 MB at batch 128. Here the backward is one fused pass,
//! `dx = dy where y > 0, else 0` — PyTorch's convention (`threshold_backward`): no gradient
//! at exactly 0, where candle passes it. ReLU6 (`min(max(x, 0), 6)`, MobileNetV2's
//! activation) is built in candle from a ReLU and a `minimum` whose backward adds four more
//! passes; here it is the same single op with an upper clip, gradient where `0 < y < 6`
//! (PyTorch's `hardtanh_backward`).

use std::mem::MaybeUninit;

use crate::op::{Arg, CpuOp, Grad, Op, apply2_no_bwd};
use crate::storage::fast_path;
use crate::uninit::filled;
use candle::{Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task.
const BLOCK: usize = 1 << 15;

/// `max(x, 0)`, differentiable (gradient 1 where the output is positive, 0 elsewhere).
/// Falls back to candle's `relu` off the CPU or for other dtypes.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !fast_path(&[x]) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Op(Relu { hi: f32::INFINITY }))
}

/// `min(max(x, 0), 6)`, differentiable (gradient 1 where `0 < y < 6`, 0 elsewhere). Falls
/// back to candle's ops off the CPU or for other dtypes.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    if !fast_path(&[x]) {
        return x.relu()?.minimum(6f64);
    }
    x.contiguous()?.apply_op1(Op(Relu { hi: 6.0 }))
}

/// `clamp(x, 0, hi)`.
struct Relu {
    hi: f32,
}

struct ReluBackward {
    hi: f32,
}

impl CpuOp<1> for Relu {
    fn name(&self) -> &'static str {
        "mpq-relu"
    }

    fn forward(&self, [x]: [Arg<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let (shape, x) = (x.shape(), x.f32()?);
        // SAFETY: the chunks cover `y` and `forward` writes every element of its chunk.
        let y = unsafe {
            filled(x.len(), |y| {
                y.par_chunks_mut(BLOCK)
                    .zip(x.par_chunks(BLOCK))
                    .for_each(|(y, x)| forward(x, y, self.hi))
            })
        };
        Ok((y, shape))
    }

    fn backward(&self, g: Grad<'_, 1>) -> Result<[Option<Tensor>; 1]> {
        Ok([Some(apply2_no_bwd(
            g.res,
            g.dy,
            ReluBackward { hi: self.hi },
        )?)])
    }
}

impl CpuOp<2> for ReluBackward {
    fn name(&self) -> &'static str {
        "mpq-relu-backward"
    }

    fn forward(&self, [y, dy]: [Arg<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let (shape, y, dy) = (y.shape(), y.f32()?, dy.f32()?);
        if y.len() != dy.len() {
            candle::bail!(
                "relu backward: {} outputs but {} gradients",
                y.len(),
                dy.len()
            );
        }
        // SAFETY: the chunks cover `dx` and `backward` writes every element of its chunk.
        let dx = unsafe {
            filled(y.len(), |dx| {
                dx.par_chunks_mut(BLOCK)
                    .zip(y.par_chunks(BLOCK).zip(dy.par_chunks(BLOCK)))
                    .for_each(|(dx, (y, dy))| backward(y, dy, dx, self.hi))
            })
        };
        Ok((dx, shape))
    }
}

crate::simd::multiversion! {
    fn forward(x: &[f32], y: &mut [MaybeUninit<f32>], hi: f32) = forward_impl;
}

#[inline(always)]
fn forward_impl(x: &[f32], y: &mut [MaybeUninit<f32>], hi: f32) {
    assert!(x.len() >= y.len());
    for (y, &x) in y.iter_mut().zip(x) {
        y.write(if x > 0.0 { x.min(hi) } else { 0.0 });
    }
}

crate::simd::multiversion! {
    fn backward(y: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>], hi: f32) = backward_impl;
}

#[inline(always)]
fn backward_impl(y: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>], hi: f32) {
    assert!(y.len() >= dx.len() && dy.len() >= dx.len());
    for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
        dx.write(if y > 0.0 && y < hi { g } else { 0.0 });
    }
}

/// `mask ? z : 0` elementwise with a `u8` mask of `z`'s shape (the frozen ReLU of the Hessian
/// executor), differentiable in `z` (gradient `mask ? dy : 0`), in one pass each way. Falls
/// back to candle's `where_cond` off the CPU or for non-`f32` `z`.
pub fn masked(z: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if mask.dims() != z.dims() {
        candle::bail!(
            "masked: mask {:?} does not match {:?}",
            mask.dims(),
            z.dims()
        );
    }
    let cpu_u8 = mask.device().is_cpu() && mask.dtype() == candle::DType::U8;
    if !fast_path(&[z]) || !cpu_u8 {
        let zero = Tensor::zeros((), z.dtype(), z.device())?.broadcast_as(z.shape())?;
        return mask.where_cond(z, &zero);
    }
    z.contiguous()?.apply_op2(&mask.contiguous()?, Op(Masked))
}

/// ReLU's backward from its output: `dy` where `y > 0`, else 0 (not differentiable).
pub(crate) fn relu_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    apply2_no_bwd(y, dy, ReluBackward { hi: f32::INFINITY })
}

/// The input gradient of [`relu`] (`hi = ∞`) or [`relu6`] (`hi = 6`) from its output `y`:
/// `dy` where `0 < y < hi`, else 0, as a plain call. `f32` on the CPU only.
pub fn relu_grad(y: &Tensor, dy: &Tensor, hi: f32) -> Result<Tensor> {
    if !fast_path(&[y, dy]) {
        candle::bail!("relu_grad: expected f32 CPU tensors");
    }
    apply2_no_bwd(y, dy, ReluBackward { hi })
}

struct Masked;

impl CpuOp<2> for Masked {
    fn name(&self) -> &'static str {
        "mpq-masked"
    }

    fn forward(&self, [z, m]: [Arg<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let (shape, z, m) = (z.shape(), z.f32()?, m.u8("masked")?);
        if z.len() != m.len() {
            candle::bail!("masked: {} values but {} mask entries", z.len(), m.len());
        }
        // SAFETY: the chunks cover the output and `apply_mask` writes every element of its
        // chunk (`z` and `m` have its length).
        let y = unsafe {
            filled(z.len(), |y| {
                y.par_chunks_mut(BLOCK)
                    .zip(z.par_chunks(BLOCK).zip(m.par_chunks(BLOCK)))
                    .for_each(|(y, (z, m))| apply_mask(z, m, y))
            })
        };
        Ok((y, shape))
    }

    fn backward(&self, g: Grad<'_, 2>) -> Result<[Option<Tensor>; 2]> {
        let [_, mask] = g.args;
        Ok([Some(apply2_no_bwd(g.dy, mask, Masked)?), None])
    }
}

crate::simd::multiversion! {
    fn apply_mask(z: &[f32], m: &[u8], y: &mut [MaybeUninit<f32>]) = apply_mask_impl;
}

#[inline(always)]
fn apply_mask_impl(z: &[f32], m: &[u8], y: &mut [MaybeUninit<f32>]) {
    assert!(z.len() >= y.len() && m.len() >= y.len());
    for ((y, &z), &m) in y.iter_mut().zip(z).zip(m) {
        y.write(if m != 0 { z } else { 0.0 });
    }
}
