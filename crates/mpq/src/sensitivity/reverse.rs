//! A hand-written reverse pass of the eval-mode Hessian executor (PyHessian: Yao et al. 2020;
//! the products behind HAWQ: Dong et al. 2019 and HAWQ-V2: Dong et al. 2020), for `f32` on the
//! CPU with frozen ReLU patterns: the same function as the `forward` module's pass under
//! candle's autograd, computed with fewer memory passes.
//!
//! Why: in eval mode with frozen patterns every gradient of the network is linear and simple
//! (a batch norm is a per-channel scale, a frozen ReLU a mask), but candle's backward starts
//! every node's gradient from a zeroed buffer and adds into it, runs a batch norm's `dγ`/`dβ`
//! sums nobody reads, and applies each mask as its own pass. Here a batch norm right after a
//! conv is folded into the conv's weight and bias, with the frozen ReLU after it applied as
//! the conv's output is stored (`mpq_kernels::conv2d_masked`): no pass of its own forward,
//! and backward only the mask (the weight gradient is scaled per channel afterwards); any
//! other batch norm and the frozen ReLU after it are one pass each way
//! (`mpq_kernels::channel_affine`), a residual sum and its
//! ReLU one pass forward and one backward, a gradient that reaches a node once is moved rather
//! than added, and convolution gradients are only computed where an analysed weight or
//! activation needs them. Nodes without a rule here (ReLU6, pools) run under candle's autograd
//! locally: their own forward under a variable, then `backward` of `Σ y·dy`.
//!
//! The executors must agree to rounding: `tests` compare both on a graph with every node kind.

use candle::{DType, Tensor, Var};

use super::forward::{Pass, PatternMode, Patterns};
use crate::graph::{self, Graph, Op, add_grad};
use crate::{Error, Result};

/// The gradients of one pass, indexed by analysed layer: of the tracked weights, and of the
/// perturbed activations (the layer's input).
#[derive(Debug, Default)]
pub(crate) struct Grads {
    pub(crate) weights: Vec<Option<Tensor>>,
    pub(crate) acts: Vec<Option<Tensor>>,
}

/// Whether [`gradients`] applies: `f32` on the CPU, frozen patterns, fast kernels enabled.
pub(crate) fn applies(dtype: DType, device: &candle::Device, frozen: bool) -> bool {
    dtype == DType::F32 && device.is_cpu() && frozen && !graph::stock_ops()
}

