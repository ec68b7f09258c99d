//! CW-HAWQ (Qian et al., arXiv 2008.08284, 2020; docs/algorithms.md §3.3 step 4): the DDPG ratio
//! environment. HAQ's agent ([`crate::search::rl`]) has a one-dimensional action in `[0, 1]`,
//! so a layer's ratio vector over `K` candidate widths (descending) is `K − 1` scalar steps:
//! step `k` gives the fraction of the channels *still unassigned* that get width `b_k`
//! (`n_k = round(a·remaining)`); the lowest width takes the rest. The first step is thus the
//! fraction at the highest bits, the second the fraction of the rest at the middle bits, …
//!
//! Budget repair (HAQ's "sequentially decrease", docs/algorithms.md §4.5, at channel granularity): while
//! the plan breaks a budget, walk the searched layers from last to first and move
//! `C/`[`REPAIR_PARTS`] of each layer's `C` channels (on average), one at a time, from its most
//! expensive non-empty width to the next lower one (the least sensitive channels of that
//! group, since groups follow the trace order), stopping as soon as the plan fits. The reward is
//! HAQ's `scale · (accuracy − FP accuracy)` through a [`PlanEvaluator`].

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{ChannelTable, CwSetup};
use crate::io::Versioned;
use crate::plan::QuantPlan;
use crate::search::SearchSpace;
use crate::search::haq::state::{STATIC_FEATURES, embedding};
use crate::search::haq::{EvaluatorSettings, PlanEvaluator};
use crate::search::rl::{DdpgAgent, DdpgConfig, Environment, Step, train_agent};
use crate::{Error, Result};

/// The repair moves `C/REPAIR_PARTS` of a layer's `C` channels down one width per round.
pub const REPAIR_PARTS: usize = 32;

/// Observation length: HAQ's static layer features, the layer's normalised log mean trace
/// per element, the position of the step within the layer, and the previous action.
pub const CW_STATE_DIM: usize = STATIC_FEATURES + 3;

/// Settings of a CW-HAWQ ratio search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CwConfig {
    /// The agent (its seed decides every random choice).
    pub ddpg: DdpgConfig,
    /// Episodes to run.
    pub episodes: usize,
    /// `λ` of the reward `λ·(acc − acc_FP)`.
    pub reward_scale: f64,
    /// The evaluator's settings, recorded so that `--resume` refuses a state saved under
    /// different ones.
    #[serde(default)]
    pub evaluator: EvaluatorSettings,
}

impl Default for CwConfig {
    fn default() -> Self {
        CwConfig {
            ddpg: DdpgConfig::default(),
            episodes: 300,
            reward_scale: 0.1,
            evaluator: EvaluatorSettings::default(),
        }
    }
}

/// One episode of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CwEpisode {
    /// Episode index.
    pub episode: usize,
    /// Channel counts per searched layer (descending widths), after the repair.
    pub counts: Vec<Vec<usize>>,
    /// Whether the repair moved any channel.
    pub repaired: bool,
    /// Parameter-weighted mean weight bits.
    pub avg_w_bits: f64,
    /// Accuracy (%) on the evaluator's split.
    pub accuracy: f64,
    /// The reward.
    pub reward: f64,
}

/// Everything that must match for a saved CW-HAWQ search to be resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CwSettings {
    /// The configuration, with `episodes` zeroed (a resumed search may run longer).
    pub config: CwConfig,
    /// Layer names of the model.
    pub layers: Vec<String>,
    /// The constraints and candidates of the search space.
    pub constraints: crate::plan::Constraints,
    /// Per searched layer, its channels in the order bits are handed out (from the channel
    /// traces): a saved search over other traces does not replay.
    pub channel_orders: Vec<Vec<usize>>,
}

/// The saved state of a CW-HAWQ search (`OUT.cw-state.json`): what `--resume` replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CwHistory {
    /// The settings it ran under.
    pub settings: CwSettings,
    /// Accuracy (%) of the full-precision model on the reward split.
    pub fp_accuracy: f64,
    /// The best episode.
    pub best_episode: Option<usize>,
    /// Every episode, in order.
    pub episodes: Vec<CwEpisode>,
}

