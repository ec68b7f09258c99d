//! Running a search method on a prepared space: the table-driven methods directly, and the
//! agent searches (HAQ, Wang et al. CVPR 2019; CW-HAWQ's ratio agent) with their reward
//! evaluator on a split held out of the training data, progress per episode, and HAQ's
//! search state saved after every episode (`OUT.haq-state.json`, `OUT.cw-state.json`,
//! `--resume`).

use std::path::PathBuf;

use super::inputs::{Sensitivity, Tables};
use super::{AgentOptions, HaqOptions, Method, SearchRequest};
use crate::io::Versioned;
use crate::model::Model;
use crate::pipeline::{RewardConfig, RewardEvaluator, check_shape, load_data, side_path};
use crate::plan::QuantPlan;
use crate::progress::Progress;
use crate::quant::CalibrationConfig;
use crate::search::cw_hawq::{self, CwConfig, CwHistory, CwResult};
use crate::search::haq::{self, HaqConfig, HaqHistory, HaqResult};
use crate::search::rl::DdpgConfig;
use crate::search::{self, FrontierFile, IlpStats, SearchSpace};
use crate::{Error, Result};

/// What a method produced besides the plan.
pub(super) enum Extra {
    None,
    Pareto(Box<FrontierFile>),
    Solver(IlpStats),
    Limpq(IlpStats),
    Haq(Box<HaqResult>),
    Cw(Box<CwResult>),
}

/// A method's plan and its record.
pub(super) struct Found {
    pub(super) plan: QuantPlan,
    pub(super) extra: Extra,
}

/// Runs the request's method on `space`.
pub(super) fn run_method(
    req: &SearchRequest,
    model: &Model,
    space: &SearchSpace<'_>,
    tables: &Tables,
    sens: &Sensitivity,
    progress: &mut dyn Progress,
) -> Result<Found> {
    let missing = |what: &str| Error::Usage(format!("--method {} needs {what}", req.method.name()));
    let found = |plan, extra| Ok(Found { plan, extra });
    match &req.method {
        Method::Uniform => found(space.uniform()?, Extra::None),
        Method::Random { max_tries } => found(space.random(req.seed, *max_tries)?, Extra::None),
        Method::HawqV1 => {
            let o = tables
                .omega
                .as_ref()
                .ok_or_else(|| missing("--sensitivity"))?;
            found(search::hawq_v1(space, o)?, Extra::None)
        }
        Method::Pareto => {
            let r = search::pareto(space)?;
            let policy = req.out.as_ref().map(|p| p.display().to_string());
            let file = r.to_file(space, &req.model.reference, &policy.unwrap_or_default());
            found(r.plan, Extra::Pareto(Box::new(file)))
        }
        Method::Ilp => {
            let (plan, stats) = search::ilp(space)?;
            found(plan, Extra::Solver(stats))
        }
        Method::Limpq { .. } => {
            sens.indicators().ok_or_else(|| missing("--sensitivity"))?;
            let (plan, stats) = search::limpq::limpq(space)?;
            found(plan, Extra::Limpq(stats))
        }
        Method::CwIlp { ratio_grid } => {
            let t = tables
                .channels
                .as_ref()
                .ok_or_else(|| missing("--sensitivity"))?;
            found(search::cw_ilp(space, t, *ratio_grid)?, Extra::None)
        }
        Method::Haq(h) => {
            let r = run_haq(req, h, model, space, progress)?;
            found(r.plan.clone(), Extra::Haq(Box::new(r)))
        }
        Method::CwHawq(a) => {
            let t = tables
                .channels
                .as_ref()
                .ok_or_else(|| missing("--sensitivity"))?;
            cw_hawq::validate(space, t)?;
            let r = run_cw_hawq(req, a, model, space, t, progress)?;
            found(r.plan.clone(), Extra::Cw(Box::new(r)))
        }
    }
}

fn finetune_note(a: &AgentOptions) -> String {
    if a.finetune_steps > 0 {
        format!(" after {} fine-tuning steps", a.finetune_steps)
    } else {
        String::new()
    }
}

