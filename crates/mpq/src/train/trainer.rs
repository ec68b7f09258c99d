//! The training loop and evaluation.

use std::time::Instant;

use candle::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::{AdamW, Optimizer, OptimizerKind, Sgd};
use super::schedule::Schedule;
use crate::data::{self, Dataset, LoaderConfig, Normalization};
use crate::graph::{ForwardOptions, Graph, Hooks, Mode, NoHooks};
use crate::progress::Progress;
use crate::{Error, Result};

/// Settings of a training run (defaults: SGD momentum 0.9, lr 0.05 cosine, batch 64,
/// weight decay 5e-4, augmentation for 3-channel images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay (coupled for SGD, decoupled for AdamW).
    pub weight_decay: f64,
    /// SGD or AdamW.
    pub optimizer: OptimizerKind,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Random crop + flip (3-channel images only).
    pub augment: bool,
    /// Label smoothing of the cross-entropy (0: none).
    pub label_smoothing: f64,
    /// Seed of shuffling, augmentation and dropout.
    pub seed: u64,
    /// Layers whose parameters stay fixed (HAWQ's frozen earlier blocks); their names, as
    /// parameter-name prefixes (`conv1` holds `conv1.weight` and `conv1.bias`).
    pub frozen: Vec<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 8,
            batch_size: 64,
            lr: 0.05,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            optimizer: OptimizerKind::Sgd,
            schedule: Schedule::Cosine,
            augment: true,
            label_smoothing: 0.0,
            seed: 0,
            frozen: Vec::new(),
        }
    }
}

/// The range checks every SGD-style training shares: momentum in [0, 1), a non-negative
/// weight decay and label smoothing in [0, 1).
pub(crate) fn validate_loss_and_momentum(
    momentum: f64,
    weight_decay: f64,
    label_smoothing: f64,
) -> Result<()> {
    if !(0.0..1.0).contains(&momentum) {
        return Err(Error::config("momentum", "must be in [0, 1)"));
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(Error::config(
            "weight-decay",
            "must be a non-negative number",
        ));
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(Error::config("label-smoothing", "must be in [0, 1)"));
    }
    Ok(())
}

impl TrainConfig {
    /// Checks ranges once, before any work.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch-size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::config("lr", "must be a non-negative number"));
        }
        validate_loss_and_momentum(self.momentum, self.weight_decay, self.label_smoothing)
    }
}

/// Accuracy and mean loss over a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    /// Fraction of samples whose arg-max logit is the label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (on augmented batches, in train mode).
    pub train_accuracy: f64,
    /// Test evaluation after the epoch, if a test set was given.
    pub test: Option<EvalStats>,
    /// Wall-clock seconds of the epoch's training steps.
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The settings.
    pub config: TrainConfig,
    /// Per-epoch numbers.
    pub epochs: Vec<EpochStats>,
    /// Total seconds.
    pub seconds: f64,
}

/// Mean cross-entropy of `logits` `[N, K]` against labels `y` `[N]` (u32), with optional
/// label smoothing `eps`: `(1-eps)·NLL + eps·mean_k(-log p_k)`.
pub fn cross_entropy(logits: &Tensor, y: &Tensor, eps: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&y.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    Ok(((nll * (1.0 - eps))? + (uniform * eps)?)?)
}

