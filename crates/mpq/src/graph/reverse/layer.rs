//! The reverse-mode engine's rules for the quantizable layers (Conv2d, Linear): forward with
//! a training step's hooks (fake quantization, LSQ: their graphs kept for a local backward)
//! or a Hessian pass's perturbations (PyHessian: Yao et al. 2020) and folded batch norm;
//! backward with the convolution gradients computed only where wanted, a residual
//! shortcut's gradient as the input gradient's starting value and the frozen ReLU mask the
//! input gradient meets next applied as it is written.

use candle::{Tensor, Var};

use super::local::{Sink, local_backward, local_grad};
use super::{Engine, Saved, Variant, norm};
use crate::Result;
use crate::graph::{Node, NodeId, Op, ops};

/// What a layer kept for its backward step (the fields of [`Saved::Layer`]).
pub(super) struct Kept {
    pub(super) x: Tensor,
    pub(super) w: Tensor,
    pub(super) scale: Option<Tensor>,
    pub(super) x_hook: Option<(Var, Tensor)>,
    pub(super) w_hook: Option<Tensor>,
}

impl Engine<'_, '_, '_> {
    /// Forward of conv or linear node `id` on its input `x`.
    pub(super) fn layer_forward(&mut self, id: NodeId, node: &Node, x: Tensor) -> Result<Tensor> {
        let graph = self.graph;
        let param = |s: &str| -> Result<Tensor> {
            Ok(graph
                .params
                .var(&format!("{}.{s}", node.name))?
                .as_tensor()
                .detach())
        };
        let (x, w, x_hook, w_hook) = match &mut self.variant {
            Variant::Step(opts) => {
                // Hooks see the real weight variable and a variable standing for the input,
                // so their graphs reach both (and their own trainables).
                // (Hooks that leave the input alone get it as it is: no copy.)
                let (hx, x_hook) = if opts.hooks.hooks_activation(&node.name) {
                    let xv = Var::from_tensor(&x.detach())?;
                    let hx = opts.hooks.activation(&node.name, xv.as_tensor())?;
                    let hooked = hx.id() != xv.as_tensor().id();
                    (hx.clone(), hooked.then_some((xv, hx)))
                } else {
                    (x, None)
                };
                let wvar = graph.params.var(&format!("{}.weight", node.name))?;
                let hw = opts.hooks.weight(&node.name, wvar.as_tensor())?;
                let w_hook = (hw.id() != wvar.as_tensor().id()).then(|| hw.clone());
                (hx.detach(), hw.detach(), x_hook, w_hook)
            }
            Variant::Frozen { layers, .. } => {
                let (mut x, mut w) = (x, param("weight")?);
                if let Some(i) = layers.layer(node) {
                    if let Some(d) = layers.weight(i) {
                        w = (w + d)?;
                    }
                    if let Some(d) = layers.act(i) {
                        x = (x + d.as_tensor().detach())?;
                    }
                }
                (x, w, None, None)
            }
        };
        let b = match &node.op {
            Op::Conv2d(s) if s.bias => Some(param("bias")?),
            Op::Linear(s) if s.bias => Some(param("bias")?),
            _ => None,
        };
        let (y, w, scale) = match (&node.op, self.fusion.bn[id]) {
            (Op::Conv2d(spec), Some(bn)) => {
                let (w, b, scale) = norm::fold(graph, &graph.nodes()[bn], &w, b.as_ref())?;
                let y = match self.fusion.relu[bn].map(|r| self.mask(r)).transpose()? {
                    Some(m) => {
                        mpq_kernels::conv2d_masked(&x, &w, Some(&b), &ops::conv_params(spec), &m)?
                    }
                    None => ops::conv2d(&x, &w, Some(&b), spec)?,
                };
                (y, w, Some(scale))
            }
            (Op::Conv2d(spec), None) => (ops::conv2d(&x, &w, b.as_ref(), spec)?, w, None),
            _ => (ops::linear(&x, &w, b.as_ref())?, w, None),
        };
        if self.needs[id] {
            self.saved[id] = Saved::Layer {
                x,
                w,
                scale,
                x_hook,
                w_hook,
            };
        }
        Ok(y)
    }

    /// Backward of conv or linear `node` for its output gradient `g`: sends the input
    /// gradient on through `grad` and the weight (bias, hook, activation) gradients to `sink`.
    pub(super) fn layer_backward(
        &mut self,
        node: &Node,
        kept: Kept,
        g: Tensor,
        grad: &mut [Option<Tensor>],
        sink: &mut Sink,
    ) -> Result<()> {
        let Kept {
            x,
            w,
            scale,
            x_hook,
            w_hook,
        } = kept;
        let has_bias = matches!(&node.op, Op::Conv2d(s) if s.bias)
            || matches!(&node.op, Op::Linear(s) if s.bias);
        // The layer's own gradients: a training step wants every weight and bias (and the
        // input's where a hook reads it); a Hessian pass the tracked weights and the
        // perturbed activations.
        let (layer, want_w, want_b, own_x) = match &self.variant {
            Variant::Step(_) => (None, true, has_bias, x_hook.is_some()),
            Variant::Frozen { layers, .. } => {
                let i = layers.layer(node);
                let own_x = i.and_then(|i| layers.act(i)).is_some();
                (i, i.is_some_and(|i| layers.tracked(i)), false, own_x)
            }
        };
        let src = node.inputs[0];
        let want_x = self.needs[src] || own_x;
        let (gx, gw, gb) = match &node.op {
            Op::Conv2d(spec) => {
                let p = ops::conv_params(spec);
                // A gradient already collected for the input (a residual shortcut's) is added
                // as the input gradient is written, unless the layer's own input gradient is
                // wanted; and when this gradient is the last to reach the input, a frozen ReLU
                // fused after a batch norm or residual sum, that node's mask is applied as it
                // is written (the node then passes the gradient through).
                let fold_in = self.needs[src] && !own_x;
                let readers = self.fusion.readers[src];
                let last = readers == 1 || (readers == 2 && grad[src].is_some());
                let mask = match self.graph.nodes()[src].inputs.first() {
                    Some(&s)
                        if fold_in
                            && last
                            && self.fusion.relu_done[src]
                            && matches!(self.saved[s], Saved::Mask(_)) =>
                    {
                        match std::mem::replace(&mut self.saved[s], Saved::None) {
                            Saved::Mask(m) => Some(m),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let onto = grad[src].take_if(|_| fold_in);
                let (gx, gw, gb) = if onto.is_some() || mask.is_some() {
                    let (gx, gw, gb) = mpq_kernels::conv2d_grads_into(
                        &x,
                        &w,
                        &g,
                        &p,
                        (onto.as_ref(), mask.as_ref()),
                        (want_w, want_b),
                    )?;
                    (Some(gx), gw, gb)
                } else {
                    mpq_kernels::conv2d_grads(&x, &w, &g, &p, want_x, (want_w, want_b))?
                };
                let gw = match (gw, scale) {
                    (Some(gw), Some(s)) => Some(gw.broadcast_mul(&s)?),
                    (gw, _) => gw,
                };
                (gx, gw, gb)
            }
            _ => (
                want_x.then(|| g.matmul(&w)).transpose()?,
                want_w.then(|| g.t()?.matmul(&x)).transpose()?,
                want_b.then(|| g.sum(0)).transpose()?,
            ),
        };
        let gx = match &self.variant {
            Variant::Step(_) => {
                let var = |s: &str| self.graph.params.var(&format!("{}.{s}", node.name));
                if let Some(gw) = gw {
                    match w_hook {
                        Some(hw) => sink.merge(local_backward(&hw, &gw)?)?,
                        None => sink.accumulate(var("weight")?.as_tensor(), gw)?,
                    }
                }
                if let Some(gb) = gb {
                    sink.accumulate(var("bias")?.as_tensor(), gb)?;
                }
                match (gx, x_hook) {
                    (Some(gx), Some((xv, hx))) => {
                        let (gin, local) = local_grad(&xv, &hx, &gx)?;
                        sink.merge(local)?;
                        gin
                    }
                    (gx, _) => gx,
                }
            }
            Variant::Frozen { .. } => {
                if let Some(i) = layer {
                    if want_w {
                        sink.layers.weights[i] = gw;
                    }
                    if own_x {
                        sink.layers.acts[i] = gx.clone();
                    }
                }
                gx
            }
        };
        if let Some(gx) = gx {
            self.send(grad, src, gx)?;
        }
        Ok(())
    }
}
