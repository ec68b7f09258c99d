//! Activation Hessian traces (HAWQ-V2: Dong et al. 2020, §2.6 of our spec; per channel as in
//! CW-HAWQ): the trace of the Hessian of the loss w.r.t. each analysed layer's *input*
//! activation, by Hutchinson probes (Hutchinson 1989) or basis vectors, through perturbation
//! variables added to each analysed layer's input (the hook point of `graph::Hooks::activation`)
//! by the Hessian executor (`forward.rs`, which also keeps ReLU patterns frozen).
//!
//! In eval mode samples do not interact, so the Hessian w.r.t. a batch's activation is
//! block-diagonal by sample and, with a mean loss, `vᵀ H_a v` for a probe shaped like the whole
//! batch estimates the **per-sample** trace `mean_n Tr ∇²_{a_n} ℓ_n` (for a linear layer feeding
//! a squared loss `mean_n ‖W a_n − t_n‖²`: `2 Tr(WᵀW)`). The per-batch values are averaged with
//! sample weights. Probes are streamed batch by batch, never stored for the whole data set.
//! The `exact` estimator puts the same basis vector `e_j` on every sample at once (the samples'
//! blocks are independent), so a layer costs one product per per-sample element.

use candle::{Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::channel::{activation_channels, activation_samples};
use super::forward::Perturbation;
use super::hessian::{TraceConfig, TraceEstimate, hutchinson, rademacher};
use super::hvp::{FdConfig, FdScheme, Precision};
use super::problem::HessianProblem;
use crate::progress::Progress;
use crate::{Error, Result};

/// Finite-difference products w.r.t. the analysed layers' input activations, one batch at a
/// time. The step follows the weight rule (see [`super::FiniteDiffHvp`]): `ε‖v‖ = δ‖a_S‖`, with
/// `a_S` the batch's input activations of the layers the probe touches.
pub struct ActivationHvp<'p> {
    problem: &'p HessianProblem,
    scheme: FdScheme,
    rel_step: f64,
    /// Per batch, per layer: squared norm of the input activation (1 when it is all zero).
    sq_norms: Vec<Vec<f64>>,
    /// One-sided differences: per batch, the activation gradients at the unperturbed point.
    base: Vec<Option<Vec<Tensor>>>,
    count: u64,
}

impl<'p> ActivationHvp<'p> {
    /// Products over `problem`'s layers (steps sized by the activation norms of its base pass).
    pub fn new(problem: &'p HessianProblem, cfg: &FdConfig) -> Result<Self> {
        let rel_step = cfg
            .rel_step
            .unwrap_or(Precision::of(problem.dtype()).default_rel_step(cfg.scheme));
        let sq_norms = (0..problem.batches().len())
            .map(|b| {
                problem
                    .activation_sq_norms(b)
                    .iter()
                    .map(|&s| if s > 0.0 && s.is_finite() { s } else { 1.0 })
                    .collect()
            })
            .collect();
        Ok(ActivationHvp {
            problem,
            scheme: cfg.scheme,
            rel_step,
            sq_norms,
            base: vec![None; problem.batches().len()],
            count: 0,
        })
    }

    /// Products computed so far (each over all batches).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The gradients w.r.t. the probed layers' activations with `deltas` (variables, per
    /// analysed layer) added to them; the pass's graph is gone when this returns.
    fn act_grads(&self, b: usize, deltas: Vec<Option<Var>>) -> Result<Vec<Option<Tensor>>> {
        let p = Perturbation {
            weights: Vec::new(),
            acts: deltas,
        };
        let grads = self.problem.gradient(b, &p)?;
        p.acts
            .iter()
            .map(|v| v.as_ref().map(|v| grad_of(&grads, v)).transpose())
            .collect()
    }

    fn base_grads(&mut self, b: usize) -> Result<Vec<Option<Tensor>>> {
        if self.base[b].is_none() {
            let batch = &self.problem.batches()[b];
            let n = batch.x.dim(0)?;
            let mut zeros = Vec::new();
            for l in self.problem.layers() {
                let mut shape = vec![n];
                shape.extend(&l.input_shape);
                let z = Tensor::zeros(shape, self.problem.dtype(), batch.x.device())?;
                zeros.push(Some(Var::from_tensor(&z)?));
            }
            let g = self.act_grads(b, zeros)?;
            self.base[b] = Some(g.into_iter().flatten().collect());
        }
        Ok(self.base[b].iter().flatten().cloned().map(Some).collect())
    }