/// Groups with a choice to make.
fn searched_layers(space: &SearchSpace<'_>) -> usize {
    let groups = space.groups().iter();
    groups.filter(|g| g.choices.len() > 1).count()
}

/// The reward evaluator: the agent's data set's training split, divided into a held-out
/// scoring split and a calibration / fine-tuning part.
fn evaluator<'m>(
    req: &SearchRequest,
    a: &AgentOptions,
    model: &'m Model,
) -> Result<RewardEvaluator<'m>> {
    let splits = load_data(&a.data, req.seed)?;
    check_shape(model, &splits)?;
    let norm = model.normalization_or(&splits.normalization);
    // A model trained with `--holdout` on this data: the reward split is drawn from those
    // held-out samples (the same permutation), never from images the model was trained on.
    let seed = match model.training_holdout(&splits.name) {
        Some((n, _)) if a.val_samples > n => {
            return Err(Error::config(
                "val-samples",
                format!(
                    "{} exceeds the {n} samples the model was trained without (--holdout {n}); \
                     the rest are training images",
                    a.val_samples
                ),
            ));
        }
        Some((_, seed)) => seed,
        None => req.seed,
    };
    let cfg = RewardConfig {
        val_samples: a.val_samples,
        seed,
        calibration: CalibrationConfig {
            samples: a.calib_samples,
            ..CalibrationConfig::default()
        },
        finetune_steps: a.finetune_steps,
        finetune_batch_size: a.finetune_batch_size,
        finetune_lr: a.finetune_lr,
        ..RewardConfig::default()
    };
    RewardEvaluator::new(model, &splits.train, &norm, cfg)
}

/// The DDPG agent's settings; the replay memory defaults to 128 transitions per searched
/// layer.
fn ddpg_config(seed: u64, a: &AgentOptions, searched: usize) -> DdpgConfig {
    DdpgConfig {
        hidden1: a.hidden1,
        hidden2: a.hidden2,
        actor_lr: a.actor_lr,
        critic_lr: a.critic_lr,
        tau: a.tau,
        gamma: a.discount,
        batch_size: a.rl_batch_size,
        replay_capacity: a.replay_size.unwrap_or(128 * searched.max(1)),
        warmup_episodes: a.warmup,
        sigma0: a.sigma,
        sigma_decay: a.sigma_decay,
        baseline_rate: a.baseline_rate,
        updates_per_step: a.updates_per_step,
        seed,
        ..DdpgConfig::default()
    }
}

/// The agent search's resumable state next to the policy (`OUT.haq-state.json`,
/// `OUT.cw-state.json`); `None` for the other methods or without an output.
pub(super) fn state_path(req: &SearchRequest) -> Option<PathBuf> {
    let suffix = match req.method {
        Method::Haq(_) => super::side::HAQ_STATE,
        Method::CwHawq(_) => super::side::CW_STATE,
        _ => return None,
    };
    req.out.as_ref().map(|o| side_path(o, suffix))
}

