//! Tests of the search methods over a shared space (HAWQ, HAWQ-V2 Pareto, HAWQ-V3 ILP) on
//! zoo layer tables with synthetic sensitivities.

use super::*;
use crate::cost::HardwareModel;
use crate::io::Versioned;
use crate::search::mckp;
use crate::search::{OmegaConfig, OmegaMetric, OmegaTable, hawq_v1, ilp, pareto};
use crate::sensitivity::SensitivityTable;
use crate::zoo::{self, ZooConfig};

fn layers(arch: &str, input: [usize; 3]) -> Vec<LayerInfo> {
    zoo::layer_infos(arch, &ZooConfig::new(input, 10)).unwrap()
}

/// Sensitivities whose curvature differs per layer and whose errors fall 4x per bit.
fn sens(layers: &[LayerInfo], act: bool) -> SensitivityTable {
    let rows: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let n = l.params as f64;
            let curv = [3.0, 0.5, 1.7, 0.9, 2.3, 0.2, 1.1][i % 7];
            let errs: serde_json::Map<String, serde_json::Value> = (2..=8)
                .map(|b| (b.to_string(), (n * 0.1 * 4f64.powi(-b) * (1.0 + 0.1 * i as f64)).into()))
                .collect();
            let m = l.input_elems as f64;
            let act_errs: serde_json::Map<String, serde_json::Value> = (2..=8)
                .map(|b| (b.to_string(), (m * 0.05 * 4f64.powi(-b) * (1.0 + 0.2 * i as f64)).into()))
                .collect();
            serde_json::json!({
                "name": l.name, "params": l.params, "trace": curv * n,
                "top_eigenvalue": curv * (1.0 + (i % 3) as f64),
                "act_trace": if act { serde_json::json!(curv * 10.0) } else { serde_json::Value::Null },
                "weight_error": errs,
                "act_error": if act { serde_json::Value::Object(act_errs) } else { serde_json::Value::Null },
            })
        })
        .collect();
    SensitivityTable::parse(
        serde_json::json!({ "layers": rows }).to_string().as_bytes(),
        "synthetic",
    )
    .unwrap()
}

fn cands(w: &[u32], a: &[u32]) -> Candidates {
    Candidates {
        w_bits: w.to_vec(),
        a_bits: a.to_vec(),
    }
}

fn space<'a>(
    l: &'a [LayerInfo],
    c: &Candidates,
    b: &Budget,
    hw: Option<&'a HardwareModel>,
    opts: &SearchOptions,
    metric: OmegaMetric,
    act: bool,
) -> SearchSpace<'a> {
    let mut s = SearchSpace::new(l, c, b, hw, opts).unwrap();
    let cfg = OmegaConfig {
        metric,
        act_weight: 1.0,
    };
    s.set_omega(&OmegaTable::new(l, &sens(l, act), cfg).unwrap())
        .unwrap();
    s
}

fn bits(plan: &QuantPlan, name: &str) -> (u32, u32) {
    plan.bits(name)
}

#[test]
fn ilp_equals_brute_force_on_lenet_with_two_budgets() {
    let l = layers("lenet5", [1, 28, 28]);
    let all8 = Budget::default();
    for (avg, bops_frac) in [(3.0, 0.3), (4.5, 0.2), (2.5, 0.6), (6.0, 0.5)] {
        let b8 = SearchSpace::new(
            &l,
            &cands(&[8], &[8]),
            &all8,
            None,
            &SearchOptions::default(),
        )
        .unwrap();
        let max_bops = b8.feasibility().budgets.len() as f64; // no budgets: 0
        assert_eq!(max_bops, 0.0);
        let macs: u64 = l.iter().map(|x| x.macs).sum();
        let b = Budget {
            avg_bits: Some(avg),
            max_bops_g: Some(macs as f64 * 64.0 * bops_frac / 1e9),
            ..Default::default()
        };
        let s = space(
            &l,
            &cands(&[2, 3, 4, 8], &[4, 6, 8]),
            &b,
            None,
            &SearchOptions::default(),
            OmegaMetric::Trace,
            true,
        );
        let brute = mckp::brute_force(&s.to_mckp()).unwrap();
        let (plan, stats) = ilp(&s).unwrap();
        assert!(stats.proven_optimal);
        let om = plan.omega.unwrap();
        assert!(
            (om - brute.value).abs() <= 1e-9 * brute.value.abs().max(1e-12),
            "{om} vs {}",
            brute.value
        );
        assert!(plan.avg_w_bits.unwrap() <= avg + 1e-9);
        assert!(plan.bops.unwrap() <= macs as f64 * 64.0 * bops_frac);
        assert_eq!(plan.method, "ilp");
        assert_eq!(plan.constraints.avg_bits, Some(avg));
    }
}

