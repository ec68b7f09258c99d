//! `mpq train`: trains a fresh zoo model, or an existing one (ONNX or mpq safetensors), and
//! saves it with its metadata.

use mpq::model::ModelHint;
use mpq::pipeline::{ModelSource, TrainFrom, TrainRequest};
use mpq::train::{Schedule, TrainConfig};

use super::copy_fields;

use crate::args::GlobalArgs;
use crate::args::model::{ScheduleArg, TrainArgs};
use crate::output::{self, Bars, Table};

impl TrainArgs {
    pub(crate) fn request(&self, seed: u64) -> TrainRequest {
        let from = match &self.model {
            Some(path) => TrainFrom::Model(ModelSource {
                reference: path.clone(),
                hint: ModelHint {
                    seed,
                    ..ModelHint::default()
                },
            }),
            None => TrainFrom::Arch {
                name: self.arch.clone().unwrap_or_default(),
                width: self.width,
            },
        };
        let mut config = TrainConfig {
            schedule: match self.schedule {
                ScheduleArg::Cosine => Schedule::Cosine,
                ScheduleArg::Constant => Schedule::Constant,
                ScheduleArg::Step => Schedule::Step {
                    every_epochs: self.step_every,
                    gamma: self.step_gamma,
                },
            },
            augment: !self.no_augment,
            seed,
            ..TrainConfig::default()
        };
        copy_fields!(
            config,
            self,
            epochs,
            batch_size,
            lr,
            momentum,
            nesterov,
            weight_decay
        );
        copy_fields!(config, self, optimizer, label_smoothing);
        TrainRequest {
            from,
            data: self.data.clone(),
            config,
            holdout: self.holdout,
            out: self.out.clone(),
        }
    }
}

pub(crate) fn run(g: &GlobalArgs, a: &TrainArgs) -> anyhow::Result<()> {
    let s = mpq::pipeline::train(&a.request(g.seed), &mut Bars::new(g.quiet))?;
    for e in &s.history {
        if let Some(t) = &e.test {
            output::status(
                g.quiet,
                &format!(
                    "epoch {:>3}  lr {:.4}  train loss {:.4}  train acc {:.2}%  test loss {:.4}  \
                     test acc {:.2}%  {:.1}s",
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
    if g.json {
        return output::json(&s);
    }
    let mut t = Table::new("arch|data|epochs|test acc|test loss|s/epoch|saved to");
    t.row(vec![
        s.arch.clone(),
        s.data.clone(),
        s.epochs.to_string(),
        format!("{:.2}%", 100.0 * s.accuracy),
        format!("{:.4}", s.loss),
        format!("{:.2}", s.seconds_per_epoch),
        s.out.clone(),
    ]);
    output::table(&t)
}