    /// For probes `v[i] = Some((values, shape [n, ...]))` on batch `b` (host values, consumed),
    /// each probed layer's per-channel samples `Σ v ⊙ (H_b v)`, weighted by the batch's share of
    /// the samples. Memory: the probes live only as the perturbation variables `εv`.
    fn batch_samples(
        &mut self,
        b: usize,
        v: Vec<Option<(Vec<f32>, Vec<usize>)>>,
    ) -> Result<Vec<Option<Vec<f64>>>> {
        let (mut scale_sq, mut v_sq) = (0.0, 0.0);
        for (i, p) in v.iter().enumerate() {
            if let Some((vals, _)) = p {
                scale_sq += self.sq_norms[b][i];
                v_sq += vals.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
            }
        }
        let eps = self.rel_step * scale_sq.sqrt() / v_sq.sqrt();
        let other = match self.scheme {
            FdScheme::OneSided => Some(self.base_grads(b)?),
            FdScheme::Central => None,
        };
        let device = self.problem.device().clone();
        let dtype = self.problem.dtype();
        let plus = v
            .into_iter()
            .map(|p| {
                p.map(|(vals, shape)| {
                    let t = Tensor::from_vec(vals, shape, &device)?.to_dtype(dtype)?;
                    Ok(Var::from_tensor(&(t * eps)?)?)
                })
                .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let gp = self.act_grads(b, plus.clone())?;
        let (other, denom) = match other {
            Some(g0) => (g0, eps),
            None => {
                let minus = plus
                    .iter()
                    .map(|v| {
                        v.as_ref()
                            .map(|v| Var::from_tensor(&v.as_tensor().neg()?))
                            .transpose()
                    })
                    .collect::<candle::Result<Vec<_>>>()?;
                (self.act_grads(b, minus)?, 2.0 * eps)
            }
        };
        let wb = self.problem.batch_weight(b)?;
        let mut out = Vec::with_capacity(plus.len());
        for (i, ((d, gp), go)) in plus.iter().zip(gp).zip(other).enumerate() {
            let (Some(d), Some(gp), Some(go)) = (d, gp, go) else {
                out.push(None);
                continue;
            };
            // v ⊙ Hv = (εv / ε) ⊙ (g₊ − g₋) / denom.
            let prod = ((d.as_tensor() * (gp - go)?)? / (eps * denom))?;
            let (c, per) = activation_channels(&self.problem.layers()[i]);
            let s: Vec<f64> = activation_samples(&prod, c, per)?
                .into_iter()
                .map(|x| wb * x)
                .collect();
            if s.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "activation Hessian-vector product at layer {}",
                    self.problem.layers()[i].name
                )));
            }
            out.push(Some(s));
        }
        Ok(out)
    }
}

fn grad_of(grads: &candle::backprop::GradStore, v: &Var) -> Result<Tensor> {
    match grads.get(v.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => Ok(v.as_tensor().zeros_like()?),
    }
}

/// Per-sample activation traces of every analysed layer by Hutchinson, with Rademacher probes
/// over all layers' activations at once (streamed per batch from `rng`).
pub fn activation_traces(
    hvp: &mut ActivationHvp<'_>,
    cfg: &TraceConfig,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn Progress,
) -> Result<Vec<TraceEstimate>> {
    let problem = hvp.problem;
    let layers = problem.layers().to_vec();
    let channels: Vec<usize> = layers.iter().map(|l| activation_channels(l).0).collect();
    hutchinson(&channels, cfg, "act-trace", progress, |_| {
        let mut total: Vec<Vec<f64>> = channels.iter().map(|&c| vec![0.0; c]).collect();
        for b in 0..problem.batches().len() {
            let n = problem.batches()[b].x.dim(0)?;
            let mut v = Vec::with_capacity(layers.len());
            for l in &layers {
                let mut shape = vec![n];
                shape.extend(&l.input_shape);
                v.push(Some((rademacher(rng, n * l.input_elems), shape)));
            }
            let s = hvp.batch_samples(b, v)?;
            for (acc, s) in total.iter_mut().zip(s) {
                for (a, x) in acc.iter_mut().zip(s.unwrap_or_default()) {
                    *a += x;
                }
            }
        }
        hvp.count += 1;
        Ok(total)
    })
}

/// The exact per-sample activation trace of analysed layer `i`: one product per per-sample
/// element `j`, with `e_j` on every sample at once.
pub fn exact_activation_trace(
    hvp: &mut ActivationHvp<'_>,
    i: usize,
    progress: &mut dyn Progress,
) -> Result<TraceEstimate> {
    let problem = hvp.problem;
    let info = problem.layers()[i].clone();
    let (c, per) = activation_channels(&info);
    let m = info.input_elems;
    let mut chans = vec![0.0; c];
    progress.start(&format!("act exact {}", info.name), m as u64);
    for j in 0..m {
        for b in 0..problem.batches().len() {
            let n = problem.batches()[b].x.dim(0)?;
            let mut vals = vec![0f32; n * m];
            for s in 0..n {
                vals[s * m + j] = 1.0;
            }
            let mut shape = vec![n];
            shape.extend(&info.input_shape);
            let mut v = vec![None; problem.layers().len()];
            v[i] = Some((vals, shape));
            let s = hvp.batch_samples(b, v)?;
            if let Some(Some(s)) = s.into_iter().nth(i) {
                chans[j / per] += s.iter().sum::<f64>();
            }
        }
        hvp.count += 1;
        progress.inc(1);
    }
    progress.finish();
    Ok(TraceEstimate {
        trace: chans.iter().sum(),
        stderr: Some(0.0),
        probes: m,
        converged_at: None,
        channels: chans,
    })
}