#[test]
fn pinned_and_tied_layers_hold_in_every_method() {
    let l = layers("resnet20", [3, 32, 32]);
    let opts = SearchOptions {
        pins: vec![
            Pin::parse("first=8").unwrap(),
            Pin::parse("last=8:4").unwrap(),
        ],
        ties: vec![
            vec!["layer2.0.conv1".into(), "layer2.0.downsample.0".into()],
            vec![
                "layer3.0.conv1".into(),
                "layer3.0.downsample.0".into(),
                "layer3.0.conv2".into(),
            ],
        ],
        ..Default::default()
    };
    let b = Budget::avg_bits(3.5);
    let s = space(
        &l,
        &cands(&[2, 3, 4, 6], &[4, 8]),
        &b,
        None,
        &opts,
        OmegaMetric::Trace,
        false,
    );
    assert_eq!(s.groups().len(), l.len() - 3);
    let omega = OmegaTable::new(&l, &sens(&l, false), OmegaConfig::default()).unwrap();
    let eig = space(
        &l,
        &cands(&[2, 3, 4, 6], &[4, 8]),
        &b,
        None,
        &opts,
        OmegaMetric::Eigen,
        false,
    );
    let plans = [
        ilp(&s).unwrap().0,
        pareto(&s).unwrap().plan,
        hawq_v1(&eig, &omega).unwrap(),
        s.uniform().unwrap(),
        s.random(3, 100_000).unwrap(),
    ];
    for p in &plans {
        assert_eq!(bits(p, "conv1"), (8, 8), "{}", p.method);
        assert_eq!(bits(p, "fc"), (8, 4), "{}", p.method);
        assert_eq!(
            bits(p, "layer2.0.conv1"),
            bits(p, "layer2.0.downsample.0"),
            "{}",
            p.method
        );
        let t = bits(p, "layer3.0.conv1");
        assert_eq!(t, bits(p, "layer3.0.downsample.0"));
        assert_eq!(t, bits(p, "layer3.0.conv2"));
        assert!(p.avg_w_bits.unwrap() <= 3.5 + 1e-9, "{}", p.method);
        assert_eq!(p.constraints.pins.as_ref().unwrap()["first"], [8, 8]);
        p.validate(&l).unwrap();
    }
    // ILP is optimal, so no other method beats its Ω.
    let best = plans[0].omega.unwrap();
    assert!((omega.plan_omega(&l, &plans[0]).unwrap() - best).abs() <= 1e-12 * best);
    for p in &plans[1..] {
        let o = omega.plan_omega(&l, p).unwrap();
        assert!(o >= best * (1.0 - 1e-12), "{} beat ilp", p.method);
    }
}

#[test]
fn pareto_agrees_with_ilp_under_one_size_budget() {
    let l = layers("resnet20", [3, 32, 32]);
    for avg in [2.5, 3.0, 4.2, 5.0] {
        let b = Budget::avg_bits(avg);
        let s = space(
            &l,
            &cands(&[2, 3, 4, 5, 6, 8], &[4, 8]),
            &b,
            None,
            &SearchOptions::default(),
            OmegaMetric::Trace,
            true,
        );
        let r = pareto(&s).unwrap();
        let (p, _) = ilp(&s).unwrap();
        let (a, b2) = (r.plan.omega.unwrap(), p.omega.unwrap());
        assert!((a - b2).abs() <= 1e-9 * a, "avg {avg}: pareto {a} ilp {b2}");
        // The frontier is strictly monotone and holds the chosen point.
        let pts = &r.frontier.points;
        assert!(
            pts.windows(2)
                .all(|w| w[0].size_bits < w[1].size_bits && w[0].omega > w[1].omega)
        );
        assert_eq!(pts[r.chosen].omega, a);
        assert_eq!(r.uniform.len(), 6);
        let file = r.to_file(&s, "m", "p.json");
        assert_eq!(file.points.len(), pts.len());
        let w: Vec<u32> = file.points[r.chosen]
            .w_bits
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        let plan_w: Vec<u32> = r.plan.layers.iter().map(|x| x.w_bits).collect();
        assert_eq!(w, plan_w);
    }
}