fn correct(logits: &Tensor, y: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred
        .eq(y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

/// Evaluates `graph` in eval mode on `ds` with `hooks` (use [`NoHooks`] for FP32).
pub fn evaluate(
    graph: &Graph,
    ds: &Dataset,
    norm: &Normalization,
    batch_size: usize,
    hooks: &mut dyn Hooks,
) -> Result<EvalStats> {
    Ok(evaluate_samples(graph, ds, norm, batch_size, hooks)?.stats())
}

/// Per-sample results of an evaluation: whether each sample's arg-max logit is its label,
/// and the mean loss. Paired comparisons and bootstrap intervals of the accuracy need the
/// samples, not just the fraction.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleResults {
    /// One entry per sample of the data set, in its order.
    pub correct: Vec<bool>,
    /// Mean cross-entropy.
    pub loss: f64,
}

impl SampleResults {
    /// Accuracy, loss and samples.
    pub fn stats(&self) -> EvalStats {
        let hits = self.correct.iter().filter(|&&c| c).count();
        EvalStats {
            accuracy: hits as f64 / self.correct.len().max(1) as f64,
            loss: self.loss,
            samples: self.correct.len(),
        }
    }
}

/// [`evaluate`], sample by sample.
pub fn evaluate_samples(
    graph: &Graph,
    ds: &Dataset,
    norm: &Normalization,
    batch_size: usize,
    hooks: &mut dyn Hooks,
) -> Result<SampleResults> {
    if ds.is_empty() {
        return Err(Error::config("data", "the evaluation set is empty"));
    }
    let cfg = LoaderConfig {
        batch_size: batch_size.max(1),
        shuffle: false,
        augment: false,
        drop_last: false,
        seed: 0,
    };
    let mut loss_sum = 0.0f64;
    let mut correct = Vec::with_capacity(ds.len());
    for batch in data::batches(ds, norm, &cfg, 0, graph.device()) {
        let batch = batch?;
        let n = batch.y.dims1()?;
        let logits = graph.forward_with(&batch.x, &mut ForwardOptions::new(Mode::Eval, hooks))?;
        let loss = cross_entropy(&logits, &batch.y, 0.0)?.to_scalar::<f32>()? as f64;
        loss_sum += loss * n as f64;
        let hit = logits
            .argmax(D::Minus1)?
            .eq(&batch.y)?
            .to_dtype(DType::U8)?;
        correct.extend(hit.to_vec1::<u8>()?.into_iter().map(|h| h != 0));
    }
    let loss = loss_sum / ds.len() as f64;
    if !loss.is_finite() {
        return Err(Error::NonFinite(
            "the evaluation loss is NaN or infinite: the model's outputs overflow".into(),
        ));
    }
    Ok(SampleResults { correct, loss })
}

/// Trains `graph` on `train_set` (evaluating on `test_set` after each epoch if given).
pub fn train(
    graph: &Graph,
    train_set: &Dataset,
    test_set: Option<&Dataset>,
    norm: &Normalization,
    cfg: &TrainConfig,
    progress: &mut dyn Progress,
) -> Result<TrainReport> {
    train_with(
        graph,
        train_set,
        test_set,
        norm,
        cfg,
        &mut NoHooks,
        progress,
    )
}

/// Trains under layer hooks: with [`crate::quant::PlanHooks`] this is quantization-aware
/// training (fake-quantized forward, straight-through backward with the clip mask); the
/// per-epoch test evaluation runs under the same hooks.
pub fn train_with(
    graph: &Graph,
    train_set: &Dataset,
    test_set: Option<&Dataset>,
    norm: &Normalization,
    cfg: &TrainConfig,
    hooks: &mut dyn Hooks,
    progress: &mut dyn Progress,
) -> Result<TrainReport> {
    cfg.validate()?;
    if train_set.is_empty() {
        return Err(Error::config("data", "the training set is empty"));
    }
    let mut vars = graph.params().trainable_outside(&cfg.frozen);
    vars.extend(hooks.trainable());
    let mut opt: Box<dyn Optimizer> = match cfg.optimizer {
        OptimizerKind::Sgd => {
            Box::new(Sgd::new(vars, cfg.momentum, cfg.nesterov, cfg.weight_decay))
        }
        OptimizerKind::AdamW => Box::new(AdamW::new(vars, cfg.weight_decay)),
    };
    let loader = LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        augment: cfg.augment,
        drop_last: false,
        seed: cfg.seed,
    };
    let steps_per_epoch = data::num_batches(train_set.len(), &loader);
    let total = steps_per_epoch * cfg.epochs;
    let start = Instant::now();
    let mut epochs = Vec::new();
    let mut step = 0usize;
    for epoch in 0..cfg.epochs {
        let t0 = Instant::now();
        progress.start(
            &format!("epoch {}/{}", epoch + 1, cfg.epochs),
            steps_per_epoch as u64,
        );
        let (mut loss_sum, mut hits, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for batch in data::batches(train_set, norm, &loader, epoch, graph.device()) {
            let batch = batch?;
            let n = batch.y.dims1()?;
            lr = cfg.schedule.lr(cfg.lr, step, total, steps_per_epoch);
            let mut opts = ForwardOptions::new(Mode::Train, &mut *hooks);
            opts.dropout_seed = cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ step as u64;
            let ce = |l: &Tensor| cross_entropy(l, &batch.y, cfg.label_smoothing);
            let (logits, loss, grads) = graph.forward_backward(&batch.x, &mut opts, &ce)?;
            let loss_v = loss.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                return Err(Error::NonFinite(format!(
                    "training loss at epoch {} step {step} (try a smaller --lr)",
                    epoch + 1
                )));
            }
            crate::guard::check_grads(
                &grads,
                graph,
                &format!("training at epoch {} step {step}", epoch + 1),
            )?;
            opt.step(&grads, lr)?;
            loss_sum += loss_v * n as f64;
            hits += correct(&logits, &batch.y)?;
            seen += n;
            step += 1;
            progress.inc(1);
            progress.message(&format!("loss {:.4}", loss_sum / seen as f64));
        }
        progress.finish();
        let seconds = t0.elapsed().as_secs_f64();
        let test = match test_set {
            Some(ts) => Some(
                evaluate(graph, ts, norm, 256, &mut *hooks).map_err(|e| match e {
                    Error::NonFinite(m) => Error::NonFinite(format!(
                        "after epoch {} of training: {m} (try a smaller --lr)",
                        epoch + 1
                    )),
                    e => e,
                })?,
            ),
            None => None,
        };
        epochs.push(EpochStats {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: hits as f64 / seen.max(1) as f64,
            test,
            seconds,
        });
    }
    Ok(TrainReport {
        config: cfg.clone(),
        epochs,
        seconds: start.elapsed().as_secs_f64(),
    })
}
