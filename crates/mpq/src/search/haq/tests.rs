//! Tests of the HAQ search loop (Wang et al., CVPR 2019) on the LeNet-5 layer table with a
//! synthetic, deterministic evaluator: budgets hold, seeds reproduce, resume replays.

use std::cell::Cell;

use super::*;
use crate::cost::HardwareModel;
use crate::graph::LayerInfo;
use crate::search::tests::lenet;
use crate::search::{Budget, Candidates, SearchOptions, SearchSpace};

/// Accuracy falls with fewer bits, most on the second layer; counts its calls.
struct Synthetic<'c> {
    calls: &'c Cell<usize>,
}

impl PlanEvaluator for Synthetic<'_> {
    fn fp_accuracy(&mut self) -> Result<f64> {
        self.calls.set(self.calls.get() + 1);
        Ok(99.0)
    }
    fn accuracy(&mut self, plan: &QuantPlan) -> Result<f64> {
        self.calls.set(self.calls.get() + 1);
        let mut acc = 99.0;
        for (i, l) in plan.layers.iter().enumerate() {
            let weight = if i == 1 { 4.0 } else { 1.0 };
            let w = f64::from(l.w_bits.min(8));
            let a = f64::from(l.a_bits.min(8));
            acc -= weight * (2f64.powf(-w) + 0.5 * 2f64.powf(-a)) * 10.0;
        }
        Ok(acc)
    }
}

fn cands() -> Candidates {
    Candidates {
        w_bits: (2..=8).collect(),
        a_bits: (2..=8).collect(),
    }
}

fn config(episodes: usize, seed: u64) -> HaqConfig {
    HaqConfig {
        ddpg: DdpgConfig {
            // Smaller nets than the default 300-300: these tests check the loop, not learning.
            hidden1: 64,
            hidden2: 64,
            warmup_episodes: 5,
            replay_capacity: 128 * 5,
            seed,
            ..DdpgConfig::default()
        },
        episodes,
        ..HaqConfig::default()
    }
}

/// Half of the W8A8 cost of the constraint `kind` (0: latency, 1: energy).
fn half_w8a8(layers: &[LayerInfo], hw: &HardwareModel, energy: bool) -> f64 {
    layers
        .iter()
        .map(|l| {
            let r = hw.layer(l, 8, 8).unwrap();
            if energy {
                r.energy_mj.unwrap()
            } else {
                r.latency_ms
            }
        })
        .sum::<f64>()
        * 0.5
}

/// A latency budget of `factor` times half the W8A8 latency.
fn latency_budget(layers: &[LayerInfo], hw: &HardwareModel, factor: f64) -> Budget {
    Budget {
        max_latency_ms: Some(half_w8a8(layers, hw, false) * factor),
        ..Budget::default()
    }
}

/// LeNet-5's search space on BitFusion under `budget`, 2–8 bit candidates.
fn bitfusion_space<'a>(
    layers: &'a [LayerInfo],
    hw: &'a HardwareModel,
    budget: &Budget,
) -> SearchSpace<'a> {
    SearchSpace::new(
        layers,
        &cands(),
        budget,
        Some(hw),
        &SearchOptions::default(),
    )
    .unwrap()
}

/// A search with the synthetic evaluator, which counts its calls in `calls`.
fn try_run(
    space: &SearchSpace<'_>,
    cfg: &HaqConfig,
    resume: Option<&HaqHistory>,
    calls: &Cell<usize>,
) -> Result<HaqResult> {
    haq(space, &mut Synthetic { calls }, cfg, resume, |_, _| Ok(()))
}

fn run(space: &SearchSpace<'_>, cfg: &HaqConfig, resume: Option<&HaqHistory>) -> HaqResult {
    try_run(space, cfg, resume, &Cell::new(0)).unwrap()
}

