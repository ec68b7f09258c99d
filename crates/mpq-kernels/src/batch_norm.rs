//! Batch normalization (Ioffe & Szegedy 2015) as candle custom ops with backward.
//!
//! Train mode normalizes with the batch statistics over every axis but the channel axis 1
//! (biased variance); eval mode with given running statistics. Each direction is one
//! statistics pass plus one fused elementwise pass, parallel over channels / planes.

use crate::op::{Arg, CpuOp, Grad, Op};
use crate::reference;
use crate::simd::multiversion;
use crate::storage::{fast_path, with_f32};
use candle::{Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::channel_affine;
use crate::uninit::filled_planes;
use std::sync::{Arc, Mutex};

/// `(n, c, plane)` view of an `[n, c, ...]` tensor.
fn ncp(dims: &[usize]) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        bail!("batch_norm expects x of rank >= 2 ([n, c, ...]), got {dims:?}")
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

fn check_param(name: &str, t: &Tensor, c: usize) -> Result<()> {
    if t.elem_count() != c || t.rank() != 1 {
        bail!("batch_norm: {name} should be [{c}], got {:?}", t.dims())
    }
    Ok(())
}

/// Training-mode batch norm with batch statistics, differentiable in `x`, `gamma`, `beta`.
///
/// `y = (x − μ_B) / √(σ²_B + eps) · γ + β`, with `μ_B`, `σ²_B` the mean and biased variance
/// over all axes but 1. Also returns `(μ_B, σ²_B)` (detached) for the running-stat update.
///
/// # Shapes
/// - `x`: `[n, c, ...]`, `gamma`, `beta`: `[c]`
/// - returns `(y [n, c, ...], mean [c], var [c])`
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn_train(x, gamma, beta, eps, false)
}

/// [`batch_norm_train`] followed by ReLU, as one op: the ReLU is applied in the normalising
/// pass and its gradient mask in the backward pass, so neither the BN output nor its gradient
/// is materialised (and candle does not accumulate a gradient for it). Same values and
/// gradients as the two ops (PyTorch's convention: no gradient where the output is 0).
pub fn batch_norm_train_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn_train(x, gamma, beta, eps, true)
}

fn bn_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _) = ncp(x.dims())?;
    check_param("gamma", gamma, c)?;
    check_param("beta", beta, c)?;
    if !fast_path(&[x, gamma, beta]) {
        let (y, mean, var) = reference::batch_norm_train_slow(x, gamma, beta, eps)?;
        return Ok((if relu { y.relu()? } else { y }, mean, var));
    }
    let stats = Arc::new(Mutex::new(None));
    let op = BnTrainOp {
        eps,
        stats: stats.clone(),
        relu,
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, Op(op))?;
    let (mean, var) = stats
        .lock()
        .expect("batch-norm stats lock should not be poisoned")
        .clone()
        .expect("batch-norm forward should have stored its statistics");
    let dev = x.device();
    Ok((
        y,
        Tensor::from_vec(mean, c, dev)?,
        Tensor::from_vec(var, c, dev)?,
    ))
}

/// The gradients `(dx, dγ, dβ)` of a train-mode batch norm (followed by ReLU when `relu`)
/// from its input `x`, output `y`, output gradient `dy` and the batch statistics `mean`,
/// `var` that [`batch_norm_train`] returned: the op's own backward as a plain call, for
/// reverse passes written by hand. `f32` on the CPU only.
pub fn batch_norm_train_grads(
    x: &Tensor,
    gamma: &Tensor,
    (y, dy): (&Tensor, &Tensor),
    (mean, var): (&Tensor, &Tensor),
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !fast_path(&[x, gamma, y, dy]) {
        candle::bail!("batch_norm_train_grads: expected f32 CPU tensors");
    }
    let dy = &relu_masked(relu, y, dy)?;
    let (mean, var) = (mean.to_vec1::<f32>()?, var.to_vec1::<f32>()?);
    let istd = inv_std(&var, eps);
    match bn_grads(x, gamma, dy, &mean, &istd, true)? {
        [Some(dx), Some(dg), Some(db)] => Ok((dx, dg, db)),
        _ => candle::bail!("batch_norm_train_grads: missing gradient"),
    }
}

