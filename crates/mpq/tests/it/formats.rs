//! HAWQ-V3's paired formats and ratio budgets, and searches from a problem table alone
//! (docs/algorithms.md §2.7, docs/file-formats.md "Problem tables"): the exact program against
//! brute force, formats that stay paired, the ends of the ratio range, and a table search that
//! equals the model-based one on the same numbers.

use mpq::Versioned;
use mpq::graph::LayerInfo;
use mpq::meta::ModelHint;
use mpq::pipeline::{self, Method, ModelSource, SearchRequest};
use mpq::plan::BitWidth;
use mpq::progress::NoProgress;
use mpq::search::problem::ProblemTable;
use mpq::search::{
    self, Budget, Candidates, OmegaConfig, OmegaTable, Pin, SearchOptions, SearchSpace,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::temp_dir;

const FORMATS: [(BitWidth, BitWidth); 3] = [(4, 4), (6, 8), (8, 8)];

fn cands() -> Candidates {
    Candidates {
        w_bits: vec![2, 4, 6, 8],
        a_bits: vec![4, 8],
    }
}

/// Twelve fully connected layers of random sizes.
fn random_layers(rng: &mut ChaCha8Rng) -> Vec<LayerInfo> {
    (0..12)
        .map(|i| {
            let (o, n) = (rng.random_range(2..40), rng.random_range(2..60));
            LayerInfo::linear(i, &format!("l{i}"), o, n)
        })
        .collect()
}

/// Ω falling with more bits (a random scale per layer), or fully random when `monotone` is off.
fn omega_fn(rng: &mut ChaCha8Rng, n: usize, monotone: bool) -> impl Fn(usize, u32, u32) -> f64 {
    let scale: Vec<f64> = (0..n).map(|_| rng.random_range(0.1..10.0)).collect();
    let noise: Vec<f64> = (0..n * 81).map(|_| rng.random_range(0.0..1.0)).collect();
    move |i, w, a| {
        if monotone {
            scale[i] * (4f64.powi(-(w as i32)) + 0.5 * 4f64.powi(-(a as i32)))
        } else {
            scale[i] * noise[i * 81 + (w as usize) * 9 + a as usize]
        }
    }
}

/// The least Ω over every assignment of choices that meets the budgets (`None`: none does).
fn brute_force(space: &SearchSpace) -> Option<f64> {
    let sizes: Vec<usize> = space.groups().iter().map(|g| g.choices.len()).collect();
    let mut idx = vec![0usize; sizes.len()];
    let mut best: Option<f64> = None;
    loop {
        if space.fits(&space.totals(&idx)) {
            let o = space.omega_of(&idx);
            best = Some(best.map_or(o, |b: f64| b.min(o)));
        }
        let mut k = 0;
        loop {
            if k == idx.len() {
                return best;
            }
            idx[k] += 1;
            if idx[k] < sizes[k] {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
    }
}

/// A random budget: one ratio budget (size, BitOps) at a random r, sometimes with an
/// average-bit limit as well.
fn random_budget(rng: &mut ChaCha8Rng) -> Budget {
    let r = rng.random_range(0.0..1.0);
    let mut b = if rng.random_bool(0.5) {
        Budget {
            size_ratio: Some(r),
            ..Budget::default()
        }
    } else {
        Budget {
            bops_ratio: Some(r),
            ..Budget::default()
        }
    };
    if rng.random_bool(0.3) {
        b.avg_bits = Some(rng.random_range(4.0..8.0));
    }
    b
}

fn random_opts(rng: &mut ChaCha8Rng, paired: bool) -> SearchOptions {
    let mut opts = SearchOptions {
        formats: paired.then(|| FORMATS.to_vec()),
        ..SearchOptions::default()
    };
    // A tie of two layers and a pin, as in HAWQ-V3's residual blocks and fixed ends.
    let (a, b) = (rng.random_range(0..6), rng.random_range(6..11));
    opts.ties.push(vec![format!("l{a}"), format!("l{b}")]);
    if rng.random_bool(0.5) {
        opts.pins.push(Pin::parse("l11=8/8").unwrap());
    }
    opts
}

#[test]
fn the_ilp_equals_brute_force_with_formats_ties_and_ratio_budgets() {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let mut solved = 0;
    for case in 0..24 {
        let layers = random_layers(&mut rng);
        let paired = case % 3 != 2;
        let opts = random_opts(&mut rng, paired);
        let budget = random_budget(&mut rng);
        let f = omega_fn(&mut rng, layers.len(), false);
        let cands = if paired {
            cands()
        } else {
            // A small grid keeps brute force quick: 2 x 2 choices per layer.
            Candidates {
                w_bits: vec![4, 8],
                a_bits: vec![4, 8],
            }
        };
        let mut space = SearchSpace::new(&layers, &cands, &budget, None, &opts).unwrap();
        space.set_omega_by(|i, w, a| Ok(Some(f(i, w, a)))).unwrap();
        let want = brute_force(&space);
        match (search::ilp(&space), want) {
            (Ok((plan, _)), Some(w)) => {
                let got = plan.omega.unwrap();
                assert!(
                    (got - w).abs() <= 1e-9 * w.abs().max(1e-12),
                    "case {case}: ilp {got}, brute force {w}"
                );
                solved += 1;
            }
            (Err(e), None) => assert!(e.is_input_error(), "case {case}: {e}"),
            (got, want) => panic!("case {case}: ilp {got:?}, brute force {want:?}"),
        }
    }
    assert!(solved >= 20, "only {solved} feasible cases");
}

#[test]
fn paired_formats_never_give_an_unpaired_choice() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..12 {
        let layers = random_layers(&mut rng);
        let opts = random_opts(&mut rng, true);
        let budget = random_budget(&mut rng);
        let f = omega_fn(&mut rng, layers.len(), case % 2 == 0);
        let mut space = SearchSpace::new(&layers, &cands(), &budget, None, &opts).unwrap();
        space.set_omega_by(|i, w, a| Ok(Some(f(i, w, a)))).unwrap();
        let plans = [
            search::ilp(&space).map(|p| p.0),
            search::pareto(&space).map(|r| r.plan),
            space.uniform(),
            space.random(case, 50),
        ];
        for plan in plans.into_iter().flatten() {
            for l in &plan.layers {
                let pinned = l.name == "l11" && !opts.pins.is_empty();
                assert!(
                    pinned || FORMATS.contains(&(l.w_bits, l.a_bits)),
                    "case {case} {}: {} at W{}A{}",
                    plan.method,
                    l.name,
                    l.w_bits,
                    l.a_bits
                );
            }
            assert_eq!(
                plan.constraints.formats,
                Some(FORMATS.iter().map(|&(w, a)| [w, a]).collect())
            );
        }
    }
}

#[test]
fn repeated_and_unsorted_formats_are_one_list() {
    // `--formats 8/8,4/4,4/4`: two choices per layer, recorded sorted; random draws stay
    // within them.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let layers = random_layers(&mut rng);
    let opts = SearchOptions {
        formats: Some(vec![(8, 8), (4, 4), (4, 4)]),
        ..SearchOptions::default()
    };
    let budget = Budget {
        bops_ratio: Some(0.5),
        ..Budget::default()
    };
    let space = SearchSpace::new(&layers, &cands(), &budget, None, &opts).unwrap();
    assert!(space.groups().iter().all(|g| g.choices.len() == 2));
    assert_eq!(space.pairs(), vec![(4, 4), (8, 8)]);
    for seed in 0..8 {
        let plan = space.random(seed, 20).unwrap();
        assert_eq!(plan.constraints.formats, Some(vec![[4, 4], [8, 8]]));
        assert!(
            plan.layers.iter().all(|l| l.w_bits == l.a_bits),
            "seed {seed}"
        );
    }
}

#[test]
fn ratio_budgets_at_0_and_1_give_the_all_low_and_all_high_plans() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let layers = random_layers(&mut rng);
    let f = omega_fn(&mut rng, layers.len(), true);
    let opts = SearchOptions {
        formats: Some(FORMATS.to_vec()),
        pins: vec![Pin::parse("l0=2/8").unwrap()],
        ..SearchOptions::default()
    };
    for kind in ["size", "bops"] {
        for (r, want) in [(0.0, (4, 4)), (1.0, (8, 8))] {
            let mut budget = Budget::default();
            match kind {
                "size" => budget.size_ratio = Some(r),
                _ => budget.bops_ratio = Some(r),
            }
            let mut space = SearchSpace::new(&layers, &cands(), &budget, None, &opts).unwrap();
            space.set_omega_by(|i, w, a| Ok(Some(f(i, w, a)))).unwrap();
            // The limit: all-low of the searched layers plus the pinned layer, plus r times
            // all-high minus all-low of the searched layers.
            let cost = |l: &LayerInfo, (w, a): (u32, u32)| {
                let (s, b) = space.layer_costs(l.index, w, a).unwrap();
                if kind == "size" { s } else { b }
            };
            let pinned = cost(&layers[0], (2, 8));
            let (lo, hi): (f64, f64) = layers[1..]
                .iter()
                .map(|l| (cost(l, (4, 4)), cost(l, (8, 8))))
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
            let limit = space.constraints()[0].cost_limit;
            let hand = pinned + lo + r * (hi - lo);
            assert!(
                (limit - hand).abs() <= 1e-9 * hand,
                "{kind} r={r}: {limit} vs {hand}"
            );
            let (plan, _) = search::ilp(&space).unwrap();
            assert_eq!((plan.layers[0].w_bits, plan.layers[0].a_bits), (2, 8));
            for l in &plan.layers[1..] {
                assert_eq!((l.w_bits, l.a_bits), want, "{kind} r={r}: {}", l.name);
            }
        }
    }
}

/// A sensitivity file for LeNet-5 with made-up traces and errors, and its Ω table.
pub(crate) fn lenet_sensitivity(dir: &std::path::Path, layers: &[LayerInfo]) -> std::path::PathBuf {
    let traces = [5.0, 0.1, 2.0, 0.7, 9.0];
    let eigens = [0.2, 7.0, 1.0, 3.0, 0.5];
    sensitivity_with(dir, "s.json", layers, &traces, &eigens)
}

/// A LeNet-5 sensitivity file with these traces per weight and top eigenvalues.
fn sensitivity_with(
    dir: &std::path::Path,
    name: &str,
    layers: &[LayerInfo],
    traces: &[f64; 5],
    eigens: &[f64; 5],
) -> std::path::PathBuf {
    let rows: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let errors: serde_json::Map<String, serde_json::Value> = (2..=8)
                .map(|b| (b.to_string(), (l.params as f64 * 4f64.powi(-b)).into()))
                .collect();
            let act: serde_json::Map<String, serde_json::Value> = (2..=8)
                .map(|b| (b.to_string(), (3.0 * 4f64.powi(-b)).into()))
                .collect();
            let trace = traces[i] * l.params as f64;
            let act_trace = [1.0, 4.0, 0.5, 2.0, 0.3][i];
            serde_json::json!({
                "name": l.name, "params": l.params, "trace": trace, "weight_error": errors,
                "top_eigenvalue": eigens[i],
                "act_trace": act_trace, "act_elems": l.input_elems, "act_error": act,
            })
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::json!({ "layers": rows }).to_string()).unwrap();
    path
}

