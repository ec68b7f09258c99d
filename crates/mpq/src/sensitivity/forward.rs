//! The eval-mode forward pass behind every Hessian-vector product (PyHessian: Yao et al. 2020
//! differentiates the same eval-mode network twice): the graph's own ops (`graph::ops`), with
//! weight and activation perturbations at the analysed layers and the switching pattern of
//! every ReLU, ReLU6 and max-pool *frozen* at the unperturbed weights.
//!
//! Why frozen: a difference of gradients `g(w+εv) − g(w−εv)` also picks up every ReLU whose
//! pre-activation changes sign between the two points, a jump of the gradient that autodiff's
//! Hessian (ReLU'' = 0) does not have. On a random ResNet-20 at batch 32 such sign changes made
//! f32 products 50–180% wrong and even an f64 product at `δ = 1e-6` 9x wrong (one crossing
//! divided by a tiny step), while f64 at `δ ≤ 1e-7` agreed with itself to 6e-7 (see
//! `docs/benchmarks.md`, "Hessian"). With the masks recorded in one base pass per batch and
//! reused, the loss along `w + tv` is smooth and the difference quotient converges to autodiff's
//! `Hv`. The graph's [`crate::graph::Hooks`] cannot reach the nonlinearities, hence this
//! executor; it supports every node kind of [`Op`] (a new kind fails to compile here).
//! Max-pools are frozen exactly when windows do not overlap (`kernel == stride`, no padding);
//! other max-pools run unfrozen.

use std::collections::HashMap;

use candle::{DType, Tensor, Var};

use crate::graph::{self, Graph, Op, PoolSpec};
use crate::{Error, Result};

/// Perturbations of one forward pass, indexed by analysed layer: weight offsets (constants),
/// and activation offsets as variables (their gradients are the activation gradients).
#[derive(Debug, Default)]
pub(crate) struct Perturbation {
    pub(crate) weights: Vec<Option<Tensor>>,
    pub(crate) acts: Vec<Option<Var>>,
}

/// One batch's recorded patterns, per node: a u8 mask for ReLU (`z > 0`), a u8 code for ReLU6
/// (0 below, 1 inside, 2 at or above 6), a u8 mask of each window's maxima for max-pool.
pub(crate) type Patterns = Vec<Option<Tensor>>;

/// What a pass does with the patterns.
pub(crate) enum PatternMode<'a> {
    /// Compute the nonlinearities normally and record their patterns.
    Record(&'a mut Patterns),
    /// Apply recorded patterns.
    Frozen(&'a Patterns),
    /// Compute the nonlinearities normally.
    Free,
}

/// One forward pass's settings.
pub(crate) struct Pass<'a> {
    /// Analysed layer name → index into the perturbations.
    pub(crate) index: &'a HashMap<String, usize>,
    pub(crate) p: &'a Perturbation,
    /// Which analysed layers' weights are tracked for gradients (indexed like the
    /// perturbations; missing entries are untracked). Every other parameter (biases, BatchNorm,
    /// unanalysed weights) is always detached: no analysis reads their gradients, and a pass
    /// with nothing tracked keeps no graph alive.
    pub(crate) tracked: &'a [bool],
    pub(crate) patterns: PatternMode<'a>,
    /// Receives each analysed layer's squared input-activation norm.
    pub(crate) sq_norms: Option<&'a mut Vec<f64>>,
}

/// For each node, the last node that reads it (itself if none).
pub(crate) fn last_uses(graph: &Graph) -> Vec<usize> {
    let mut last: Vec<usize> = (0..graph.nodes().len()).collect();
    for (id, n) in graph.nodes().iter().enumerate() {
        for &i in &n.inputs {
            last[i] = id;
        }
    }
    last
}

/// Runs `graph` in eval mode on `x` under `pass`; returns the logits.
pub(crate) fn forward(
    graph: &Graph,
    last_use: &[usize],
    x: &Tensor,
    pass: &mut Pass<'_>,
) -> Result<Tensor> {
    let nodes = graph.nodes();
    if let PatternMode::Record(p) = &mut pass.patterns {
        p.clear();
        p.resize(nodes.len(), None);
    }
    let mut values: Vec<Option<Tensor>> = vec![None; nodes.len()];
    values[0] = Some(x.clone());
    for (id, node) in nodes.iter().enumerate().skip(1) {
        let input = |k: usize| -> Result<&Tensor> {
            values[node.inputs[k]].as_ref().ok_or_else(|| {
                Error::config("graph", format!("node {} reads a freed value", node.name))
            })
        };
        let y = match &node.op {
            Op::Input => input(0)?.clone(),
            Op::Conv2d(spec) => {
                let (x, w, b) = pass.layer(graph, &node.name, input(0)?, spec.bias)?;
                graph::conv2d(&x, &w, b.as_ref(), spec)?
            }
            Op::Linear(spec) => {
                let (x, w, b) = pass.layer(graph, &node.name, input(0)?, spec.bias)?;
                graph::linear(&x, &w, b.as_ref())?
            }
            Op::BatchNorm2d(spec) => {
                let p = |s: &str| pass.param(graph, &format!("{}.{s}", node.name));
                graph::batch_norm_eval(
                    input(0)?,
                    &p("weight")?,
                    &p("bias")?,
                    &p("running_mean")?,
                    &p("running_var")?,
                    spec.eps,
                )?
            }
            Op::Relu => pass.relu(id, input(0)?)?,
            Op::Relu6 => pass.relu6(id, input(0)?)?,
            Op::MaxPool2d(p) => pass.max_pool(id, input(0)?, p)?,
            Op::AvgPool2d(p) => graph::avg_pool2d(input(0)?, p)?,
            Op::GlobalAvgPool => graph::global_avg_pool(input(0)?)?,
            Op::Add => (input(0)? + input(1)?)?,
            Op::Flatten => input(0)?.flatten_from(1)?,
            Op::Dropout { .. } => input(0)?.clone(),
            Op::Func(f) => {
                let xs = (0..node.inputs.len())
                    .map(input)
                    .collect::<Result<Vec<_>>>()?;
                graph::eval_func(f, &xs)?
            }
        };
        values[id] = Some(y);
        for &i in &node.inputs {
            if last_use[i] == id && i != graph.output() {
                values[i] = None;
            }
        }
    }
    values[graph.output()]
        .take()
        .ok_or_else(|| Error::config("graph", "output node was not computed"))
}