#[test]
fn hawq_v1_bits_follow_the_eigen_order_and_fill_the_budget() {
    let l = layers("lenet5", [1, 28, 28]);
    let c = cands(&[2, 4, 8], &[8]);
    let omega = OmegaTable::new(
        &l,
        &sens(&l, false),
        OmegaConfig {
            metric: OmegaMetric::Eigen,
            act_weight: 1.0,
        },
    )
    .unwrap();
    for avg in [2.2, 3.0, 4.0, 6.5] {
        let b = Budget::avg_bits(avg);
        let s = space(
            &l,
            &c,
            &b,
            None,
            &SearchOptions::default(),
            OmegaMetric::Eigen,
            false,
        );
        let p = hawq_v1(&s, &omega).unwrap();
        let mut order: Vec<usize> = (0..l.len()).collect();
        let score = |i: usize| omega.hawq_score(i, l[i].params).unwrap();
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        let w: Vec<u32> = order.iter().map(|&i| p.layers[i].w_bits).collect();
        assert!(w.windows(2).all(|x| x[0] >= x[1]), "avg {avg}: {w:?}");
        // Brute force over all monotone sequences: none is larger within the budget.
        let n: u64 = l.iter().map(|x| x.params as u64).sum();
        let mut best = 0u64;
        let total = 3usize.pow(l.len() as u32);
        for code in 0..total {
            let mut seq = Vec::new();
            let mut x = code;
            for _ in 0..l.len() {
                seq.push([2u64, 4, 8][x % 3]);
                x /= 3;
            }
            if !seq.windows(2).all(|s| s[0] >= s[1]) {
                continue;
            }
            let size: u64 = order
                .iter()
                .zip(&seq)
                .map(|(&i, &b)| l[i].params as u64 * b)
                .sum();
            if size as f64 <= avg * n as f64 {
                best = best.max(size);
            }
        }
        let got: u64 = l
            .iter()
            .zip(&p.layers)
            .map(|(x, q)| x.params as u64 * u64::from(q.w_bits))
            .sum();
        assert_eq!(got, best, "avg {avg}");
        let order = p.finetune_order.as_ref().unwrap();
        assert_eq!(order.len(), l.len());
    }
}

#[test]
fn hawq_v1_under_a_bitops_budget_takes_the_activation_width_of_least_omega() {
    // LeNet-5 with activation traces, weights and activations from {2, 3, 4, 6, 8}, at the
    // BitOps of uniform W3A3 and W4A4: the plan equals the best of the plans restricted to
    // one activation width each (brute force over the widths), by Ω.
    let l = layers("lenet5", [1, 28, 28]);
    let widths = [2u32, 3, 4, 6, 8];
    let omega = OmegaTable::new(
        &l,
        &sens(&l, true),
        OmegaConfig {
            metric: OmegaMetric::Eigen,
            act_weight: 1.0,
        },
    )
    .unwrap();
    for wa in [9.0, 16.0] {
        let macs: f64 = l.iter().map(|x| x.macs as f64).sum();
        let b = Budget {
            max_bops_g: Some(macs * wa / 1e9),
            ..Budget::default()
        };
        let opts = SearchOptions::default();
        let run = |a: &[u32]| {
            let s = space(
                &l,
                &cands(&widths, a),
                &b,
                None,
                &opts,
                OmegaMetric::Eigen,
                true,
            );
            hawq_v1(&s, &omega).ok()
        };
        let p = run(&widths).unwrap();
        let best = (widths.iter())
            .filter_map(|&a| run(&[a]))
            .min_by(|x, y| x.omega.unwrap().total_cmp(&y.omega.unwrap()))
            .unwrap();
        assert_eq!(p.omega, best.omega, "W·A {wa}");
        let a = p.layers[0].a_bits;
        assert!(p.layers.iter().all(|x| x.a_bits == a));
        // Not the largest admissible width with every weight at 2 bits.
        assert!(p.layers.iter().any(|x| x.w_bits > 2), "W·A {wa}: {p:?}");
    }
}