#[test]
fn a_table_search_equals_the_model_search_on_the_same_numbers() {
    let dir = temp_dir("table-search");
    let model = ModelSource {
        reference: "zoo:lenet5".into(),
        hint: ModelHint::default(),
    };
    let layers = model.open().unwrap().graph.layer_infos().unwrap();
    let sens = lenet_sensitivity(&dir, &layers);
    let table = mpq::sensitivity::SensitivityTable::load(&sens).unwrap();
    let omega = OmegaTable::new(&layers, &table, OmegaConfig::default()).unwrap();
    let cands = Candidates {
        w_bits: vec![2, 3, 4, 8],
        a_bits: vec![4, 8],
    };
    let pins = vec![Pin::parse("first=8/8").unwrap()];
    let budgets = [
        Budget {
            bops_ratio: Some(0.4),
            ..Budget::default()
        },
        Budget {
            avg_bits: Some(3.5),
            max_bops_g: Some(0.012),
            ..Budget::default()
        },
    ];
    // The model's space written as a problem table.
    let opts = SearchOptions {
        pins: pins.clone(),
        ..SearchOptions::default()
    };
    let space = SearchSpace::new(&layers, &cands, &Budget::default(), None, &opts).unwrap();
    let csv = ProblemTable::csv_of(&space, |i, w, a| omega.omega(i, w, a)).unwrap();
    let csv_path = dir.join("problem.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    for budget in budgets {
        let methods = [
            Method::Ilp,
            Method::Pareto,
            Method::Uniform,
            Method::Random { max_tries: 50 },
        ];
        for method in methods {
            let mut by_model = SearchRequest::new(model.clone(), method.clone());
            by_model.sensitivity = Some(sens.clone());
            (by_model.w_bits, by_model.a_bits) =
                (Some(cands.w_bits.clone()), Some(cands.a_bits.clone()));
            by_model.pins = pins.clone();
            by_model.budget.limits = budget.clone();
            by_model.seed = 11;
            let mut by_table = by_model.clone();
            by_table.sensitivity = None;
            by_table.table = Some(csv_path.clone());
            by_table.model = ModelSource::new("");
            let a = pipeline::search(&by_model, &mut NoProgress)
                .unwrap()
                .policy
                .plan;
            let b = pipeline::search(&by_table, &mut NoProgress)
                .unwrap()
                .policy
                .plan;
            let bits = |p: &mpq::QuantPlan| {
                p.layers
                    .iter()
                    .map(|l| (l.name.clone(), l.w_bits, l.a_bits))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&a), bits(&b), "{} {budget:?}", a.method);
            let (oa, ob) = (a.omega.unwrap(), b.omega.unwrap());
            assert!((oa - ob).abs() <= 1e-12 * oa, "{} Ω {oa} vs {ob}", a.method);
            assert_eq!(a.bops, b.bops, "{}", a.method);
            assert_eq!(a.size_bytes, b.size_bytes, "{}", a.method);
        }
    }
}

