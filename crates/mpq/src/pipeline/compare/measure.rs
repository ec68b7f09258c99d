//! Measuring one plan for `mpq compare`: its costs, its Ω on the trace scale, its
//! post-training accuracy sample by sample, and a fine-tuning with one seed. The same steps
//! as `mpq quantize` (calibration, the default learning-rate rule, every layer fine-tuned at
//! once), without the export: a comparison measures many plans and keeps none of them.

use std::time::Instant;

use super::super::{DefaultLr, FinetuneOptions};
use crate::compare::{Costs, FinetuneCell, Scores};
use crate::cost::{CostTable, HardwareModel};
use crate::data::{DataSplits, Normalization};
use crate::graph::LayerInfo;
use crate::model::Model;
use crate::plan::{BitWidth, LayerPrecision, QuantPlan, WeightRange};
use crate::progress::Progress;
use crate::quant::{CalibrationConfig, PlanHooks, prepare_graph, weight_errors};
use crate::search::{OmegaConfig, OmegaMetric, OmegaTable};
use crate::sensitivity::SensitivityTable;
use crate::train::{self, SampleResults, Schedule, TrainConfig};
use crate::{QuantPlan as Plan, Result};

/// The model, data and settings every plan of a comparison is measured with.
pub(super) struct Bench<'a> {
    pub(super) model: &'a Model,
    pub(super) layers: Vec<LayerInfo>,
    pub(super) splits: &'a DataSplits,
    pub(super) norm: Normalization,
    pub(super) calibration: CalibrationConfig,
    pub(super) finetune: FinetuneOptions,
    pub(super) hardware: Option<HardwareModel>,
    /// Ω on the trace scale, when the comparison has a Hessian sensitivity file with traces.
    pub(super) omega: Option<OmegaTable>,
}

const EVAL_BATCH: usize = 256;

impl Bench<'_> {
    /// The plan's costs on every axis it has.
    pub(super) fn costs(&self, plan: &QuantPlan) -> Result<Costs> {
        let t = CostTable::new(&self.layers, plan)?;
        let hw = (self.hardware.as_ref())
            .map(|h| h.table(&self.layers, plan))
            .transpose()?;
        Ok(Costs {
            avg_w_bits: t.avg_w_bits,
            size_bytes: t.size_bytes,
            gbops: t.bops / 1e9,
            latency_ms: hw.as_ref().map(|h| h.latency_ms),
            energy_mj: hw.as_ref().and_then(|h| h.energy_mj),
        })
    }

    /// Ω of the plan on the trace scale: per layer from the sensitivity file, or the plan's
    /// own for channel-wise plans (their Ω sums channels).
    pub(super) fn omega(&self, plan: &QuantPlan) -> Option<f64> {
        if plan.layers.iter().any(|l| l.channel_w_bits.is_some()) {
            return plan.omega;
        }
        self.omega.as_ref()?.plan_omega(&self.layers, plan).ok()
    }

    /// Post-training quantization: calibrate, evaluate every test sample.
    pub(super) fn ptq(&self, plan: &QuantPlan) -> Result<SampleResults> {
        let graph = prepare_graph(&self.model.graph, plan)?;
        let s = self.splits;
        let mut hooks =
            PlanHooks::calibrate(&graph, plan, &s.train, &self.norm, &self.calibration)?;
        train::evaluate_samples(&graph, &s.test, &self.norm, EVAL_BATCH, &mut hooks)
    }

    /// Fine-tunes the plan with `seed` (every layer at once) and evaluates every test sample.
    pub(super) fn finetune(
        &self,
        plan: &QuantPlan,
        seed: u64,
        cell: (&str, &str, &str),
        progress: &mut dyn Progress,
    ) -> Result<FinetuneCell> {
        let t0 = Instant::now();
        let f = &self.finetune;
        let graph = prepare_graph(&self.model.graph, plan)?;
        let s = self.splits;
        let mut hooks =
            PlanHooks::calibrate(&graph, plan, &s.train, &self.norm, &self.calibration)?;
        let mut tc = TrainConfig {
            epochs: f.epochs,
            batch_size: f.batch_size,
            lr: f.lr.unwrap_or(0.0),
            weight_decay: f.weight_decay,
            schedule: Schedule::Cosine,
            seed,
            ..TrainConfig::default()
        };
        if f.lr.is_none() {
            let rule = DefaultLr::for_model(self.model);
            tc.lr = rule.pick(&graph, &s.train, &self.norm, &tc, &mut hooks)?.0;
        }
        tc.validate()?;
        train::train_with(
            &graph, &s.train, None, &self.norm, &tc, &mut hooks, progress,
        )?;
        let r = train::evaluate_samples(&graph, &s.test, &self.norm, EVAL_BATCH, &mut hooks)?;
        Ok(FinetuneCell {
            key: cell.2.to_string(),
            budget: cell.0.to_string(),
            name: cell.1.to_string(),
            seed,
            lr: tc.lr,
            seconds: t0.elapsed().as_secs_f64(),
            scores: Scores::new(&r),
        })
    }
}

/// Ω per layer on the trace scale from `sens`, with the weight errors of every width 2..8
/// computed from the model (symmetric quantizer, `range`), whatever the file holds.
pub(super) fn trace_omega(
    model: &Model,
    layers: &[LayerInfo],
    sens: &SensitivityTable,
    range: WeightRange,
    act_weight: f64,
) -> Result<OmegaTable> {
    let bits: Vec<BitWidth> = (2..=8).collect();
    let template = Plan {
        layers: (sens.layers.iter())
            .filter(|r| layers.iter().any(|l| l.name == r.name))
            .map(|r| LayerPrecision {
                weight_range: range,
                ..LayerPrecision::new(&r.name, 8, 8)
            })
            .collect(),
        ..Plan::uniform(&[], 32, 32)
    };
    // Always from the model: the file's errors may come from another range rule.
    let errors = weight_errors(&model.graph, &template, &bits)?;
    let mut table = sens.clone();
    for (name, row) in errors {
        for (b, e) in row {
            table.set_weight_error(&name, b, e);
        }
    }
    OmegaTable::new(
        layers,
        &table,
        OmegaConfig {
            metric: OmegaMetric::Trace,
            act_weight,
        },
    )
}