#[test]
fn every_episode_meets_the_latency_budget_and_seeds_reproduce() {
    let layers = lenet();
    let hw = HardwareModel::from_reference("bitfusion").unwrap();
    let budget = latency_budget(&layers, &hw, 1.0);
    let space = bitfusion_space(&layers, &hw, &budget);
    let cfg = config(40, 3);
    let r = run(&space, &cfg, None);
    let limit = budget.max_latency_ms.unwrap();
    assert_eq!(r.history.episodes.len(), 40);
    assert_eq!(r.history.steps_per_episode, 2 * layers.len());
    for e in &r.history.episodes {
        assert!(e.latency_ms.unwrap() <= limit * (1.0 + 1e-12), "{e:?}");
        assert_eq!(e.actions.len(), 2 * layers.len());
        assert!(
            e.bits
                .iter()
                .zip(&e.proposed)
                .all(|(b, p)| b[0] <= p[0] && b[1] <= p[1])
        );
        assert_eq!(e.repaired, e.bits != e.proposed);
        assert!((e.reward - 0.1 * (e.accuracy - 99.0)).abs() < 1e-12);
    }
    // Random proposals at 2..8 bits often break half the W8A8 latency: the repair ran.
    assert!(r.history.episodes.iter().any(|e| e.repaired));
    let best = r.history.best_episode.unwrap();
    let b = &r.history.episodes[best];
    assert!(r.history.episodes.iter().all(|e| e.reward <= b.reward));
    let got: Vec<[u32; 2]> = r.plan.layers.iter().map(|l| [l.w_bits, l.a_bits]).collect();
    assert_eq!(got, b.bits);
    assert!(r.plan.latency_ms.unwrap() <= limit * (1.0 + 1e-12));
    assert_eq!(r.plan.method, "haq");
    // Warm-up episodes carry no σ, the agent's do.
    assert!(r.history.episodes[..5].iter().all(|e| e.sigma.is_none()));
    assert!(r.history.episodes[5..].iter().all(|e| e.sigma.is_some()));

    let again = run(&space, &cfg, None);
    assert_eq!(again.history, r.history);
    assert_eq!(again.plan.layers, r.plan.layers);
    let other = run(&space, &config(40, 4), None);
    assert_ne!(other.history.episodes, r.history.episodes);
}

