//! HAQ: Hardware-Aware Automated Quantization with Mixed Precision (Wang, Liu, Lin, Lin,
//! Han, CVPR 2019), docs/algorithms.md §4. A DDPG agent ([`crate::search::rl`]) walks the layers, proposes
//! weight and activation bits, the proposal is repaired into the budget of the hardware
//! simulator (latency, energy) or of the model size, and the agent is rewarded by the
//! accuracy of the quantized model.
//!
//! - [`state`]: the observation (§4.3);
//! - [`env`](mod@env): the environment (§4.4–§4.6);
//! - the SVG learning curve is drawn from the policy's `haq` section by [`crate::report::agent_curve`];
//! - this file: [`PlanEvaluator`] (the only door to the model), [`haq`] (the search loop of
//!   §4.2 with the history and resume) and the code-versus-paper decisions of §4.13:
//!
//! 1. Reward accuracy: measured on a held-out split of the training data after calibration
//!    and an optional short fine-tune (the paper), not the reference code's running training
//!    accuracy of the fine-tuning epoch.
//! 2. No first/last-layer rule unless asked (`--pin-first-last`): the reference's linear
//!    environment forces 8-bit first/last layers inside its repair, its k-means one does not;
//!    here it is one explicit option for both.
//! 3. Replay memory: `128 × searched layers` transitions by default, as the reference code
//!    (not the paper's fixed 2000); `--replay-size` overrides.
//! 4. State flag: 1 on weight steps and 0 on activation steps ([`FlagStyle::Clean`], the
//!    paper's and the code comment's intent); [`FlagStyle::Reference`] replays the code's
//!    inverted in-place writes.
//! 5. Warm-up: exactly `warmup_episodes` random episodes (the code's `<=` gives 21 for 20;
//!    pass 21 to replicate).
//! 6. Every transition of an episode carries the final reward, γ = 1, moving-average
//!    baseline: as the code.
//! 7. Calibration: the project's activation calibration (min-max by default; `--calibration
//!    mse|percentile` give clipped ranges) instead of the code's CDF-based KL threshold.
//! 8. Hardware: the BitFusion and BISMO simulators of [`crate::cost`] or any per-layer CSV
//!    table, since the reference ships one latency table and no energy model.

pub mod env;
pub mod state;

pub use env::{HaqEnv, HaqEpisode};
pub use state::{FlagStyle, STATE_DIM};

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::SearchSpace;
use super::rl::{DdpgAgent, DdpgConfig, train_agent};
use crate::io::Versioned;

use crate::plan::{QuantPlan, WeightRange};
use crate::{Error, Result};

/// The search's only access to the model: accuracies (%) on the reward split.
pub trait PlanEvaluator {
    /// Accuracy (%) of the full-precision model.
    fn fp_accuracy(&mut self) -> Result<f64>;
    /// Accuracy (%) of the model quantized with `plan` (after calibration and the
    /// evaluator's optional short fine-tune). Must be deterministic: the search caches it
    /// per plan and a resumed search reuses saved values.
    fn accuracy(&mut self, plan: &QuantPlan) -> Result<f64>;
}

/// Settings of a HAQ search. The weight quantizer (symmetric linear for latency and energy,
/// k-means for the model-size experiment) is the search space's
/// ([`crate::search::SearchOptions::quantizer`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaqConfig {
    /// The agent and its training loop (docs/algorithms.md §4.7).
    pub ddpg: DdpgConfig,
    /// Episodes to run (the reference: 600).
    pub episodes: usize,
    /// Which values the weight/activation flag of the state takes.
    pub flags: FlagStyle,
    /// The range rule of the symmetric weight quantizer of every plan.
    #[serde(default)]
    pub weight_range: WeightRange,
    /// `λ` of the reward `λ·(acc − acc_FP)` (accuracies in %).
    pub reward_scale: f64,
    /// The evaluator's settings (reward split, fine-tune steps, …), recorded so that
    /// `--resume` refuses a state saved under different ones.
    pub evaluator: EvaluatorSettings,
}

/// How plans are scored (the reward evaluator's settings; fields in alphabetical order, as
/// earlier versions wrote them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluatorSettings {
    /// How activation ranges are calibrated (`MinMax`, `Percentile(99.99)`, `Mse`).
    pub calibration_method: String,
    /// Training samples that calibrate activation ranges.
    pub calibration_samples: usize,
    /// Samples per evaluation batch.
    pub eval_batch_size: usize,
    /// Samples per fine-tuning step.
    pub finetune_batch_size: usize,
    /// Fine-tuning learning rate.
    pub finetune_lr: f64,
    /// SGD steps of fine-tuning before scoring (0: post-training only).
    pub finetune_steps: usize,
    /// Seed of the hold-out split and the fine-tuning subset.
    pub seed: u64,
    /// Training samples held out to score plans.
    pub val_samples: usize,
}

impl Default for HaqConfig {
    fn default() -> Self {
        HaqConfig {
            ddpg: DdpgConfig::default(),
            episodes: 600,
            flags: FlagStyle::Clean,
            weight_range: WeightRange::MaxAbs,
            reward_scale: 0.1,
            evaluator: EvaluatorSettings::default(),
        }
    }
}