#[test]
fn ilp_meets_latency_and_energy_on_bitfusion() {
    let l = layers("resnet20", [3, 32, 32]);
    let hw = HardwareModel::from_reference("bitfusion").unwrap();
    let c = cands(&[2, 4, 8], &[2, 4, 8]);
    let all8 = QuantPlan::uniform(&l, 8, 8);
    let t8 = hw.table(&l, &all8).unwrap();
    let b = Budget {
        max_latency_ms: Some(t8.latency_ms * 0.4),
        max_energy_mj: Some(t8.energy_mj.unwrap() * 0.6),
        ..Default::default()
    };
    let s = space(
        &l,
        &c,
        &b,
        Some(&hw),
        &SearchOptions::default(),
        OmegaMetric::Trace,
        true,
    );
    let f = s.feasibility();
    assert!(
        f.is_feasible() && f.budgets.iter().all(|x| x.binding),
        "{f}"
    );
    let (p, _) = ilp(&s).unwrap();
    assert!(p.latency_ms.unwrap() <= t8.latency_ms * 0.4 * (1.0 + 1e-12));
    assert!(p.energy_mj.unwrap() <= t8.energy_mj.unwrap() * 0.6 * (1.0 + 1e-12));
    assert_eq!(p.constraints.hardware.as_deref(), Some("bitfusion"));
    assert!(p.layers.iter().any(|x| x.w_bits < 8));
}

#[test]
fn feasibility_reports_each_budget_and_empty_layers() {
    let l = layers("lenet5", [1, 28, 28]);
    let macs: u64 = l.iter().map(|x| x.macs).sum();
    let b = Budget {
        avg_bits: Some(5.0),
        max_bops_g: Some(macs as f64 * 2.0 * 4.0 / 1e9 * 0.5),
        ..Default::default()
    };
    let c = cands(&[2, 4, 8], &[4, 8]);
    let s = SearchSpace::new(&l, &c, &b, None, &SearchOptions::default()).unwrap();
    let f = s.feasibility();
    assert!(!f.is_feasible());
    assert!(f.budgets[0].feasible && f.budgets[0].binding);
    assert_eq!(f.budgets[0].best, 2.0);
    assert!(!f.budgets[1].feasible);
    assert!((f.budgets[1].best - macs as f64 * 8.0 / 1e9).abs() < 1e-15);
    let text = f.to_string();
    assert!(
        text.contains("INFEASIBLE") && text.contains("binding"),
        "{text}"
    );
    match f.check() {
        Err(Error::Infeasible { budget, min_value }) => {
            assert!(budget.contains("max_bops_g"), "{budget}");
            assert_eq!(min_value, format!("{:.6}", macs as f64 * 8.0 / 1e9));
        }
        other => panic!("{other:?}"),
    }
    // Compression reports the largest achievable ratio: 32 / 2 = 16.
    let b = Budget {
        compression: Some(20.0),
        ..Default::default()
    };
    let f = SearchSpace::new(&l, &c, &b, None, &SearchOptions::default())
        .unwrap()
        .feasibility();
    assert!(!f.is_feasible() && f.budgets[0].best == 16.0);
    // A tie between layers pinned to different bits leaves them no choice.
    let opts = SearchOptions {
        pins: vec![Pin::parse("conv1=8").unwrap(), Pin::parse("fc3=4").unwrap()],
        ties: vec![vec!["conv1".into(), "fc3".into()]],
        ..Default::default()
    };
    let f = SearchSpace::new(&l, &c, &Budget::default(), None, &opts)
        .unwrap()
        .feasibility();
    assert_eq!(f.empty_layers, ["conv1", "fc3"]);
    assert!(f.check().unwrap_err().to_string().contains("conv1"));
}