impl Versioned for CwHistory {
    const FORMAT: &'static str = "mpq.cw-state";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a CW-HAWQ search state";
}

/// The result of [`cw_hawq`].
#[derive(Debug, Clone)]
pub struct CwResult {
    /// The best episode's plan (method `cw-hawq`).
    pub plan: QuantPlan,
    /// FP accuracy (%) on the evaluator's split.
    pub fp_accuracy: f64,
    /// Every episode.
    pub episodes: Vec<CwEpisode>,
    /// The best episode.
    pub best_episode: usize,
    /// Episodes replayed from a saved state rather than evaluated.
    pub resumed_episodes: usize,
}

/// The ratio environment.
pub struct RatioEnv<'s, 'a, E: PlanEvaluator> {
    setup: CwSetup<'s, 'a>,
    evaluator: &'s mut E,
    reward_scale: f64,
    fp_accuracy: f64,
    searched: Vec<usize>,
    emb: Vec<[f32; STATIC_FEATURES]>,
    trace_feat: Vec<f32>,
    t: usize,
    prev: f32,
    counts: Vec<Vec<usize>>,
    cache: HashMap<Vec<Vec<usize>>, f64>,
    episodes: Vec<CwEpisode>,
    best: Option<(usize, Vec<Vec<usize>>)>,
}

impl<'s, 'a, E: PlanEvaluator> RatioEnv<'s, 'a, E> {
    /// An environment over `space` (one activation width, no ties, size/BOPs budgets) with
    /// the channel data of `table`.
    pub fn new(
        space: &'s SearchSpace<'a>,
        table: &ChannelTable,
        evaluator: &'s mut E,
        reward_scale: f64,
        fp_accuracy: f64,
    ) -> Result<Self> {
        let setup = CwSetup::new(space, table)?;
        let searched = setup.searched();
        if searched.is_empty() || setup.bits_desc.len() < 2 {
            return Err(Error::config(
                "cw-hawq",
                "nothing to search: every layer is pinned or there is one weight width",
            ));
        }
        let layers = space.layers();
        let firsts: Vec<_> = searched.iter().map(|&i| &layers[i]).collect();
        let logs: Vec<f64> = searched
            .iter()
            .map(|&i| {
                let r = table.row(i).expect("searched layers have rows");
                let per = (layers[i].params.max(1)) as f64;
                (r.traces.iter().map(|t| t.max(0.0)).sum::<f64>() / per + 1e-30).ln()
            })
            .collect();
        let (lo, hi) = logs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let trace_feat = logs
            .iter()
            .map(|&x| {
                if hi > lo {
                    ((x - lo) / (hi - lo)) as f32
                } else {
                    0.5
                }
            })
            .collect();
        Ok(RatioEnv {
            emb: embedding(&firsts),
            setup,
            evaluator,
            reward_scale,
            fp_accuracy,
            counts: vec![Vec::new(); layers.len()],
            searched,
            trace_feat,
            t: 0,
            prev: 1.0,
            cache: HashMap::new(),
            episodes: Vec::new(),
            best: None,
        })
    }

    fn steps_per_layer(&self) -> usize {
        self.setup.bits_desc.len() - 1
    }

    /// Every finished episode.
    pub fn episodes(&self) -> &[CwEpisode] {
        &self.episodes
    }

    fn observation(&self) -> Vec<f32> {
        let k = self.steps_per_layer();
        let (j, step) = (self.t / k, self.t % k);
        let mut s = Vec::with_capacity(CW_STATE_DIM);
        s.extend_from_slice(&self.emb[j]);
        s.push(self.trace_feat[j]);
        s.push(step as f32 / k.max(1) as f32);
        s.push(self.prev);
        s
    }