/// What a node keeps for its backward step.
enum Saved {
    None,
    /// A conv or linear layer's (perturbed) input and weight; for a conv with its batch norm
    /// folded in, the folded weight and the norm's per-channel scale (the weight gradient is
    /// the folded one's times the scale).
    Layer {
        x: Tensor,
        w: Tensor,
        scale: Option<Tensor>,
    },
    /// A batch norm's per-channel scale, and the mask of the frozen ReLU fused after it.
    Affine {
        scale: Vec<f32>,
        mask: Option<Tensor>,
    },
    /// A frozen ReLU's mask (alone, or fused after a residual sum).
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

/// The loss `loss(logits, y)` of one pass; its gradient w.r.t. the logits is taken by candle.
pub(crate) type LossOf<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// The forward values live just before node `start` of an unperturbed pass on one input:
/// every pass on that input whose first perturbed or tracked node is `start` computes the
/// same values up to there, so it can begin at `start`.
#[derive(Debug)]
pub(crate) struct Prefix {
    start: usize,
    values: Vec<Option<Tensor>>,
}

/// Gradients of `loss` on input `x` under `pass` (whose patterns must be frozen) for the
/// analysed layers whose weights `pass.tracked` marks and whose activations `pass.p.acts`
/// perturbs. With `cache` (for this input), the forward pass starts from the cached values
/// before the first node that a perturbation or tracked weight touches, and records them there
/// when the cache holds another start.
pub(crate) fn gradients(
    graph: &Graph,
    last_use: &[usize],
    x: &Tensor,
    loss: LossOf<'_>,
    pass: &mut Pass<'_>,
    cache: Option<&mut Option<Prefix>>,
) -> Result<Grads> {
    let nodes = graph.nodes();
    let n_layers = pass.index.len();
    let patterns: &Patterns = match &pass.patterns {
        PatternMode::Frozen(p) => p,
        _ => {
            return Err(Error::config(
                "sensitivity",
                "the reverse pass needs frozen patterns",
            ));
        }
    };
    let layer_of = |id: usize| pass.index.get(&nodes[id].name).copied();
    let tracked = |i: usize| pass.tracked.get(i) == Some(&true);
    let act = |i: usize| pass.p.acts.get(i).and_then(Option::as_ref);
    // Which nodes' outputs depend on something whose gradient is wanted.
    let mut needs = vec![false; nodes.len()];
    for (id, node) in nodes.iter().enumerate().skip(1) {
        let own = matches!(node.op, Op::Conv2d(_) | Op::Linear(_))
            && layer_of(id).is_some_and(|i| tracked(i) || act(i).is_some());
        needs[id] = own || node.inputs.iter().any(|&k| needs[k]);
    }
    // A batch norm or residual sum whose only reader is a frozen ReLU runs fused with it.
    let mut readers = vec![0usize; nodes.len()];
    for n in nodes {
        for &k in &n.inputs {
            readers[k] += 1;
        }
    }
    let mut fused_relu: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut passthrough = vec![false; nodes.len()];
    for (id, node) in nodes.iter().enumerate() {
        if node.op == Op::Relu && patterns.get(id).is_some_and(Option::is_some) {
            let src = node.inputs[0];
            let fusable = matches!(nodes[src].op, Op::BatchNorm2d(_) | Op::Add);
            if fusable && readers[src] == 1 && src != graph.output() {
                fused_relu[src] = Some(id);
                passthrough[id] = true;
            }
        }
    }
    // A conv whose only reader is a batch norm runs with the norm folded into its weight and
    // bias (and the frozen ReLU after the norm, if fused, applied as the conv's output is
    // stored): the norm costs no pass forward and, without a ReLU, none backward.
    let mut folded: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut folded_bn = vec![false; nodes.len()];
    for (id, node) in nodes.iter().enumerate() {
        if let Op::BatchNorm2d(_) = node.op {
            let src = node.inputs[0];
            if matches!(nodes[src].op, Op::Conv2d(_)) && readers[src] == 1 {
                folded[src] = Some(id);
                folded_bn[id] = true;
            }
        }
    }
    let mask_of = |r: usize| -> Result<Tensor> {
        patterns[r]
            .clone()
            .ok_or_else(|| Error::config("sensitivity", "missing frozen ReLU pattern"))
    };

    // The first node whose value differs from the unperturbed pass or needs saving.
    let first = (1..nodes.len())
        .find(|&id| {
            needs[id]
                || layer_of(id).is_some_and(|i| {
                    pass.p.weights.get(i).is_some_and(Option::is_some) || act(i).is_some()
                })
        })
        .unwrap_or(nodes.len());
    let mut values: Vec<Option<Tensor>> = vec![None; nodes.len()];
    let mut saved: Vec<Saved> = (0..nodes.len()).map(|_| Saved::None).collect();
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
        let input = |k: usize| -> Result<Tensor> {
            values[node.inputs[k]].clone().ok_or_else(|| {
                Error::config("graph", format!("node {} reads a freed value", node.name))
            })
        };
        let param = |s: &str| -> Result<Tensor> {
            Ok(graph
                .params()
                .var(&format!("{}.{s}", node.name))?
                .as_tensor()
                .detach())
        };
        let keep = needs[id];
        let y = match &node.op {
            Op::Input | Op::Dropout { .. } => input(0)?,
            Op::Conv2d(_) | Op::Linear(_) => {
                let (mut x, mut w) = (input(0)?, param("weight")?);
                if let Some(i) = layer_of(id) {
                    if let Some(Some(d)) = pass.p.weights.get(i) {
                        w = (w + d)?;
                    }
                    if let Some(d) = act(i) {
                        x = (x + d.as_tensor().detach())?;
                    }
                }
                let b = match &node.op {
                    Op::Conv2d(s) if s.bias => Some(param("bias")?),
                    Op::Linear(s) if s.bias => Some(param("bias")?),
                    _ => None,
                };
                let (y, w, scale) = match (&node.op, folded[id]) {
                    (Op::Conv2d(spec), Some(bn)) => {
                        let (w, b, scale) = fold_bn(graph, &nodes[bn], &w, b.as_ref())?;
                        let y = match fused_relu[bn].map(mask_of).transpose()? {
                            Some(m) => mpq_kernels::conv2d_masked(
                                &x,
                                &w,
                                Some(&b),
                                &graph::conv_params(spec),
                                &m,
                            )?,
                            None => graph::conv2d(&x, &w, Some(&b), spec)?,
                        };
                        (y, w, Some(scale))
                    }
                    (Op::Conv2d(spec), None) => (graph::conv2d(&x, &w, b.as_ref(), spec)?, w, None),
                    _ => (graph::linear(&x, &w, b.as_ref())?, w, None),
                };
                if keep {
                    saved[id] = Saved::Layer { x, w, scale };
                }
                y
            }
            Op::BatchNorm2d(_) if folded_bn[id] => {
                // Already applied by the conv before it (with the fused ReLU's mask).
                if keep && let Some(r) = fused_relu[id] {
                    saved[id] = Saved::Mask(mask_of(r)?);
                }
                input(0)?
            }
            Op::BatchNorm2d(spec) => {
                let (scale, shift) = bn_affine(graph, &node.name, spec.eps)?;
                let mask = fused_relu[id].map(mask_of).transpose()?;
                let y = mpq_kernels::channel_affine(&input(0)?, &scale, &shift, mask.as_ref())?;
                if keep {
                    saved[id] = Saved::Affine { scale, mask };
                }
                y
            }
            Op::Relu if passthrough[id] => input(0)?,
            Op::Relu if patterns[id].is_some() => {
                let m = mask_of(id)?;
                let y = mpq_kernels::masked(&input(0)?, &m)?;
                if keep {
                    saved[id] = Saved::Mask(m);
                }
                y
            }
            Op::Add => {
                let mask = fused_relu[id].map(mask_of).transpose()?;
                let y = mpq_kernels::add_masked(&input(0)?, &input(1)?, mask.as_ref())?;
                if keep && let Some(m) = mask {
                    saved[id] = Saved::Mask(m);
                }
                y
            }
            Op::Flatten => {
                let x = input(0)?;
                if keep {
                    saved[id] = Saved::Dims(x.dims().to_vec());
                }
                x.flatten_from(1)?
            }
            Op::GlobalAvgPool => {
                let x = input(0)?;
                if keep {
                    saved[id] = Saved::Dims(x.dims().to_vec());
                }
                graph::global_avg_pool(&x)?
            }
            Op::Relu | Op::Relu6 | Op::MaxPool2d(_) | Op::AvgPool2d(_) => {
                let x = Var::from_tensor(&input(0)?.detach())?;
                let y = match &node.op {
                    Op::Relu => pass.relu(id, x.as_tensor())?,
                    Op::Relu6 => pass.relu6(id, x.as_tensor())?,
                    Op::MaxPool2d(p) => pass.max_pool(id, x.as_tensor(), p)?,
                    Op::AvgPool2d(p) => graph::avg_pool2d(x.as_tensor(), p)?,
                    _ => unreachable!("matched above"),
                };
                let out = y.detach();
                if keep {
                    saved[id] = Saved::Local { x, y };
                }
                out
            }
            Op::Func(f) => {
                let xs = (0..node.inputs.len())
                    .map(|k| Ok(Var::from_tensor(&input(k)?.detach())?))
                    .collect::<Result<Vec<Var>>>()?;
                let refs: Vec<&Tensor> = xs.iter().map(|v| v.as_tensor()).collect();
                let y = graph::eval_func(f, &refs)?;
                let out = y.detach();
                if keep {
                    saved[id] = Saved::LocalN { xs, y };
                }
                out
            }
        };
        values[id] = Some(y);
        for &i in &node.inputs {
            if last_use[i] == id && i != graph.output() {
                values[i] = None;
            }
        }
    }
    let logits = values[graph.output()]
        .take()
        .ok_or_else(|| Error::config("graph", "output node was not computed"))?;
    drop(values);

