//! The executor: runs a [`Graph`] forward on candle tensors, with [`Hooks`] on every
//! quantizable layer's weight and input activation. Backward: candle's autodiff of the
//! output, or `Graph::forward_backward` (the `reverse` module's engine) for a whole training
//! step.

use candle::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::fusion::Fusion;
use super::{Graph, Op, ops};
use crate::{Error, Result};

/// Training or evaluation behaviour of BatchNorm and Dropout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics (and running-average updates), active dropout.
    Train,
    /// Running statistics, dropout off.
    Eval,
}

/// Transforms applied to quantizable layers during a forward pass: fake quantization,
/// activation perturbations (activation Hessians), calibration observers.
///
/// `layer` is the layer's dotted name (`layer1.0.conv1`). The defaults are the identity.
pub trait Hooks {
    /// Transforms the layer's weight before it is used.
    fn weight(&mut self, layer: &str, w: &Tensor) -> Result<Tensor> {
        let _ = layer;
        Ok(w.clone())
    }

    /// Transforms the layer's input activation before it is used.
    fn activation(&mut self, layer: &str, x: &Tensor) -> Result<Tensor> {
        let _ = layer;
        Ok(x.clone())
    }

    /// Whether [`Hooks::activation`] may transform (or observe) the input of `layer`.
    /// Default: true. A training step asks first, so that where it is false the input need
    /// not be copied into a variable for the hook's gradient.
    fn hooks_activation(&self, layer: &str) -> bool {
        let _ = layer;
        true
    }

    /// Variables the hooks own that training should update next to the graph's own
    /// (LSQ's learned step sizes). Default: none.
    fn trainable(&self) -> Vec<candle::Var> {
        Vec::new()
    }
}

/// Hooks that change nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {
    fn hooks_activation(&self, _layer: &str) -> bool {
        false
    }
}

/// Options of one forward pass.
pub struct ForwardOptions<'a> {
    /// Train or eval behaviour.
    pub mode: Mode,
    /// Layer hooks.
    pub hooks: &'a mut dyn Hooks,
    /// Seed of the dropout masks of this pass (train mode only); derive it from the run seed
    /// and the step so runs are reproducible.
    pub dropout_seed: u64,
    /// Whether train-mode BatchNorm updates its running statistics (PyTorch does).
    pub update_running_stats: bool,
}

impl<'a> ForwardOptions<'a> {
    /// Options for `mode` with the given hooks, dropout seed 0 and running-stat updates on.
    pub fn new(mode: Mode, hooks: &'a mut dyn Hooks) -> Self {
        ForwardOptions {
            mode,
            hooks,
            dropout_seed: 0,
            update_running_stats: true,
        }
    }
}

