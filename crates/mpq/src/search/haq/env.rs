//! HAQ (Wang et al., CVPR 2019): the quantization environment (docs/algorithms.md §4.2–§4.6). An episode
//! walks the searched layers; per layer the agent proposes the weight bits, then the
//! activation bits (linear mode; a candidate set with one value has no step). When the walk
//! ends, the proposal is repaired into the budget by "sequentially decreasing bit-widths"
//! (§4.5, over the search space's budgets), turned into a [`QuantPlan`], scored by a
//! [`PlanEvaluator`] and rewarded `scale · (accuracy − FP accuracy)` (§4.6).
//!
//! The environment is tensor-free: the model lives behind the evaluator trait, the costs in
//! the [`SearchSpace`].

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::state::{FlagStyle, STATE_DIM, STATIC_FEATURES, embedding};
use super::{HaqConfig, PlanEvaluator};
use crate::plan::{
    BitWidth, FULL_PRECISION, KMEANS_SEARCH_ITERS, QuantPlan, QuantizerKind, WeightRange,
};
use crate::search::SearchSpace;
use crate::search::rl::{Environment, Step, action_to_bits};
use crate::{Error, Result};

/// What one episode proposed, chose and scored: an entry of the search history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaqEpisode {
    /// Episode index, from 0.
    pub episode: usize,
    /// The agent's actions in step order (weights then activations, layer by layer; the
    /// agent's `f32` values widened, so the JSON text is the same wherever it is written).
    pub actions: Vec<f64>,
    /// Proposed `[w, a]` bits per layer, before the budget repair.
    pub proposed: Vec<[BitWidth; 2]>,
    /// `[w, a]` bits per layer after the repair (the evaluated plan).
    pub bits: Vec<[BitWidth; 2]>,
    /// Whether the repair lowered any bit-width.
    pub repaired: bool,
    /// Simulated latency (ms) of the plan, with a hardware model.
    pub latency_ms: Option<f64>,
    /// Simulated energy (mJ) of the plan, with a hardware model that gives energy.
    pub energy_mj: Option<f64>,
    /// Weight storage (bytes, scales included).
    pub size_bytes: u64,
    /// Parameter-weighted mean weight bits.
    pub avg_w_bits: f64,
    /// Bit operations per sample.
    pub bops: f64,
    /// Accuracy (%) on the reward split.
    pub accuracy: f64,
    /// `scale · (accuracy − FP accuracy)`.
    pub reward: f64,
    /// Whether an earlier episode already evaluated the same plan (its accuracy was reused).
    pub repeat: bool,
    /// Exploration σ of the episode (`None` during warm-up; filled in by the search loop,
    /// which owns the agent).
    pub sigma: Option<f64>,
    /// The best reward up to and including this episode.
    pub best_reward: f64,
}

/// One decision of an episode.
#[derive(Debug, Clone, Copy)]
struct Decision {
    group: usize,
    weight: bool,
}

/// The HAQ environment over a search space and an evaluator.
pub struct HaqEnv<'s, 'a, E: PlanEvaluator> {
    space: &'s SearchSpace<'a>,
    evaluator: &'s mut E,
    weight_range: WeightRange,
    flags: FlagStyle,
    reward_scale: f64,
    fp_accuracy: f64,
    steps: Vec<Decision>,
    emb: Vec<[f32; STATIC_FEATURES]>,
    max_bit: f32,
    // Episode state.
    t: usize,
    w_idx: Vec<usize>,
    a_idx: Vec<usize>,
    actions: Vec<f64>,
    row_prev: Vec<f32>,
    row_flag: Vec<f32>,
    // Across episodes.
    cache: HashMap<Vec<usize>, f64>,
    seen: HashSet<Vec<usize>>,
    episodes: Vec<HaqEpisode>,
    best: Option<(usize, Vec<usize>)>,
    eval_seconds: f64,
}

fn finite_bits(bits: &[BitWidth]) -> impl Iterator<Item = BitWidth> + '_ {
    bits.iter().copied().filter(|&b| b != FULL_PRECISION)
}