    pub(crate) fn totals(&self, counts: &[Vec<usize>]) -> Vec<f64> {
        let mut t = self.setup.pinned_costs();
        for &i in &self.searched {
            let c = self
                .setup
                .layer_costs(i, &self.setup.bits_of(i, &counts[i]));
            for (x, y) in t.iter_mut().zip(c) {
                *x += y;
            }
        }
        t
    }

    /// Moves channels down one width until the plan fits (see the module docs).
    pub(crate) fn repair(&self, counts: &mut [Vec<usize>]) -> Result<bool> {
        let fits = |c: &[Vec<usize>]| self.setup.space.fits(&self.totals(c));
        let k = self.setup.bits_desc.len();
        let layers = self.setup.space.layers();
        let mut repaired = false;
        let mut round = 0usize;
        while !fits(counts) {
            let mut any_left = false;
            for &i in self.searched.iter().rev() {
                // The same fraction of every layer's channels per round (a layer of C
                // channels moves ⌊(r+1)·C/P⌋ − ⌊r·C/P⌋ in round r), so that small layers are
                // not driven to the lowest width long before large ones.
                let c = layers[i].out_channels;
                let step = (round + 1) * c / REPAIR_PARTS - round * c / REPAIR_PARTS;
                any_left |= counts[i][..k - 1].iter().any(|&n| n > 0);
                for _ in 0..step {
                    if let Some(top) = (0..k - 1).find(|&b| counts[i][b] > 0) {
                        counts[i][top] -= 1;
                        counts[i][top + 1] += 1;
                        repaired = true;
                    }
                }
                if fits(counts) {
                    break;
                }
            }
            round += 1;
            if !any_left {
                return Err(Error::Infeasible {
                    budget: "the cw-hawq repair: every channel at the smallest width still \
                             breaks the budget"
                        .into(),
                    min_value:
                        "loosen the budget (mpq search reports each budget's smallest value)".into(),
                });
            }
        }
        Ok(repaired)
    }

    fn finish(&mut self) -> Result<f64> {
        let mut counts = self.counts.clone();
        let repaired = self.repair(&mut counts)?;
        let plan = self.setup.plan(&counts, "cw-hawq", Instant::now())?;
        let key: Vec<Vec<usize>> = self.searched.iter().map(|&i| counts[i].clone()).collect();
        let accuracy = match self.cache.get(&key) {
            Some(&a) => a,
            None => {
                let a = self.evaluator.accuracy(&plan)?;
                if !a.is_finite() {
                    return Err(Error::NonFinite(format!("plan accuracy {a}")));
                }
                self.cache.insert(key.clone(), a);
                a
            }
        };
        let reward = self.reward_scale * (accuracy - self.fp_accuracy);
        let episode = self.episodes.len();
        if self.episodes.iter().all(|e| e.reward < reward) {
            self.best = Some((episode, counts));
        }
        self.episodes.push(CwEpisode {
            episode,
            counts: key,
            repaired,
            avg_w_bits: plan.avg_w_bits.unwrap_or(f64::NAN),
            accuracy,
            reward,
        });
        Ok(reward)
    }
}

impl<E: PlanEvaluator> Environment for RatioEnv<'_, '_, E> {
    fn state_dim(&self) -> usize {
        CW_STATE_DIM
    }

    fn reset(&mut self) -> Result<Vec<f32>> {
        self.t = 0;
        self.prev = 1.0;
        for &i in &self.searched {
            self.counts[i] = vec![0; self.setup.bits_desc.len()];
        }
        Ok(self.observation())
    }

    fn step(&mut self, action: f32) -> Result<Step> {
        let k = self.steps_per_layer();
        let (j, step) = (self.t / k, self.t % k);
        let i = self.searched[j];
        let channels = self.setup.space.layers()[i].out_channels;
        let assigned: usize = self.counts[i][..step].iter().sum();
        let remaining = channels - assigned;
        let a = f64::from(action.clamp(0.0, 1.0));
        let n = ((a * remaining as f64).round() as usize).min(remaining);
        self.counts[i][step] = n;
        if step + 1 == k {
            self.counts[i][k] = remaining - n;
        }
        self.prev = action;
        self.t += 1;
        if self.t == self.searched.len() * k {
            let reward = self.finish()?;
            return Ok(Step {
                state: vec![0.0; CW_STATE_DIM],
                reward,
                done: true,
            });
        }
        Ok(Step {
            state: self.observation(),
            reward: 0.0,
            done: false,
        })
    }
}