#[test]
fn bad_pins_ties_and_hardware_budgets_are_input_errors() {
    let l = layers("lenet5", [1, 28, 28]);
    let c = cands(&[2, 4, 8], &[4, 8]);
    for bad in ["conv1", "conv1=9", "=8", "conv1=8:x"] {
        assert!(Pin::parse(bad).unwrap_err().is_input_error(), "{bad}");
    }
    assert_eq!(Pin::parse("fc1=4/8").unwrap().a_bits, 8);
    let opts = SearchOptions {
        pins: vec![Pin::parse("conv9=8").unwrap()],
        ..Default::default()
    };
    let err = SearchSpace::new(&l, &c, &Budget::default(), None, &opts).unwrap_err();
    assert!(matches!(err, Error::UnknownLayer { .. }));
    let opts = SearchOptions {
        ties: vec![vec!["conv1".into()]],
        ..Default::default()
    };
    assert!(SearchSpace::new(&l, &c, &Budget::default(), None, &opts).is_err());
    let b = Budget {
        max_latency_ms: Some(1.0),
        ..Default::default()
    };
    let msg = SearchSpace::new(&l, &c, &b, None, &SearchOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("hardware"), "{msg}");
    let b = Budget::avg_bits(-1.0);
    assert!(SearchSpace::new(&l, &c, &b, None, &SearchOptions::default()).is_err());
}

#[test]
fn searched_layers_need_sensitivity_rows() {
    let l = layers("lenet5", [1, 28, 28]);
    let c = cands(&[2, 4, 8], &[8]);
    let mut partial = sens(&l, false);
    partial.layers.retain(|r| r.name != "fc3");
    let table = OmegaTable::new(&l, &partial, OmegaConfig::default()).unwrap();
    let mut s =
        SearchSpace::new(&l, &c, &Budget::default(), None, &SearchOptions::default()).unwrap();
    let msg = s.set_omega(&table).unwrap_err().to_string();
    assert!(msg.contains("fc3") && msg.contains("pin"), "{msg}");
    let opts = SearchOptions {
        pins: vec![Pin::parse("last=8").unwrap()],
        ..Default::default()
    };
    let mut s = SearchSpace::new(&l, &c, &Budget::default(), None, &opts).unwrap();
    s.set_omega(&table).unwrap();
}

#[test]
fn uniform_tries_every_pair_and_prefers_least_omega_then_balance() {
    let l = layers("lenet5", [1, 28, 28]);
    let all: Vec<u32> = (2..=8).collect();
    let w3a3: f64 = l.iter().map(|x| x.macs as f64 * 9.0).sum();
    let budget = Budget {
        max_bops_g: Some(w3a3 / 1e9),
        ..Budget::default()
    };
    // Without Ω: W3A3, not W4A2 (balanced), among the pairs no fitting pair beats.
    let bare = SearchSpace::new(
        &l,
        &cands(&all, &all),
        &budget,
        None,
        &SearchOptions::default(),
    )
    .unwrap();
    let p = bare.uniform().unwrap();
    assert!(l.iter().all(|x| bits(&p, &x.name) == (3, 3)), "{p:?}");
    // With Ω: the least Ω over every fitting pair, checked by brute force.
    let s = space(
        &l,
        &cands(&all, &all),
        &budget,
        None,
        &SearchOptions::default(),
        OmegaMetric::Trace,
        true,
    );
    let p = s.uniform().unwrap();
    let mut best = (f64::INFINITY, 0, 0);
    for &w in &all {
        for &a in &all {
            let plan = QuantPlan::uniform(&l, w, a);
            let cost = CostTable::new(&l, &plan).unwrap();
            if cost.bops <= w3a3 * (1.0 + 1e-12) {
                let o: f64 = (0..l.len())
                    .map(|i| s.groups()[i].choices[(w as usize - 2) * 7 + a as usize - 2].omega)
                    .sum();
                if o < best.0 {
                    best = (o, w, a);
                }
            }
        }
    }
    assert!(
        l.iter().all(|x| bits(&p, &x.name) == (best.1, best.2)),
        "{best:?}"
    );
    // A weight-only budget keeps the most activation bits.
    let p = SearchSpace::new(
        &l,
        &cands(&all, &all),
        &Budget::avg_bits(3.0),
        None,
        &SearchOptions::default(),
    )
    .unwrap()
    .uniform()
    .unwrap();
    assert!(l.iter().all(|x| bits(&p, &x.name) == (3, 8)));
}

