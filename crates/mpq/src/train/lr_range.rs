//! The learning-rate range test that picks `mpq quantize`'s fine-tuning learning rate when
//! none is given (docs/quantization.md, "The fine-tuning learning rate"): a short, seeded
//! staircase of SGD steps at geometrically rising learning rates, from the model as it will be
//! fine-tuned (BatchNorm folded or not, under the plan's quantizers), stopped at the first
//! of two levels in a row whose losses rise more than a tolerance above the lowest so far; the
//! model and the quantizers' learned parameters are restored
//! afterwards, bit for bit.

use candle::Tensor;
use serde::{Deserialize, Serialize};

use super::optim::{Optimizer, Sgd};
use super::trainer::cross_entropy;
use crate::data::{self, Dataset, LoaderConfig, Normalization};
use crate::graph::{ForwardOptions, Graph, Hooks, Mode};
use crate::{Error, Result};

/// Settings of [`lr_range_test`].
#[derive(Debug, Clone, PartialEq)]
pub struct LrRangeConfig {
    /// The first level's learning rate.
    pub lr_min: f64,
    /// The largest learning rate tried.
    pub lr_max: f64,
    /// Levels per factor of 10 (the grid is `lr_min · 10^(k / levels_per_decade)`).
    pub levels_per_decade: usize,
    /// SGD steps at each level (the level's loss is their mean batch loss).
    pub steps_per_level: usize,
    /// A level is unstable when its loss exceeds the lowest earlier level's by more than this (nats;
    /// an absolute margin, since a level's loss is a mean over few batches and a
    /// well-trained model's small batch losses vary by multiples of themselves).
    pub tolerance: f64,
    /// The chosen rate is the last stable level's divided by this.
    pub safety: f64,
    /// Samples per step.
    pub batch_size: usize,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Seed of the sample order.
    pub seed: u64,
}

impl Default for LrRangeConfig {
    fn default() -> Self {
        LrRangeConfig {
            lr_min: 1e-4,
            lr_max: 1.0,
            levels_per_decade: 4,
            steps_per_level: 4,
            tolerance: 0.5,
            safety: 10.0,
            batch_size: 64,
            momentum: 0.9,
            weight_decay: 5e-4,
            seed: 0,
        }
    }
}

impl LrRangeConfig {
    /// The grid of learning rates, lowest first.
    pub fn grid(&self) -> Vec<f64> {
        let decades = (self.lr_max / self.lr_min).log10();
        let n = (decades * self.levels_per_decade as f64 + 1e-9).floor() as usize + 1;
        (0..n)
            .map(|k| self.lr_min * 10f64.powf(k as f64 / self.levels_per_decade as f64))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        if !(self.lr_min.is_finite() && self.lr_min > 0.0 && self.lr_max >= self.lr_min) {
            return Err(Error::config(
                "lr range",
                "needs 0 < lr_min <= lr_max (finite)",
            ));
        }
        if self.levels_per_decade == 0 || self.steps_per_level == 0 || self.batch_size == 0 {
            return Err(Error::config(
                "lr range",
                "levels per decade, steps per level and batch size must be at least 1",
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(Error::config("lr range", "the tolerance must be >= 0"));
        }
        if !(self.safety.is_finite() && self.safety >= 1.0) {
            return Err(Error::config("lr range", "the safety factor must be >= 1"));
        }
        super::validate_loss_and_momentum(self.momentum, self.weight_decay, 0.0)
    }
}

/// One level of the staircase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrLevel {
    /// Its learning rate.
    pub lr: f64,
    /// Mean batch loss of its steps (infinite once a step's loss was not finite).
    pub loss: f64,
}

/// What [`lr_range_test`] measured and chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrRangeResult {
    /// The chosen learning rate: the last stable level's (see [`range_rule`]), divided by the
    /// safety factor.
    pub lr: f64,
    /// The last stable level's learning rate.
    pub stable_lr: f64,
    /// The levels run, lowest first (the test stops after the first one whose loss rose).
    pub levels: Vec<LrLevel>,
    /// SGD steps run.
    pub steps: usize,
}

/// Runs the range test on `graph` under `hooks` with the samples of `train_set` (seeded
/// order), then restores every parameter of `graph` and every trainable value of `hooks`.
pub fn lr_range_test(
    graph: &Graph,
    train_set: &Dataset,
    norm: &Normalization,
    cfg: &LrRangeConfig,
    hooks: &mut dyn Hooks,
) -> Result<LrRangeResult> {
    cfg.validate()?;
    if train_set.is_empty() {
        return Err(Error::config("data", "the training set is empty"));
    }
    let saved = graph.params().snapshot()?;
    let hook_vars = hooks.trainable();
    let hook_saved: Vec<Tensor> = (hook_vars.iter())
        .map(|v| v.as_tensor().copy())
        .collect::<candle::Result<_>>()?;
    let run = staircase(graph, train_set, norm, cfg, hooks);
    graph.params().restore(&saved)?;
    for (v, t) in hook_vars.iter().zip(&hook_saved) {
        v.set(t)?;
    }
    run
}

