//! The one reverse-mode engine over a [`Graph`]: a forward pass that keeps what each node's
//! backward step needs, then a hand-written backward pass over the graph's own nodes, for
//! `f32` on the CPU with the fast kernels. Two kinds of pass run on it, differing only where
//! [`Variant`] says:
//!
//! - **a training step** ([`Graph::forward_backward`], the `step` module: PyTorch's
//!   `loss.backward()`, which every method of mpq ends in: training and QAT, HAWQ's
//!   (Dong et al. 2019) and HAWQ-V2's (Dong et al. 2020) fine-tunes, LIMPQ's joint training,
//!   HAQ's short fine-tunes): train-mode batch norm with batch statistics, layer hooks (fake
//!   quantization, LSQ) run under candle's autograd locally, gradients of every parameter and
//!   of the hooks' trainable variables;
//! - **an eval-mode Hessian pass** ([`Graph::frozen_gradients`], the products of PyHessian:
//!   Yao et al. 2020, by differences of gradients): running statistics, the ReLU, ReLU6 and
//!   max-pool patterns frozen (`patterns`), weight and activation perturbations at the
//!   analysed layers, and gradients only of the tracked weights and the perturbed activations
//!   (with a cache of the unperturbed forward values before the first node a pass changes).
//!
//! Why by hand: candle's backward starts every node's gradient from a zeroed buffer and adds into
//! it, and runs every op's full backward. Here a gradient that reaches a node once is moved; a node
//! whose output gradient nobody needs (nothing differentiated upstream) keeps nothing and computes
//! nothing; convolution gradients are computed only where a weight or input needs them, a gradient
//! already collected for a conv's input (a residual shortcut's) is the kernel's starting value, and
//! fused pairs (decided once for every executor, in the graph's `fusion` module) run as one pass
//! each way: a batch norm or residual sum with the ReLU after it; in a Hessian pass a batch norm
//! after a conv is folded into the conv's weight and bias (`norm`), the frozen ReLU after it
//! applied as the conv's output is stored and, backward, as the input gradient is written. Nodes
//! without a rule here (pools, dropout, parameter-free `Func` ops, eval-mode batch norm in a
//! training step) run under candle's autograd locally.
//!
//! The engine agrees with candle's autograd to rounding: test
//! `forward_backward_matches_candle_autograd_with_every_node_kind` (training steps) and
//! `weight_and_activation_gradients_match_candle_autograd` (Hessian passes).

mod layer;
mod local;
mod norm;
mod step;

use std::collections::HashMap;

use candle::{DType, Tensor, Var};

use super::exec::{ForwardOptions, Mode, dropout_for};
use super::fusion::Fusion;
use super::patterns::{PatternMode, Patterns};
use super::{Graph, Node, NodeId, Op, ops};
use crate::{Error, Result};
use local::{Sink, add_grad, global_avg_pool_grad, local_grad, local_grads};

/// Perturbations of one eval-mode pass, indexed by analysed layer: weight offsets
/// (constants), and activation offsets as variables (their gradients are the activation
/// gradients).
#[derive(Debug, Default)]
pub(crate) struct Perturbation {
    pub(crate) weights: Vec<Option<Tensor>>,
    pub(crate) acts: Vec<Option<Var>>,
}

/// The analysed layers of an eval-mode pass and what the pass does at each.
pub(crate) struct Analysed<'a> {
    /// Analysed layer name → index into the perturbations.
    pub(crate) index: &'a HashMap<String, usize>,
    /// The perturbations of this pass.
    pub(crate) p: &'a Perturbation,
    /// Which analysed layers' weights are tracked for gradients (missing entries are not).
    pub(crate) tracked: &'a [bool],
}