/// Runs the CW-HAWQ ratio search: `cfg.episodes` DDPG episodes over [`RatioEnv`], returning
/// the plan of the best-rewarded episode. Same seed (`cfg.ddpg.seed`), same plan, given a
/// deterministic evaluator. With `resume`, the saved episodes are replayed first (the agent
/// rebuilt from the seed walks them again, taking the saved accuracies instead of evaluating),
/// so the result is the one an uninterrupted run gives; a state that does not replay exactly
/// is an error. `on_episode` sees every episode (replayed ones included) with the state so
/// far, e.g. to save it and draw a progress bar.
pub fn cw_hawq<E: PlanEvaluator>(
    space: &SearchSpace<'_>,
    table: &ChannelTable,
    evaluator: &mut E,
    cfg: &CwConfig,
    resume: Option<&CwHistory>,
    mut on_episode: impl FnMut(&CwEpisode, &CwHistory) -> Result<()>,
) -> Result<CwResult> {
    let start = Instant::now();
    crate::search::rl::check_run(cfg.episodes, cfg.reward_scale)?;
    space.feasibility().check()?;
    super::validate(space, table)?;
    let fp_accuracy = match resume {
        Some(h) => h.fp_accuracy,
        None => evaluator.fp_accuracy()?,
    };
    if !fp_accuracy.is_finite() {
        return Err(Error::NonFinite(format!("FP accuracy {fp_accuracy}")));
    }
    let mut env = RatioEnv::new(space, table, evaluator, cfg.reward_scale, fp_accuracy)?;
    let settings = CwSettings {
        config: CwConfig {
            episodes: 0,
            ..cfg.clone()
        },
        layers: space.layers().iter().map(|l| l.name.clone()).collect(),
        constraints: space.plan_constraints(),
        channel_orders: env.setup.orders.iter().flatten().cloned().collect(),
    };
    let saved: &[CwEpisode] = match resume {
        Some(h) => {
            if h.settings != settings {
                return Err(Error::config(
                    "resume",
                    "the saved search ran with other settings (model layers, channel traces, \
                     budget, candidates, agent or evaluator options); rerun it with those or \
                     start afresh",
                ));
            }
            for e in &h.episodes {
                env.cache.insert(e.counts.clone(), e.accuracy);
            }
            &h.episodes
        }
        None => &[],
    };
    let resumed = saved.len().min(cfg.episodes);
    let mut history = CwHistory {
        settings,
        fp_accuracy,
        best_episode: None,
        episodes: Vec::new(),
    };
    let mut agent = DdpgAgent::new(CW_STATE_DIM, cfg.ddpg.clone())?;
    train_agent(&mut agent, &mut env, cfg.episodes, |env, _| {
        let Some(ep) = env.episodes.last().cloned() else {
            return Err(Error::config(
                "cw-hawq",
                "an episode ended without a record",
            ));
        };
        if let Some(old) = saved.get(ep.episode)
            && (old.counts != ep.counts || old.reward.to_bits() != ep.reward.to_bits())
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
        history.best_episode = env.best.as_ref().map(|b| b.0);
        history.episodes.push(ep);
        let last = history.episodes.last().expect("just pushed");
        on_episode(last, &history)
    })?;
    let Some((best_episode, counts)) = env.best.clone() else {
        return Err(Error::config("cw-hawq", "no episode finished"));
    };
    let mut plan = env.setup.plan(&counts, "cw-hawq", start)?;
    plan.seconds = start.elapsed().as_secs_f64();
    Ok(CwResult {
        plan,
        fp_accuracy,
        episodes: env.episodes,
        best_episode,
        resumed_episodes: resumed,
    })
}
