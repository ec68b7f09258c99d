//! Fused elementwise passes without autograd, for the hand-written reverse pass of the
//! eval-mode Hessian executor (PyHessian: Yao et al. 2020 differentiates an eval-mode network
//! twice; mpq differences gradients of it, with ReLU patterns frozen).
//!
//! In eval mode a batch norm is a per-channel affine map `a·x + k`, and its input gradient the
//! same map without the shift; a frozen ReLU after it multiplies by a recorded `u8` mask. Each
//! direction is therefore one pass, [`channel_affine`], where candle's autograd needs the
//! normalisation, the mask, the per-channel sums of `dγ`/`dβ` nobody reads, and a zeroed
//! buffer plus an add to accumulate every gradient. [`add_masked`] is the residual `a + b`
//! followed by a frozen ReLU, and [`conv2d_grads`] the convolution's two gradients as plain
//! calls.

use std::mem::MaybeUninit;

use candle::{CpuStorage, DType, Result, Storage, Tensor, bail};
use rayon::prelude::*;

use crate::uninit::{filled, filled_planes};

/// Runs `f` on the contiguous `u8` data of the CPU tensor `t`.
fn with_u8<R>(t: &Tensor, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::U8(v)), Some((a, b))) => f(&v[a..b]),
        _ => bail!("mpq-kernels: expected a contiguous CPU u8 mask"),
    }
}

fn check(x: &Tensor, mask: Option<&Tensor>, what: &str) -> Result<()> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        bail!("{what}: expected an f32 CPU tensor, got {:?}", x.dtype());
    }
    if let Some(m) = mask
        && m.dims() != x.dims()
    {
        bail!("{what}: mask {:?} does not match {:?}", m.dims(), x.dims());
    }
    Ok(())
}

/// `y = mask ? scale[c]·x + shift[c] : 0` for `x` of shape `[n, c, ...]` (`shift` empty
/// means 0, no mask means all ones): an eval-mode batch norm followed by a frozen ReLU, or
/// (shift empty) its input gradient. Not differentiable; `f32` on the CPU only.
pub fn channel_affine(
    x: &Tensor,
    scale: &[f32],
    shift: &[f32],
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    check(x, mask, "channel_affine")?;
    let dims = x.dims();
    if dims.len() < 2 || dims[1] != scale.len() || !(shift.is_empty() || shift.len() == scale.len())
    {
        bail!(
            "channel_affine: {} scales and {} shifts for {dims:?}",
            scale.len(),
            shift.len()
        );
    }
    let c = dims[1];
    let p: usize = dims[2..].iter().product();
    let run = |xs: &[f32], m: Option<&[u8]>| -> Vec<f32> {
        // SAFETY: each call writes every element of its plane (`xs` and `m` hold `n·c·p`
        // values).
        unsafe {
            filled_planes(xs.len(), p, |i, o| {
                let ch = i % c;
                let k = shift.get(ch).copied().unwrap_or(0.0);
                let xs = &xs[i * p..(i + 1) * p];
                match m {
                    Some(m) => affine_mask(o, xs, &m[i * p..(i + 1) * p], scale[ch], k),
                    None => affine::<false>(o, xs, scale[ch], k),
                }
            })
        }
    };
    let x = x.contiguous()?;
    let y = {
        let (storage, layout) = x.storage_and_layout();
        let xs = match &*storage {
            Storage::Cpu(cpu) => crate::storage::slice_f32(cpu, layout)?,
            _ => bail!("channel_affine: expected a CPU tensor"),
        };
        match mask {
            Some(m) => with_u8(m, |m| Ok(run(xs, Some(m))))?,
            None => run(xs, None),
        }
    };
    Tensor::from_vec(y, dims, x.device())
}

/// `max(a + b, 0)` elementwise in one pass: a residual sum and the ReLU after it in a
/// training step (its gradient is `relu_grad` of the output). Not differentiable; `f32` on
/// the CPU only.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    sum_pass(a, b, None, true, "add_relu")
}