/// Eval-mode batch norm with running statistics, differentiable in `x`, `gamma`, `beta`
/// (`mean` and `var` are constants).
///
/// `y = (x − mean) / √(var + eps) · γ + β`.
///
/// # Shapes
/// - `x`: `[n, c, ...]`, `gamma`, `beta`, `mean`, `var`: `[c]`; returns `[n, c, ...]`
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    bn_eval(x, gamma, beta, mean, var, eps, false)
}

/// [`batch_norm_eval`] followed by ReLU, as one op (see [`batch_norm_train_relu`]).
pub fn batch_norm_eval_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    bn_eval(x, gamma, beta, mean, var, eps, true)
}

fn bn_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (_, c, _) = ncp(x.dims())?;
    for (name, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("mean", mean),
        ("var", var),
    ] {
        check_param(name, t, c)?;
    }
    if !fast_path(&[x, gamma, beta, mean, var]) {
        let y = reference::batch_norm_eval_slow(x, gamma, beta, mean, var, eps)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    let op = BnEvalOp {
        eps,
        mean: mean.to_vec1()?,
        var: var.to_vec1()?,
        relu,
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, Op(op))
}

/// Train-mode op; the forward pass leaves `(mean, var)` in `stats` for the caller and `bwd`.
struct BnTrainOp {
    eps: f64,
    stats: SharedStats,
    /// ReLU after the normalisation (see [`batch_norm_train_relu`]).
    relu: bool,
}

/// Side channel for the batch `(mean, biased var)` computed inside the forward op.
type SharedStats = Arc<Mutex<Option<(Vec<f32>, Vec<f32>)>>>;

/// Eval-mode op with the running statistics baked in.
struct BnEvalOp {
    eps: f64,
    mean: Vec<f32>,
    var: Vec<f32>,
    relu: bool,
}

fn inv_std(var: &[f32], eps: f64) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect()
}

