//! Hessian-vector products of the loss with respect to the weights of the quantizable layers,
//! by finite differences of gradients (PyHessian: Yao et al. 2020, computes the same products
//! by double back-propagation; HAWQ: Dong et al. 2019 and HAWQ-V2: Dong et al. 2020 use them).
//!
//! # Why finite differences and not candle's double backward
//! candle's backward pass detaches every gradient it accumulates unless the environment
//! variable `CANDLE_GRAD_DO_NOT_DETACH` is set (read once per thread). With it set, gradients
//! built from differentiable candle ops (matmul, add, exp, log-softmax, gather) keep their graph
//! and could be differentiated again. But our convolution, batch norm and pooling are custom
//! ops of `mpq-kernels` whose `bwd` runs hand-written kernels and wraps the raw buffers with
//! `Tensor::from_vec` (`apply_op2_no_bwd` for pooling): those gradients carry no op graph, so a
//! second backward sees them as constants and silently drops every second-order term that
//! passes through a convolution, a batch norm or a pool — for a CNN almost all of the Hessian.
//! candle's own max-pool backward is also wrong (it scales the gradient by count/k², see the
//! `forward` module). The flag is process-wide, too, so it would keep training's backward
//! graphs alive. Differences of gradients need only first-order backward, which every op has.
//!
//! # Step size
//! `Hv ≈ (g(w + εv) − g(w − εv)) / 2ε` (central) or `(g(w + εv) − g(w)) / ε` (one-sided, with
//! `g(w)` computed once per batch and reused). The step makes the perturbation `δ` *relative to
//! the weights of the layers it touches*: `ε‖v‖ = δ‖w_S‖`, with `S` the layers where `v` is
//! non-zero (docs/algorithms.md §1.3: `ε = δ(1+‖w‖)/‖v‖` without the absolute `1`, which would dominate for
//! small layers). Relative is the right unit because both error terms are relative: rounding
//! the f32 gradients costs `~u‖g‖/(ε‖Hv‖)` (grows as `δ` shrinks), truncating the quotient
//! `~δ²` (central) or `~δ` (one-sided). A basis vector thus moves its one weight by `δ‖w_i‖`,
//! which is large for that weight but small for every pre-activation it feeds: tying the step to
//! the weight's own size (`δ r_i`) made basis-vector products 3% wrong in f32 through rounding.
//!
//! # Defaults, chosen by accuracy per second
//! Measured on ResNet-20 (random weights, batch 32, patterns frozen) against an f64 reference
//! (`docs/benchmarks.md`, "Hessian"), relative L2 error of `Hv` in f32:
//!
//! | δ | 1e-4 | 3e-4 | 1e-3 | 3e-3 | 1e-2 |
//! | --- | --- | --- | --- | --- | --- |
//! | central | 2.5e-4 | 6.0e-5 | **2.3e-5** | 5.2e-5 | 5.9e-4 |
//! | one-sided | **4.7e-4** | 8.0e-4 | 2.7e-3 | 8.1e-3 | 2.7e-2 |
//!
//! One-sided costs one gradient per product (0.56x a training step's forward+backward on
//! ResNet-20 at batch 128 with the graph's hand-written reverse pass), central two
//! (1.4x). On LeNet-5 one-sided reached 3e-3, central 1e-4. Hutchinson's own
//! standard error is percents, 10–100x one-sided's, so at equal time its twice as many probes
//! win: Hutchinson traces default to one-sided (`δ = 1e-4` in f32, `1e-8` in f64). Power
//! iteration, exact blocks and Lanczos have no sampling noise, so the difference error *is*
//! their error: they default to central (`δ = 1e-3` in f32, `1e-5` in f64), 20–100x more
//! accurate for 2x the time. `g(w)` is cached per batch (the analysed data fit in memory).
//!
//! # ReLU kinks
//! A difference of gradients also sees every ReLU whose pre-activation changes sign between
//! `w − εv` and `w + εv` (a jump of the gradient that autodiff's Hessian, with ReLU'' = 0, does
//! not have). The products therefore run through the `forward` module's executor, which keeps
//! the ReLU, ReLU6 and max-pool patterns of the unperturbed weights: the loss along `w + tv` is
//! then smooth and the quotient converges to autodiff's `Hv`.
//!
//! The weights are never written, so there is nothing to restore: instead of setting `w ± εv`
//! into the variables and copying `w` back afterwards, the perturbation is added inside the
//! forward pass (`w + εv` is formed there) and the model's weights stay bit-identical.