/// `(a + b)·mask` elementwise (a residual sum followed by a frozen ReLU; no mask: `a + b`).
/// Not differentiable; `f32` on the CPU only.
pub fn add_masked(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    sum_pass(a, b, mask, false, "add_masked")
}

/// `a + b`, times `mask` if given, clipped at 0 if `relu`: one parallel pass.
fn sum_pass(
    a: &Tensor,
    b: &Tensor,
    mask: Option<&Tensor>,
    relu: bool,
    what: &str,
) -> Result<Tensor> {
    check(a, mask, what)?;
    check(b, None, what)?;
    if a.dims() != b.dims() {
        bail!("{what}: {:?} + {:?}", a.dims(), b.dims());
    }
    const BLOCK: usize = 1 << 15;
    let y = crate::storage::with_f32(a, |av| {
        crate::storage::with_f32(b, |bv| {
            let run = |m: Option<&[u8]>| {
                // SAFETY: the chunks cover the output and each call writes every element of
                // its chunk (`av`, `bv` and `m` have the output's length).
                unsafe {
                    filled(av.len(), |y| {
                        y.par_chunks_mut(BLOCK).enumerate().for_each(|(i, y)| {
                            let r = i * BLOCK..i * BLOCK + y.len();
                            let (a, b) = (&av[r.clone()], &bv[r.clone()]);
                            match m {
                                Some(m) => add_mask(y, a, b, &m[r]),
                                None if relu => add::<true>(y, a, b),
                                None => add::<false>(y, a, b),
                            }
                        })
                    })
                }
            };
            match mask {
                Some(m) => with_u8(m, |m| Ok(run(Some(m)))),
                None => Ok(run(None)),
            }
        })
    })?;
    Tensor::from_vec(y, a.dims(), a.device())
}

