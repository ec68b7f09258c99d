//! `mpq eval`: test accuracy and loss of a model (FP32; size and BOPs at 32 bits).

use serde::Serialize;

use mpq::data::{self, LoadOptions};
use mpq::graph::NoHooks;

use crate::args::{EvalArgs, GlobalArgs};
use crate::output::{self, Bars};

#[derive(Serialize)]
pub(crate) struct EvalJson {
    pub(crate) accuracy: f64,
    pub(crate) loss: f64,
    pub(crate) samples: usize,
    pub(crate) size_bytes: u64,
    pub(crate) avg_w_bits: f64,
    pub(crate) bops: f64,
}

pub(crate) fn run(g: &GlobalArgs, a: &EvalArgs) -> anyhow::Result<()> {
    let model = super::open_model(&a.model, g.seed)?;
    let splits = data::load(
        &a.data,
        &LoadOptions {
            seed: g.seed,
            ..Default::default()
        },
    )?;
    check_shape(&model, &splits)?;
    let _bars = Bars::new(g.quiet);
    let norm = model.normalization_or(&splits.normalization);
    let stats = mpq::train::evaluate(
        &model.graph,
        &splits.test,
        &norm,
        a.batch_size,
        &mut NoHooks,
    )?;
    let layers = model.graph.layer_infos()?;
    let weights: u64 = layers.iter().map(|l| l.params as u64).sum();
    let macs: u64 = layers.iter().map(|l| l.macs).sum();
    let result = EvalJson {
        accuracy: stats.accuracy,
        loss: stats.loss,
        samples: stats.samples,
        size_bytes: weights * 4,
        avg_w_bits: 32.0,
        bops: macs as f64 * 32.0 * 32.0,
    };
    if g.json {
        return output::json(&result);
    }
    output::line(&format!(
        "accuracy {:.2}%  loss {:.4}  samples {}  (FP32: {} weight bytes, {:.3e} BOPs)",
        100.0 * result.accuracy,
        result.loss,
        result.samples,
        result.size_bytes,
        result.bops
    ))
}

/// The data's sample shape must be what the model takes.
pub(crate) fn check_shape(
    model: &mpq::model::Model,
    splits: &data::DataSplits,
) -> anyhow::Result<()> {
    let want = model.graph.input_shape();
    let got = splits.test.shape();
    if want != got {
        return Err(mpq::Error::ShapeMismatch {
            name: format!("data {} for model {}", splits.name, model.meta.arch),
            expected: format!("{want:?}"),
            got: format!("{got:?}"),
        }
        .into());
    }
    let classes = model.meta.config.classes;
    if splits.test.classes() > classes {
        return Err(mpq::Error::config(
            "data",
            format!(
                "{} has {} classes but the model outputs {classes}",
                splits.name,
                splits.test.classes()
            ),
        )
        .into());
    }
    Ok(())
}
