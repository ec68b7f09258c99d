//! The reverse-mode engine's batch-norm rules: a training step's train-mode norm with batch
//! statistics (and the ReLU fused after it) through the kernels' own gradients, its eval-mode
//! norm under local autograd; a Hessian pass's eval-mode norm (PyHessian: Yao et al. 2020
//! differentiates the network in eval mode) as a per-channel affine map `scale·x + shift`,
//! folded into the conv before it where it is that conv's only reader.

use candle::Tensor;

use super::local::Sink;
use super::{Engine, Saved, Variant};
use crate::graph::{BatchNormSpec, Graph, Mode, Node, NodeId, Op, ops};
use crate::{Error, Result};

impl Engine<'_, '_, '_> {
    /// Forward of batch-norm node `id` on its input `x`.
    pub(super) fn norm_forward(
        &mut self,
        id: NodeId,
        node: &Node,
        spec: &BatchNormSpec,
        x: Tensor,
    ) -> Result<Tensor> {
        let keep = self.needs[id];
        let relu = self.fusion.relu[id];
        match &self.variant {
            Variant::Step(opts) if opts.mode == Mode::Train => {
                let var = |s: &str| self.graph.params.var(&format!("{}.{s}", node.name));
                let g = var("weight")?.as_tensor().detach();
                let b = var("bias")?.as_tensor().detach();
                let (y, mean, v) =
                    ops::batch_norm_train_relu(&x, &g, &b, spec.eps, relu.is_some())?;
                if opts.update_running_stats {
                    self.graph
                        .update_running_stats(&node.name, &x, (&mean, &v), spec.momentum)?;
                }
                if keep {
                    self.saved[id] = Saved::BatchNorm {
                        x,
                        y: y.clone(),
                        stats: (mean, v),
                        relu: relu.is_some(),
                    };
                }
                Ok(y)
            }
            Variant::Step(_) => self.local_forward(id, node, x),
            // Already applied by the conv before it (with the fused ReLU's mask).
            Variant::Frozen { .. } if self.fusion.bn_done[id] => {
                if keep && let Some(r) = relu {
                    self.saved[id] = Saved::Mask(self.mask(r)?);
                }
                Ok(x)
            }
            Variant::Frozen { .. } => {
                let (scale, shift) = affine(self.graph, &node.name, spec.eps)?;
                let mask = relu.map(|r| self.mask(r)).transpose()?;
                let y = mpq_kernels::channel_affine(&x, &scale, &shift, mask.as_ref())?;
                if keep {
                    self.saved[id] = Saved::Affine { scale, mask };
                }
                Ok(y)
            }
        }
    }
}

/// A training step's eval-mode batch norm `name` on `x` (followed by ReLU when `relu`),
/// differentiable in `x` and the norm's weight and bias.
pub(super) fn eval_relu(
    graph: &Graph,
    name: &str,
    x: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let p = |s: &str| -> Result<Tensor> {
        Ok(graph
            .params
            .var(&format!("{name}.{s}"))?
            .as_tensor()
            .clone())
    };
    let stats = (&p("running_mean")?, &p("running_var")?);
    let (g, b) = (p("weight")?, p("bias")?);
    ops::batch_norm_eval_relu(x, &g, &b, stats, eps, relu)
}

/// The backward step of a train-mode batch norm `name`: from its input, output and output
/// gradient `(x, y, g)`, batch statistics and fused ReLU, the weight and bias gradients go
/// to `sink` and the input gradient is returned.
pub(super) fn train_grads(
    graph: &Graph,
    name: &str,
    spec: &BatchNormSpec,
    (x, y, g): (&Tensor, &Tensor, &Tensor),
    stats: (Tensor, Tensor),
    relu: bool,
    sink: &mut Sink,
) -> Result<Tensor> {
    let gv = graph.params.var(&format!("{name}.weight"))?;
    let bv = graph.params.var(&format!("{name}.bias"))?;
    let (dx, dg, db) = mpq_kernels::batch_norm_train_grads(
        x,
        gv.as_tensor(),
        (y, g),
        (&stats.0, &stats.1),
        spec.eps,
        relu,
    )?;
    sink.accumulate(gv.as_tensor(), dg)?;
    sink.accumulate(bv.as_tensor(), db)?;
    Ok(dx)
}

/// The weight and bias of a conv (`w`, `b`) with the eval-mode batch norm `bn` after it
/// folded in (`w·scale` per output channel, `b·scale + shift`), and the scale shaped
/// `[o, 1, 1, 1]`.
pub(super) fn fold(
    graph: &Graph,
    bn: &Node,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let Op::BatchNorm2d(spec) = &bn.op else {
        return Err(Error::config(
            "graph",
            "folding a conv into a non-batch-norm",
        ));
    };
    let (scale, shift) = affine(graph, &bn.name, spec.eps)?;
    let o = scale.len();
    let dev = w.device();
    let shift = Tensor::from_vec(shift, o, dev)?;
    let scale = Tensor::from_vec(scale, o, dev)?;
    let bias = match b {
        Some(b) => ((b * &scale)? + shift)?,
        None => shift,
    };
    let scale = scale.reshape((o, 1, 1, 1))?;
    Ok((w.broadcast_mul(&scale)?, bias, scale))
}

/// The eval-mode batch norm `name` as `scale·x + shift` per channel (the kernel's own
/// formula).
fn affine(graph: &Graph, name: &str, eps: f64) -> Result<(Vec<f32>, Vec<f32>)> {
    let param = |s: &str| -> Result<Vec<f32>> {
        Ok(graph
            .params
            .var(&format!("{name}.{s}"))?
            .as_tensor()
            .to_vec1::<f32>()?)
    };
    let (g, b, m, v) = (
        param("weight")?,
        param("bias")?,
        param("running_mean")?,
        param("running_var")?,
    );
    let scale: Vec<f32> = g
        .iter()
        .zip(&v)
        .map(|(&g, &v)| g * (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    let shift = b
        .iter()
        .zip(&m)
        .zip(&scale)
        .map(|((&b, &m), &s)| b - m * s)
        .collect();
    Ok((scale, shift))
}