/// `y = x · scale[c] + shift[c]` for the affine map built from statistics and γ, β.
fn normalize(
    [x, gamma, beta]: [Arg<'_>; 3],
    mean: &[f32],
    istd: &[f32],
    relu: bool,
) -> Result<(Vec<f32>, Shape)> {
    let (n, c, p) = ncp(x.dims())?;
    let (xs, gs, bs) = (x.f32()?, gamma.f32()?, beta.f32()?);
    let scale: Vec<f32> = (0..c).map(|i| gs[i] * istd[i]).collect();
    let shift: Vec<f32> = (0..c).map(|i| bs[i] - mean[i] * scale[i]).collect();
    let y = affine(xs, None, n, c, p, relu, |ch| (scale[ch], 0.0, shift[ch]));
    Ok((y, x.shape()))
}

impl CpuOp<3> for BnTrainOp {
    fn name(&self) -> &'static str {
        "mpq-batch-norm-train"
    }

    fn forward(&self, args: [Arg<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let (n, c, p) = ncp(args[0].dims())?;
        let (mean, var) = batch_stats(args[0].f32()?, n, c, p);
        let istd = inv_std(&var, self.eps);
        let out = normalize(args, &mean, &istd, self.relu)?;
        *self
            .stats
            .lock()
            .expect("batch-norm stats lock should not be poisoned") = Some((mean, var));
        Ok(out)
    }

    fn backward(&self, g: Grad<'_, 3>) -> Result<[Option<Tensor>; 3]> {
        let [x, gamma, _] = g.args;
        let dy = &relu_masked(self.relu, g.res, g.dy)?;
        let (mean, var) = self
            .stats
            .lock()
            .expect("batch-norm stats lock should not be poisoned")
            .clone()
            .expect("batch-norm forward should run before its backward");
        let istd = inv_std(&var, self.eps);
        bn_grads(x, gamma, dy, &mean, &istd, true)
    }
}

impl CpuOp<3> for BnEvalOp {
    fn name(&self) -> &'static str {
        "mpq-batch-norm-eval"
    }

    fn forward(&self, args: [Arg<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let istd = inv_std(&self.var, self.eps);
        normalize(args, &self.mean, &istd, self.relu)
    }

    fn backward(&self, g: Grad<'_, 3>) -> Result<[Option<Tensor>; 3]> {
        let [x, gamma, beta] = g.args;
        let dy = &relu_masked(self.relu, g.res, g.dy)?;
        let istd = inv_std(&self.var, self.eps);
        if !gamma.track_op() && !beta.track_op() {
            // Frozen affine parameters (the Hessian executor): `dx = γ·istd·dy` alone, without
            // the two per-channel sums that only `dγ` and `dβ` need.
            let (n, c, p) = ncp(x.dims())?;
            let gs: Vec<f32> = gamma.to_vec1()?;
            let dx = with_f32(dy, |ds| {
                Ok(affine(ds, None, n, c, p, false, |ch| {
                    (gs[ch] * istd[ch], 0.0, 0.0)
                }))
            })?;
            return Ok([
                Some(Tensor::from_vec(dx, x.dims(), x.device())?),
                None,
                None,
            ]);
        }
        bn_grads(x, gamma, dy, &self.mean, &istd, false)
    }
}

/// The gradient that reaches the normalisation: `dy` where the fused ReLU's output `res` is
/// positive, 0 elsewhere (`dy` itself without a fused ReLU).
fn relu_masked(relu: bool, res: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if relu {
        crate::relu::relu_backward(res, dy)
    } else {
        Ok(dy.clone())
    }
}

/// Gradients of batch norm for `x`, `gamma`, `beta`.
///
/// With `s₁ = Σ dy` and `s₂ = Σ dy·(x − μ)` per channel over `m` elements:
/// `dβ = s₁`, `dγ = s₂ · istd`; eval: `dx = γ·istd·dy`; train (μ, σ² depend on x):
/// `dx = γ·istd·(dy − s₁/m − (x − μ)·istd²·s₂/m)`.
fn bn_grads(
    x: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    mean: &[f32],
    istd: &[f32],
    train: bool,
) -> Result<[Option<Tensor>; 3]> {
    let (n, c, p) = ncp(x.dims())?;
    let m = (n * p) as f32;
    let gs: Vec<f32> = gamma.to_vec1()?;
    let (dx, dgamma, dbeta) = with_f32(x, |xs| {
        with_f32(dy, |ds| {
            let (s1, s2) = grad_sums(xs, ds, mean, n, c, p);
            let dx = affine(ds, Some(xs), n, c, p, false, |ch| {
                let a = gs[ch] * istd[ch];
                if train {
                    let b = -a * istd[ch] * istd[ch] * s2[ch] / m;
                    (a, b, -a * s1[ch] / m - b * mean[ch])
                } else {
                    (a, 0.0, 0.0)
                }
            });
            let dgamma: Vec<f32> = (0..c).map(|i| s2[i] * istd[i]).collect();
            Ok((dx, dgamma, s1))
        })
    })?;
    let dev = x.device();
    Ok([
        Some(Tensor::from_vec(dx, x.dims(), dev)?),
        Some(Tensor::from_vec(dgamma, gamma.dims(), dev)?),
        Some(Tensor::from_vec(dbeta, gamma.dims(), dev)?),
    ])
}

/// Per-channel mean and biased variance, accumulated in `f64` around a per-channel shift
/// (the channel's first element) so the one-pass variance does not cancel.
fn batch_stats(x: &[f32], n: usize, c: usize, p: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * p) as f64;
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let shift = if p > 0 && n > 0 { x[ch * p] } else { 0.0 };
            let (mut s1, mut s2) = (0f64, 0f64);
            for i in 0..n {
                let plane = &x[(i * c + ch) * p..(i * c + ch + 1) * p];
                let (a, b) = shifted_sums(plane, shift);
                s1 += a as f64;
                s2 += b as f64;
            }
            let mu = s1 / m.max(1.0);
            (
                (shift as f64 + mu) as f32,
                (s2 / m.max(1.0) - mu * mu).max(0.0) as f32,
            )
        })
        .collect();
    per.into_iter().unzip()
}

multiversion! {
    /// `(Σ (v − s), Σ (v − s)²)` over one plane, in [`SUM_LANES`] independent lanes.
    fn shifted_sums(v: &[f32], s: f32) -> (f32, f32) = shifted_sums_impl;
}

