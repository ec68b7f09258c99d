//! `mpq train`: train a fresh zoo model, or continue an existing one (ONNX import or a model
//! saved by mpq), and save it with its metadata (architecture, input normalisation, the
//! training record). `holdout` keeps a seeded split of the training data out of training:
//! the split HAQ's and CW-HAWQ's rewards score plans on.

use std::path::PathBuf;

use serde::Serialize;

use super::{ModelSource, check_shape, device, load_data};
use crate::progress::Progress;
use crate::train::{EpochStats, TrainConfig};
use crate::zoo::{self, ZooConfig};
use crate::{Error, Result};

/// What to train.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainFrom {
    /// A fresh zoo architecture, with an optional width multiplier.
    Arch {
        /// The zoo name.
        name: String,
        /// Width multiplier (mobilenetv2).
        width: Option<f64>,
    },
    /// An existing model (`PATH.onnx` or `PATH.safetensors` saved by mpq).
    Model(ModelSource),
}

impl TrainFrom {
    /// A fresh zoo architecture at its default width.
    pub fn arch(name: impl Into<String>) -> TrainFrom {
        TrainFrom::Arch {
            name: name.into(),
            width: None,
        }
    }
}

impl TrainRequest {
    /// Trains `from` on `data` with the default recipe into `out`, nothing held out.
    pub fn new(from: TrainFrom, data: impl Into<String>, out: impl Into<PathBuf>) -> Self {
        TrainRequest {
            from,
            data: data.into(),
            config: TrainConfig::default(),
            holdout: 0,
            out: out.into(),
        }
    }
}

/// `mpq train`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    /// The model.
    pub from: TrainFrom,
    /// Data reference.
    pub data: String,
    /// The optimiser, schedule and lengths (its seed seeds everything).
    pub config: TrainConfig,
    /// Training samples held out of training (0: none).
    pub holdout: usize,
    /// The checkpoint to write.
    pub out: PathBuf,
}

/// What `mpq train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// The architecture.
    pub arch: String,
    /// The data set's name.
    pub data: String,
    /// The checkpoint written.
    pub out: String,
    /// Epochs run.
    pub epochs: usize,
    /// Samples trained on (the training split minus `holdout`).
    pub train_samples: usize,
    /// Training samples kept out.
    pub holdout: usize,
    /// Final test accuracy.
    pub accuracy: f64,
    /// Final test loss.
    pub loss: f64,
    /// Wall time.
    pub seconds: f64,
    /// Mean seconds per epoch.
    pub seconds_per_epoch: f64,
    /// Per-epoch numbers.
    pub history: Vec<EpochStats>,
}

/// Trains and saves the model of `req`.
pub fn train(req: &TrainRequest, progress: &mut dyn Progress) -> Result<TrainOutcome> {
    if let TrainFrom::Model(m) = &req.from
        && let Some(path) = super::model_file(m)
    {
        crate::outputs::refuse_overwrite(&[("model", path)], &[req.out.as_path()])?;
    }
    let cfg = &req.config;
    cfg.validate()?;
    let mut splits = load_data(&req.data, cfg.seed)?;
    if req.holdout > 0 {
        if req.holdout >= splits.train.len() {
            return Err(Error::config(
                "holdout",
                format!("must be below the {} training samples", splits.train.len()),
            ));
        }
        // The same split as the search's reward evaluator (Dataset::split_holdout, seed).
        splits.train = splits.train.split_holdout(req.holdout, cfg.seed).0;
    }
    let mut model = match &req.from {
        TrainFrom::Model(source) => {
            let model = source.open()?;
            check_shape(&model, &splits)?;
            model
        }
        TrainFrom::Arch { name, width } => {
            let mut zcfg = ZooConfig::new(splits.train.shape().to_vec(), splits.train.classes());
            if let Some(w) = width {
                zcfg.width = *w;
            }
            zoo::build_on(name, &zcfg, cfg.seed, &device())?
        }
    };
    // A model that carries its input normalisation (saved by mpq) keeps it; others take the
    // data's.
    let norm = model.normalization_or(&splits.normalization);
    model.meta.normalization = Some(norm.clone());
    progress.note(&format!(
        "training {} on {} ({} train / {} test samples, {} parameters)",
        model.meta.arch,
        splits.name,
        splits.train.len(),
        splits.test.len(),
        model.num_params()
    ));
    let report = crate::train::train(
        &model.graph,
        &splits.train,
        Some(&splits.test),
        &norm,
        cfg,
        progress,
    )?;
    let last = report.epochs.last().and_then(|e| e.test);
    let (accuracy, loss) = last
        .map(|t| (t.accuracy, t.loss))
        .unwrap_or((f64::NAN, f64::NAN));
    let train_seconds: f64 = report.epochs.iter().map(|e| e.seconds).sum();
    let outcome = TrainOutcome {
        arch: model.meta.arch.clone(),
        data: splits.name.clone(),
        out: req.out.display().to_string(),
        epochs: report.epochs.len(),
        train_samples: splits.train.len(),
        holdout: req.holdout,
        accuracy,
        loss,
        seconds: report.seconds,
        seconds_per_epoch: train_seconds / report.epochs.len().max(1) as f64,
        history: report.epochs.clone(),
    };
    model.meta.training = Some(serde_json::json!({
        "data": splits.name,
        "holdout": req.holdout,
        "config": report.config,
        "epochs": outcome.epochs,
        "test_accuracy": accuracy,
        "test_loss": loss,
    }));
    crate::guard::check_params(&model.graph, "after training")?;
    model.save(&req.out)?;
    Ok(outcome)
}