#[test]
fn bad_formats_ratios_and_tables_are_input_errors() {
    let layers: Vec<LayerInfo> = (0..3)
        .map(|i| LayerInfo::linear(i, &format!("l{i}"), 4, 4))
        .collect();
    let opts = |f: Vec<(u32, u32)>| SearchOptions {
        formats: Some(f),
        ..SearchOptions::default()
    };
    let none = Budget::default();
    let err = SearchSpace::new(&layers, &cands(), &none, None, &opts(vec![(3, 3)])).unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("3/3"),
        "{err}"
    );
    for r in [-0.1, 1.5, f64::NAN] {
        let b = Budget {
            size_ratio: Some(r),
            ..Budget::default()
        };
        let err = SearchSpace::new(&layers, &cands(), &b, None, &opts(vec![(4, 4)])).unwrap_err();
        assert!(
            err.is_input_error() && err.to_string().contains("size-ratio"),
            "{err}"
        );
    }
    let head = "layer,w_bits,a_bits,omega,bops\n";
    for (body, says) in [
        ("l0,4,4,1.0,\n", "bops is missing"),
        ("l0,4,4,1.0,NaN\n", "bops \"NaN\""),
        ("l0,4,4,nan,3\n", "omega \"nan\""),
        ("l0,4,4,1.0,3,9\n", "fields"),
        ("l0,4,4,1.0,3\nl0,4,4,2.0,3\n", "duplicate"),
    ] {
        let err = ProblemTable::parse(&format!("{head}{body}"), "p.csv").unwrap_err();
        assert!(err.is_input_error(), "{err}");
        assert!(
            err.to_string().contains(says) && err.to_string().contains("p.csv"),
            "{err}"
        );
    }
    let err = ProblemTable::parse("layer,w_bits,a_bits,bops\nl0,4,4,3\n", "p.csv").unwrap_err();
    assert!(err.to_string().contains("omega"), "{err}");
    // A pin on a layer the table does not have.
    let dir = temp_dir("bad-table");
    let csv = dir.join("p.csv");
    std::fs::write(
        &csv,
        "layer,w_bits,a_bits,omega,bops\nl0,4,4,1,3\nl0,8,8,0.5,9\n",
    )
    .unwrap();
    let mut req = SearchRequest::new(ModelSource::new(""), Method::Ilp);
    req.table = Some(csv.clone());
    req.budget.limits.bops_ratio = Some(0.5);
    req.pins = vec![Pin::parse("conv9=8").unwrap()];
    req.out = Some(dir.join("out.json"));
    let err = pipeline::search(&req, &mut NoProgress).unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("conv9"),
        "{err}"
    );
    assert!(!dir.join("out.json").exists());
    // The same table searches fine without the pin, and takes the only rows it has.
    req.pins.clear();
    let plan = pipeline::search(&req, &mut NoProgress).unwrap().policy.plan;
    assert_eq!((plan.layers[0].w_bits, plan.layers[0].a_bits), (4, 4));
}

