//! One training step's forward and backward pass: [`Graph::forward_backward`]. On the CPU in
//! `f32` with the fast kernels, the backward pass is written by hand over the graph's own
//! nodes instead of candle's autograd (the executor of PyTorch's `loss.backward()` that every
//! method of mpq ends in: HAWQ's and HAWQ-V2's fine-tuning, LIMPQ's joint training, HAQ's
//! short fine-tunes). candle's backward starts every node's gradient from a zeroed buffer and
//! adds into it; here a gradient that reaches a node once is moved, the batch norm (with the
//! ReLU fused after it) and the convolutions call their kernels' gradients directly, and the
//! values each node's backward needs are the only ones kept. Layer hooks (fake quantization,
//! LSQ), ReLU6, pools and dropout run under candle's autograd locally: their own forward on a
//! variable, then `backward` of `Σ y·dy`, whose gradients (LSQ's step sizes among them) are
//! merged into the result. Elsewhere the step is `forward_with` plus candle's `backward`; the
//! two paths agree to rounding (test `forward_backward_matches_candle_autograd`).

use candle::backprop::GradStore;
use candle::{DType, Tensor, Var};

use super::exec::{ForwardOptions, Mode, dropout_for};
use super::{Graph, Op, ops};
use crate::{Error, Result};