/// Partial sums per reduction: 64 lanes are four independent chains of 16-lane adds, so a
/// sum runs at load speed instead of waiting on one chain's add latency (8 lanes took 12%
/// of a ResNet-20 training step).
const SUM_LANES: usize = 64;

#[inline(always)]
fn shifted_sums_impl(v: &[f32], s: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; SUM_LANES], [0f32; SUM_LANES]);
    let chunks = v.chunks_exact(SUM_LANES);
    let (mut ta, mut tb) = (0f32, 0f32);
    for &x in chunks.remainder() {
        ta += x - s;
        tb += (x - s) * (x - s);
    }
    for ch in chunks {
        for i in 0..SUM_LANES {
            let d = ch[i] - s;
            a[i] += d;
            b[i] += d * d;
        }
    }
    (a.iter().sum::<f32>() + ta, b.iter().sum::<f32>() + tb)
}

/// Per-channel `(Σ dy, Σ dy·(x − μ))`.
fn grad_sums(
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    n: usize,
    c: usize,
    p: usize,
) -> (Vec<f32>, Vec<f32>) {
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s1, mut s2) = (0f64, 0f64);
            for i in 0..n {
                let r = (i * c + ch) * p..(i * c + ch + 1) * p;
                let (a, b) = dy_sums(&dy[r.clone()], &x[r], mean[ch]);
                s1 += a as f64;
                s2 += b as f64;
            }
            (s1 as f32, s2 as f32)
        })
        .collect();
    per.into_iter().unzip()
}

multiversion! {
    /// `(Σ d, Σ d·(x − μ))` over one plane, in [`SUM_LANES`] independent lanes.
    fn dy_sums(d: &[f32], x: &[f32], mu: f32) -> (f32, f32) = dy_sums_impl;
}

#[inline(always)]
fn dy_sums_impl(d: &[f32], x: &[f32], mu: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; SUM_LANES], [0f32; SUM_LANES]);
    let (cd, cx) = (d.chunks_exact(SUM_LANES), x.chunks_exact(SUM_LANES));
    let (mut ta, mut tb) = (0f32, 0f32);
    for (&dv, &xv) in cd.remainder().iter().zip(cx.remainder()) {
        ta += dv;
        tb += dv * (xv - mu);
    }
    for (dc, xc) in cd.zip(cx) {
        for i in 0..SUM_LANES {
            a[i] += dc[i];
            b[i] += dc[i] * (xc[i] - mu);
        }
    }
    (a.iter().sum::<f32>() + ta, b.iter().sum::<f32>() + tb)
}

/// Elementwise per-channel map `out = a·u + b·v + k` with `(a, b, k) = coef(channel)`
/// (`v` absent means `b` is ignored; then `relu` clips the result at 0), parallel over
/// planes.
fn affine(
    u: &[f32],
    v: Option<&[f32]>,
    n: usize,
    c: usize,
    p: usize,
    relu: bool,
    coef: impl Fn(usize) -> (f32, f32, f32) + Sync,
) -> Vec<f32> {
    let coefs: Vec<(f32, f32, f32)> = (0..c).map(coef).collect();
    // SAFETY: `affine2` and `affine` write every element of their plane (`u` and `v` hold
    // `n·c·p` values).
    unsafe {
        filled_planes(n * c * p, p, |i, o| {
            let (a, b, k) = coefs[i % c];
            let us = &u[i * p..(i + 1) * p];
            match v {
                Some(v) => affine2(o, us, &v[i * p..(i + 1) * p], a, b, k),
                None if relu => channel_affine::affine::<true>(o, us, a, k),
                None => channel_affine::affine::<false>(o, us, a, k),
            }
        })
    }
}

multiversion! {
    /// `o = a·u + b·v + k` elementwise.
    fn affine2(o: &mut [MaybeUninit<f32>], u: &[f32], v: &[f32], a: f32, b: f32, k: f32) = affine2_impl;
}

#[inline(always)]
fn affine2_impl(o: &mut [MaybeUninit<f32>], u: &[f32], v: &[f32], a: f32, b: f32, k: f32) {
    assert!(u.len() >= o.len() && v.len() >= o.len());
    for ((o, &uu), &vv) in o.iter_mut().zip(u).zip(v) {
        o.write(a * uu + b * vv + k);
    }
}
