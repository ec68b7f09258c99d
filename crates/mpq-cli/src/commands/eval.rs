//! `mpq eval`: test accuracy and loss of a model, FP32 or under a policy; size, BOPs and, with
//! `--hardware`, simulated latency and energy.

use serde::Serialize;

use mpq::QuantPlan;
use mpq::cost::{CostTable, HardwareModel};
use mpq::data;
use mpq::graph::{Hooks, NoHooks};
use mpq::quant::{CalibrationConfig, PlanHooks};

use crate::args::{EvalArgs, GlobalArgs, UsageError};
use crate::output::{self, Bars};

#[derive(Serialize)]
pub(crate) struct EvalJson {
    pub(crate) accuracy: f64,
    pub(crate) loss: f64,
    pub(crate) samples: usize,
    pub(crate) size_bytes: u64,
    pub(crate) avg_w_bits: f64,
    pub(crate) bops: f64,
    /// Simulated latency in ms on `--hardware` (null without it).
    pub(crate) latency_ms: Option<f64>,
    /// Simulated energy in mJ on `--hardware` (null without it, or a table without energies).
    pub(crate) energy_mj: Option<f64>,
    /// The hardware model simulated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hardware: Option<String>,
}

pub(crate) fn run(g: &GlobalArgs, a: &EvalArgs) -> anyhow::Result<()> {
    let hw = a
        .hardware
        .as_deref()
        .map(HardwareModel::from_reference)
        .transpose()?;
    let model = super::open_model(&a.model, g.seed)?;
    let splits = super::load_data(&a.data, g.seed)?;
    check_shape(&model, &splits)?;
    let _bars = Bars::new(g.quiet);
    let norm = model.normalization_or(&splits.normalization);
    let layers = model.graph.layer_infos()?;
    // A packed quantized model carries its plan and activation quantizers; otherwise
    // without a policy every layer is FP32 (an empty plan), priced the same way.
    let (plan, graph, mut hooks): (QuantPlan, _, Box<dyn Hooks>) =
        match (&model.quantized, &a.policy) {
            (Some(_), Some(_)) => {
                return Err(UsageError(
                    "the model is already quantized (a packed file): drop --policy".into(),
                )
                .into());
            }
            (Some(q), None) => (q.plan().clone(), model.graph.clone(), Box::new(q.clone())),
            (None, Some(p)) => {
                let plan = QuantPlan::load(p)?;
                plan.validate(&layers)?;
                let graph = mpq::quant::prepare_graph(&model.graph, &plan)?;
                let cfg = CalibrationConfig {
                    samples: a.calib_samples,
                    ..Default::default()
                };
                let hooks = PlanHooks::calibrate(&graph, &plan, &splits.train, &norm, &cfg)?;
                (plan, graph, Box::new(hooks))
            }
            (None, None) => (
                QuantPlan::uniform(&[], 32, 32),
                model.graph.clone(),
                Box::new(NoHooks),
            ),
        };
    let cost = CostTable::new(&layers, &plan)?;
    // Before the evaluation, so a lookup table missing an entry fails fast.
    let hw_table = hw.as_ref().map(|h| h.table(&layers, &plan)).transpose()?;
    let stats = mpq::train::evaluate(&graph, &splits.test, &norm, a.batch_size, hooks.as_mut())?;
    let result = EvalJson {
        accuracy: stats.accuracy,
        loss: stats.loss,
        samples: stats.samples,
        size_bytes: cost.size_bytes,
        avg_w_bits: cost.avg_w_bits,
        bops: cost.bops,
        latency_ms: hw_table.as_ref().map(|t| t.latency_ms),
        energy_mj: hw_table.as_ref().and_then(|t| t.energy_mj),
        hardware: hw_table.as_ref().map(|t| t.hardware.clone()),
    };
    if g.json {
        return output::json(&result);
    }
    let mut line = format!(
        "accuracy {:.2}%  loss {:.4}  samples {}  ({} weight bytes, {:.2} avg weight bits, {:.3e} BOPs",
        100.0 * result.accuracy,
        result.loss,
        result.samples,
        result.size_bytes,
        result.avg_w_bits,
        result.bops
    );
    if let Some(t) = &hw_table {
        line.push_str(&format!(", {} ms", super::search::num(t.latency_ms)));
        if let Some(e) = t.energy_mj {
            line.push_str(&format!(", {} mJ", super::search::num(e)));
        }
        line.push_str(&format!(" on {} at batch {}", t.hardware, t.batch));
    }
    line.push(')');
    output::line(&line)
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
