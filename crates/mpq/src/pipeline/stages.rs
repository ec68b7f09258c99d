//! HAWQ's deterministic block-wise fine-tuning (Dong et al., ICCV 2019; docs/algorithms.md
//! §1.5): with the plan's `finetune_order` π (blocks in descending Ω), stage `t` quantizes
//! block π(t) — the blocks of earlier stages stay quantized, later ones stay in full
//! precision — recalibrates the activation ranges and fine-tunes the network. Earlier blocks
//! keep training through the straight-through estimator, or stay frozen.

use crate::Result;
use crate::data::{DataSplits, Normalization};
use crate::graph::Graph;
use crate::named::Named;
use crate::plan::{FULL_PRECISION, QuantPlan};
use crate::progress::Progress;
use crate::quant::{CalibrationConfig, PlanHooks};
use crate::run::StageRecord;
use crate::train::{self, EvalStats, TrainConfig};

/// What the blocks of earlier stages do while a later stage fine-tunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlierBlocks {
    /// Keep training (quantized, through the straight-through estimator).
    #[default]
    Ste,
    /// Stay fixed.
    Frozen,
}

/// Whether layer `name` belongs to `block` (the layer itself, or a name prefix such as
/// `layer1.0`).
fn in_block(name: &str, block: &str) -> bool {
    name == block
        || name
            .strip_prefix(block)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The stages of `plan`: per block of its order, the plan's layers it quantizes first (layers
/// no block names join the last stage). Empty without an order.
pub fn stages(plan: &QuantPlan) -> Vec<(String, Vec<String>)> {
    let Some(order) = &plan.finetune_order else {
        return Vec::new();
    };
    let mut taken = vec![false; plan.layers.len()];
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for block in order {
        let mut layers = Vec::new();
        for (l, t) in plan.layers.iter().zip(taken.iter_mut()) {
            if !*t && in_block(&l.name, block) {
                *t = true;
                layers.push(l.name.clone());
            }
        }
        if !layers.is_empty() {
            out.push((block.clone(), layers));
        }
    }
    let rest: Vec<String> = (plan.layers.iter().zip(&taken))
        .filter(|(_, t)| !**t)
        .map(|(l, _)| l.name.clone())
        .collect();
    match out.last_mut() {
        Some(last) => last.1.extend(rest),
        None if !rest.is_empty() => out.push(("rest".into(), rest)),
        None => {}
    }
    out
}

/// Settings of [`run`].
pub struct StageConfig<'a> {
    /// Activation calibration at every stage.
    pub calibration: &'a CalibrationConfig,
    /// Fine-tuning of every stage.
    pub train: &'a TrainConfig,
    /// Earlier blocks: training or frozen.
    pub earlier: EarlierBlocks,
    /// Samples per evaluation batch.
    pub eval_batch_size: usize,
}

/// Runs the stages of `plan` on `graph` (trained in place): the hooks of the last stage (the
/// whole plan) and one record per stage.
pub fn run(
    graph: &Graph,
    plan: &QuantPlan,
    splits: &DataSplits,
    norm: &Normalization,
    cfg: &StageConfig,
    progress: &mut dyn Progress,
) -> Result<(PlanHooks, Vec<StageRecord>)> {
    let stages = stages(plan);
    let mut done: Vec<String> = Vec::new();
    let mut records = Vec::with_capacity(stages.len());
    let mut hooks = None;
    let eval = |hooks: &mut PlanHooks| -> Result<EvalStats> {
        train::evaluate(graph, &splits.test, norm, cfg.eval_batch_size, hooks)
    };
    for (t, (block, layers)) in stages.iter().enumerate() {
        progress.note(&format!(
            "stage {}/{}: quantizing {block} ({})",
            t + 1,
            stages.len(),
            layers.join(", ")
        ));
        let earlier = done.clone();
        done.extend(layers.iter().cloned());
        let mut partial = plan.clone();
        for l in &mut partial.layers {
            if !done.contains(&l.name) {
                (l.w_bits, l.a_bits) = (FULL_PRECISION, FULL_PRECISION);
                l.channel_w_bits = None;
            }
        }
        let mut h = PlanHooks::calibrate(graph, &partial, &splits.train, norm, cfg.calibration)?;
        let before = eval(&mut h)?;
        let mut tc = cfg.train.clone();
        tc.seed = cfg.train.seed.wrapping_add(t as u64);
        if cfg.earlier == EarlierBlocks::Frozen {
            tc.frozen = earlier;
        }
        train::train_with(graph, &splits.train, None, norm, &tc, &mut h, progress)?;
        let after = eval(&mut h)?;
        records.push(StageRecord {
            stage: t + 1,
            block: block.clone(),
            layers: layers.clone(),
            earlier_blocks: cfg.earlier.name().to_string(),
            before,
            after,
        });
        hooks = Some(h);
    }
    match hooks {
        Some(h) => Ok((h, records)),
        None => Ok((
            PlanHooks::calibrate(graph, plan, &splits.train, norm, cfg.calibration)?,
            records,
        )),
    }
}
