//! LIMPQ's joint ("one-time") indicator training step (Tang et al. ECCV 2022, docs/algorithms.md §5.4): on
//! one batch, one forward/backward pass per candidate bit-width with every searched layer at
//! that width, plus one pass under a random mixed configuration; the gradients accumulate,
//! every element is clipped to `[−1, 1]`, variables whose gradient is all zero are skipped,
//! and SGD with momentum takes one step.

use candle::backprop::GradStore;
use candle::{Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::hooks::IndicatorHooks;
use super::switchable_bn::SwitchableBn;
use crate::graph::{ForwardOptions, Graph, Hooks, Mode};
use crate::plan::BitWidth;
use crate::train::{Optimizer, Sgd, cross_entropy};
use crate::{Error, Result};

/// What one joint step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The bits of every searched layer in each pass, in pass order.
    pub passes: Vec<Vec<BitWidth>>,
    /// The loss of each pass.
    pub losses: Vec<f64>,
    /// Variables updated (with a non-zero gradient).
    pub updated: usize,
}

/// The state of a joint training run: quantizers, switchable batch norms, optimizer.
pub struct JointTrainer {
    hooks: IndicatorHooks,
    bn: SwitchableBn,
    vars: Vec<Var>,
    opt: Sgd,
    label_smoothing: f64,
    grad_clip: f64,
    mixed_pass: bool,
}

/// Settings of a [`JointTrainer`] step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (coupled, as `torch.optim.SGD`).
    pub weight_decay: f64,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Each gradient element is clipped to `[−c, c]`.
    pub grad_clip: f64,
    /// Whether the random mixed pass runs (`|B| + 1` passes) or not (`|B|`).
    pub mixed_pass: bool,
}

impl JointTrainer {
    /// A trainer over `graph` with `hooks`' quantizers; the optimizer holds the graph's
    /// trainable variables (the switchable batch norms' copies in place of their shared
    /// parameters) and every step variable.
    pub fn new(graph: &Graph, hooks: IndicatorHooks, cfg: &StepConfig) -> Result<Self> {
        let bn = SwitchableBn::new(graph, &hooks)?;
        let replaced: Vec<_> = bn.replaced(graph)?.iter().map(|v| v.id()).collect();
        let mut vars: Vec<Var> = graph
            .params()
            .trainable()
            .into_iter()
            .filter(|v| !replaced.contains(&v.id()))
            .collect();
        vars.extend(bn.trainable());
        vars.extend(hooks.trainable());
        let opt = Sgd::new(vars.clone(), cfg.momentum, false, cfg.weight_decay);
        Ok(JointTrainer {
            hooks,
            bn,
            vars,
            opt,
            label_smoothing: cfg.label_smoothing,
            grad_clip: cfg.grad_clip,
            mixed_pass: cfg.mixed_pass,
        })
    }

    /// The quantizers (their steps are the indicators).
    pub fn hooks(&self) -> &IndicatorHooks {
        &self.hooks
    }

    /// The switchable batch norms.
    pub fn batch_norms(&self) -> &SwitchableBn {
        &self.bn
    }

    /// Consumes the trainer, returning the quantizers.
    pub fn into_hooks(self) -> IndicatorHooks {
        self.hooks
    }

    /// One joint step on batch `(x, y)` at learning rate `lr`. `seed` drives the random mixed
    /// configuration and dropout (derive it from the run seed and the step).
    ///
    /// # Shapes
    /// `x`: `[N, ...input_shape]`, `y`: `[N]` (u32).
    pub fn step(
        &mut self,
        graph: &Graph,
        x: &Tensor,
        y: &Tensor,
        lr: f64,
        seed: u64,
    ) -> Result<StepStats> {
        let k = self.hooks.bits().len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut configs: Vec<Vec<usize>> = (0..k).map(|b| vec![b; self.layers()]).collect();
        if self.mixed_pass {
            configs.push((0..self.layers()).map(|_| rng.random_range(0..k)).collect());
        }
        let mut acc = GradStore::default();
        let mut stats = StepStats {
            passes: Vec::new(),
            losses: Vec::new(),
            updated: 0,
        };
        for (p, cfg) in configs.iter().enumerate() {
            self.hooks.set_mixed(cfg);
            self.bn.load(graph, &self.hooks)?;
            let mut opts = ForwardOptions::new(Mode::Train, &mut self.hooks);
            opts.dropout_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ p as u64;
            let ls = self.label_smoothing;
            let ce = |l: &Tensor| cross_entropy(l, y, ls);
            let (_, loss, mut grads) = graph.forward_backward(x, &mut opts, &ce)?;
            let loss = f64::from(loss.to_scalar::<f32>()?);
            if !loss.is_finite() {
                return Err(Error::NonFinite(format!(
                    "LIMPQ joint training loss (pass {p}; try a smaller --lr)"
                )));
            }
            self.bn.store(graph, &self.hooks, &mut grads, &mut acc)?;
            for v in &self.vars {
                if let Some(g) = grads.remove(v.as_tensor()) {
                    let g = match acc.remove(v.as_tensor()) {
                        Some(old) => (old + g)?,
                        None => g,
                    };
                    acc.insert(v.as_tensor(), g);
                }
            }
            stats
                .passes
                .push(cfg.iter().map(|&i| self.hooks.bits()[i]).collect());
            stats.losses.push(loss);
        }
        let mut clipped = GradStore::default();
        for v in &self.vars {
            let Some(g) = acc.remove(v.as_tensor()) else {
                continue;
            };
            let g = g.clamp(-self.grad_clip, self.grad_clip)?;
            let peak = g.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            if peak == 0.0 {
                continue;
            }
            clipped.insert(v.as_tensor(), g);
            stats.updated += 1;
        }
        self.opt.step(&clipped, lr)?;
        Ok(stats)
    }

    fn layers(&self) -> usize {
        self.hooks.layers().len()
    }
}