/// Everything that must match for a saved search to be resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaqSettings {
    /// The configuration, with `episodes` zeroed (a resumed search may run longer).
    pub config: HaqConfig,
    /// Layer names of the model.
    pub layers: Vec<String>,
    /// The constraints and candidates of the search space.
    pub constraints: crate::plan::Constraints,
}

/// The full record of a search: what `--resume` reads and the output JSON carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaqHistory {
    /// The settings it ran under.
    pub settings: HaqSettings,
    /// Accuracy (%) of the full-precision model on the reward split.
    pub fp_accuracy: f64,
    /// Agent decisions per episode.
    pub steps_per_episode: usize,
    /// The best episode.
    pub best_episode: Option<usize>,
    /// Every episode, in order.
    pub episodes: Vec<HaqEpisode>,
}

impl Versioned for HaqHistory {
    const FORMAT: &'static str = "mpq.haq-state";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a HAQ search state";
}

/// The result of [`haq`].
#[derive(Debug, Clone)]
pub struct HaqResult {
    /// The best episode's plan (method `haq`).
    pub plan: QuantPlan,
    /// The search history.
    pub history: HaqHistory,
    /// Seconds spent evaluating plans (calibration, fine-tune, evaluation).
    pub eval_seconds: f64,
    /// Episodes replayed from a saved state rather than evaluated.
    pub resumed_episodes: usize,
}

fn settings(space: &SearchSpace<'_>, cfg: &HaqConfig) -> HaqSettings {
    HaqSettings {
        config: HaqConfig {
            episodes: 0,
            ..cfg.clone()
        },
        layers: space.layers().iter().map(|l| l.name.clone()).collect(),
        constraints: space.plan_constraints(),
    }
}

/// Runs HAQ on `space`. With `resume`, the saved episodes are replayed first: the agent is
/// rebuilt from the seed and walks the same episodes, taking the saved accuracies instead of
/// evaluating (so the result is the one an uninterrupted run gives); a saved state that does
/// not replay exactly is an error. `on_episode` sees every episode (replayed ones included)
/// with the history so far, e.g. to save it.
pub fn haq<E: PlanEvaluator>(
    space: &SearchSpace<'_>,
    evaluator: &mut E,
    cfg: &HaqConfig,
    resume: Option<&HaqHistory>,
    mut on_episode: impl FnMut(&HaqEpisode, &HaqHistory) -> Result<()>,
) -> Result<HaqResult> {
    let start = Instant::now();
    super::rl::check_run(cfg.episodes, cfg.reward_scale)?;
    space.feasibility().check()?;
    let fp_accuracy = match resume {
        Some(h) => h.fp_accuracy,
        None => evaluator.fp_accuracy()?,
    };
    if !fp_accuracy.is_finite() {
        return Err(Error::NonFinite(format!("FP accuracy {fp_accuracy}")));
    }
    let mut env = HaqEnv::new(space, evaluator, cfg, fp_accuracy)?;
    let settings = settings(space, cfg);
    let saved: &[HaqEpisode] = match resume {
        Some(h) => {
            if h.settings != settings {
                return Err(Error::config(
                    "resume",
                    "the saved search ran with other settings (model layers, budget, \
                     candidates, agent or evaluator options); rerun it with those or start \
                     afresh",
                ));
            }
            for e in &h.episodes {
                let choice = env.choice_of_bits(&e.bits)?;
                env.remember(choice, e.accuracy);
            }
            &h.episodes
        }
        None => &[],
    };
    let resumed = saved.len().min(cfg.episodes);
    let mut agent = DdpgAgent::new(STATE_DIM, cfg.ddpg.clone())?;
    let mut history = HaqHistory {
        settings,
        fp_accuracy,
        steps_per_episode: env.steps_per_episode(),
        best_episode: None,
        episodes: Vec::new(),
    };
    train_agent(&mut agent, &mut env, cfg.episodes, |env, rec| {
        let Some(mut ep) = env.episodes().last().cloned() else {
            return Err(Error::config("haq", "an episode ended without a record"));
        };
        ep.sigma = rec.sigma;
        if let Some(old) = saved.get(ep.episode)
            && (old.bits != ep.bits || old.reward.to_bits() != ep.reward.to_bits())
        {
            return Err(Error::config(
                "resume",
                format!(
                    "episode {} does not replay as saved (the state file was edited, or \
                     written by another version or on another machine); the file is kept",
                    ep.episode
                ),
            ));
        }
        history.best_episode = env.best().map(|b| b.0);
        history.episodes.push(ep);
        let last = history.episodes.last().expect("just pushed");
        on_episode(last, &history)
    })?;
    let Some((_, choice)) = env.best().cloned() else {
        return Err(Error::config("haq", "no episode finished"));
    };
    let eval_seconds = env.eval_seconds();
    let mut plan = env.plan(&choice, start)?;
    for l in &mut plan.layers {
        l.kmeans_iters = None;
    }
    plan.seconds = start.elapsed().as_secs_f64();
    Ok(HaqResult {
        plan,
        history,
        eval_seconds,
        resumed_episodes: resumed,
    })
}

#[cfg(test)]
mod tests;
