//! Activation Hessian traces (HAWQ-V2: Dong et al. 2020, §2.6 of our spec; per channel as in
//! CW-HAWQ): the trace of the Hessian of the loss w.r.t. each analysed layer's *input*
//! activation, by Hutchinson probes (Hutchinson 1989) or basis vectors, through perturbation
//! variables added to each analysed layer's input (the hook point of `graph::Hooks::activation`)
//! by the Hessian executor (the graph's reverse-mode engine, or `forward.rs` under autograd;
//! both keep ReLU patterns frozen).
//!
//! In eval mode samples do not interact, so the Hessian w.r.t. a batch's activation is
//! block-diagonal by sample and, with a mean loss, `vᵀ H_a v` for a probe shaped like the whole
//! batch estimates the **per-sample** trace `mean_n Tr ∇²_{a_n} ℓ_n` (for a linear layer feeding
//! a squared loss `mean_n ‖W a_n − t_n‖²`: `2 Tr(WᵀW)`). The per-batch values are averaged with
//! sample weights. For the same reason a batch can be processed in parts ("micro-batches"):
//! each part's pass gives exactly its samples' share of the product, so the parts' sums equal
//! the whole batch's up to the order of float additions, and the memory of a pass shrinks with
//! the part (see [`ActivationHvp`]). Probes are streamed part by part, never stored for a
//! whole batch or the whole data set.
//! The `exact` estimator puts the same basis vector `e_j` on every sample at once (the samples'
//! blocks are independent), so a layer costs one product per per-sample element.

use std::ops::Range;

use candle::{Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::channel::{activation_channels, activation_samples};
use super::hessian::{TraceConfig, TraceEstimate, hutchinson, rademacher};
use super::hvp::{FdConfig, FdScheme};
use super::problem::{HessianProblem, Precision};
use crate::graph::Perturbation;
use crate::progress::Progress;
use crate::{Error, Result};

/// Finite-difference products w.r.t. the analysed layers' input activations, one batch at a
/// time, each batch in passes over at most `micro_batch` samples. The step follows the weight
/// rule (see [`super::FiniteDiffHvp`]): `ε‖v‖ = δ‖a_S‖`, with `a_S` the batch's input
/// activations of the layers the probe touches (the whole batch's, so splitting a batch into
/// passes changes nothing but the order of float sums).
///
/// Memory: a pass holds its probe as perturbation variables, the perturbed activations, the
/// graph of one forward pass and the activation gradients, each as large as the part's inputs
/// of all analysed layers (≈ 0.85 MB per sample on ResNet-20); with one-sided differences the
/// unperturbed gradients of every sample are cached once (one such set for the whole data).
pub struct ActivationHvp<'p> {
    problem: &'p HessianProblem,
    scheme: FdScheme,
    rel_step: f64,
    micro_batch: usize,
    /// Per batch, per layer: squared norm of the input activation (1 when it is all zero).
    sq_norms: Vec<Vec<f64>>,
    /// One-sided differences: per batch, per part, the activation gradients at the
    /// unperturbed point.
    base: Vec<Vec<Option<Vec<Tensor>>>>,
    count: u64,
}

/// The probe of one product, generated part by part so that the whole batch's probe never
/// exists at once.
pub(crate) enum Probe<'r> {
    /// Rademacher entries on every layer's input, drawn sample by sample (for each sample,
    /// layer by layer), so the values do not depend on how a batch is split into passes.
    Rademacher(&'r mut ChaCha8Rng),
    /// The basis vector `e_elem` of layer `layer`'s per-sample input, on every sample.
    Basis { layer: usize, elem: usize },
}