impl Pass<'_> {
    /// The (perturbed) input, weight and bias of a quantizable layer.
    fn layer(
        &mut self,
        graph: &Graph,
        name: &str,
        x: &Tensor,
        has_bias: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let index = self.index.get(name).copied();
        let var = graph.params().var(&format!("{name}.weight"))?.as_tensor();
        let mut w = match index {
            Some(i) if self.tracked.get(i) == Some(&true) => var.clone(),
            _ => var.detach(),
        };
        let mut x = x.clone();
        if let Some(i) = index {
            if let Some(norms) = self.sq_norms.as_deref_mut() {
                norms[i] = x
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
            if let Some(Some(d)) = self.p.weights.get(i) {
                w = (w + d)?;
            }
            if let Some(Some(d)) = self.p.acts.get(i) {
                x = (x + d.as_tensor())?;
            }
        }
        let b = if has_bias {
            Some(self.param(graph, &format!("{name}.bias"))?)
        } else {
            None
        };
        Ok((x, w, b))
    }

    /// A parameter, detached.
    fn param(&self, graph: &Graph, name: &str) -> Result<Tensor> {
        Ok(graph.params().var(name)?.as_tensor().detach())
    }

    pub(crate) fn relu(&mut self, id: usize, z: &Tensor) -> Result<Tensor> {
        match &mut self.patterns {
            PatternMode::Record(p) => {
                p[id] = Some(z.gt(0f64)?);
                graph::relu(z)
            }
            // One pass each way; keeps only the u8 mask for backward (candle's `where_cond`
            // for f64).
            PatternMode::Frozen(p) => match &p[id] {
                Some(m) => Ok(mpq_kernels::masked(z, m)?),
                None => Ok(z.relu()?),
            },
            PatternMode::Free => graph::relu(z),
        }
    }

    pub(crate) fn relu6(&mut self, id: usize, z: &Tensor) -> Result<Tensor> {
        match &mut self.patterns {
            PatternMode::Record(p) => {
                let code = (z.gt(0f64)? + z.ge(6f64)?)?;
                p[id] = Some(code);
                graph::relu6(z)
            }
            PatternMode::Frozen(p) => match &p[id] {
                Some(code) => {
                    let top = (code.eq(2f64)?.to_dtype(z.dtype())? * 6.0)?;
                    Ok(code.eq(1f64)?.where_cond(z, &top)?)
                }
                None => graph::relu6(z),
            },
            PatternMode::Free => graph::relu6(z),
        }
    }

    pub(crate) fn max_pool(&mut self, id: usize, z: &Tensor, spec: &PoolSpec) -> Result<Tensor> {
        let disjoint = spec.kernel == spec.stride && spec.padding == [0, 0];
        match &mut self.patterns {
            PatternMode::Record(p) if disjoint => {
                let y = graph::max_pool2d(z, spec)?;
                let zc = covered(z, spec)?;
                let up = y.upsample_nearest2d(zc.dim(2)?, zc.dim(3)?)?;
                p[id] = Some(zc.eq(&up)?);
                Ok(y)
            }
            PatternMode::Frozen(p) if disjoint => match &p[id] {
                // The mean of the elements that were the window's maximum at `w` (one, except
                // for ties): linear in `z`, and its backward is average pooling's, which every
                // dtype has right (candle 0.11's own max-pool backward scales by count/k²).
                Some(at_max) => {
                    let m = at_max.to_dtype(z.dtype())?;
                    let num = graph::avg_pool2d(&(covered(z, spec)? * &m)?, spec)?;
                    let den = graph::avg_pool2d(&m, spec)?;
                    Ok((num / den)?)
                }
                None => graph::max_pool2d(z, spec),
            },
            _ => graph::max_pool2d(z, spec),
        }
    }
}

/// The part of `z` (`[N, C, H, W]`) that non-overlapping windows (`kernel == stride`, no
/// padding) cover: the first `k·⌊H/k⌋` rows and `k·⌊W/k⌋` columns.
fn covered(z: &Tensor, spec: &PoolSpec) -> Result<Tensor> {
    let (h, w) = (z.dim(2)?, z.dim(3)?);
    let (kh, kw) = (spec.kernel[0].max(1), spec.kernel[1].max(1));
    Ok(z.narrow(2, 0, h / kh * kh)?.narrow(3, 0, w / kw * kw)?)
}