/// The saved state to resume from, when `--resume` is given and the file exists.
fn saved_state<T: Versioned>(
    state: Option<&PathBuf>,
    resume: bool,
    progress: &mut dyn Progress,
    episodes: impl Fn(&T) -> usize,
) -> Result<Option<T>> {
    match (state, resume) {
        (Some(path), true) if path.exists() => {
            let saved = T::load(path)?;
            progress.note(&format!(
                "resuming from {} ({} episodes saved)",
                path.display(),
                episodes(&saved)
            ));
            Ok(Some(saved))
        }
        (Some(path), true) => {
            progress.note(&format!(
                "no saved search at {}: starting afresh",
                path.display()
            ));
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Saves the state after an episode, unless the episode was replayed from the saved state:
/// a resumed search never rewrites (and so never shortens) the state it replays, and a
/// state that fails to replay stays as it was.
fn save_state<T: Versioned>(
    state: Option<&PathBuf>,
    episodes: usize,
    saved: usize,
    value: &T,
) -> Result<()> {
    match state {
        Some(path) if episodes > saved => value.save(path),
        _ => Ok(()),
    }
}

fn run_cw_hawq(
    req: &SearchRequest,
    a: &AgentOptions,
    model: &Model,
    space: &SearchSpace<'_>,
    table: &cw_hawq::ChannelTable,
    progress: &mut dyn Progress,
) -> Result<CwResult> {
    let mut evaluator = evaluator(req, a, model)?;
    let searched = searched_layers(space);
    let steps = searched * space.candidates().w_bits.len().saturating_sub(1);
    let cfg = CwConfig {
        ddpg: ddpg_config(req.seed, a, searched),
        episodes: a.episodes,
        reward_scale: a.reward_scale,
        evaluator: evaluator.settings(),
    };
    cfg.ddpg.validate()?;
    let state = state_path(req);
    let resume: Option<CwHistory> =
        saved_state(state.as_ref(), req.resume, progress, |h: &CwHistory| {
            h.episodes.len()
        })?;
    let saved = resume.as_ref().map_or(0, |h| h.episodes.len());
    progress.note(&format!(
        "CW-HAWQ: {} episodes, {steps} ratio decisions each, scoring on {} held-out \
         training samples{}",
        a.episodes,
        a.val_samples,
        finetune_note(a)
    ));
    progress.start("cw-hawq episodes", a.episodes as u64);
    let r = cw_hawq::cw_hawq(
        space,
        table,
        &mut evaluator,
        &cfg,
        resume.as_ref(),
        |e, h| {
            progress.inc(1);
            let best = h
                .best_episode
                .and_then(|b| h.episodes.get(b))
                .map_or(f64::NAN, |b| b.accuracy);
            progress.message(&format!(
                "best {best:.2}%, last {:.2}% at {:.2} avg bits",
                e.accuracy, e.avg_w_bits
            ));
            save_state(state.as_ref(), h.episodes.len(), saved, h)
        },
    );
    progress.finish();
    r
}

fn run_haq(
    req: &SearchRequest,
    h: &HaqOptions,
    model: &Model,
    space: &SearchSpace<'_>,
    progress: &mut dyn Progress,
) -> Result<HaqResult> {
    let a = &h.agent;
    let mut evaluator = evaluator(req, a, model)?;
    let searched = searched_layers(space).max(1);
    let cands = space.candidates();
    let decisions =
        searched * (usize::from(cands.w_bits.len() > 1) + usize::from(cands.a_bits.len() > 1));
    let cfg = HaqConfig {
        ddpg: ddpg_config(req.seed, a, searched),
        episodes: a.episodes,
        flags: h.state_flags,
        weight_range: req.weight_range,
        reward_scale: a.reward_scale,
        evaluator: evaluator.settings(),
    };
    cfg.ddpg.validate()?;
    let state = state_path(req);
    let resume: Option<HaqHistory> =
        saved_state(state.as_ref(), req.resume, progress, |h: &HaqHistory| {
            h.episodes.len()
        })?;
    let saved = resume.as_ref().map_or(0, |h| h.episodes.len());
    progress.note(&format!(
        "HAQ: {} episodes, {decisions} decisions each, scoring on {} held-out training \
         samples{}",
        a.episodes,
        a.val_samples,
        finetune_note(a)
    ));
    progress.start("haq episodes", a.episodes as u64);
    let result = haq::haq(space, &mut evaluator, &cfg, resume.as_ref(), |e, hist| {
        progress.inc(1);
        let best = hist
            .best_episode
            .and_then(|b| hist.episodes.get(b))
            .map_or(f64::NAN, |b| b.accuracy);
        progress.message(&format!(
            "best {best:.2}% (FP {:.2}%), reward {:.3}",
            hist.fp_accuracy, e.best_reward
        ));
        save_state(state.as_ref(), hist.episodes.len(), saved, hist)
    });
    progress.finish();
    result
}