/// The input, weight and bias gradients of [`crate::conv2d`] from the output gradient `dy`,
/// each only when asked for (`bias` needs `weight`). Not differentiable; `f32` on the CPU
/// only.
pub fn conv2d_grads(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: &crate::Conv2dParams,
    input: bool,
    (weight, bias): (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    for t in [x, w, dy] {
        check(t, None, "conv2d_grads")?;
    }
    let input = if input {
        crate::conv2d::InputGrad::FRESH
    } else {
        crate::conv2d::InputGrad::Skip
    };
    crate::conv2d::grads(x, w, dy, p, input, weight || bias, bias)
}

/// [`conv2d_grads`] with the input gradient completed in the same pass: added onto `onto`
/// (a gradient already collected for `x`, a residual shortcut's) and set to 0 where `mask`
/// is 0 (the frozen ReLU the gradient meets next), both shaped as `x` and optional:
/// `mask ⊙ (onto + ∂/∂x)`. Where the direct kernels run, their accumulators start from
/// `onto` and the mask is applied as the gradient leaves the registers, instead of a
/// gradient, a sum and a masking pass.
pub fn conv2d_grads_into(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: &crate::Conv2dParams,
    (onto, mask): (Option<&Tensor>, Option<&Tensor>),
    (weight, bias): (bool, bool),
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    for t in [Some(x), Some(w), Some(dy), onto].into_iter().flatten() {
        check(t, None, "conv2d_grads_into")?;
    }
    let input = crate::conv2d::InputGrad::Compute { onto, mask };
    let (gx, gw, gb) = crate::conv2d::grads(x, w, dy, p, input, weight || bias, bias)?;
    let gx = gx.ok_or_else(|| candle::Error::Msg("conv2d_grads_into: no input gradient".into()))?;
    Ok((gx, gw, gb))
}

/// `conv2d(x, w, bias)` set to 0 where `mask` (shaped as the output) is 0: a convolution
/// whose eval-mode batch norm has been folded into `w` and `bias`, followed by a frozen ReLU,
/// in one pass over the output (the mask is applied as the output leaves the registers).
/// Not differentiable; `f32` on the CPU only.
pub fn conv2d_masked(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &crate::Conv2dParams,
    mask: &Tensor,
) -> Result<Tensor> {
    for t in [Some(x), Some(w), bias].into_iter().flatten() {
        check(t, None, "conv2d_masked")?;
    }
    let g = crate::params::ConvGeom::new(x, w, p)?;
    let (n, o, oh, ow) = g.out_dims();
    if mask.dims() != [n, o, oh, ow] {
        bail!(
            "conv2d_masked: mask {:?} does not match the output {:?}",
            mask.dims(),
            g.out_dims()
        );
    }
    if bias.is_some_and(|b| b.dims() != [g.o]) {
        bail!("conv2d_masked: bias should be [{}]", g.o);
    }
    if g.is_depthwise() {
        return crate::relu::masked(&crate::conv2d(x, w, bias, p)?, mask);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let bias = bias.map(Tensor::contiguous).transpose()?;
    let y = crate::storage::with_f32(&x, |xv| {
        crate::storage::with_f32(&w, |wv| {
            let run = |bv: Option<&[f32]>| {
                with_u8(mask, |m| {
                    Ok(crate::conv_gemm::forward(xv, wv, bv, Some(m), &g))
                })
            };
            match &bias {
                Some(b) => crate::storage::with_f32(b, |bv| run(Some(bv))),
                None => run(None),
            }
        })
    })?;
    Tensor::from_vec(y, g.out_dims(), x.device())
}

crate::simd::multiversion! {
    fn affine_mask(o: &mut [MaybeUninit<f32>], x: &[f32], m: &[u8], a: f32, k: f32) = affine_mask_impl;
}

#[inline(always)]
fn affine_mask_impl(o: &mut [MaybeUninit<f32>], x: &[f32], m: &[u8], a: f32, k: f32) {
    assert!(x.len() >= o.len() && m.len() >= o.len());
    for ((o, &x), &m) in o.iter_mut().zip(x).zip(m) {
        o.write(if m != 0 { a * x + k } else { 0.0 });
    }
}

crate::simd::multiversion! {
    /// `o = a·x + k` elementwise, clipped at 0 when `RELU` (an eval-mode batch norm, or its
    /// input gradient, and the ReLU after it).
    pub(crate) fn affine<const RELU: bool>(o: &mut [MaybeUninit<f32>], x: &[f32], a: f32, k: f32) = affine_impl;
}

#[inline(always)]
fn affine_impl<const RELU: bool>(o: &mut [MaybeUninit<f32>], x: &[f32], a: f32, k: f32) {
    assert!(x.len() >= o.len());
    for (o, &x) in o.iter_mut().zip(x) {
        let v = a * x + k;
        o.write(if !RELU || v > 0.0 { v } else { 0.0 });
    }
}

crate::simd::multiversion! {
    fn add_mask(o: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], m: &[u8]) = add_mask_impl;
}

#[inline(always)]
fn add_mask_impl(o: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], m: &[u8]) {
    assert!(a.len() >= o.len() && b.len() >= o.len() && m.len() >= o.len());
    for (((o, &a), &b), &m) in o.iter_mut().zip(a).zip(b).zip(m) {
        o.write(if m != 0 { a + b } else { 0.0 });
    }
}

crate::simd::multiversion! {
    /// `o = a + b` elementwise, `max(a + b, 0)` when `RELU`.
    fn add<const RELU: bool>(o: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]) = add_impl;
}