use candle::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::problem::{HessianProblem, Precision};
use crate::graph::Perturbation;
use crate::{Error, Result};

/// A Hessian-vector product operator over the concatenated weights of some layers ("blocks").
///
/// Vectors are flat: block 0's elements first, in the weight's row-major order.
pub trait Hvp {
    /// Elements of each block.
    fn block_sizes(&self) -> &[usize];
    /// `H·v` for a flat vector `v` of `sum(block_sizes)` elements.
    fn hvp(&mut self, v: &[f32]) -> Result<Vec<f32>>;
    /// `H·v` on the blocks that `wanted` marks; the other blocks' entries are unspecified
    /// (zero here, the true value in the default). Lets an implementation skip the gradients nobody reads, as
    /// Hutchinson does for layers that have met their stopping rule. The default computes
    /// the whole product.
    fn hvp_blocks(&mut self, v: &[f32], wanted: &[bool]) -> Result<Vec<f32>> {
        let _ = wanted;
        self.hvp(v)
    }
    /// Products computed so far.
    fn count(&self) -> u64;
}

/// How the gradients are differenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FdScheme {
    /// `(g(w+εv) − g(w−εv)) / 2ε`: two gradients per product, error O(ε²).
    Central,
    /// `(g(w+εv) − g(w)) / ε` with `g(w)` cached per batch: one gradient per product, error
    /// O(ε) (its leading term is odd in `v`, so it averages out of Hutchinson traces).
    #[default]
    OneSided,
}

impl Precision {
    /// The default relative step `δ` of `scheme` in this precision (see the module docs).
    pub fn default_rel_step(self, scheme: FdScheme) -> f64 {
        match (self, scheme) {
            (Precision::F32, FdScheme::Central) => 1e-3,
            (Precision::F32, FdScheme::OneSided) => 1e-4,
            (Precision::F64, FdScheme::Central) => 1e-5,
            (Precision::F64, FdScheme::OneSided) => 1e-8,
        }
    }
}

/// Settings of finite-difference products.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct FdConfig {
    /// Central or one-sided differences.
    pub scheme: FdScheme,
    /// Relative step `δ` (see the module docs); `None`: the precision's default.
    pub rel_step: Option<f64>,
}

/// The default [`Hvp`]: finite differences of gradients w.r.t. the analysed layers' weights,
/// averaged over the batches with sample weights.
pub struct FiniteDiffHvp<'p> {
    problem: &'p HessianProblem,
    scheme: FdScheme,
    rel_step: f64,
    sizes: Vec<usize>,
    shapes: Vec<Vec<usize>>,
    /// Squared weight norm of each layer (1 for an all-zero layer).
    sq_norms: Vec<f64>,
    base: Vec<Option<Vec<f64>>>,
    count: u64,
}

impl<'p> FiniteDiffHvp<'p> {
    /// Products over `problem`'s layers; the step defaults to the precision's.
    pub fn new(problem: &'p HessianProblem, cfg: &FdConfig) -> Result<Self> {
        let rel_step = cfg
            .rel_step
            .unwrap_or(Precision::of(problem.dtype()).default_rel_step(cfg.scheme));
        if !(rel_step.is_finite() && rel_step > 0.0) {
            return Err(Error::config("rel-step", "must be a positive number"));
        }
        let mut sizes = Vec::new();
        let mut shapes = Vec::new();
        let mut sq_norms = Vec::new();
        for i in 0..problem.layers().len() {
            let w = problem.weight(i);
            let n = w.elem_count();
            let sq = w
                .as_tensor()
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            sizes.push(n);
            shapes.push(w.dims().to_vec());
            sq_norms.push(if sq > 0.0 { sq } else { 1.0 });
        }
        Ok(FiniteDiffHvp {
            problem,
            scheme: cfg.scheme,
            rel_step,
            sizes,
            shapes,
            sq_norms,
            base: vec![None; problem.batches().len()],
            count: 0,
        })
    }

    /// The relative step in use.
    pub fn rel_step(&self) -> f64 {
        self.rel_step
    }

    /// The scheme in use.
    pub fn scheme(&self) -> FdScheme {
        self.scheme
    }

    /// Gradients of the analysed weights that `wanted` marks on batch `b` under `p`, flat, in
    /// f64 (zeros for the others).
    fn weight_grad(&self, b: usize, p: &Perturbation, wanted: &[bool]) -> Result<Vec<f64>> {
        let grads = self.problem.gradient(b, p, wanted)?;
        let mut out = Vec::with_capacity(self.sizes.iter().sum());
        for (i, &n) in self.sizes.iter().enumerate() {
            match grads.weights.get(i).and_then(Option::as_ref) {
                Some(g) => out.extend(g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?),
                None => out.extend(std::iter::repeat_n(0.0, n)),
            }
        }
        Ok(out)
    }