impl<'s, 'a, E: PlanEvaluator> HaqEnv<'s, 'a, E> {
    /// An environment whose plans use the space's weight quantizer with the range rule
    /// `cfg.weight_range`, its state flags `cfg.flags`, rewarded with `cfg.reward_scale`
    /// against `fp_accuracy` (%).
    pub fn new(
        space: &'s SearchSpace<'a>,
        evaluator: &'s mut E,
        cfg: &HaqConfig,
        fp_accuracy: f64,
    ) -> Result<Self> {
        let cands = space.candidates();
        let (nw, na) = (cands.w_bits.len(), cands.a_bits.len());
        let mut steps = Vec::new();
        for (g, group) in space.groups().iter().enumerate() {
            if group.choices.len() > 1 {
                if nw > 1 {
                    steps.push(Decision {
                        group: g,
                        weight: true,
                    });
                }
                if na > 1 {
                    steps.push(Decision {
                        group: g,
                        weight: false,
                    });
                }
            }
        }
        if steps.is_empty() {
            return Err(Error::config(
                "haq",
                "nothing to search: every layer is pinned or each candidate set has one value",
            ));
        }
        let firsts: Vec<_> = space
            .groups()
            .iter()
            .map(|g| &space.layers()[g.layers[0]])
            .collect();
        let max_bit = finite_bits(&cands.w_bits)
            .chain(finite_bits(&cands.a_bits))
            .max()
            .unwrap_or(8) as f32;
        let groups = space.groups().len();
        Ok(HaqEnv {
            space,
            evaluator,
            weight_range: cfg.weight_range,
            flags: cfg.flags,
            reward_scale: cfg.reward_scale,
            fp_accuracy,
            steps,
            emb: embedding(&firsts),
            max_bit,
            t: 0,
            w_idx: vec![0; groups],
            a_idx: vec![0; groups],
            actions: Vec::new(),
            row_prev: vec![1.0; groups],
            row_flag: vec![1.0; groups],
            cache: HashMap::new(),
            seen: HashSet::new(),
            episodes: Vec::new(),
            best: None,
            eval_seconds: 0.0,
        })
    }

    /// Decisions per episode.
    pub fn steps_per_episode(&self) -> usize {
        self.steps.len()
    }

    /// Every finished episode.
    pub fn episodes(&self) -> &[HaqEpisode] {
        &self.episodes
    }

    /// Seconds spent in the evaluator.
    pub fn eval_seconds(&self) -> f64 {
        self.eval_seconds
    }

    /// The best episode so far and its choice index per group.
    pub(super) fn best(&self) -> Option<&(usize, Vec<usize>)> {
        self.best.as_ref()
    }

    /// Seeds the accuracy cache (a resumed search reuses the saved evaluations).
    pub(super) fn remember(&mut self, choice: Vec<usize>, accuracy: f64) {
        self.cache.insert(choice, accuracy);
    }

    /// The choice index per group of a `[w, a]`-per-layer bit list.
    pub(super) fn choice_of_bits(&self, bits: &[[BitWidth; 2]]) -> Result<Vec<usize>> {
        self.space
            .groups()
            .iter()
            .map(|g| {
                let [w, a] = bits.get(g.layers[0]).copied().ok_or_else(|| {
                    Error::config(
                        "resume",
                        "the saved episode has fewer layers than the model",
                    )
                })?;
                g.choices
                    .iter()
                    .position(|c| (c.w_bits, c.a_bits) == (w, a))
                    .ok_or_else(|| {
                        Error::config(
                            "resume",
                            format!("saved bits {w}/{a} are not a candidate of the search"),
                        )
                    })
            })
            .collect()
    }

    fn observation(&self) -> Vec<f32> {
        let g = self.steps[self.t].group;
        let mut s = Vec::with_capacity(STATE_DIM);
        s.extend_from_slice(&self.emb[g]);
        let flag = match self.flags {
            FlagStyle::Clean => f32::from(u8::from(self.steps[self.t].weight)),
            FlagStyle::Reference => self.row_flag[g],
        };
        s.push(self.row_prev[g]);
        s.push(flag);
        s
    }

    /// The proposal as a choice index per group (pinned groups: their only choice).
    fn proposal(&self) -> Vec<usize> {
        let na = self.space.candidates().a_bits.len();
        self.space
            .groups()
            .iter()
            .enumerate()
            .map(|(g, group)| {
                if group.choices.len() > 1 {
                    self.w_idx[g] * na + self.a_idx[g]
                } else {
                    0
                }
            })
            .collect()
    }