#[test]
fn pareto_under_a_bitops_budget_alone_is_exact_and_latency_alone_is_refused() {
    // With one additive budget the frontier's best point within it is the exact optimum: the
    // same Ω as the integer program and as brute force.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for case in 0..10 {
        let layers = random_layers(&mut rng);
        let paired = case % 2 == 0;
        let opts = random_opts(&mut rng, paired);
        let budget = Budget {
            bops_ratio: Some(rng.random_range(0.1..0.9)),
            ..Budget::default()
        };
        let cands = if paired {
            cands()
        } else {
            Candidates {
                w_bits: vec![4, 8],
                a_bits: vec![4, 8],
            }
        };
        let f = omega_fn(&mut rng, layers.len(), false);
        let mut space = SearchSpace::new(&layers, &cands, &budget, None, &opts).unwrap();
        space.set_omega_by(|i, w, a| Ok(Some(f(i, w, a)))).unwrap();
        let r = search::pareto(&space).unwrap();
        assert_eq!(r.axis, "bops");
        let want = brute_force(&space).unwrap();
        let (ilp, _) = search::ilp(&space).unwrap();
        let got = r.plan.omega.unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "case {case}: pareto {got}, brute {want}"
        );
        assert!((ilp.omega.unwrap() - want).abs() <= 1e-9 * want);
    }
    let layers = random_layers(&mut rng);
    let hw = mpq::cost::HardwareModel::from_reference("bitfusion").unwrap();
    let budget = Budget {
        latency_ratio: Some(0.5),
        ..Budget::default()
    };
    let mut space = SearchSpace::new(
        &layers,
        &cands(),
        &budget,
        Some(&hw),
        &SearchOptions::default(),
    )
    .unwrap();
    space
        .set_omega_by(|_, w, a| Ok(Some(1.0 / f64::from(w * a))))
        .unwrap();
    let err = search::pareto(&space).unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("--method ilp"),
        "{err}"
    );
    assert!(!err.to_string().contains("smallest achievable"), "{err}");
}

