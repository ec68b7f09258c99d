//! CW-HAWQ tests on LeNet-5's layer table with synthetic channel traces and errors.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::cost::CostTable;
use crate::search::haq::PlanEvaluator;
use crate::search::rl::DdpgConfig;
use crate::search::tests::lenet;
use crate::search::{Budget, Candidates, SearchOptions};

/// Random positive traces; errors `s_c · 4^{−b}` with a random spread `s_c`.
fn table(layers: &[LayerInfo], seed: u64) -> ChannelTable {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = layers
        .iter()
        .map(|l| {
            let c = l.out_channels;
            let traces: Vec<f64> = (0..c)
                .map(|_| rng.random_range(0.0..10.0f64).powi(3))
                .collect();
            let spread: Vec<f64> = (0..c).map(|_| rng.random_range(0.5..2.0)).collect();
            let errors: BTreeMap<BitWidth, Vec<f64>> = [2, 4, 8]
                .into_iter()
                .map(|b| {
                    (
                        b,
                        spread.iter().map(|s| s * 4f64.powi(-(b as i32))).collect(),
                    )
                })
                .collect();
            Some(ChannelRow { traces, errors })
        })
        .collect();
    ChannelTable::from_rows(layers, rows).unwrap()
}

fn space<'a>(layers: &'a [LayerInfo], avg: f64) -> SearchSpace<'a> {
    let c = Candidates {
        w_bits: vec![2, 4, 8],
        a_bits: vec![8],
    };
    let b = Budget::avg_bits(avg);
    SearchSpace::new(layers, &c, &b, None, &SearchOptions::default()).unwrap()
}

/// Higher-trace channels never have fewer bits than lower-trace channels of the same layer.
fn monotone(plan: &QuantPlan, t: &ChannelTable) {
    for (i, l) in plan.layers.iter().enumerate() {
        let (Some(bits), Some(row)) = (&l.channel_w_bits, t.row(i)) else {
            continue;
        };
        for a in 0..bits.len() {
            for b in 0..bits.len() {
                if row.traces[a] > row.traces[b] {
                    assert!(bits[a] >= bits[b], "{}: channel {a} vs {b}", l.name);
                }
            }
        }
    }
}

#[test]
fn higher_trace_channels_never_get_fewer_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..500 {
        let n = rng.random_range(1..40);
        // Few distinct values, so ties occur too.
        let traces: Vec<f64> = (0..n)
            .map(|_| f64::from(rng.random_range(0..6u8)))
            .collect();
        let order = channel_order(&traces);
        let mut left = n;
        let mut counts = Vec::new();
        for _ in 0..3 {
            let k = rng.random_range(0..=left);
            counts.push(k);
            left -= k;
        }
        counts.push(left);
        let bits = assign_bits(&order, &counts, &[8, 6, 4, 2]);
        for b in [8, 6, 4, 2] {
            let k = [8, 6, 4, 2].iter().position(|&x| x == b).unwrap();
            assert_eq!(bits.iter().filter(|&&x| x == b).count(), counts[k]);
        }
        for a in 0..n {
            for c in 0..n {
                if traces[a] > traces[c] {
                    assert!(bits[a] >= bits[c], "{traces:?} {counts:?} {bits:?}");
                }
            }
        }
    }
}

#[test]
fn ratio_grid_covers_compositions() {
    let g = ratio_grid(6, 3, 16);
    assert_eq!(g.len(), 28); // C(6+2, 2)
    assert!(g.iter().all(|c| c.iter().sum::<usize>() == 6));
    let g = ratio_grid(120, 3, 4);
    assert_eq!(g.len(), 15);
    assert!(g.iter().all(|c| c.iter().sum::<usize>() == 120));
    assert!(g.contains(&vec![30, 60, 30]));
}

#[test]
fn layer_costs_match_the_cost_table() {
    let layers = lenet();
    let t = table(&layers, 1);
    let s = space(&layers, 3.0);
    let setup = CwSetup::new(&s, &t).unwrap();
    let counts: Vec<Vec<usize>> = layers
        .iter()
        .map(|l| {
            let (hi, mid) = (l.out_channels / 5, l.out_channels / 3);
            vec![hi, mid, l.out_channels - hi - mid]
        })
        .collect();
    let mut plan = QuantPlan::uniform(&layers, 8, 8);
    for (i, p) in plan.layers.iter_mut().enumerate() {
        p.channel_w_bits = Some(setup.bits_of(i, &counts[i]));
    }
    let cost = CostTable::new(&layers, &plan).unwrap();
    let total: f64 = (0..layers.len())
        .map(|i| setup.layer_costs(i, &setup.bits_of(i, &counts[i]))[0])
        .sum();
    assert_eq!(total, cost.weight_bits as f64);
}

#[test]
fn cw_ilp_meets_the_budget_and_beats_sampled_ratio_plans() {
    let layers = lenet();
    let t = table(&layers, 2);
    let s = space(&layers, 3.0);
    let plan = cw_ilp(&s, &t, 8).unwrap();
    assert!(plan.avg_w_bits.unwrap() <= 3.0 + 1e-9);
    monotone(&plan, &t);
    let best = plan.omega.unwrap();
    let omega = |p: &QuantPlan| -> f64 {
        p.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                channel_omega(
                    &layers[i],
                    t.row(i).unwrap(),
                    l.channel_w_bits.as_ref().unwrap(),
                )
                .unwrap()
            })
            .sum()
    };
    assert!((omega(&plan) - best).abs() <= 1e-9 * best.abs().max(1.0));
    // Every feasible plan of the same grid has at least the optimum's Ω.
    let setup = CwSetup::new(&s, &t).unwrap();
    let grids: Vec<_> = layers
        .iter()
        .map(|l| ratio_grid(l.out_channels, 3, 8))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut feasible = 0;
    for _ in 0..3000 {
        let counts: Vec<Vec<usize>> = grids
            .iter()
            .map(|g| g[rng.random_range(0..g.len())].clone())
            .collect();
        if let Ok(p) = setup.plan(&counts, "x", Instant::now()) {
            feasible += 1;
            assert!(omega(&p) >= best - 1e-9 * best.abs().max(1.0));
        }
    }
    assert!(feasible > 10, "{feasible}");
}