impl<'p> ActivationHvp<'p> {
    /// Products over `problem`'s layers (steps sized by the activation norms of its base
    /// pass), in passes of at most `micro_batch` samples (at least 1).
    pub fn new(problem: &'p HessianProblem, cfg: &FdConfig, micro_batch: usize) -> Result<Self> {
        if micro_batch == 0 {
            return Err(Error::config("micro-batch", "must be at least 1"));
        }
        let rel_step = cfg
            .rel_step
            .unwrap_or(Precision::of(problem.dtype()).default_rel_step(cfg.scheme));
        if !(rel_step.is_finite() && rel_step > 0.0) {
            return Err(Error::config("rel-step", "must be a positive number"));
        }
        let sq_norms = (0..problem.batches().len())
            .map(|b| {
                problem
                    .activation_sq_norms(b)
                    .iter()
                    .map(|&s| if s > 0.0 && s.is_finite() { s } else { 1.0 })
                    .collect()
            })
            .collect();
        let base = problem
            .batches()
            .iter()
            .map(|b| Ok(vec![None; b.x.dim(0)?.div_ceil(micro_batch)]))
            .collect::<Result<_>>()?;
        Ok(ActivationHvp {
            problem,
            scheme: cfg.scheme,
            rel_step,
            micro_batch,
            sq_norms,
            base,
            count: 0,
        })
    }

