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
//! executor; it supports every node kind of [`Op`] (a new kind fails to compile here). The
//! patterns themselves (recording, applying) are the graph's `patterns` module's, shared with
//! the graph's reverse-mode engine, which runs the same function with a hand-written backward
//! (f32 on the CPU; this executor, under candle's autograd, is its reference and the f64 path).

use candle::{DType, Tensor};

use crate::graph::{self, Analysed, Graph, Op, PatternMode};
use crate::{Error, Result};

/// One forward pass's settings.
pub(crate) struct Pass<'a> {
    /// The analysed layers: their perturbations and which weights are tracked for gradients.
    /// Every other parameter (biases, BatchNorm, unanalysed weights) is always detached: no
    /// analysis reads their gradients, and a pass with nothing tracked keeps no graph alive.
    pub(crate) layers: Analysed<'a>,
    pub(crate) patterns: PatternMode<'a>,
    /// Receives each analysed layer's squared input-activation norm.
    pub(crate) sq_norms: Option<&'a mut Vec<f64>>,
}

/// Runs `graph` in eval mode on `x` under `pass`; returns the logits.
pub(crate) fn forward(graph: &Graph, x: &Tensor, pass: &mut Pass<'_>) -> Result<Tensor> {
    let nodes = graph.nodes();
    let last_use = graph.last_use();
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
            Op::Relu => pass.patterns.relu(id, input(0)?)?,
            Op::Relu6 => pass.patterns.relu6(id, input(0)?)?,
            Op::MaxPool2d(p) => pass.patterns.max_pool(id, input(0)?, p)?,
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
        let index = self.layers.index.get(name).copied();
        let var = graph.params().var(&format!("{name}.weight"))?.as_tensor();
        let mut w = match index {
            Some(i) if self.layers.tracked(i) => var.clone(),
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
            if let Some(d) = self.layers.weight(i) {
                w = (w + d)?;
            }
            if let Some(d) = self.layers.act(i) {
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
}