impl Analysed<'_> {
    /// The analysed-layer index of `node`, if it is analysed.
    fn layer(&self, node: &Node) -> Option<usize> {
        self.index.get(&node.name).copied()
    }

    /// Whether analysed layer `i`'s weight is tracked.
    pub(crate) fn tracked(&self, i: usize) -> bool {
        self.tracked.get(i) == Some(&true)
    }

    /// Analysed layer `i`'s activation perturbation.
    pub(crate) fn act(&self, i: usize) -> Option<&Var> {
        self.p.acts.get(i).and_then(Option::as_ref)
    }

    /// Analysed layer `i`'s weight perturbation.
    pub(crate) fn weight(&self, i: usize) -> Option<&Tensor> {
        self.p.weights.get(i).and_then(Option::as_ref)
    }
}

/// The gradients of one eval-mode pass, indexed by analysed layer: of the tracked weights,
/// and of the perturbed activations (the layer's input).
#[derive(Debug, Default)]
pub(crate) struct LayerGrads {
    pub(crate) weights: Vec<Option<Tensor>>,
    pub(crate) acts: Vec<Option<Tensor>>,
}

/// The loss `loss(logits)` of one pass; its gradient w.r.t. the logits is taken by candle.
pub(crate) type LossOf<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// The forward values live just before node `start` of an unperturbed eval-mode pass on one
/// input: every pass on that input whose first perturbed or tracked node is `start` computes
/// the same values up to there, so it can begin at `start`.
#[derive(Debug)]
pub(crate) struct Prefix {
    start: usize,
    values: Vec<Option<Tensor>>,
}

/// What a pass differentiates and how its nodes run.
enum Variant<'a, 'o> {
    /// A training step under `opts` (train or eval mode, layer hooks): gradients of every
    /// parameter and of the hooks' trainable variables.
    Step(&'a mut ForwardOptions<'o>),
    /// An eval-mode pass with frozen patterns: gradients of the tracked weights and the
    /// perturbed activations of the analysed layers.
    Frozen {
        patterns: &'a Patterns,
        layers: &'a Analysed<'a>,
    },
}

/// What a node keeps for its backward step.
enum Saved {
    None,
    /// A conv or linear layer's (hooked or perturbed) input and weight; the hooks' local
    /// graphs (a training step); for a conv with its batch norm folded in, the norm's
    /// per-channel scale (the weight gradient is the folded weight's times the scale).
    Layer {
        x: Tensor,
        w: Tensor,
        scale: Option<Tensor>,
        x_hook: Option<(Var, Tensor)>,
        w_hook: Option<Tensor>,
    },
    /// A train-mode batch norm: input, output, batch statistics, fused ReLU.
    BatchNorm {
        x: Tensor,
        y: Tensor,
        stats: (Tensor, Tensor),
        relu: bool,
    },
    /// An eval-mode batch norm's per-channel scale, and the frozen ReLU mask fused after it.
    Affine {
        scale: Vec<f32>,
        mask: Option<Tensor>,
    },
    /// A ReLU's (or ReLU6's) output and upper clip (alone, or fused after a residual sum).
    Relu(Tensor, f32),
    /// A frozen ReLU's mask (alone, or fused after a folded batch norm or a residual sum).
    Mask(Tensor),
    /// The input dims of a reshaping node (flatten, global average pool).
    Dims(Vec<usize>),
    /// A node run under candle's autograd: its input variable and output.
    Local {
        x: Var,
        y: Tensor,
    },
    /// A multi-input node run under candle's autograd: its input variables and output.
    LocalN {
        xs: Vec<Var>,
        y: Tensor,
    },
}

/// One pass in progress.
struct Engine<'g, 'a, 'o> {
    graph: &'g Graph,
    variant: Variant<'a, 'o>,
    fusion: Fusion,
    /// Per node: whether its output's gradient is needed (something differentiated depends
    /// on it).
    needs: Vec<bool>,
    saved: Vec<Saved>,
}

/// Whether the engine runs a pass in `dtype` on `device`: `f32` on the CPU, fast kernels.
pub(crate) fn applies(dtype: DType, device: &candle::Device) -> bool {
    dtype == DType::F32 && device.is_cpu() && !ops::stock_ops()
}