/// The range test's rule over the mean losses of the levels run so far: the index of the last
/// stable level, and whether to stop. A level is *suspect* when its loss exceeds the lowest
/// earlier loss by more than `tolerance`; the test stops at a suspect level followed by
/// another one (a rise that persists), or at a loss that is not finite. A suspect level
/// followed by a level back within the tolerance was batch noise: both count as stable. The
/// second look matters for plans that start far from trained (losses of 1–2 nats swing by
/// more than the tolerance from batch to batch): a single spike stopped one LeNet-5 W2A8
/// fine-tuning in three at the lowest rate.
pub fn range_rule(losses: &[f64], tolerance: f64) -> (Option<usize>, bool) {
    let (mut stable, mut best, mut suspect) = (None, f64::INFINITY, false);
    for (i, &l) in losses.iter().enumerate() {
        if !l.is_finite() {
            return (stable, true);
        }
        let high = l > best + tolerance;
        match (suspect, high) {
            (true, true) => return (stable, true),
            (false, true) => suspect = true,
            _ => {
                suspect = false;
                stable = Some(i);
            }
        }
        best = best.min(l);
    }
    (stable, false)
}

fn staircase(
    graph: &Graph,
    train_set: &Dataset,
    norm: &Normalization,
    cfg: &LrRangeConfig,
    hooks: &mut dyn Hooks,
) -> Result<LrRangeResult> {
    let mut vars = graph.params().trainable();
    vars.extend(hooks.trainable());
    let mut opt = Sgd::new(vars, cfg.momentum, false, cfg.weight_decay);
    let loader = LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        augment: false,
        drop_last: true,
        seed: cfg.seed,
    };
    // Whole batches only (a short last batch would be a noisier loss); a set smaller than one
    // batch is one batch.
    let loader = if data::num_batches(train_set.len(), &loader) == 0 {
        LoaderConfig {
            drop_last: false,
            ..loader
        }
    } else {
        loader
    };
    let mut epoch = 0usize;
    let mut batches = data::batches(train_set, norm, &loader, epoch, graph.device());
    let (mut levels, mut steps) = (Vec::new(), 0usize);
    let mut stable: Option<f64> = None;
    for lr in cfg.grid() {
        let mut sum = 0.0f64;
        for _ in 0..cfg.steps_per_level {
            let batch = match batches.next() {
                Some(b) => b?,
                None => {
                    epoch += 1;
                    batches = data::batches(train_set, norm, &loader, epoch, graph.device());
                    batches
                        .next()
                        .ok_or_else(|| Error::config("data", "the training set is empty"))??
                }
            };
            let mut opts = ForwardOptions::new(Mode::Train, &mut *hooks);
            opts.dropout_seed = cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ steps as u64;
            let ce = |l: &Tensor| cross_entropy(l, &batch.y, 0.0);
            let (_, loss, grads) = graph.forward_backward(&batch.x, &mut opts, &ce)?;
            steps += 1;
            let v = loss.to_scalar::<f32>()? as f64;
            if !v.is_finite() {
                sum = f64::INFINITY;
                break;
            }
            opt.step(&grads, lr)?;
            sum += v;
        }
        let loss = sum / cfg.steps_per_level as f64;
        levels.push(LrLevel { lr, loss });
        let losses: Vec<f64> = levels.iter().map(|l| l.loss).collect();
        let (last, stop) = range_rule(&losses, cfg.tolerance);
        stable = last.map(|i| levels[i].lr);
        if stop {
            break;
        }
    }
    // Even the first level's loss was not finite: the lowest rate, divided as usual.
    let stable_lr = stable.unwrap_or(cfg.lr_min);
    Ok(LrRangeResult {
        lr: stable_lr / cfg.safety,
        stable_lr,
        levels,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::range_rule;

    #[test]
    fn the_range_test_stops_at_a_rise_that_persists_not_at_a_spike() {
        // The LeNet-5 W2A8 levels that stopped a fine-tuning at the lowest rate: one spike
        // (1.49 -> 2.215) then back down; the test goes on.
        let spike = [1.765, 1.49, 2.215, 1.051, 0.9];
        assert_eq!(range_rule(&spike, 0.5), (Some(4), false));
        // A rise that persists stops the test; the last stable level is the one before it.
        let rise = [0.5, 0.3, 0.2, 0.9, 1.4, 0.1];
        assert_eq!(range_rule(&rise, 0.5), (Some(2), true));
        // A suspect last level is not stable.
        assert_eq!(range_rule(&[0.5, 0.3, 0.9], 0.5), (Some(1), false));
        // A loss that is not finite stops at once.
        assert_eq!(range_rule(&[0.5, f64::NAN, 0.1], 0.5), (Some(0), true));
        assert_eq!(range_rule(&[f64::INFINITY], 0.5), (None, true));
        // Within the tolerance: every level stable.
        assert_eq!(range_rule(&[2.3, 2.4, 2.6, 2.7], 0.5), (Some(3), false));
    }
}