    let mut out = Grads {
        weights: vec![None; n_layers],
        acts: vec![None; n_layers],
    };
    if !needs[graph.output()] {
        return Ok(out);
    }
    let lv = Var::from_tensor(&logits)?;
    let dlogits = loss(lv.as_tensor())?
        .backward()?
        .get(lv.as_tensor())
        .cloned()
        .unwrap_or(logits.zeros_like()?);
    let mut grad: Vec<Option<Tensor>> = vec![None; nodes.len()];
    grad[graph.output()] = Some(dlogits);
    let send = |grad: &mut Vec<Option<Tensor>>, k: usize, g: Tensor| -> Result<()> {
        if needs[k] {
            add_grad(&mut grad[k], g)?;
        }
        Ok(())
    };
    for id in (1..nodes.len()).rev() {
        let Some(g) = grad[id].take() else { continue };
        let node = &nodes[id];
        let src = node.inputs.first().copied().unwrap_or(0);
        match (&node.op, std::mem::replace(&mut saved[id], Saved::None)) {
            (Op::Conv2d(_) | Op::Linear(_), Saved::Layer { x, w, scale }) => {
                let i = layer_of(id);
                let want_w = i.is_some_and(tracked);
                let want_x = needs[src] || i.and_then(act).is_some();
                let (gx, gw) = match &node.op {
                    Op::Conv2d(spec) => {
                        let p = graph::conv_params(spec);
                        // A gradient already collected for the input (a residual shortcut's)
                        // is added as the input gradient is written, unless the layer's own
                        // activation gradient is wanted; and when this gradient is the last
                        // to reach the input, a ReLU fused after a batch norm or residual
                        // sum, that node's mask is applied as it is written (the node then
                        // passes the gradient through).
                        let fold_in = needs[src] && i.and_then(act).is_none();
                        let last = readers[src] == 1 || (readers[src] == 2 && grad[src].is_some());
                        let mask = match nodes[src].inputs.first() {
                            Some(&s)
                                if fold_in
                                    && last
                                    && passthrough[src]
                                    && matches!(saved[s], Saved::Mask(_)) =>
                            {
                                match std::mem::replace(&mut saved[s], Saved::None) {
                                    Saved::Mask(m) => Some(m),
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        let onto = grad[src].take_if(|_| fold_in);
                        let (gx, gw, _) = if onto.is_some() || mask.is_some() {
                            let (gx, gw, gb) = mpq_kernels::conv2d_grads_into(
                                &x,
                                &w,
                                &g,
                                &p,
                                (onto.as_ref(), mask.as_ref()),
                                (want_w, false),
                            )?;
                            (Some(gx), gw, gb)
                        } else {
                            mpq_kernels::conv2d_grads(&x, &w, &g, &p, want_x, (want_w, false))?
                        };
                        let gw = match (gw, scale) {
                            (Some(gw), Some(s)) => Some(gw.broadcast_mul(&s)?),
                            (gw, _) => gw,
                        };
                        (gx, gw)
                    }
                    _ => (
                        want_x.then(|| g.matmul(&w)).transpose()?,
                        want_w.then(|| g.t()?.matmul(&x)).transpose()?,
                    ),
                };
                if let Some(i) = i {
                    if want_w {
                        out.weights[i] = gw;
                    }
                    if act(i).is_some() {
                        out.acts[i] = gx.clone();
                    }
                }
                if let Some(gx) = gx {
                    send(&mut grad, src, gx)?;
                }
            }
            (Op::BatchNorm2d(_), Saved::Affine { scale, mask }) => {
                let dx = mpq_kernels::channel_affine(&g, &scale, &[], mask.as_ref())?;
                send(&mut grad, src, dx)?;
            }
            (Op::Relu | Op::BatchNorm2d(_), Saved::Mask(m)) => {
                send(&mut grad, src, mpq_kernels::masked(&g, &m)?)?
            }
            (Op::Add, saved) => {
                let g = match saved {
                    Saved::Mask(m) => mpq_kernels::masked(&g, &m)?,
                    _ => g,
                };
                send(&mut grad, node.inputs[0], g.clone())?;
                send(&mut grad, node.inputs[1], g)?;
            }
            (Op::Flatten, Saved::Dims(d)) => send(&mut grad, src, g.reshape(d)?)?,
            (Op::GlobalAvgPool, Saved::Dims(d)) => {
                send(&mut grad, src, graph::global_avg_pool_grad(&g, &d)?)?
            }
            (_, Saved::Local { x, y }) => {
                let dx = match graph::local_grad(&x, &y, &g)?.0 {
                    Some(dx) => dx,
                    None => x.as_tensor().zeros_like()?,
                };
                send(&mut grad, src, dx)?;
            }
            (_, Saved::LocalN { xs, y }) => {
                let (gs, _) = graph::local_grads(&xs, &y, &g)?;
                for ((k, gx), x) in gs.into_iter().enumerate().zip(&xs) {
                    let gx = match gx {
                        Some(gx) => gx,
                        None => x.as_tensor().zeros_like()?,
                    };
                    send(&mut grad, node.inputs[k], gx)?;
                }
            }
            // Input, dropout and a fused ReLU pass the gradient through.
            (_, Saved::None) => send(&mut grad, src, g)?,
            (op, _) => {
                return Err(Error::config(
                    "sensitivity",
                    format!("reverse pass: nothing saved for {op:?} node {}", node.name),
                ));
            }
        }
    }
    Ok(out)
}

/// The weight and bias of a conv (`w`, `b`) with the eval-mode batch norm `bn` after it
/// folded in (`w·scale` per output channel, `b·scale + shift`), and the scale shaped
/// `[o, 1, 1, 1]`.
fn fold_bn(
    graph: &Graph,
    bn: &graph::Node,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let Op::BatchNorm2d(spec) = &bn.op else {
        return Err(Error::config(
            "sensitivity",
            "folding a conv into a non-batch-norm",
        ));
    };
    let (scale, shift) = bn_affine(graph, &bn.name, spec.eps)?;
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
fn bn_affine(graph: &Graph, name: &str, eps: f64) -> Result<(Vec<f32>, Vec<f32>)> {
    let param = |s: &str| -> Result<Vec<f32>> {
        Ok(graph
            .params()
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

#[cfg(test)]
mod tests {
    use candle::{Device, Tensor, Var};

    use super::super::forward::Perturbation;
    use super::super::problem::{HessianProblem, Loss, Precision};
    use crate::data::Batch;
    use crate::graph::{Conv2dSpec, Graph, GraphBuilder, PoolSpec};

    fn noise(dims: &[usize], seed: u64) -> Tensor {
        let n: usize = dims.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// Every node kind: conv (with and without bias) → BN → ReLU (fused), a residual sum with
    /// its ReLU (fused), a conv → ReLU (unfused), BN alone, ReLU6, max- and average pools,
    /// dropout, global average pool, flatten and two linear layers.
    fn every_kind() -> Graph {
        let mut b = GraphBuilder::new(&[3, 12, 12], &Device::Cpu, 5);
        let x = b
            .conv2d("c1", b.input(), Conv2dSpec::new(3, 8, 3, 1, 1, true))
            .unwrap();
        let x = b.batch_norm("bn1", x).unwrap();
        let x = b.relu(x).unwrap();
        let y = b
            .conv2d("c2", x, Conv2dSpec::new(8, 8, 3, 1, 1, false))
            .unwrap();
        let y = b.batch_norm("bn2", y).unwrap();
        let x = b.add(x, y).unwrap();
        let x = b.relu(x).unwrap();
        let x = b
            .conv2d("c3", x, Conv2dSpec::new(8, 6, 3, 2, 1, true))
            .unwrap();
        let x = b.relu(x).unwrap();
        let x = b.batch_norm("bn3", x).unwrap();
        let x = b.relu6(x).unwrap();
        let x = b.max_pool(x, PoolSpec::new(2, 2, 0)).unwrap();
        let x = b
            .conv2d("c4", x, Conv2dSpec::new(6, 6, 1, 1, 0, false))
            .unwrap();
        let x = b.avg_pool(x, PoolSpec::new(3, 1, 1)).unwrap();
        let x = b.dropout(x, 0.1).unwrap();
        let g = b.global_avg_pool(x).unwrap();
        let g = b.flatten(g).unwrap();
        let g = b.linear("fc1", g, 7, true).unwrap();
        let g = b.relu(g).unwrap();
        let g = b.linear("fc2", g, 4, true).unwrap();
        let graph = b.finish(g).unwrap();
        for (i, bn) in ["bn1", "bn2", "bn3"].iter().enumerate() {
            let p = graph.params();
            let c = p.var(&format!("{bn}.weight")).unwrap().dims()[0];
            let set = |s: &str, t: Tensor| p.var(&format!("{bn}.{s}")).unwrap().set(&t).unwrap();
            set("weight", (noise(&[c], 10 + i as u64) + 1.2).unwrap());
            set("bias", noise(&[c], 20 + i as u64));
            set("running_mean", (noise(&[c], 30 + i as u64) * 0.3).unwrap());
            set(
                "running_var",
                ((noise(&[c], 40 + i as u64) * 0.4).unwrap() + 1.0).unwrap(),
            );
        }
        graph
    }

    fn problem(graph: &Graph, autograd: bool) -> HessianProblem {
        let x = noise(&[5, 3, 12, 12], 1);
        let y = Tensor::from_vec(vec![0u32, 3, 1, 2, 3], 5, &Device::Cpu).unwrap();
        let mut p = HessianProblem::new(
            graph,
            vec![Batch { x, y }],
            Loss::cross_entropy(),
            None,
            Precision::F32,
        )
        .unwrap();
        p.set_autograd_only(autograd);
        p
    }

    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let num = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
        let den = b.sqr().unwrap().sum_all().unwrap();
        let (num, den) = (
            num.to_scalar::<f32>().unwrap(),
            den.to_scalar::<f32>().unwrap(),
        );
        (num / den.max(1e-30)).sqrt()
    }

    #[test]
    fn weight_and_activation_gradients_match_candle_autograd() {
        let graph = every_kind();
        let (fast, slow) = (problem(&graph, false), problem(&graph, true));
        let layers = fast.layers().to_vec();
        assert_eq!(layers.len(), 6);
        // Perturbed weights in some layers, gradients of a subset; the last case starts past
        // the first layers, so its second pass begins from the cached prefix.
        let cases = [
            (vec![0, 2, 4], vec![true; 6]),
            (vec![0, 2, 4], vec![false, true, false, false, true, false]),
            (vec![2, 4], vec![false, false, true, false, true, true]),
            (vec![2, 4], vec![false, false, true, false, true, true]),
        ];
        for (perturbed, tracked) in cases {
            let weights: Vec<Option<Tensor>> = layers
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    perturbed
                        .contains(&i)
                        .then(|| (noise(&l.weight_shape, 50 + i as u64) * 1e-2).unwrap())
                })
                .collect();
            let p = Perturbation {
                weights,
                acts: Vec::new(),
            };
            let (a, b) = (
                fast.gradient(0, &p, &tracked).unwrap(),
                slow.gradient(0, &p, &tracked).unwrap(),
            );
            for (i, l) in layers.iter().enumerate() {
                match (&a.weights[i], &b.weights[i]) {
                    (Some(ga), Some(gb)) => {
                        let d = rel_diff(ga, gb);
                        assert!(d < 1e-5, "{}: {d}", l.name);
                    }
                    (None, None) => assert!(!tracked[i]),
                    _ => panic!("{}: one executor has a gradient", l.name),
                }
            }
        }
        // Activation perturbations of three layers, no weight gradients.
        let acts: Vec<Option<Var>> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (i != 1 && i != 4).then(|| {
                    let mut dims = vec![3];
                    dims.extend(&l.input_shape);
                    Var::from_tensor(&(noise(&dims, 70 + i as u64) * 1e-2).unwrap()).unwrap()
                })
            })
            .collect();
        let p = Perturbation {
            weights: Vec::new(),
            acts,
        };
        let (a, b) = (
            fast.gradient_part(0, 1..4, &p, &[]).unwrap(),
            slow.gradient_part(0, 1..4, &p, &[]).unwrap(),
        );
        for (i, l) in layers.iter().enumerate() {
            assert!(a.weights[i].is_none() && b.weights[i].is_none());
            match (&a.acts[i], &b.acts[i]) {
                (Some(ga), Some(gb)) => {
                    let d = rel_diff(ga, gb);
                    assert!(d < 1e-5, "{}: {d}", l.name);
                }
                (None, None) => assert!(i == 1 || i == 4),
                _ => panic!("{}: one executor has an activation gradient", l.name),
            }
        }
    }
}