#[test]
fn random_plans_land_within_two_percent_of_the_budget() {
    let l = layers("lenet5", [1, 28, 28]);
    let n: f64 = l.iter().map(|x| x.params as f64).sum();
    let w3a3: f64 = l.iter().map(|x| x.macs as f64 * 9.0).sum();
    let c = cands(&[2, 3, 4, 5, 6, 8], &[2, 3, 4, 5, 6, 8]);
    let by_bits = Budget::avg_bits(2.5);
    let by_bops = Budget {
        max_bops_g: Some(w3a3 / 1e9),
        ..Budget::default()
    };
    let mut distinct = std::collections::BTreeSet::new();
    for seed in 0..10 {
        let s = SearchSpace::new(&l, &c, &by_bits, None, &SearchOptions::default()).unwrap();
        let p = s.random(seed, 100).unwrap();
        let cost = CostTable::new(&l, &p).unwrap();
        let bits = cost.avg_w_bits;
        assert!((2.45..=2.5 + 1e-9).contains(&bits), "seed {seed}: {bits}");
        assert!((cost.avg_w_bits * n - 2.5 * n) <= 1e-6);
        distinct.insert(format!(
            "{:?}",
            p.layers
                .iter()
                .map(|x| (x.w_bits, x.a_bits))
                .collect::<Vec<_>>()
        ));
        let s = SearchSpace::new(&l, &c, &by_bops, None, &SearchOptions::default()).unwrap();
        let p = s.random(seed, 100).unwrap();
        let bops = CostTable::new(&l, &p).unwrap().bops;
        assert!(
            bops <= w3a3 * (1.0 + 1e-12) && bops >= 0.98 * w3a3,
            "seed {seed}: {bops} vs {w3a3}"
        );
    }
    // LeNet-5 has few near-budget plans (fc1 holds most weights): still several.
    assert!(distinct.len() >= 4, "{distinct:?}");
}

#[test]
fn random_plans_are_uniform_over_the_plans_within_two_percent_of_the_budget() {
    // LeNet-5 at 3 average weight bits, 8-bit activations: enumerate every plan of the
    // 6^5 whose cost lies in [0.98·3, 3]; over 4,000 seeds the sampler hits each of them,
    // each about equally often (a chi-square test against the uniform distribution).
    let l = layers("lenet5", [1, 28, 28]);
    let w = [2u32, 3, 4, 5, 6, 8];
    let c = cands(&w, &[8]);
    let n: f64 = l.iter().map(|x| x.params as f64).sum();
    let s = SearchSpace::new(
        &l,
        &c,
        &Budget::avg_bits(3.0),
        None,
        &SearchOptions::default(),
    )
    .unwrap();
    let mut band = std::collections::BTreeMap::new();
    for k in 0..w.len().pow(5) {
        let bits: Vec<u32> = (0..5).map(|i| w[k / w.len().pow(i) % w.len()]).collect();
        let avg: f64 = l
            .iter()
            .zip(&bits)
            .map(|(x, &b)| x.params as f64 * b as f64)
            .sum::<f64>()
            / n;
        if (0.98 * 3.0..=3.0 + 1e-12).contains(&avg) {
            band.insert(bits, 0usize);
        }
    }
    let draws = 4000;
    for seed in 0..draws {
        let p = s.random(seed, 1000).unwrap();
        let bits: Vec<u32> = p.layers.iter().map(|x| x.w_bits).collect();
        *band
            .get_mut(&bits)
            .unwrap_or_else(|| panic!("{bits:?} outside the band")) += 1;
    }
    let expected = draws as f64 / band.len() as f64;
    let chi2: f64 = band
        .values()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    // df = |band| − 1 ≈ 110: the 99.9th percentile of chi-square is about df + 3.1·√(2·df).
    let df = (band.len() - 1) as f64;
    assert!(band.values().all(|&o| o > 0), "{band:?}");
    assert!(
        chi2 < df + 3.1 * (2.0 * df).sqrt(),
        "chi2 {chi2} with {df} df"
    );
}