#[inline(always)]
fn add_impl<const RELU: bool>(o: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]) {
    assert!(a.len() >= o.len() && b.len() >= o.len());
    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
        o.write(if RELU { (a + b).max(0.0) } else { a + b });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    fn rand(dims: &[usize], seed: u64) -> Tensor {
        let n: usize = dims.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Conv cases `(x, w, params)` covering every path: direct stride 1 (runs across rows, a
    /// partial last step, rows), strided (phases), 1x1 (GEMM), grouped (im2col), depthwise.
    fn conv_cases(seed: u64) -> Vec<(Tensor, Tensor, crate::Conv2dParams)> {
        let cases = [
            ([2, 16, 8, 8], 20, 3, 1, 1, 1),
            ([3, 5, 7, 7], 9, 3, 1, 1, 1),
            ([3, 5, 7, 9], 9, 3, 1, 0, 1),
            ([2, 6, 9, 10], 17, 3, 2, 1, 1),
            ([2, 8, 5, 5], 12, 1, 1, 0, 1),
            ([2, 6, 5, 5], 4, 3, 1, 1, 2),
            ([2, 4, 6, 6], 4, 3, 1, 1, 4),
        ];
        let mut out = Vec::new();
        for (i, (dims, o, k, stride, pad, groups)) in cases.into_iter().enumerate() {
            let seed = seed + 10 * i as u64;
            let x = rand(&dims, seed);
            let w = rand(&[o, dims[1] / groups, k, k], seed + 1);
            out.push((x, w, crate::Conv2dParams::square(stride, pad, 1, groups)));
        }
        out
    }

    #[test]
    fn conv2d_masked_equals_the_conv_then_the_mask() {
        for (i, (x, w, p)) in conv_cases(100).iter().enumerate() {
            let o = w.dims()[0];
            for bias in [None, Some(rand(&[o], 7 + i as u64))] {
                let plain = crate::conv2d(x, w, bias.as_ref(), p).unwrap();
                let mask = rand(plain.dims(), 50 + i as u64).gt(0.0).unwrap();
                let want = crate::relu::masked(&plain, &mask).unwrap();
                let got = conv2d_masked(x, w, bias.as_ref(), p, &mask).unwrap();
                assert!(max_diff(&got, &want) < 1e-5, "case {i}");
            }
            let wrong = Tensor::zeros((1, 1), DType::U8, &Device::Cpu).unwrap();
            assert!(conv2d_masked(x, w, None, p, &wrong).is_err());
        }
    }

    #[test]
    fn input_gradient_into_equals_the_sum_then_the_mask() {
        for (i, (x, w, p)) in conv_cases(200).iter().enumerate() {
            let (x, w, p) = (x.clone(), w.clone(), *p);
            let seed = 300 + 10 * i as u64;
            let dims = x.dims().to_vec();
            let dy = rand(crate::conv2d(&x, &w, None, &p).unwrap().dims(), seed + 2);
            let onto = rand(&dims, seed + 3);
            let mask = rand(&dims, seed + 4).gt(0.0).unwrap();
            let (gx, gw, _) = conv2d_grads(&x, &w, &dy, &p, true, (true, false)).unwrap();
            let gx = gx.unwrap();
            let into = |onto, mask| conv2d_grads_into(&x, &w, &dy, &p, (onto, mask), (true, false));
            let (sum, gw2, _) = into(Some(&onto), None).unwrap();
            let want = (&gx + &onto).unwrap();
            assert!(max_diff(&sum, &want) < 1e-5, "case {i}");
            assert!(
                max_diff(gw.as_ref().unwrap(), &gw2.unwrap()) == 0.0,
                "case {i}"
            );
            let (masked, _, _) = into(Some(&onto), Some(&mask)).unwrap();
            let want = crate::relu::masked(&want, &mask).unwrap();
            assert!(max_diff(&masked, &want) < 1e-5, "case {i}");
            let (masked, _, _) = into(None, Some(&mask)).unwrap();
            let want = crate::relu::masked(&gx, &mask).unwrap();
            assert!(max_diff(&masked, &want) < 1e-5, "case {i}");
        }
        let (x, w) = (rand(&[1, 2, 4, 4], 1), rand(&[3, 2, 3, 3], 2));
        let p = crate::Conv2dParams::square(1, 1, 1, 1);
        let dy = rand(&[1, 3, 4, 4], 3);
        let bad = rand(&[1, 2, 4, 5], 4);
        let into = |onto, mask| conv2d_grads_into(&x, &w, &dy, &p, (onto, mask), (false, false));
        assert!(into(Some(&bad), None).is_err());
        assert!(into(None, Some(&bad.gt(0.0).unwrap())).is_err());
    }

    #[test]
    fn channel_affine_matches_candle_ops_with_and_without_mask() {
        for (dims, seed) in [
            (vec![3, 5, 7, 9], 1),
            (vec![2, 4, 1, 1], 2),
            (vec![4, 3], 3),
        ] {
            let x = rand(&dims, seed);
            let c = dims[1];
            let scale: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
            let shift: Vec<f32> = (0..c).map(|i| i as f32 * 0.1 - 0.2).collect();
            let mask = rand(&dims, seed + 10).gt(0.0).unwrap();
            let mut bshape = vec![1, c];
            bshape.extend(std::iter::repeat_n(1, dims.len() - 2));
            let s = Tensor::new(scale.as_slice(), &Device::Cpu)
                .unwrap()
                .reshape(bshape.as_slice())
                .unwrap();
            let t = Tensor::new(shift.as_slice(), &Device::Cpu)
                .unwrap()
                .reshape(bshape.as_slice())
                .unwrap();
            let plain = x.broadcast_mul(&s).unwrap().broadcast_add(&t).unwrap();
            let want = (&plain * mask.to_dtype(DType::F32).unwrap()).unwrap();
            let got = channel_affine(&x, &scale, &shift, Some(&mask)).unwrap();
            assert!(max_diff(&got, &want) < 1e-6);
            let got = channel_affine(&x, &scale, &shift, None).unwrap();
            assert!(max_diff(&got, &plain) < 1e-6);
            let got = channel_affine(&x, &scale, &[], None).unwrap();
            assert!(max_diff(&got, &x.broadcast_mul(&s).unwrap()) < 1e-6);
        }
    }

    #[test]
    fn add_relu_matches_candle_ops() {
        let dims = [3, 70001];
        let (a, b) = (rand(&dims, 6), rand(&dims, 7));
        let want = (&a + &b).unwrap().relu().unwrap();
        assert!(max_diff(&add_relu(&a, &b).unwrap(), &want) == 0.0);
        assert!(add_relu(&a, &rand(&[3, 7], 8)).is_err());
    }

    #[test]
    fn add_masked_matches_candle_ops() {
        let dims = [3, 70001];
        let (a, b) = (rand(&dims, 4), rand(&dims, 5));
        let mask = rand(&dims, 6).gt(0.0).unwrap();
        let sum = (&a + &b).unwrap();
        let want = (&sum * mask.to_dtype(DType::F32).unwrap()).unwrap();
        assert_eq!(
            max_diff(&add_masked(&a, &b, Some(&mask)).unwrap(), &want),
            0.0
        );
        assert_eq!(max_diff(&add_masked(&a, &b, None).unwrap(), &sum), 0.0);
    }

    #[test]
    fn bad_shapes_and_dtypes_are_errors() {
        let x = rand(&[2, 3, 4, 4], 7);
        assert!(channel_affine(&x, &[1.0; 2], &[], None).is_err());
        assert!(channel_affine(&x, &[1.0; 3], &[0.0; 2], None).is_err());
        let m = rand(&[2, 3, 4, 5], 8).gt(0.0).unwrap();
        assert!(channel_affine(&x, &[1.0; 3], &[], Some(&m)).is_err());
        let x64 = x.to_dtype(DType::F64).unwrap();
        assert!(channel_affine(&x64, &[1.0; 3], &[], None).is_err());
        assert!(add_masked(&x, &rand(&[2, 3, 4, 5], 9), None).is_err());
    }
}
