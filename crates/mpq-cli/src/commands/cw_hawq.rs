//! `mpq search --method cw-hawq | cw-ilp`: CW-HAWQ (Qian, Li, Crews, arXiv 2008.08284, 2020;
//! spec §3, reconstructed). The channel table joins the sensitivity JSON's `channel_traces`
//! (`mpq analyze --metric channel-trace`) with per-channel weight errors computed here from
//! the model; `cw-ilp` solves a grid of channel ratios exactly, `cw-hawq` runs the DDPG ratio
//! agent with HAQ's reward evaluator.

use std::collections::BTreeMap;
use std::path::Path;

use mpq::graph::LayerInfo;
use mpq::model::Model;
use mpq::plan::{FULL_PRECISION, LayerPrecision, WeightRange};
use mpq::progress::Progress;
use mpq::quant::channel_weight_errors;
use mpq::search::cw_hawq::{self, ChannelTable, CwConfig, CwResult};
use mpq::search::{Candidates, SearchSpace, Sensitivities};

use crate::args::{GlobalArgs, SearchArgs, UsageError};
use crate::output::{self, Bars};

/// The channel table of the searched layers: traces from the sensitivity JSON at `path`,
/// `‖Q_b(W_c) − W_c‖²` per channel and candidate width from the model's unfolded weights,
/// with the plan's symmetric per-channel quantizer and `range`.
pub(crate) fn channel_table(
    model: &Model,
    layers: &[LayerInfo],
    path: &Path,
    cands: &Candidates,
    range: WeightRange,
) -> anyhow::Result<ChannelTable> {
    let sens = Sensitivities::load(path)?;
    if let Some(row) = sens
        .layers
        .iter()
        .find(|r| !layers.iter().any(|l| l.name == r.name))
    {
        return Err(mpq::Error::UnknownLayer {
            name: row.name.clone(),
        }
        .into());
    }
    if !sens.layers.iter().any(|r| r.channel_traces.is_some()) {
        return Err(UsageError(format!(
            "{} has no channel_traces: write them with `mpq analyze --metric channel-trace`",
            path.display()
        ))
        .into());
    }
    if model.quantized.is_some() {
        return Err(UsageError(
            "cw-hawq needs the float model's weights for its channel errors, not a packed file"
                .into(),
        )
        .into());
    }
    let bits: Vec<u32> = cands
        .w_bits
        .iter()
        .copied()
        .filter(|&b| b != FULL_PRECISION)
        .collect();
    let mut errors = BTreeMap::new();
    for row in sens.layers.iter().filter(|r| r.channel_traces.is_some()) {
        let w = model
            .graph
            .params()
            .var(&format!("{}.weight", row.name))?
            .as_tensor()
            .clone();
        let mut per_bit = BTreeMap::new();
        for &b in &bits {
            let p = LayerPrecision {
                weight_range: range,
                ..LayerPrecision::new(&row.name, b, 8)
            };
            per_bit.insert(b, channel_weight_errors(&w, &p)?);
        }
        errors.insert(row.name.clone(), per_bit);
    }
    Ok(ChannelTable::new(layers, &sens, &errors)?)
}

/// Runs the DDPG ratio search with a progress bar.
pub(crate) fn search(
    g: &GlobalArgs,
    a: &SearchArgs,
    model: &Model,
    space: &SearchSpace<'_>,
    table: &ChannelTable,
) -> anyhow::Result<CwResult> {
    let h = &a.haq;
    cw_hawq::validate(space, table)?;
    let mut evaluator = super::haq::evaluator(g, a, model)?;
    let searched = space
        .groups()
        .iter()
        .filter(|gr| gr.choices.len() > 1)
        .count();
    let steps = searched * space.candidates().w_bits.len().saturating_sub(1);
    let cfg = CwConfig {
        ddpg: super::haq::ddpg_config(g, a, searched),
        episodes: h.episodes,
        reward_scale: h.reward_scale,
    };
    cfg.ddpg.validate()?;
    output::status(
        g.quiet,
        &format!(
            "CW-HAWQ: {} episodes, {steps} ratio decisions each, scoring on {} held-out \
             training samples{}",
            h.episodes,
            h.val_samples,
            if h.finetune_steps > 0 {
                format!(" after {} fine-tuning steps", h.finetune_steps)
            } else {
                String::new()
            }
        ),
    );
    let mut bars = Bars::new(g.quiet);
    bars.start("cw-hawq episodes", h.episodes as u64);
    let result = cw_hawq::cw_hawq(space, table, &mut evaluator, &cfg, |e, best| {
        bars.inc(1);
        bars.message(&format!(
            "best {best:.2}%, last {:.2}% at {:.2} avg bits",
            e.accuracy, e.avg_w_bits
        ));
        Ok(())
    });
    bars.finish();
    Ok(result?)
}

/// The `cw_hawq` section of the policy file (`warmup`: the agent's random episodes;
/// `curve`: the learning curve's file name).
pub(crate) fn policy_section(r: &CwResult, warmup: usize, curve: &str) -> serde_json::Value {
    let best = r.episodes.get(r.best_episode);
    serde_json::json!({
        "fp_accuracy": r.fp_accuracy,
        "best_episode": r.best_episode,
        "best_accuracy": best.map(|b| b.accuracy),
        "best_reward": best.map(|b| b.reward),
        "episodes": r.episodes.len(),
        "warmup": warmup,
        "curve": curve,
        "history": r.episodes,
    })
}

/// Channels per width of a per-channel layer, highest first (`8:3 4:10 2:7`).
pub(crate) fn channel_summary(p: &LayerPrecision) -> Option<String> {
    let bits = p.channel_w_bits.as_ref()?;
    let mut n: BTreeMap<u32, usize> = BTreeMap::new();
    for &b in bits {
        *n.entry(b).or_default() += 1;
    }
    Some(
        n.iter()
            .rev()
            .map(|(b, c)| format!("{b}:{c}"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}