impl Graph {
    /// The gradients of `loss` on input `x` in eval mode with the nonlinearities' `patterns`
    /// frozen, for the analysed layers whose weights `layers.tracked` marks and whose
    /// activations `layers.p.acts` perturbs, with `layers.p`'s perturbations added. Only where
    /// [`applies`]. With `cache` (for this input), the forward pass starts from the cached
    /// values before the first node that a perturbation or tracked weight touches, and
    /// records them there when the cache holds another start.
    pub(crate) fn frozen_gradients(
        &self,
        x: &Tensor,
        loss: LossOf<'_>,
        patterns: &Patterns,
        layers: &Analysed<'_>,
        cache: Option<&mut Option<Prefix>>,
    ) -> Result<LayerGrads> {
        let mut engine = Engine::new(self, Variant::Frozen { patterns, layers });
        let (_, _, sink) = engine.run(x, loss, cache)?;
        Ok(sink.layers)
    }
}

impl<'g, 'a, 'o> Engine<'g, 'a, 'o> {
    fn new(graph: &'g Graph, variant: Variant<'a, 'o>) -> Self {
        let nodes = graph.nodes();
        let fusion = match &variant {
            Variant::Step(_) => Fusion::new(graph, false, |_| true),
            Variant::Frozen { patterns, .. } => Fusion::new(graph, true, |id| {
                patterns.get(id).is_some_and(Option::is_some)
            }),
        };
        let mut needs = vec![false; nodes.len()];
        for (id, node) in nodes.iter().enumerate().skip(1) {
            let own = match (&variant, &node.op) {
                (Variant::Step(_), op) => {
                    matches!(op, Op::Conv2d(_) | Op::Linear(_) | Op::BatchNorm2d(_))
                }
                (Variant::Frozen { layers, .. }, Op::Conv2d(_) | Op::Linear(_)) => layers
                    .layer(node)
                    .is_some_and(|i| layers.tracked(i) || layers.act(i).is_some()),
                _ => false,
            };
            needs[id] = own || node.inputs.iter().any(|&k| needs[k]);
        }
        Engine {
            graph,
            variant,
            fusion,
            needs,
            saved: (0..nodes.len()).map(|_| Saved::None).collect(),
        }
    }

    /// Runs the pass: the logits, the loss (unless nothing is differentiated in a Hessian
    /// pass) and the gradients.
    fn run(
        &mut self,
        x: &Tensor,
        loss: LossOf<'_>,
        cache: Option<&mut Option<Prefix>>,
    ) -> Result<(Tensor, Option<Tensor>, Sink)> {
        let logits = self.forward(x, cache)?;
        let mut sink = Sink::default();
        let frozen = match &self.variant {
            Variant::Step(opts) => {
                sink.targets = self
                    .graph
                    .params
                    .iter()
                    .map(|p| p.var.as_tensor().clone())
                    .collect();
                let extra = opts.hooks.trainable();
                sink.targets
                    .extend(extra.iter().map(|v| v.as_tensor().clone()));
                false
            }
            Variant::Frozen { layers, .. } => {
                let n = layers.index.len();
                sink.layers = LayerGrads {
                    weights: vec![None; n],
                    acts: vec![None; n],
                };
                true
            }
        };
        let output = self.graph.output;
        if frozen && !self.needs[output] {
            return Ok((logits, None, sink));
        }
        let lv = Var::from_tensor(&logits)?;
        let l = loss(lv.as_tensor())?;
        let dlogits = match l.backward()?.get(lv.as_tensor()) {
            Some(g) => g.clone(),
            None if frozen => logits.zeros_like()?,
            None => return Ok((logits, Some(l.detach()), sink)),
        };
        if self.needs[output] {
            self.backward(dlogits, &mut sink)?;
        }
        Ok((logits, Some(l.detach()), sink))
    }