    /// Products computed so far (each over all batches).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The gradients w.r.t. the probed layers' activations with `deltas` (variables, per
    /// analysed layer, shaped like samples `part` of batch `b`) added to them; the pass's graph
    /// is gone when this returns.
    fn act_grads(
        &self,
        b: usize,
        part: Range<usize>,
        deltas: Vec<Option<Var>>,
    ) -> Result<Vec<Option<Tensor>>> {
        let p = Perturbation {
            weights: Vec::new(),
            acts: deltas,
        };
        let grads = self.problem.gradient_part(b, part, &p, &[])?;
        p.acts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_ref()
                    .map(|v| match grads.acts.get(i).and_then(Option::as_ref) {
                        Some(g) => Ok(g.clone()),
                        None => Ok(v.as_tensor().zeros_like()?),
                    })
                    .transpose()
            })
            .collect()
    }

    /// The unperturbed activation gradients of part `k` (samples `part`) of batch `b`,
    /// computed once.
    fn base_grads(&mut self, b: usize, k: usize, part: Range<usize>) -> Result<Vec<Tensor>> {
        if let Some(g) = &self.base[b][k] {
            return Ok(g.clone());
        }
        let device = self.problem.device().clone();
        let mut zeros = Vec::new();
        for l in self.problem.layers() {
            let mut shape = vec![part.len()];
            shape.extend(&l.input_shape);
            let z = Tensor::zeros(shape, self.problem.dtype(), &device)?;
            zeros.push(Some(Var::from_tensor(&z)?));
        }
        let g: Vec<Tensor> = self
            .act_grads(b, part, zeros)?
            .into_iter()
            .flatten()
            .collect();
        self.base[b][k] = Some(g.clone());
        Ok(g)
    }

    /// For `probe` on batch `b`, each probed layer's per-channel samples `Σ v ⊙ (H_b v)`,
    /// weighted by the batch's share of the samples, summed over the batch's parts in order.
    fn batch_samples(&mut self, b: usize, probe: &mut Probe<'_>) -> Result<Vec<Option<Vec<f64>>>> {
        let layers = self.problem.layers().to_vec();
        let n = self.problem.batches()[b].x.dim(0)?;
        let touched: Vec<bool> = (0..layers.len())
            .map(|i| match probe {
                Probe::Rademacher(_) => true,
                Probe::Basis { layer, .. } => i == *layer,
            })
            .collect();
        // ‖v‖² of the whole batch's probe: ±1 entries, or one 1 per sample.
        let v_sq = match probe {
            Probe::Rademacher(_) => {
                (n * layers.iter().map(|l| l.input_elems).sum::<usize>()) as f64
            }
            Probe::Basis { .. } => n as f64,
        };
        let scale_sq: f64 = (0..layers.len())
            .filter(|&i| touched[i])
            .map(|i| self.sq_norms[b][i])
            .sum();
        let eps = self.rel_step * scale_sq.sqrt() / v_sq.sqrt();
        let wb = self.problem.batch_weight(b)?;
        let device = self.problem.device().clone();
        let dtype = self.problem.dtype();
        let mut out: Vec<Option<Vec<f64>>> = layers
            .iter()
            .zip(&touched)
            .map(|(l, &t)| t.then(|| vec![0.0; activation_channels(l).0]))
            .collect();
        for (k, start) in (0..n).step_by(self.micro_batch).enumerate() {
            let part = start..(start + self.micro_batch).min(n);
            let m = part.len();
            // The part's probe values, per touched layer, `[m, input_shape...]`.
            let mut vals: Vec<Option<Vec<f32>>> = layers
                .iter()
                .zip(&touched)
                .map(|(l, &t)| t.then(|| Vec::with_capacity(m * l.input_elems)))
                .collect();
            match probe {
                Probe::Rademacher(rng) => {
                    for _ in part.clone() {
                        for (l, v) in layers.iter().zip(vals.iter_mut()) {
                            if let Some(v) = v {
                                v.extend(rademacher(rng, l.input_elems));
                            }
                        }
                    }
                }
                Probe::Basis { layer, elem } => {
                    if let Some(v) = vals[*layer].as_mut() {
                        let e = layers[*layer].input_elems;
                        v.resize(m * e, 0.0);
                        for s in 0..m {
                            v[s * e + *elem] = 1.0;
                        }
                    }
                }
            }
            let plus = vals
                .into_iter()
                .zip(&layers)
                .map(|(v, l)| {
                    v.map(|v| {
                        let mut shape = vec![m];
                        shape.extend(&l.input_shape);
                        let t = Tensor::from_vec(v, shape, &device)?.to_dtype(dtype)?;
                        Ok(Var::from_tensor(&(t * eps)?)?)
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            let gp = self.act_grads(b, part.clone(), plus.clone())?;
            let (other, denom): (Vec<Option<Tensor>>, f64) = match self.scheme {
                FdScheme::OneSided => (
                    self.base_grads(b, k, part.clone())?
                        .into_iter()
                        .map(Some)
                        .collect(),
                    eps,
                ),
                FdScheme::Central => {
                    let minus = plus
                        .iter()
                        .map(|v| {
                            v.as_ref()
                                .map(|v| Var::from_tensor(&v.as_tensor().neg()?))
                                .transpose()
                        })
                        .collect::<candle::Result<Vec<_>>>()?;
                    (self.act_grads(b, part.clone(), minus)?, 2.0 * eps)
                }
            };
            for (i, ((d, gp), go)) in plus.iter().zip(gp).zip(other).enumerate() {
                let (Some(d), Some(gp), Some(go), Some(acc)) = (d, gp, go, out[i].as_mut()) else {
                    continue;
                };
                // v ⊙ Hv = (εv / ε) ⊙ (g₊ − g₋) / denom.
                let prod = ((d.as_tensor() * (gp - go)?)? / (eps * denom))?;
                let (c, per) = activation_channels(&layers[i]);
                for (a, x) in acc.iter_mut().zip(activation_samples(&prod, c, per)?) {
                    *a += wb * x;
                }
            }
        }
        for (i, s) in out.iter().enumerate() {
            if s.as_ref().is_some_and(|s| s.iter().any(|x| !x.is_finite())) {
                return Err(Error::NonFinite(format!(
                    "activation Hessian-vector product at layer {}",
                    layers[i].name
                )));
            }
        }
        Ok(out)
    }
}

/// Per-sample activation traces of every analysed layer by Hutchinson, with Rademacher probes
/// over all layers' activations at once (streamed per batch and part from `rng`).
pub fn activation_traces(
    hvp: &mut ActivationHvp<'_>,
    cfg: &TraceConfig,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn Progress,
) -> Result<Vec<TraceEstimate>> {
    let problem = hvp.problem;
    let channels: Vec<usize> = problem
        .layers()
        .iter()
        .map(|l| activation_channels(l).0)
        .collect();
    hutchinson(&channels, cfg, "act-trace", progress, false, |_, _| {
        let mut total: Vec<Vec<f64>> = channels.iter().map(|&c| vec![0.0; c]).collect();
        for b in 0..problem.batches().len() {
            let s = hvp.batch_samples(b, &mut Probe::Rademacher(rng))?;
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
            let s = hvp.batch_samples(b, &mut Probe::Basis { layer: i, elem: j })?;
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
        channel_stderr: Some(vec![0.0; chans.len()]),
        channels: chans,
    })
}