/// What a node keeps for its backward step.
enum Saved {
    None,
    /// A conv or linear layer's (hooked) input and weight, and the hooks' local graphs.
    Layer {
        x: Tensor,
        w: Tensor,
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
    /// A ReLU's (or ReLU6's) output and upper clip.
    Relu(Tensor, f32),
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

impl Graph {
    /// Runs the graph forward under `opts` (as [`Graph::forward_with`]) and back-propagates
    /// `loss(logits)`: returns the logits, the loss and the gradients of every parameter that
    /// gets one (and of the hooks' trainable variables), like `loss.backward()`.
    pub fn forward_backward(
        &self,
        x: &Tensor,
        opts: &mut ForwardOptions<'_>,
        loss: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore)> {
        let fast = x.device().is_cpu()
            && x.dtype() == DType::F32
            && !ops::stock_ops()
            && self.params.iter().all(|p| p.var.dtype() != DType::F64);
        if !fast {
            return self.forward_backward_autograd(x, opts, loss);
        }
        self.reverse(x, opts, loss)
    }

    /// [`Graph::forward_backward`] through candle's autograd on any device (the reference of
    /// the hand-written pass).
    pub fn forward_backward_autograd(
        &self,
        x: &Tensor,
        opts: &mut ForwardOptions<'_>,
        loss: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore)> {
        let logits = self.forward_with(x, opts)?;
        let l = loss(&logits)?;
        let grads = l.backward()?;
        Ok((logits, l, grads))
    }

    fn reverse(
        &self,
        x: &Tensor,
        opts: &mut ForwardOptions<'_>,
        loss: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore)> {
        self.check_input(x)?;
        let nodes = &self.nodes;
        let fused = self.fused_bn_relu();
        // A residual sum whose only reader is the ReLU right after it runs fused with it.
        let fused_add = self.relu_fused_after(|op| *op == Op::Add);
        let var = |name: &str| self.params.var(name);
        let mut values: Vec<Option<Tensor>> = vec![None; nodes.len()];
        let mut saved: Vec<Saved> = (0..nodes.len()).map(|_| Saved::None).collect();
        values[0] = Some(x.clone());
        for (id, node) in nodes.iter().enumerate().skip(1) {
            let input = |k: usize| -> Result<Tensor> {
                values[node.inputs[k]].clone().ok_or_else(|| {
                    Error::config("graph", format!("node {} reads a freed value", node.name))
                })
            };
            let y = match &node.op {
                Op::Input => input(0)?,
                Op::Conv2d(_) | Op::Linear(_) => {
                    // Hooks see the real weight variable and a variable standing for the input,
                    // so their graphs reach both (and their own trainables).
                    // (Hooks that leave the input alone get it as it is: no copy.)
                    let (hx, x_hook) = if opts.hooks.hooks_activation(&node.name) {
                        let xv = Var::from_tensor(&input(0)?.detach())?;
                        let hx = opts.hooks.activation(&node.name, xv.as_tensor())?;
                        let hooked = hx.id() != xv.as_tensor().id();
                        (hx.clone(), hooked.then_some((xv, hx)))
                    } else {
                        (input(0)?, None)
                    };
                    let wvar = var(&format!("{}.weight", node.name))?;
                    let hw = opts.hooks.weight(&node.name, wvar.as_tensor())?;
                    let w_hook = (hw.id() != wvar.as_tensor().id()).then(|| hw.clone());
                    let (x, w) = (hx.detach(), hw.detach());
                    let b = match &node.op {
                        Op::Conv2d(s) if s.bias => Some(bias(self, &node.name)?),
                        Op::Linear(s) if s.bias => Some(bias(self, &node.name)?),
                        _ => None,
                    };
                    let y = match &node.op {
                        Op::Conv2d(spec) => ops::conv2d(&x, &w, b.as_ref(), spec)?,
                        _ => ops::linear(&x, &w, b.as_ref())?,
                    };
                    saved[id] = Saved::Layer {
                        x,
                        w,
                        x_hook,
                        w_hook,
                    };
                    y
                }
                Op::BatchNorm2d(spec) if opts.mode == Mode::Train => {
                    let x = input(0)?;
                    let g = var(&format!("{}.weight", node.name))?.as_tensor().detach();
                    let b = var(&format!("{}.bias", node.name))?.as_tensor().detach();
                    let (y, mean, v) = ops::batch_norm_train_relu(&x, &g, &b, spec.eps, fused[id])?;
                    if opts.update_running_stats {
                        self.update_running_stats(&node.name, &x, (&mean, &v), spec.momentum)?;
                    }
                    saved[id] = Saved::BatchNorm {
                        x,
                        y: y.clone(),
                        stats: (mean, v),
                        relu: fused[id],
                    };
                    y
                }
                Op::Relu if fused[node.inputs[0]] => input(0)?,
                Op::Relu if fused_add[node.inputs[0]] => {
                    let y = input(0)?;
                    saved[id] = Saved::Relu(y.clone(), f32::INFINITY);
                    y
                }
                Op::Relu | Op::Relu6 => {
                    let (y, hi) = match node.op {
                        Op::Relu => (ops::relu(&input(0)?)?, f32::INFINITY),
                        _ => (ops::relu6(&input(0)?)?, 6.0),
                    };
                    saved[id] = Saved::Relu(y.clone(), hi);
                    y
                }
                Op::Flatten => {
                    let x = input(0)?;
                    saved[id] = Saved::Dims(x.dims().to_vec());
                    x.flatten_from(1)?
                }
                Op::GlobalAvgPool => {
                    let x = input(0)?;
                    saved[id] = Saved::Dims(x.dims().to_vec());
                    ops::global_avg_pool(&x)?
                }
                Op::Add if fused_add[id] => mpq_kernels::add_relu(&input(0)?, &input(1)?)?,
                Op::Add => mpq_kernels::add_masked(&input(0)?, &input(1)?, None)?,
                Op::Dropout { .. } if opts.mode == Mode::Eval => input(0)?,
                Op::Func(f) => {
                    let xs = (0..node.inputs.len())
                        .map(|k| Ok(Var::from_tensor(&input(k)?.detach())?))
                        .collect::<Result<Vec<Var>>>()?;
                    let refs: Vec<&Tensor> = xs.iter().map(|v| v.as_tensor()).collect();
                    let y = super::eval_func(f, &refs)?;
                    let out = y.detach();
                    saved[id] = Saved::LocalN { xs, y };
                    out
                }
                // Eval-mode batch norm, pools, train-mode dropout: local autograd.
                _ => {
                    let x = Var::from_tensor(&input(0)?.detach())?;
                    let xt = x.as_tensor();
                    let y = match &node.op {
                        Op::BatchNorm2d(spec) => {
                            let p = |s: &str| -> Result<Tensor> {
                                Ok(var(&format!("{}.{s}", node.name))?.as_tensor().clone())
                            };
                            let stats = (&p("running_mean")?, &p("running_var")?);
                            let (g, b) = (p("weight")?, p("bias")?);
                            ops::batch_norm_eval_relu(xt, &g, &b, stats, spec.eps, fused[id])?
                        }
                        Op::MaxPool2d(p) => ops::max_pool2d(xt, p)?,
                        Op::AvgPool2d(p) => ops::avg_pool2d(xt, p)?,
                        Op::Dropout { p } => dropout_for(xt, *p, opts.dropout_seed, id)?,
                        op => {
                            return Err(Error::config(
                                "graph",
                                format!("reverse pass: no rule for {op:?}"),
                            ));
                        }
                    };
                    let out = y.detach();
                    saved[id] = Saved::Local { x, y };
                    out
                }
            };
            values[id] = Some(y);
            for &i in &node.inputs {
                if self.last_use[i] == id && i != self.output {
                    values[i] = None;
                }
            }
        }
        let logits = values[self.output]
            .take()
            .ok_or_else(|| Error::config("graph", "output node was not computed"))?;
        drop(values);

        let mut targets: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.as_tensor().clone())
            .collect();
        targets.extend(opts.hooks.trainable().iter().map(|v| v.as_tensor().clone()));
        let lv = Var::from_tensor(&logits)?;
        let l = loss(lv.as_tensor())?;
        let mut store = GradStore::default();
        let dlogits = match l.backward()?.get(lv.as_tensor()) {
            Some(g) => g.clone(),
            None => return Ok((logits, l.detach(), store)),
        };
        let mut grad: Vec<Option<Tensor>> = vec![None; nodes.len()];
        grad[self.output] = Some(dlogits);
        let send = |grad: &mut Vec<Option<Tensor>>, k: usize, g: Tensor| -> Result<()> {
            if k > 0 {
                add_grad(&mut grad[k], g)?;
            }
            Ok(())
        };
        for id in (1..nodes.len()).rev() {
            let Some(g) = grad[id].take() else { continue };
            let node = &nodes[id];
            let src = node.inputs.first().copied().unwrap_or(0);
            match (&node.op, std::mem::replace(&mut saved[id], Saved::None)) {
                (
                    Op::Conv2d(_) | Op::Linear(_),
                    Saved::Layer {
                        x,
                        w,
                        x_hook,
                        w_hook,
                    },
                ) => {
                    let has_bias = matches!(&node.op, Op::Conv2d(s) if s.bias)
                        || matches!(&node.op, Op::Linear(s) if s.bias);
                    let want_x = src > 0 || x_hook.is_some();
                    let (gx, gw, gb) = match &node.op {
                        Op::Conv2d(spec) => {
                            let p = ops::conv_params(spec);
                            // A gradient already collected for the input (a residual
                            // shortcut's) is added as the input gradient is written.
                            let fold_in = src > 0 && x_hook.is_none();
                            match grad[src].take_if(|_| fold_in) {
                                Some(o) => {
                                    let (gx, gw, gb) = mpq_kernels::conv2d_grads_into(
                                        &x,
                                        &w,
                                        &g,
                                        &p,
                                        (Some(&o), None),
                                        (true, has_bias),
                                    )?;
                                    (Some(gx), gw, gb)
                                }
                                None => mpq_kernels::conv2d_grads(
                                    &x,
                                    &w,
                                    &g,
                                    &p,
                                    want_x,
                                    (true, has_bias),
                                )?,
                            }
                        }
                        _ => (
                            want_x.then(|| g.matmul(&w)).transpose()?,
                            Some(g.t()?.matmul(&x)?),
                            has_bias.then(|| g.sum(0)).transpose()?,
                        ),
                    };
                    let wvar = var(&format!("{}.weight", node.name))?;
                    if let Some(gw) = gw {
                        match w_hook {
                            Some(hw) => merge(&mut store, local_backward(&hw, &gw)?, &targets)?,
                            None => accumulate(&mut store, wvar.as_tensor(), gw)?,
                        }
                    }
                    if let Some(gb) = gb {
                        let b = var(&format!("{}.bias", node.name))?;
                        accumulate(&mut store, b.as_tensor(), gb)?;
                    }
                    let gx = match (gx, x_hook) {
                        (Some(gx), Some((xv, hx))) => {
                            let (gin, local) = local_grad(&xv, &hx, &gx)?;
                            merge(&mut store, local, &targets)?;
                            gin
                        }
                        (gx, _) => gx,
                    };
                    if let Some(gx) = gx {
                        send(&mut grad, src, gx)?;
                    }
                }
                (Op::BatchNorm2d(spec), Saved::BatchNorm { x, y, stats, relu }) => {
                    let gv = var(&format!("{}.weight", node.name))?;
                    let bv = var(&format!("{}.bias", node.name))?;
                    let (dx, dg, db) = mpq_kernels::batch_norm_train_grads(
                        &x,
                        gv.as_tensor(),
                        (&y, &g),
                        (&stats.0, &stats.1),
                        spec.eps,
                        relu,
                    )?;
                    accumulate(&mut store, gv.as_tensor(), dg)?;
                    accumulate(&mut store, bv.as_tensor(), db)?;
                    send(&mut grad, src, dx)?;
                }
                (_, Saved::Relu(y, hi)) => {
                    send(&mut grad, src, mpq_kernels::relu_grad(&y, &g, hi)?)?
                }
                (Op::Add, _) => {
                    send(&mut grad, node.inputs[0], g.clone())?;
                    send(&mut grad, node.inputs[1], g)?;
                }
                (Op::Flatten, Saved::Dims(d)) => send(&mut grad, src, g.reshape(d)?)?,
                (Op::GlobalAvgPool, Saved::Dims(d)) => {
                    send(&mut grad, src, global_avg_pool_grad(&g, &d)?)?
                }
                (_, Saved::Local { x, y }) => {
                    let (dx, local) = local_grad(&x, &y, &g)?;
                    merge(&mut store, local, &targets)?;
                    if let Some(dx) = dx {
                        send(&mut grad, src, dx)?;
                    }
                }
                (_, Saved::LocalN { xs, y }) => {
                    let (gs, local) = local_grads(&xs, &y, &g)?;
                    merge(&mut store, local, &targets)?;
                    for (k, gx) in gs.into_iter().enumerate() {
                        if let Some(gx) = gx {
                            send(&mut grad, node.inputs[k], gx)?;
                        }
                    }
                }
                // Input, eval-mode dropout and a fused ReLU pass the gradient through.
                (_, Saved::None) => send(&mut grad, src, g)?,
                (op, _) => {
                    return Err(Error::config(
                        "graph",
                        format!("reverse pass: nothing saved for {op:?} node {}", node.name),
                    ));
                }
            }
        }
        Ok((logits, l.detach(), store))
    }
}

/// Adds `g` to a node's gradient slot (moved in when it is the first).
pub(crate) fn add_grad(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        None => g,
        Some(a) => mpq_kernels::add_masked(&a, &g, None)?,
    });
    Ok(())
}