    /// The forward pass: every node's value, what its backward step needs kept in `saved`.
    fn forward(&mut self, x: &Tensor, cache: Option<&mut Option<Prefix>>) -> Result<Tensor> {
        let graph = self.graph;
        let nodes = graph.nodes();
        // A Hessian pass: the first node whose value differs from the unperturbed pass or
        // needs saving.
        let first = match &self.variant {
            Variant::Frozen { layers, .. } => (1..nodes.len())
                .find(|&id| {
                    self.needs[id]
                        || layers
                            .layer(&nodes[id])
                            .is_some_and(|i| layers.weight(i).is_some() || layers.act(i).is_some())
                })
                .unwrap_or(nodes.len()),
            Variant::Step(_) => nodes.len(),
        };
        let mut values: Vec<Option<Tensor>> = vec![None; nodes.len()];
        values[0] = Some(x.clone());
        let mut from = 1;
        let mut cache = cache.filter(|_| first > 1 && first < nodes.len());
        if let Some(Some(prefix)) = cache.as_deref()
            && prefix.start == first
        {
            values.clone_from(&prefix.values);
            from = first;
            cache = None;
        }
        for (id, node) in nodes.iter().enumerate().skip(from) {
            if id == first
                && let Some(c) = cache.take()
            {
                *c = Some(Prefix {
                    start: first,
                    values: values.clone(),
                });
            }
            let y = self.node_forward(id, node, &values)?;
            values[id] = Some(y);
            for &i in &node.inputs {
                if graph.last_use[i] == id && i != graph.output {
                    values[i] = None;
                }
            }
        }
        values[graph.output]
            .take()
            .ok_or_else(|| Error::config("graph", "output node was not computed"))
    }

    /// Node `id`'s forward step on the live `values`.
    fn node_forward(
        &mut self,
        id: NodeId,
        node: &Node,
        values: &[Option<Tensor>],
    ) -> Result<Tensor> {
        let input = |k: usize| -> Result<Tensor> {
            values[node.inputs[k]].clone().ok_or_else(|| {
                Error::config("graph", format!("node {} reads a freed value", node.name))
            })
        };
        let keep = self.needs[id];
        let train = matches!(&self.variant, Variant::Step(o) if o.mode == Mode::Train);
        let y = match &node.op {
            Op::Input => input(0)?,
            Op::Conv2d(_) | Op::Linear(_) => self.layer_forward(id, node, input(0)?)?,
            Op::BatchNorm2d(spec) => self.norm_forward(id, node, spec, input(0)?)?,
            // Already applied by the node before it.
            Op::Relu if self.fusion.relu_done[id] => input(0)?,
            Op::Relu | Op::Relu6 => self.relu_forward(id, node, input(0)?)?,
            Op::Add => {
                let (a, b) = (input(0)?, input(1)?);
                let relu = self.fusion.relu[id];
                let (y, saved) = match (&self.variant, relu) {
                    (Variant::Step(_), Some(_)) => {
                        let y = mpq_kernels::add_relu(&a, &b)?;
                        (y.clone(), Saved::Relu(y, f32::INFINITY))
                    }
                    (Variant::Step(_), None) => {
                        (mpq_kernels::add_masked(&a, &b, None)?, Saved::None)
                    }
                    (Variant::Frozen { .. }, _) => {
                        let mask = relu.map(|r| self.mask(r)).transpose()?;
                        let y = mpq_kernels::add_masked(&a, &b, mask.as_ref())?;
                        (y, mask.map_or(Saved::None, Saved::Mask))
                    }
                };
                if keep {
                    self.saved[id] = saved;
                }
                y
            }
            Op::Flatten => {
                let x = input(0)?;
                if keep {
                    self.saved[id] = Saved::Dims(x.dims().to_vec());
                }
                x.flatten_from(1)?
            }
            Op::GlobalAvgPool => {
                let x = input(0)?;
                if keep {
                    self.saved[id] = Saved::Dims(x.dims().to_vec());
                }
                ops::global_avg_pool(&x)?
            }
            Op::Dropout { .. } if !train => input(0)?,
            Op::Func(f) => {
                let xs = (0..node.inputs.len())
                    .map(|k| Ok(Var::from_tensor(&input(k)?.detach())?))
                    .collect::<Result<Vec<Var>>>()?;
                let refs: Vec<&Tensor> = xs.iter().map(|v| v.as_tensor()).collect();
                let y = super::eval_func(f, &refs)?;
                let out = y.detach();
                if keep {
                    self.saved[id] = Saved::LocalN { xs, y };
                }
                out
            }
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::Dropout { .. } => {
                self.local_forward(id, node, input(0)?)?
            }
        };
        Ok(y)
    }

