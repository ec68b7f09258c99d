//! `mpq search --method haq`: HAQ (Wang et al., CVPR 2019) over the shared search space. The
//! data's training split is divided into a held-out scoring split and a calibration /
//! fine-tuning part; the search state is saved after every episode to OUT.haq-state.json so
//! `--resume` continues an interrupted run with the result an uninterrupted one gives.

use mpq::model::Model;
use mpq::pipeline::{RewardConfig, RewardEvaluator};
use mpq::plan::QuantizerKind;
use mpq::progress::Progress;
use mpq::quant::CalibrationConfig;
use mpq::search::SearchSpace;
use mpq::search::haq::{self, FlagStyle, HaqConfig, HaqHistory, HaqResult};
use mpq::search::rl::DdpgConfig;

use crate::args::{GlobalArgs, SearchArgs, StateFlagsArg, UsageError, WeightQuantizerArg};
use crate::output::{self, Bars};

/// The weight quantizer `--weight-quantizer` asks for.
pub(crate) fn quantizer(a: &SearchArgs) -> QuantizerKind {
    match a.haq.weight_quantizer {
        WeightQuantizerArg::Linear => QuantizerKind::Symmetric,
        WeightQuantizerArg::Kmeans => QuantizerKind::KMeans,
    }
}

/// The reward evaluator of `--method haq` and `cw-hawq`: `--data`'s training split, divided
/// into a held-out scoring split and a calibration / fine-tuning part.
pub(crate) fn evaluator<'m>(
    g: &GlobalArgs,
    a: &SearchArgs,
    model: &'m Model,
) -> anyhow::Result<RewardEvaluator<'m>> {
    let h = &a.haq;
    let data = h.data.as_deref().ok_or_else(|| {
        UsageError(format!(
            "--method {} needs --data (plans are scored on its training data)",
            a.method.name()
        ))
    })?;
    let splits = super::load_data(data, g.seed)?;
    super::eval::check_shape(model, &splits)?;
    let norm = model.normalization_or(&splits.normalization);
    let rcfg = RewardConfig {
        val_samples: h.val_samples,
        seed: g.seed,
        calibration: CalibrationConfig {
            samples: h.calib_samples,
            ..CalibrationConfig::default()
        },
        finetune_steps: h.finetune_steps,
        finetune_batch_size: h.finetune_batch_size,
        finetune_lr: h.finetune_lr,
        ..RewardConfig::default()
    };
    Ok(RewardEvaluator::new(model, &splits.train, &norm, rcfg)?)
}

/// The DDPG agent's settings from the flags; the replay memory defaults to 128 transitions
/// per searched layer.
pub(crate) fn ddpg_config(g: &GlobalArgs, a: &SearchArgs, searched: usize) -> DdpgConfig {
    let h = &a.haq;
    DdpgConfig {
        hidden1: h.hidden1,
        hidden2: h.hidden2,
        actor_lr: h.actor_lr,
        critic_lr: h.critic_lr,
        tau: h.tau,
        gamma: h.discount,
        batch_size: h.rl_batch_size,
        replay_capacity: h.replay_size.unwrap_or(128 * searched.max(1)),
        warmup_episodes: h.warmup,
        sigma0: h.sigma,
        sigma_decay: h.sigma_decay,
        baseline_rate: h.baseline_rate,
        updates_per_step: h.updates_per_step,
        seed: g.seed,
        ..DdpgConfig::default()
    }
}

/// Runs the search; the caller writes the policy and the curve.
pub(crate) fn search(
    g: &GlobalArgs,
    a: &SearchArgs,
    model: &Model,
    space: &SearchSpace<'_>,
) -> anyhow::Result<HaqResult> {
    let h = &a.haq;
    let mut evaluator = evaluator(g, a, model)?;
    let searched = space
        .groups()
        .iter()
        .filter(|gr| gr.choices.len() > 1)
        .count()
        .max(1);
    let cands = space.candidates();
    let decisions =
        searched * (usize::from(cands.w_bits.len() > 1) + usize::from(cands.a_bits.len() > 1));
    let cfg = HaqConfig {
        ddpg: ddpg_config(g, a, searched),
        episodes: h.episodes,
        flags: match h.state_flags {
            StateFlagsArg::Clean => FlagStyle::Clean,
            StateFlagsArg::Reference => FlagStyle::Reference,
        },
        weight_range: a.weight_range.range(),
        reward_scale: h.reward_scale,
        evaluator: evaluator.settings(),
    };
    cfg.ddpg.validate()?;
    let state_path = super::side_path(&a.out, "haq-state.json");
    let resume = if h.resume {
        if state_path.exists() {
            let saved = HaqHistory::load(&state_path)?;
            output::status(
                g.quiet,
                &format!(
                    "resuming from {} ({} episodes saved)",
                    state_path.display(),
                    saved.episodes.len()
                ),
            );
            Some(saved)
        } else {
            output::status(
                g.quiet,
                &format!(
                    "no saved search at {}: starting afresh",
                    state_path.display()
                ),
            );
            None
        }
    } else {
        None
    };
    output::status(
        g.quiet,
        &format!(
            "HAQ: {} episodes, {} decisions each, scoring on {} held-out training samples{}",
            h.episodes,
            decisions,
            h.val_samples,
            if h.finetune_steps > 0 {
                format!(" after {} fine-tuning steps", h.finetune_steps)
            } else {
                String::new()
            }
        ),
    );
    let mut bars = Bars::new(g.quiet);
    bars.start("haq episodes", h.episodes as u64);
    let result = haq::haq(space, &mut evaluator, &cfg, resume.as_ref(), |e, hist| {
        bars.inc(1);
        let best = hist
            .best_episode
            .and_then(|b| hist.episodes.get(b))
            .map_or(f64::NAN, |b| b.accuracy);
        bars.message(&format!(
            "best {best:.2}% (FP {:.2}%), reward {:.3}",
            hist.fp_accuracy, e.best_reward
        ));
        hist.save(&state_path)
    });
    bars.finish();
    Ok(result?)
}