    /// Spec §4.5 over every budget of the space: while the plan breaks a budget, walk the
    /// searched groups from the last to the first, lowering each one's activation bits by
    /// one candidate (only while a broken budget depends on activations: BitOps, latency,
    /// energy) and then its weight bits by one, stopping as soon as it fits. Under size,
    /// average-bit or compression budgets alone the activation bits are never touched.
    fn repair(&self, choice: &mut [usize]) -> Result<()> {
        let na = self.space.candidates().a_bits.len();
        let groups = self.space.groups();
        let broken_acts = |c: &[usize]| {
            self.space
                .broken(&self.space.totals(c))
                .any(|k| k.kind.depends_on_activations())
        };
        let fits = |c: &[usize]| self.space.fits(&self.space.totals(c));
        while !fits(choice) {
            let mut changed = false;
            'walk: for g in (0..groups.len()).rev() {
                if groups[g].choices.len() <= 1 {
                    continue;
                }
                for lower_weight in [false, true] {
                    let (w, a) = (choice[g] / na, choice[g] % na);
                    let next = match (lower_weight, w, a) {
                        (false, _, a) if a > 0 && broken_acts(choice) => Some(w * na + a - 1),
                        (true, w, a) if w > 0 => Some((w - 1) * na + a),
                        _ => None,
                    };
                    if let Some(n) = next {
                        choice[g] = n;
                        changed = true;
                        if fits(choice) {
                            break 'walk;
                        }
                    }
                }
            }
            if !changed {
                return Err(Error::Infeasible {
                    budget: "the HAQ budget repair: every searched layer at its smallest \
                             bit-widths still breaks the budget"
                        .into(),
                    min_value:
                        "loosen the budget (mpq search reports each budget's smallest value)".into(),
                });
            }
        }
        Ok(())
    }

    /// The plan of a choice, as scored during the search.
    pub(super) fn plan(&self, choice: &[usize], start: Instant) -> Result<QuantPlan> {
        let mut plan = self.space.plan(choice, "haq", start)?;
        for l in &mut plan.layers {
            l.weight_range = self.weight_range;
            if l.quantizer == QuantizerKind::KMeans {
                // Cheap clustering while searching (docs/algorithms.md §4.9: `max_iter = 3`); the final
                // plan leaves the fine-tune's default.
                l.kmeans_iters = Some(KMEANS_SEARCH_ITERS);
            }
        }
        Ok(plan)
    }

    fn bits_of(&self, choice: &[usize]) -> Vec<[BitWidth; 2]> {
        let mut bits = vec![[FULL_PRECISION; 2]; self.space.layers().len()];
        for (g, &c) in self.space.groups().iter().zip(choice) {
            let ch = &g.choices[c];
            for &i in &g.layers {
                bits[i] = [ch.w_bits, ch.a_bits];
            }
        }
        bits
    }

    fn finish(&mut self) -> Result<f64> {
        let proposal = self.proposal();
        let mut choice = proposal.clone();
        self.repair(&mut choice)?;
        let plan = self.plan(&choice, Instant::now())?;
        let repeat = !self.seen.insert(choice.clone());
        let accuracy = match self.cache.get(&choice) {
            Some(&acc) => acc,
            None => {
                let t0 = Instant::now();
                let acc = self.evaluator.accuracy(&plan)?;
                self.eval_seconds += t0.elapsed().as_secs_f64();
                if !acc.is_finite() {
                    return Err(Error::NonFinite(format!("plan accuracy {acc}")));
                }
                self.cache.insert(choice.clone(), acc);
                acc
            }
        };
        let reward = self.reward_scale * (accuracy - self.fp_accuracy);
        let episode = self.episodes.len();
        let best_reward = match self.episodes.last() {
            Some(e) if e.best_reward >= reward => e.best_reward,
            _ => {
                self.best = Some((episode, choice.clone()));
                reward
            }
        };
        self.episodes.push(HaqEpisode {
            episode,
            actions: std::mem::take(&mut self.actions),
            proposed: self.bits_of(&proposal),
            bits: self.bits_of(&choice),
            repaired: choice != proposal,
            latency_ms: plan.latency_ms,
            energy_mj: plan.energy_mj,
            size_bytes: plan.size_bytes.unwrap_or(0),
            avg_w_bits: plan.avg_w_bits.unwrap_or(f64::NAN),
            bops: plan.bops.unwrap_or(f64::NAN),
            accuracy,
            reward,
            repeat,
            sigma: None,
            best_reward,
        });
        Ok(reward)
    }
}

impl<E: PlanEvaluator> Environment for HaqEnv<'_, '_, E> {
    fn state_dim(&self) -> usize {
        STATE_DIM
    }

    fn reset(&mut self) -> Result<Vec<f32>> {
        self.t = 0;
        self.actions.clear();
        let groups = self.space.groups().len();
        self.w_idx = vec![0; groups];
        self.a_idx = vec![0; groups];
        if self.flags == FlagStyle::Clean {
            self.row_prev = vec![1.0; groups];
        }
        Ok(self.observation())
    }

    fn step(&mut self, action: f32) -> Result<Step> {
        let d = self.steps[self.t];
        let cands = self.space.candidates();
        let set = if d.weight {
            &cands.w_bits
        } else {
            &cands.a_bits
        };
        // Equal-width intervals over the candidate list (§4.4; for the contiguous 2..8 of
        // the reference script this is its `round((b_min − 0.5) + a·(b_max − b_min + 1))`).
        let idx = action_to_bits(action, 0, (set.len() - 1) as BitWidth) as usize;
        let bits = set[idx];
        if d.weight {
            self.w_idx[d.group] = idx;
        } else {
            self.a_idx[d.group] = idx;
        }
        self.actions.push(f64::from(action));
        self.t += 1;
        if self.t == self.steps.len() {
            let reward = self.finish()?;
            return Ok(Step {
                state: vec![0.0; STATE_DIM],
                reward,
                done: true,
            });
        }
        // The reference writes the previous action and the flag into the next step's row.
        let next = self.steps[self.t].group;
        let shown = if bits == FULL_PRECISION {
            self.max_bit
        } else {
            bits as f32
        };
        self.row_prev[next] = shown / self.max_bit;
        self.row_flag[next] = f32::from(u8::from(d.weight));
        Ok(Step {
            state: self.observation(),
            reward: 0.0,
            done: false,
        })
    }
}