    /// A ReLU (not fused) or ReLU6: the kernel in a training step (its output kept); in a
    /// Hessian pass a frozen ReLU's mask, or the node under local autograd.
    fn relu_forward(&mut self, id: NodeId, node: &Node, x: Tensor) -> Result<Tensor> {
        let keep = self.needs[id];
        let (y, saved) = match (&self.variant, &node.op) {
            (Variant::Step(_), Op::Relu) => {
                let y = ops::relu(&x)?;
                (y.clone(), Saved::Relu(y, f32::INFINITY))
            }
            (Variant::Step(_), _) => {
                let y = ops::relu6(&x)?;
                (y.clone(), Saved::Relu(y, 6.0))
            }
            (Variant::Frozen { patterns, .. }, Op::Relu)
                if patterns.get(id).is_some_and(Option::is_some) =>
            {
                let m = self.mask(id)?;
                (mpq_kernels::masked(&x, &m)?, Saved::Mask(m))
            }
            (Variant::Frozen { .. }, _) => return self.local_forward(id, node, x),
        };
        if keep {
            self.saved[id] = saved;
        }
        Ok(y)
    }

    /// A node run under candle's autograd on a variable standing for its input.
    fn local_forward(&mut self, id: NodeId, node: &Node, x: Tensor) -> Result<Tensor> {
        let x = Var::from_tensor(&x.detach())?;
        let xt = x.as_tensor();
        let y = match (&self.variant, &node.op) {
            (Variant::Frozen { patterns, .. }, op) => {
                let mut frozen = PatternMode::Frozen(patterns);
                match op {
                    Op::Relu => frozen.relu(id, xt)?,
                    Op::Relu6 => frozen.relu6(id, xt)?,
                    Op::MaxPool2d(p) => frozen.max_pool(id, xt, p)?,
                    Op::AvgPool2d(p) => ops::avg_pool2d(xt, p)?,
                    op => return Err(no_rule(op)),
                }
            }
            (Variant::Step(opts), op) => match op {
                Op::BatchNorm2d(spec) => {
                    let relu = self.fusion.relu[id].is_some();
                    norm::eval_relu(self.graph, &node.name, xt, spec.eps, relu)?
                }
                Op::MaxPool2d(p) => ops::max_pool2d(xt, p)?,
                Op::AvgPool2d(p) => ops::avg_pool2d(xt, p)?,
                Op::Dropout { p } => dropout_for(xt, *p, opts.dropout_seed, id)?,
                op => return Err(no_rule(op)),
            },
        };
        let out = y.detach();
        if self.needs[id] {
            self.saved[id] = Saved::Local { x, y };
        }
        Ok(out)
    }

    /// The frozen pattern of ReLU node `r` (a Hessian pass).
    fn mask(&self, r: NodeId) -> Result<Tensor> {
        let missing = || Error::config("graph", "missing frozen ReLU pattern");
        match &self.variant {
            Variant::Frozen { patterns, .. } => {
                patterns.get(r).and_then(Option::clone).ok_or_else(missing)
            }
            Variant::Step(_) => Err(missing()),
        }
    }