impl Graph {
    /// Runs the model without hooks.
    ///
    /// # Shapes
    /// `x`: `[N, ...input_shape]` → logits `[N, classes]`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_with(x, &mut ForwardOptions::new(mode, &mut super::NoHooks))
    }

    /// Runs the model with hooks and options.
    pub fn forward_with(&self, x: &Tensor, opts: &mut ForwardOptions<'_>) -> Result<Tensor> {
        self.check_input(x)?;
        let mut values: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        values[0] = Some(x.clone());
        let fusion = Fusion::new(self, false, |_| true);
        for (id, node) in self.nodes.iter().enumerate().skip(1) {
            let input = |k: usize| -> Result<&Tensor> {
                values[node.inputs[k]].as_ref().ok_or_else(|| {
                    Error::config("graph", format!("node {} reads a freed value", node.name))
                })
            };
            let y = match &node.op {
                Op::Input => input(0)?.clone(),
                Op::Conv2d(spec) => {
                    let x = opts.hooks.activation(&node.name, input(0)?)?;
                    let w = self
                        .params
                        .var(&format!("{}.weight", node.name))?
                        .as_tensor();
                    let w = opts.hooks.weight(&node.name, w)?;
                    let b = self.bias(&node.name, spec.bias)?;
                    ops::conv2d(&x, &w, b.as_ref(), spec)?
                }
                Op::Linear(spec) => {
                    let x = opts.hooks.activation(&node.name, input(0)?)?;
                    let w = self
                        .params
                        .var(&format!("{}.weight", node.name))?
                        .as_tensor();
                    let w = opts.hooks.weight(&node.name, w)?;
                    let b = self.bias(&node.name, spec.bias)?;
                    ops::linear(&x, &w, b.as_ref())?
                }
                Op::BatchNorm2d(spec) => self.batch_norm(
                    &node.name,
                    input(0)?,
                    (spec.eps, spec.momentum),
                    fusion.bn_relu(self, id),
                    opts,
                )?,
                // Already applied by the batch norm before it.
                Op::Relu if fusion.bn_relu(self, node.inputs[0]) => input(0)?.clone(),
                Op::Relu => ops::relu(input(0)?)?,
                Op::Relu6 => ops::relu6(input(0)?)?,
                Op::MaxPool2d(p) => ops::max_pool2d(input(0)?, p)?,
                Op::AvgPool2d(p) => ops::avg_pool2d(input(0)?, p)?,
                Op::GlobalAvgPool => ops::global_avg_pool(input(0)?)?,
                Op::Add => (input(0)? + input(1)?)?,
                Op::Flatten => input(0)?.flatten_from(1)?,
                Op::Dropout { p } => match opts.mode {
                    Mode::Eval => input(0)?.clone(),
                    Mode::Train => dropout_for(input(0)?, *p, opts.dropout_seed, id)?,
                },
                Op::Func(f) => {
                    let xs = (0..node.inputs.len())
                        .map(input)
                        .collect::<Result<Vec<_>>>()?;
                    super::eval_func(f, &xs)?
                }
            };
            values[id] = Some(y);
            for &i in &node.inputs {
                if self.last_use[i] == id && i != self.output {
                    values[i] = None;
                }
            }
        }
        values[self.output]
            .take()
            .ok_or_else(|| Error::config("graph", "output node was not computed"))
    }

    /// An input error unless `x` is `[N, ...input_shape]`.
    pub(super) fn check_input(&self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        if dims.len() != self.input_shape.len() + 1 || dims[1..] != self.input_shape[..] {
            return Err(Error::ShapeMismatch {
                name: "model input".into(),
                expected: format!("[N, {}]", join(&self.input_shape)),
                got: format!("{dims:?}"),
            });
        }
        Ok(())
    }

    fn bias(&self, name: &str, has_bias: bool) -> Result<Option<Tensor>> {
        Ok(if has_bias {
            Some(
                self.params
                    .var(&format!("{name}.bias"))?
                    .as_tensor()
                    .clone(),
            )
        } else {
            None
        })
    }

    /// Batch norm of node `name` (`(eps, momentum)`), followed by ReLU in the same op when
    /// `relu`.
    fn batch_norm(
        &self,
        name: &str,
        x: &Tensor,
        (eps, momentum): (f64, f64),
        relu: bool,
        opts: &ForwardOptions<'_>,
    ) -> Result<Tensor> {
        let p = |s: &str| self.params.var(&format!("{name}.{s}"));
        let (gamma, beta) = (p("weight")?.as_tensor(), p("bias")?.as_tensor());
        match opts.mode {
            Mode::Eval => {
                let (rm, rv) = (p("running_mean")?, p("running_var")?);
                let stats = (rm.as_tensor(), rv.as_tensor());
                ops::batch_norm_eval_relu(x, gamma, beta, stats, eps, relu)
            }
            Mode::Train => {
                let (y, mean, var) = ops::batch_norm_train_relu(x, gamma, beta, eps, relu)?;
                if opts.update_running_stats {
                    self.update_running_stats(name, x, (&mean, &var), momentum)?;
                }
                Ok(y)
            }
        }
    }

    /// PyTorch's running-statistics update of batch norm `name` from the batch statistics of
    /// its input `x` (biased `var`, made unbiased here).
    pub(super) fn update_running_stats(
        &self,
        name: &str,
        x: &Tensor,
        (mean, var): (&Tensor, &Tensor),
        momentum: f64,
    ) -> Result<()> {
        let p = |s: &str| self.params.var(&format!("{name}.{s}"));
        let (rm, rv) = (p("running_mean")?, p("running_var")?);
        let (n, _, h, w) = x.dims4()?;
        let count = (n * h * w) as f64;
        let unbiased = if count > 1.0 {
            (var * (count / (count - 1.0)))?
        } else {
            var.clone()
        };
        rm.set(&((rm.as_tensor() * (1.0 - momentum))? + (mean * momentum)?)?)?;
        rv.set(&((rv.as_tensor() * (1.0 - momentum))? + (unbiased * momentum)?)?)?;
        if let Some(counter) = self.params.get(&format!("{name}.num_batches_tracked")) {
            counter.set(&counter.as_tensor().broadcast_add(&Tensor::ones(
                (),
                counter.dtype(),
                counter.device(),
            )?)?)?;
        }
        Ok(())
    }
}

/// The train-mode dropout of node `id` in a pass with dropout seed `seed`.
pub(super) fn dropout_for(x: &Tensor, p: f64, seed: u64, id: usize) -> Result<Tensor> {
    dropout(x, p, seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Inverted dropout with a seeded mask: kept elements are scaled by `1/(1-p)`.
fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

pub(crate) fn join(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
