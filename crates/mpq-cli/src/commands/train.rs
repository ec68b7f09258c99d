//! `mpq train`: trains a fresh zoo model, or an existing one (ONNX or mpq safetensors), and
//! saves it with its metadata.

use serde::Serialize;

use mpq::model::{Model, ModelHint};
use mpq::train::{OptimizerKind, Schedule, TrainConfig, TrainReport};
use mpq::zoo::{self, ZooConfig};

use crate::args::{GlobalArgs, OptimizerArg, ScheduleArg, TrainArgs};
use crate::output::{self, Bars, Table};

#[derive(Serialize)]
pub(crate) struct TrainJson {
    pub(crate) arch: String,
    pub(crate) data: String,
    pub(crate) out: String,
    pub(crate) epochs: usize,
    /// Samples trained on (the training split minus `holdout`).
    pub(crate) train_samples: usize,
    /// Training samples kept out (`--holdout`).
    pub(crate) holdout: usize,
    pub(crate) accuracy: f64,
    pub(crate) loss: f64,
    pub(crate) seconds: f64,
    pub(crate) seconds_per_epoch: f64,
    pub(crate) history: Vec<mpq::train::EpochStats>,
}

pub(crate) fn config(a: &TrainArgs, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        momentum: a.momentum,
        nesterov: a.nesterov,
        weight_decay: a.weight_decay,
        optimizer: match a.optimizer {
            OptimizerArg::Sgd => OptimizerKind::Sgd,
            OptimizerArg::Adamw => OptimizerKind::AdamW,
        },
        schedule: match a.schedule {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Step => Schedule::Step {
                every_epochs: a.step_every,
                gamma: a.step_gamma,
            },
        },
        augment: !a.no_augment,
        label_smoothing: a.label_smoothing,
        seed,
    }
}

/// Trains `arch` on `data` and saves the model to `out`; shared with `quickstart`.
pub(crate) fn train_and_save(g: &GlobalArgs, a: &TrainArgs) -> anyhow::Result<(Model, TrainJson)> {
    let cfg = config(a, g.seed);
    cfg.validate()?;
    let mut splits = super::load_data(&a.data, g.seed)?;
    if a.holdout > 0 {
        if a.holdout >= splits.train.len() {
            return Err(mpq::Error::config(
                "holdout",
                format!("must be below the {} training samples", splits.train.len()),
            )
            .into());
        }
        // The same split as the search's reward evaluator (Dataset::split_holdout, --seed).
        splits.train = splits.train.split_holdout(a.holdout, g.seed).0;
    }
    let mut model = match (&a.model, &a.arch) {
        (Some(path), _) => {
            let hint = ModelHint {
                seed: g.seed,
                ..Default::default()
            };
            let model = Model::open(path, &hint, &super::device())?;
            super::eval::check_shape(&model, &splits)?;
            model
        }
        (None, Some(arch)) => {
            let mut zcfg = ZooConfig::new(splits.train.shape().to_vec(), splits.train.classes());
            if let Some(w) = a.width {
                zcfg.width = w;
            }
            zoo::build_on(arch, &zcfg, g.seed, &super::device())?
        }
        (None, None) => {
            return Err(mpq::Error::config("train", "give --arch or --model").into());
        }
    };
    // A model that carries its input normalisation (saved by mpq) keeps it; others take the
    // data's.
    let norm = model.normalization_or(&splits.normalization);
    model.meta.normalization = Some(norm.clone());
    output::status(
        g.quiet,
        &format!(
            "training {} on {} ({} train / {} test samples, {} parameters)",
            model.meta.arch,
            splits.name,
            splits.train.len(),
            splits.test.len(),
            model.num_params()
        ),
    );
    let mut bars = Bars::new(g.quiet);
    let report: TrainReport = mpq::train::train(
        &model.graph,
        &splits.train,
        Some(&splits.test),
        &norm,
        &cfg,
        &mut bars,
    )?;
    for e in &report.epochs {
        if let Some(t) = &e.test {
            output::status(
                g.quiet,
                &format!(
                    "epoch {:>3}  lr {:.4}  train loss {:.4}  train acc {:.2}%  test loss {:.4}  test acc {:.2}%  {:.1}s",
                    e.epoch,
                    e.lr,
                    e.train_loss,
                    100.0 * e.train_accuracy,
                    t.loss,
                    100.0 * t.accuracy,
                    e.seconds
                ),
            );
        }
    }
    let last = report.epochs.last().and_then(|e| e.test);
    let (accuracy, loss) = last
        .map(|t| (t.accuracy, t.loss))
        .unwrap_or((f64::NAN, f64::NAN));
    let train_seconds: f64 = report.epochs.iter().map(|e| e.seconds).sum();
    let summary = TrainJson {
        arch: model.meta.arch.clone(),
        data: splits.name.clone(),
        out: a.out.display().to_string(),
        epochs: report.epochs.len(),
        train_samples: splits.train.len(),
        holdout: a.holdout,
        accuracy,
        loss,
        seconds: report.seconds,
        seconds_per_epoch: train_seconds / report.epochs.len().max(1) as f64,
        history: report.epochs.clone(),
    };
    model.meta.training = Some(serde_json::json!({
        "data": splits.name,
        "holdout": a.holdout,
        "config": report.config,
        "epochs": summary.epochs,
        "test_accuracy": accuracy,
        "test_loss": loss,
    }));
    model.save(&a.out)?;
    Ok((model, summary))
}

pub(crate) fn run(g: &GlobalArgs, a: &TrainArgs) -> anyhow::Result<()> {
    let (_, summary) = train_and_save(g, a)?;
    if g.json {
        return output::json(&summary);
    }
    let mut t = Table::new(&[
        "arch",
        "data",
        "epochs",
        "test acc",
        "test loss",
        "s/epoch",
        "saved to",
    ]);
    t.row(vec![
        summary.arch.clone(),
        summary.data.clone(),
        summary.epochs.to_string(),
        format!("{:.2}%", 100.0 * summary.accuracy),
        format!("{:.4}", summary.loss),
        format!("{:.2}", summary.seconds_per_epoch),
        summary.out.clone(),
    ]);
    t.print()
}