/// Accuracy falls with the plan's channel Ω: deterministic, cheap, and rewards the trace
/// order.
struct OmegaEval<'t> {
    layers: Vec<LayerInfo>,
    table: &'t ChannelTable,
    calls: usize,
}

impl PlanEvaluator for OmegaEval<'_> {
    fn fp_accuracy(&mut self) -> crate::Result<f64> {
        Ok(100.0)
    }
    fn accuracy(&mut self, plan: &QuantPlan) -> crate::Result<f64> {
        self.calls += 1;
        let mut o = 0.0;
        for (i, l) in plan.layers.iter().enumerate() {
            o += channel_omega(
                &self.layers[i],
                self.table.row(i).unwrap(),
                l.channel_w_bits.as_ref().unwrap(),
            )?;
        }
        Ok(100.0 - o)
    }
}

fn run(seed: u64, t: &ChannelTable) -> CwResult {
    let layers = lenet();
    let s = space(&layers, 3.0);
    let mut ev = OmegaEval {
        layers: layers.clone(),
        table: t,
        calls: 0,
    };
    let cfg = CwConfig {
        ddpg: DdpgConfig {
            warmup_episodes: 5,
            seed,
            ..DdpgConfig::default()
        },
        episodes: 15,
        reward_scale: 0.1,
        ..CwConfig::default()
    };
    let r = cw_hawq(&s, t, &mut ev, &cfg, None, |_, _| Ok(())).unwrap();
    assert!(ev.calls >= 1);
    r
}

#[test]
fn same_seed_same_plan_and_plans_fit_and_follow_the_trace_order() {
    let layers = lenet();
    let t = table(&layers, 4);
    let (a, b) = (run(7, &t), run(7, &t));
    assert_eq!(a.plan.layers, b.plan.layers);
    assert_eq!(a.episodes, b.episodes);
    assert!(a.plan.avg_w_bits.unwrap() <= 3.0 + 1e-9);
    monotone(&a.plan, &t);
    let best = &a.episodes[a.best_episode];
    assert!(a.episodes.iter().all(|e| e.reward <= best.reward));
    assert!(a.episodes.iter().all(|e| e.avg_w_bits <= 3.0 + 1e-9));
    assert_ne!(a.episodes, run(8, &t).episodes);
}

/// The LeNet-5 counts `start` (per layer, over {8, 4, 2}) after the repair at an average of 3
/// bits, which must have moved channels and fit.
fn repaired(start: impl Fn(usize, &LayerInfo) -> Vec<usize>) -> Vec<Vec<usize>> {
    let layers = lenet();
    let t = table(&layers, 5);
    let s = space(&layers, 3.0);
    let mut ev = OmegaEval {
        layers: layers.clone(),
        table: &t,
        calls: 0,
    };
    let env = RatioEnv::new(&s, &t, &mut ev, 0.1, 100.0).unwrap();
    let mut counts: Vec<Vec<usize>> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| start(i, l))
        .collect();
    assert!(env.repair(&mut counts).unwrap());
    assert!(s.fits(&env.totals(&counts)));
    counts
}

#[test]
fn repair_lowers_the_most_expensive_bits_first() {
    // Everything at 4 bits except conv1 at 8: within a layer, the repair must empty the 8-bit
    // group before any channel goes from 4 to 2 bits, and then fit.
    let start = |i: usize, l: &LayerInfo| {
        if i == 0 {
            vec![6, 0, 0]
        } else {
            vec![0, l.out_channels, 0]
        }
    };
    let before: Vec<Vec<usize>> = lenet()
        .iter()
        .enumerate()
        .map(|(i, l)| start(i, l))
        .collect();
    let counts = repaired(start);
    assert!(counts[0][0] < 6, "{counts:?}");
    for (c, b) in counts.iter().zip(&before) {
        assert_eq!(c.iter().sum::<usize>(), b.iter().sum::<usize>());
        assert!(c[0] <= b[0]);
        if c[2] > b[2] {
            assert_eq!(
                c[0], 0,
                "2-bit channels while 8-bit ones remain: {counts:?}"
            );
        }
    }
}

#[test]
fn repair_lowers_every_layer_at_the_same_pace() {
    // Everything at 8 bits: the repair must not drain the small layers (conv1: 6 channels)
    // to 2 bits while the large ones (fc1: 120) keep most of theirs at 8.
    let counts = repaired(|_, l| vec![l.out_channels, 0, 0]);
    let mean_bits = |c: &[usize]| {
        let n: usize = c.iter().sum();
        (8 * c[0] + 4 * c[1] + 2 * c[2]) as f64 / n as f64
    };
    let means: Vec<f64> = counts.iter().map(|c| mean_bits(c)).collect();
    let (lo, hi) = means
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), &m| (a.min(m), b.max(m)));
    assert!(hi - lo <= 1.0, "uneven repair: {counts:?} ({means:?})");
}