#[test]
fn a_plan_that_omega_predicts_worse_than_uniform_is_flagged() {
    let dir = temp_dir("against-uniform");
    let model = ModelSource {
        reference: "zoo:lenet5".into(),
        hint: ModelHint::default(),
    };
    let layers = model.open().unwrap().graph.layer_infos().unwrap();
    let sens = lenet_sensitivity(&dir, &layers);
    let search = |method: Method, seed: u64| {
        let mut req = SearchRequest::new(model.clone(), method);
        req.sensitivity = Some(sens.clone());
        req.budget.limits = Budget::avg_bits(3.5);
        req.seed = seed;
        pipeline::search(&req, &mut NoProgress).unwrap()
    };
    // The exact program is never predicted worse than uniform, and says so.
    let ilp = search(Method::Ilp, 0);
    let u = ilp.uniform.clone().expect("a uniform plan fits");
    assert!(ilp.policy.plan.omega.unwrap() <= u.omega);
    assert!(ilp.warnings.is_empty(), "{:?}", ilp.warnings);
    // Built to lose: HAWQ ranks layers by eigenvalue per weight; here fc1's is the largest
    // and fc2's the smallest while fc2's trace is by far the largest, so HAWQ spends the
    // budget on fc1, leaves fc2 the fewest bits, and its plan is worse than uniform on the
    // trace scale.
    let against = sensitivity_with(
        &dir,
        "against.json",
        &layers,
        &[0.1, 0.1, 0.01, 50.0, 0.1],
        &[1e-3, 1e-3, 100.0, 1e-4, 1e-3],
    );
    let mut req = SearchRequest::new(model.clone(), Method::HawqV1);
    req.sensitivity = Some(against);
    req.budget.limits = Budget::avg_bits(3.5);
    let hawq = pipeline::search(&req, &mut NoProgress).unwrap();
    let u = hawq.uniform.clone().unwrap();
    assert!(hawq.policy.plan.omega.unwrap() > u.omega);
    assert_eq!(hawq.warnings.len(), 1, "{:?}", hawq.warnings);
    let w = &hawq.warnings[0];
    assert!(
        w.contains("hawq-v1") && w.contains("higher than uniform"),
        "{w}"
    );
    assert!(w.contains(&format!("W{}A{}", u.w_bits, u.a_bits)), "{w}");
    // Random plans: flagged exactly when their Ω exceeds uniform's at the same budget.
    for seed in 0..12 {
        let r = search(Method::Random { max_tries: 100 }, seed);
        let (o, u) = (r.policy.plan.omega.unwrap(), r.uniform.unwrap());
        assert_eq!(
            r.warnings.is_empty(),
            o <= u.omega * (1.0 + 1e-9),
            "seed {seed}"
        );
    }
    // Uniform itself has no reference.
    assert!(search(Method::Uniform, 0).uniform.is_none());
}