/// The input gradient of a global average pool over an input of `dims` `[N, C, H, W]`.
pub(crate) fn global_avg_pool_grad(g: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let hw: usize = dims[2..].iter().product();
    Ok((g / hw.max(1) as f64)?.broadcast_as(dims)?.contiguous()?)
}

/// The backward step of a node run under candle's autograd on the variable `x` with output
/// `y`: the gradient of `x` for the output gradient `g`, and the whole local store (the
/// gradients of whatever else `y` depends on).
pub(crate) fn local_grad(x: &Var, y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, GradStore)> {
    let local = local_backward(y, g)?;
    Ok((local.get(x.as_tensor()).cloned(), local))
}

/// [`local_grad`] for a node with several input variables `xs`.
pub(crate) fn local_grads(
    xs: &[Var],
    y: &Tensor,
    g: &Tensor,
) -> Result<(Vec<Option<Tensor>>, GradStore)> {
    let local = local_backward(y, g)?;
    let gs = xs
        .iter()
        .map(|x| local.get(x.as_tensor()).cloned())
        .collect();
    Ok((gs, local))
}

/// candle's backward of `y` (built under autograd) for the output gradient `g`.
fn local_backward(y: &Tensor, g: &Tensor) -> Result<GradStore> {
    Ok((y * g)?.sum_all()?.backward()?)
}

fn bias(g: &Graph, name: &str) -> Result<Tensor> {
    Ok(g.params.var(&format!("{name}.bias"))?.as_tensor().detach())
}

/// Adds `grad` to `t`'s gradient in `store`.
fn accumulate(store: &mut GradStore, t: &Tensor, grad: Tensor) -> Result<()> {
    let g = match store.remove(t) {
        Some(a) => (a + grad)?,
        None => grad,
    };
    store.insert(t, g);
    Ok(())
}

/// Adds a local backward's gradients of the `targets` (parameters and the hooks' trainable
/// variables) into `store`; the rest of `local` (its intermediate nodes) is dropped.
fn merge(store: &mut GradStore, local: GradStore, targets: &[Tensor]) -> Result<()> {
    for t in targets {
        if let Some(g) = local.get(t) {
            accumulate(store, t, g.clone())?;
        }
    }
    Ok(())
}