    fn base_grad(&mut self, b: usize) -> Result<&[f64]> {
        if self.base[b].is_none() {
            let all = vec![true; self.sizes.len()];
            let g = self.weight_grad(b, &Perturbation::default(), &all)?;
            self.base[b] = Some(g);
        }
        Ok(self.base[b].as_deref().unwrap_or(&[]))
    }
}

impl Hvp for FiniteDiffHvp<'_> {
    fn block_sizes(&self) -> &[usize] {
        &self.sizes
    }

    fn hvp(&mut self, v: &[f32]) -> Result<Vec<f32>> {
        let all = vec![true; self.sizes.len()];
        self.hvp_blocks(v, &all)
    }

    fn hvp_blocks(&mut self, v: &[f32], wanted: &[bool]) -> Result<Vec<f32>> {
        let dim: usize = self.sizes.iter().sum();
        if wanted.len() != self.sizes.len() {
            return Err(Error::ShapeMismatch {
                name: "Hessian-vector product blocks".into(),
                expected: format!("{} flags", self.sizes.len()),
                got: format!("{}", wanted.len()),
            });
        }
        if v.len() != dim {
            return Err(Error::ShapeMismatch {
                name: "Hessian-vector product input".into(),
                expected: format!("{dim} elements"),
                got: format!("{} elements", v.len()),
            });
        }
        let device = self.problem.device().clone();
        let dtype = self.problem.dtype();
        // Step: ε‖v‖ = δ‖w_S‖ over the layers S that v touches.
        let mut scale_sq = 0.0;
        let mut off = 0;
        let mut blocks = Vec::new();
        for (i, &n) in self.sizes.iter().enumerate() {
            if v[off..off + n].iter().any(|x| *x != 0.0) {
                scale_sq += self.sq_norms[i];
                blocks.push((i, off));
            }
            off += n;
        }
        if blocks.is_empty() {
            return Ok(vec![0.0; dim]);
        }
        let vnorm = super::linalg::norm(v);
        let eps = self.rel_step * scale_sq.sqrt() / vnorm;
        let delta = |sign: f64| -> Result<Perturbation> {
            let mut weights = vec![None; self.sizes.len()];
            for &(i, off) in &blocks {
                let vals: Vec<f64> = v[off..off + self.sizes[i]]
                    .iter()
                    .map(|&x| sign * eps * x as f64)
                    .collect();
                let t = Tensor::from_vec(vals, self.shapes[i].as_slice(), &device)?;
                weights[i] = Some(t.to_dtype(dtype)?);
            }
            Ok(Perturbation {
                weights,
                acts: Vec::new(),
            })
        };
        let plus = delta(1.0)?;
        let minus = match self.scheme {
            FdScheme::Central => Some(delta(-1.0)?),
            FdScheme::OneSided => None,
        };
        let mut acc = vec![0.0f64; dim];
        for b in 0..self.problem.batches().len() {
            let wb = self.problem.batch_weight(b)?;
            let gp = self.weight_grad(b, &plus, wanted)?;
            match &minus {
                Some(minus) => {
                    let gm = self.weight_grad(b, minus, wanted)?;
                    let s = wb / (2.0 * eps);
                    for ((a, p), m) in acc.iter_mut().zip(&gp).zip(&gm) {
                        *a += s * (p - m);
                    }
                }
                None => {
                    let s = wb / eps;
                    let g0 = self.base_grad(b)?;
                    for ((a, p), z) in acc.iter_mut().zip(&gp).zip(g0) {
                        *a += s * (p - z);
                    }
                }
            }
        }
        self.count += 1;
        let mut off = 0;
        for (i, &n) in self.sizes.iter().enumerate() {
            if !wanted[i] {
                // Its gradients were not computed (one-sided: `0 − g(w)`, meaningless).
                acc[off..off + n].fill(0.0);
            }
            if acc[off..off + n].iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "Hessian-vector product at layer {} (the loss is not twice differentiable \
                     at these weights, or the step overflowed)",
                    self.problem.layers()[i].name
                )));
            }
            off += n;
        }
        Ok(acc.into_iter().map(|x| x as f32).collect())
    }

    fn count(&self) -> u64 {
        self.count
    }
}