#[test]
fn resume_replays_the_saved_episodes_without_evaluating_them() {
    let layers = lenet();
    let hw = HardwareModel::from_reference("bitfusion").unwrap();
    let budget = latency_budget(&layers, &hw, 1.0);
    let space = bitfusion_space(&layers, &hw, &budget);
    let cfg = config(30, 9);
    let full = run(&space, &cfg, None);

    // An interrupted run: stop (with an error) after 12 episodes, keeping the saved state.
    let calls = Cell::new(0);
    let mut saved = None;
    let err = haq(
        &space,
        &mut Synthetic { calls: &calls },
        &cfg,
        None,
        |e, h| {
            if e.episode == 11 {
                saved = Some(h.clone());
                return Err(crate::Error::config("test", "interrupted"));
            }
            Ok(())
        },
    );
    assert!(err.is_err());
    let saved = saved.unwrap();
    assert_eq!(saved.episodes.len(), 12);

    let resumed_calls = Cell::new(0);
    let resumed = try_run(&space, &cfg, Some(&saved), &resumed_calls).unwrap();
    assert_eq!(resumed.history, full.history);
    assert_eq!(resumed.plan.layers, full.plan.layers);
    assert_eq!(resumed.resumed_episodes, 12);
    let distinct = |eps: &[HaqEpisode]| {
        let mut seen: Vec<&Vec<[u32; 2]>> = eps.iter().map(|e| &e.bits).collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    // FP accuracy comes from the state; only plans new after episode 12 are evaluated.
    let fresh = distinct(&full.history.episodes) - distinct(&saved.episodes);
    assert_eq!(resumed_calls.get(), fresh);

    // A state from other settings, or an edited one, is refused.
    let mut other = cfg.clone();
    other.ddpg.seed = 10;
    let calls = Cell::new(0);
    assert!(try_run(&space, &other, Some(&saved), &calls).is_err());
    let mut edited = saved.clone();
    edited.episodes[3].reward += 1.0;
    assert!(try_run(&space, &cfg, Some(&edited), &calls).is_err());
}

#[test]
fn energy_budget_holds_in_every_episode() {
    let layers = lenet();
    let hw = HardwareModel::from_reference("bitfusion").unwrap();
    let limit = half_w8a8(&layers, &hw, true);
    let budget = Budget {
        max_energy_mj: Some(limit),
        ..Budget::default()
    };
    let space = bitfusion_space(&layers, &hw, &budget);
    let r = run(&space, &config(25, 1), None);
    assert!(r.history.episodes.iter().any(|e| e.repaired));
    for e in &r.history.episodes {
        assert!(e.energy_mj.unwrap() <= limit * (1.0 + 1e-12), "{e:?}");
    }
    assert!(r.plan.energy_mj.unwrap() <= limit * (1.0 + 1e-12));
}

#[test]
fn size_budget_holds_in_every_episode_weights_only() {
    let layers = lenet();
    // Weights only (the k-means experiment's shape): activations stay in full precision,
    // one decision per layer.
    let cands = Candidates {
        w_bits: (2..=8).collect(),
        a_bits: vec![32],
    };
    let n: usize = layers.iter().map(|l| l.params).sum();
    let limit_mb = n as f64 * 3.0 / 8.0 / (1024.0 * 1024.0);
    let budget = Budget {
        max_size_mb: Some(limit_mb),
        ..Budget::default()
    };
    let space =
        SearchSpace::new(&layers, &cands, &budget, None, &SearchOptions::default()).unwrap();
    let r = run(&space, &config(25, 2), None);
    assert_eq!(r.history.steps_per_episode, layers.len());
    let limit_bytes = (limit_mb * 1024.0 * 1024.0).floor() as u64;
    for e in &r.history.episodes {
        assert!(
            e.size_bytes <= limit_bytes,
            "{} > {limit_bytes}",
            e.size_bytes
        );
        assert!(e.bits.iter().all(|b| b[1] == 32));
    }
    assert!(r.history.episodes.iter().any(|e| e.repaired));
}

#[test]
fn weight_only_budgets_never_change_activation_bits() {
    // Even with activation candidates to choose from (the library allows it), the repair
    // under average-bit, size or compression budgets lowers weight bits only: for every seed,
    // every episode evaluates the activation bits it proposed.
    let layers = lenet();
    let n: usize = layers.iter().map(|l| l.params).sum();
    let budgets = [
        Budget::avg_bits(2.5),
        Budget {
            max_size_mb: Some(n as f64 * 3.0 / 8.0 / (1024.0 * 1024.0)),
            ..Budget::default()
        },
        Budget {
            compression: Some(12.0),
            ..Budget::default()
        },
    ];
    for budget in &budgets {
        let space =
            SearchSpace::new(&layers, &cands(), budget, None, &SearchOptions::default()).unwrap();
        for seed in 0..6 {
            let r = run(&space, &config(12, seed), None);
            assert!(r.history.episodes.iter().any(|e| e.repaired), "{budget:?}");
            for e in &r.history.episodes {
                for (b, p) in e.bits.iter().zip(&e.proposed) {
                    assert_eq!(b[1], p[1], "seed {seed}, {budget:?}: {e:?}");
                    assert!(b[0] <= p[0]);
                }
            }
        }
    }
}

#[test]
fn bops_budgets_lower_activations_too() {
    // A BitOps budget depends on both widths: the repair may lower activations (§4.5).
    let layers = lenet();
    let w8a8: f64 = layers.iter().map(|l| l.macs as f64 * 64.0).sum();
    let budget = Budget {
        max_bops_g: Some(w8a8 / 8.0 / 1e9),
        ..Budget::default()
    };
    let space =
        SearchSpace::new(&layers, &cands(), &budget, None, &SearchOptions::default()).unwrap();
    let r = run(&space, &config(12, 0), None);
    let lowered_a = r
        .history
        .episodes
        .iter()
        .any(|e| e.bits.iter().zip(&e.proposed).any(|(b, p)| b[1] < p[1]));
    assert!(lowered_a);
    for e in &r.history.episodes {
        assert!(e.bops <= w8a8 / 8.0 * (1.0 + 1e-12));
    }
}

#[test]
fn unreachable_budget_fails_before_any_evaluation() {
    let layers = lenet();
    let hw = HardwareModel::from_reference("bitfusion").unwrap();
    let budget = latency_budget(&layers, &hw, 1e-3);
    let space = bitfusion_space(&layers, &hw, &budget);
    let calls = Cell::new(0);
    let err = try_run(&space, &config(5, 0), None, &calls).unwrap_err();
    assert!(matches!(err, crate::Error::Infeasible { .. }), "{err}");
    assert_eq!(calls.get(), 0);
}

#[test]
fn pinned_layers_take_no_decision_and_keep_their_bits() {
    let layers = lenet();
    let hw = HardwareModel::from_reference("bitfusion").unwrap();
    let budget = latency_budget(&layers, &hw, 1.4);
    let opts = SearchOptions {
        pins: vec![
            crate::search::Pin::parse("first=8/32").unwrap(),
            crate::search::Pin::parse("last=8/8").unwrap(),
        ],
        ..Default::default()
    };
    let space = SearchSpace::new(&layers, &cands(), &budget, Some(&hw), &opts).unwrap();
    let r = run(&space, &config(10, 5), None);
    assert_eq!(r.history.steps_per_episode, 2 * (layers.len() - 2));
    for e in &r.history.episodes {
        assert_eq!(e.bits[0], [8, 32]);
        assert_eq!(*e.bits.last().unwrap(), [8, 8]);
    }
}
