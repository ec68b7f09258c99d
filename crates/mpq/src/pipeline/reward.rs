//! HAQ's reward evaluation (Wang et al., CVPR 2019, docs/algorithms.md §4.6), the tensor side of
//! [`crate::search::haq::PlanEvaluator`]: quantize the model under a plan, calibrate the
//! activation ranges, optionally fine-tune for a few steps, and measure the accuracy on a
//! split held out of the training data (the test split stays untouched by the search).

use crate::data::{Dataset, Normalization};
use crate::graph::NoHooks;
use crate::model::Model;
use crate::progress::NoProgress;
use crate::quant::{CalibrationConfig, PlanHooks, prepare_graph};
use crate::search::haq::{EvaluatorSettings, PlanEvaluator};
use crate::train::{self, Schedule, TrainConfig};
use crate::{Error, QuantPlan, Result};

/// Settings of [`RewardEvaluator`].
#[derive(Debug, Clone)]
pub struct RewardConfig {
    /// Training samples held out to score plans (the reference: 10,000 ImageNet images).
    pub val_samples: usize,
    /// Seed of the hold-out split and of the fine-tuning subset.
    pub seed: u64,
    /// Activation calibration (on the rest of the training data).
    pub calibration: CalibrationConfig,
    /// SGD steps of fine-tuning under the plan before scoring (0: post-training only).
    pub finetune_steps: usize,
    /// Samples per fine-tuning step.
    pub finetune_batch_size: usize,
    /// Fine-tuning learning rate (the reference: 0.001, momentum 0.9, weight decay 4e-5).
    pub finetune_lr: f64,
    /// Samples per evaluation batch.
    pub eval_batch_size: usize,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            val_samples: 2000,
            seed: 1,
            calibration: CalibrationConfig::default(),
            finetune_steps: 0,
            finetune_batch_size: 128,
            finetune_lr: 0.001,
            eval_batch_size: 500,
        }
    }
}

/// Scores plans on a split held out of the training data.
pub struct RewardEvaluator<'m> {
    model: &'m Model,
    norm: Normalization,
    /// Calibration data: the training data minus the held-out split.
    calib: Dataset,
    /// The fine-tuning subset (`finetune_steps × batch` samples of `calib`).
    tune: Option<Dataset>,
    val: Dataset,
    cfg: RewardConfig,
    evaluations: usize,
}

impl<'m> RewardEvaluator<'m> {
    /// Splits `train` into a calibration/fine-tuning part and `cfg.val_samples` held-out
    /// samples.
    pub fn new(
        model: &'m Model,
        train: &Dataset,
        norm: &Normalization,
        cfg: RewardConfig,
    ) -> Result<Self> {
        if model.quantized.is_some() {
            return Err(Error::config(
                "model",
                "HAQ searches a float model; this one is already quantized",
            ));
        }
        if cfg.val_samples == 0 || cfg.val_samples >= train.len() {
            return Err(Error::config(
                "val-samples",
                format!(
                    "must be between 1 and {} (the training samples minus at least one)",
                    train.len().saturating_sub(1)
                ),
            ));
        }
        if cfg.finetune_steps > 0 && cfg.finetune_batch_size == 0 {
            return Err(Error::config("finetune-batch-size", "must be at least 1"));
        }
        let (calib, val) = train.split_holdout(cfg.val_samples, cfg.seed);
        let tune = (cfg.finetune_steps > 0).then(|| {
            let n = (cfg.finetune_steps * cfg.finetune_batch_size).min(calib.len());
            calib.split_holdout(n, cfg.seed ^ 0x9e37_79b9).1
        });
        Ok(RewardEvaluator {
            model,
            norm: norm.clone(),
            calib,
            tune,
            val,
            cfg,
            evaluations: 0,
        })
    }

    /// The settings, as recorded in the search history.
    pub fn settings(&self) -> EvaluatorSettings {
        let c = &self.cfg;
        EvaluatorSettings {
            calibration_method: format!("{:?}", c.calibration.method),
            calibration_samples: c.calibration.samples,
            eval_batch_size: c.eval_batch_size,
            finetune_batch_size: c.finetune_batch_size,
            finetune_lr: c.finetune_lr,
            finetune_steps: c.finetune_steps,
            seed: c.seed,
            val_samples: c.val_samples,
        }
    }

    /// Plans scored so far.
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }

    /// The held-out split.
    pub fn val(&self) -> &Dataset {
        &self.val
    }

    fn finetune_config(&self, tune: &Dataset) -> TrainConfig {
        TrainConfig {
            epochs: 1,
            batch_size: self.cfg.finetune_batch_size.min(tune.len()).max(1),
            lr: self.cfg.finetune_lr,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 4e-5,
            schedule: Schedule::Constant,
            augment: false,
            seed: self.cfg.seed,
            ..TrainConfig::default()
        }
    }
}

impl PlanEvaluator for RewardEvaluator<'_> {
    fn fp_accuracy(&mut self) -> Result<f64> {
        let s = train::evaluate(
            &self.model.graph,
            &self.val,
            &self.norm,
            self.cfg.eval_batch_size,
            &mut NoHooks,
        )?;
        Ok(100.0 * s.accuracy)
    }

    fn accuracy(&mut self, plan: &QuantPlan) -> Result<f64> {
        self.evaluations += 1;
        let graph = prepare_graph(&self.model.graph, plan)?;
        let mut hooks =
            PlanHooks::calibrate(&graph, plan, &self.calib, &self.norm, &self.cfg.calibration)?;
        if let Some(tune) = &self.tune {
            let tc = self.finetune_config(tune);
            train::train_with(
                &graph,
                tune,
                None,
                &self.norm,
                &tc,
                &mut hooks,
                &mut NoProgress,
            )?;
        }
        let s = train::evaluate(
            &graph,
            &self.val,
            &self.norm,
            self.cfg.eval_batch_size,
            &mut hooks,
        )?;
        Ok(100.0 * s.accuracy)
    }
}