    /// The backward pass from the logits' gradient `dlogits`.
    fn backward(&mut self, dlogits: Tensor, sink: &mut Sink) -> Result<()> {
        let graph = self.graph;
        let nodes = graph.nodes();
        let frozen = matches!(self.variant, Variant::Frozen { .. });
        let mut grad: Vec<Option<Tensor>> = vec![None; nodes.len()];
        grad[graph.output] = Some(dlogits);
        for id in (1..nodes.len()).rev() {
            let Some(g) = grad[id].take() else { continue };
            let node = &nodes[id];
            let src = node.inputs.first().copied().unwrap_or(0);
            match (
                &node.op,
                std::mem::replace(&mut self.saved[id], Saved::None),
            ) {
                (
                    Op::Conv2d(_) | Op::Linear(_),
                    Saved::Layer {
                        x,
                        w,
                        scale,
                        x_hook,
                        w_hook,
                    },
                ) => {
                    let layer = layer::Kept {
                        x,
                        w,
                        scale,
                        x_hook,
                        w_hook,
                    };
                    self.layer_backward(node, layer, g, &mut grad, sink)?;
                }
                (Op::BatchNorm2d(spec), Saved::BatchNorm { x, y, stats, relu }) => {
                    let dx = norm::train_grads(
                        graph,
                        &node.name,
                        spec,
                        (&x, &y, &g),
                        stats,
                        relu,
                        sink,
                    )?;
                    self.send(&mut grad, src, dx)?;
                }
                (Op::BatchNorm2d(_), Saved::Affine { scale, mask }) => {
                    let dx = mpq_kernels::channel_affine(&g, &scale, &[], mask.as_ref())?;
                    self.send(&mut grad, src, dx)?;
                }
                (Op::Add, saved) => {
                    let g = match saved {
                        Saved::Mask(m) => mpq_kernels::masked(&g, &m)?,
                        Saved::Relu(y, hi) => mpq_kernels::relu_grad(&y, &g, hi)?,
                        _ => g,
                    };
                    self.send(&mut grad, node.inputs[0], g.clone())?;
                    self.send(&mut grad, node.inputs[1], g)?;
                }
                (_, Saved::Mask(m)) => self.send(&mut grad, src, mpq_kernels::masked(&g, &m)?)?,
                (_, Saved::Relu(y, hi)) => {
                    self.send(&mut grad, src, mpq_kernels::relu_grad(&y, &g, hi)?)?
                }
                (Op::Flatten, Saved::Dims(d)) => self.send(&mut grad, src, g.reshape(d)?)?,
                (Op::GlobalAvgPool, Saved::Dims(d)) => {
                    self.send(&mut grad, src, global_avg_pool_grad(&g, &d)?)?
                }
                (_, Saved::Local { x, y }) => {
                    let (dx, local) = local_grad(&x, &y, &g)?;
                    sink.merge(local)?;
                    // A Hessian pass's activation gradients exist even where they are zero.
                    let dx = match dx {
                        None if frozen => Some(x.as_tensor().zeros_like()?),
                        dx => dx,
                    };
                    if let Some(dx) = dx {
                        self.send(&mut grad, src, dx)?;
                    }
                }
                (_, Saved::LocalN { xs, y }) => {
                    let (gs, local) = local_grads(&xs, &y, &g)?;
                    sink.merge(local)?;
                    for ((k, gx), x) in gs.into_iter().enumerate().zip(&xs) {
                        let gx = match gx {
                            None if frozen => Some(x.as_tensor().zeros_like()?),
                            gx => gx,
                        };
                        if let Some(gx) = gx {
                            self.send(&mut grad, node.inputs[k], gx)?;
                        }
                    }
                }
                // Input, eval-mode dropout, a fused ReLU and a folded batch norm without one
                // pass the gradient through.
                (_, Saved::None) => self.send(&mut grad, src, g)?,
                (op, _) => {
                    return Err(Error::config(
                        "graph",
                        format!("reverse pass: nothing saved for {op:?} node {}", node.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Adds `g` to node `k`'s gradient where that gradient is needed.
    fn send(&self, grad: &mut [Option<Tensor>], k: NodeId, g: Tensor) -> Result<()> {
        if self.needs[k] {
            add_grad(&mut grad[k], g)?;
        }
        Ok(())
    }
}

fn no_rule(op: &Op) -> Error {
    Error::config("graph", format!("reverse pass: no rule for {op:?}"))
}
