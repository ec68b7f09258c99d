//! Does HAWQ-V2's Ω (Dong et al. NeurIPS 2020, docs/algorithms.md §2.4–§2.6) predict what quantization costs?
//! With real sensitivities from `mpq analyze` on a trained model: (1) over random plans of
//! (nearly) equal average weight bits, the Spearman correlation between a plan's total Ω and its
//! measured post-training loss increase on the test split; (2) the `pareto`, `ilp` and
//! `hawq-v1` plans at an average-bits budget against the uniform plan at those bits and against
//! random plans of the same size (PTQ accuracy, no fine-tuning).
//!
//! ```text
//! mpq analyze --model M --data mnist10k --metric all --out S.json
//! cargo run --release -p mpq --example omega_validation -- --model M --sensitivity S.json
//! ```
#![expect(
    clippy::print_stdout,
    reason = "an experiment report printed to the terminal"
)]

use std::path::PathBuf;

use mpq::Versioned;
use mpq::data::{self, Dataset, LoadOptions, Normalization};
use mpq::graph::{Graph, LayerInfo, NoHooks};
use mpq::model::{Model, ModelHint};
use mpq::plan::{BitWidth, QuantPlan, WeightRange};
use mpq::quant::{CalibrationConfig, PlanHooks, act_errors, prepare_graph, weight_errors};
use mpq::search::{
    Budget, Candidates, OmegaConfig, OmegaMetric, OmegaTable, SearchOptions, SearchSpace, hawq_v1,
    ilp, pareto,
};
use mpq::sensitivity::SensitivityTable;
use mpq::stats::{pearson, spearman};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Args {
    model: PathBuf,
    sensitivity: PathBuf,
    data: String,
    plans: usize,
    baseline_plans: usize,
    avg_bits: f64,
    window: f64,
    seed: u64,
    weight_range: WeightRange,
}

fn parse() -> Args {
    let mut a = Args {
        model: PathBuf::new(),
        sensitivity: PathBuf::new(),
        data: "mnist10k".into(),
        plans: 30,
        baseline_plans: 10,
        avg_bits: 3.0,
        window: 0.25,
        seed: 0,
        weight_range: WeightRange::MaxAbs,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--model" => a.model = v.into(),
            "--sensitivity" => a.sensitivity = v.into(),
            "--data" => a.data = v,
            "--plans" => a.plans = v.parse().expect("--plans N"),
            "--baseline-plans" => a.baseline_plans = v.parse().expect("--baseline-plans N"),
            "--avg-bits" => a.avg_bits = v.parse().expect("--avg-bits B"),
            "--window" => a.window = v.parse().expect("--window W"),
            "--seed" => a.seed = v.parse().expect("--seed S"),
            "--weight-range" => {
                a.weight_range = match v.as_str() {
                    "max-abs" => WeightRange::MaxAbs,
                    "mse" => WeightRange::Mse,
                    _ => panic!("--weight-range max-abs|mse"),
                }
            }
            _ => panic!("unknown flag {k}"),
        }
    }
    a
}

fn avg_w_bits(layers: &[LayerInfo], bits: &[BitWidth]) -> f64 {
    let n: f64 = layers.iter().map(|l| l.params as f64).sum();
    layers
        .iter()
        .zip(bits)
        .map(|(l, &b)| l.params as f64 * f64::from(b))
        .sum::<f64>()
        / n
}

/// `plan` with every layer's weight range set to `r`.
fn ranged(mut plan: QuantPlan, r: WeightRange) -> QuantPlan {
    for l in &mut plan.layers {
        l.weight_range = r;
    }
    plan
}

fn plan_of(
    layers: &[LayerInfo],
    w: &[BitWidth],
    a: &[BitWidth],
    method: &str,
    r: WeightRange,
) -> QuantPlan {
    let mut p = ranged(QuantPlan::uniform(layers, 8, 8), r);
    for ((l, &wb), &ab) in p.layers.iter_mut().zip(w).zip(a) {
        l.w_bits = wb;
        l.a_bits = ab;
    }
    p.method = method.into();
    p
}

struct Ctx<'a> {
    graph: &'a Graph,
    calib: &'a Dataset,
    test: &'a Dataset,
    norm: &'a Normalization,
}

/// PTQ test accuracy and loss of `plan`.
fn ptq(c: &Ctx, plan: &QuantPlan) -> mpq::Result<(f64, f64)> {
    let g = prepare_graph(c.graph, plan)?;
    let mut hooks = PlanHooks::calibrate(&g, plan, c.calib, c.norm, &CalibrationConfig::default())?;
    let s = mpq::train::evaluate(&g, c.test, c.norm, 500, &mut hooks)?;
    Ok((s.accuracy, s.loss))
}

/// Random weight bits whose average lies in `[lo, hi]`, by rejection.
fn draw(
    rng: &mut ChaCha8Rng,
    layers: &[LayerInfo],
    cands: &[BitWidth],
    lo: f64,
    hi: f64,
) -> Vec<BitWidth> {
    loop {
        let w: Vec<BitWidth> = layers
            .iter()
            .map(|_| cands[rng.random_range(0..cands.len())])
            .collect();
        let avg = avg_w_bits(layers, &w);
        if (lo..=hi).contains(&avg) {
            return w;
        }
    }
}

fn main() -> mpq::Result<()> {
    let a = parse();
    let dev = candle::Device::Cpu;
    let model = Model::load(&a.model, &ModelHint::default(), &dev)?;
    let layers = model.graph.layer_infos()?;
    let splits = data::load(&a.data, &LoadOptions::default())?;
    let norm = model.normalization_or(&splits.normalization);
    let ctx = Ctx {
        graph: &model.graph,
        calib: &splits.train,
        test: &splits.test,
        norm: &norm,
    };
    let w_cands: Vec<BitWidth> = vec![2, 3, 4, 5, 6, 8];
    let template = ranged(QuantPlan::uniform(&layers, 8, 8), a.weight_range);
    let mut sens = SensitivityTable::load(&a.sensitivity)?;
    for (name, row) in weight_errors(&model.graph, &template, &w_cands)? {
        for (b, e) in row {
            sens.set_weight_error(&name, b, e);
        }
    }
    // E‖Q_b(a) − a‖² with each width's calibrated range (docs/algorithms.md §2.6), on the calibration samples.
    let act = act_errors(
        &model.graph,
        &template,
        &splits.train,
        &norm,
        &CalibrationConfig::default(),
        &[2, 3, 4, 5, 6, 8],
    )?;
    for row in &mut sens.layers {
        if let Some(e) = act.get(&row.name) {
            row.act_error = Some(e.clone());
        }
    }
    let fp = mpq::train::evaluate(&model.graph, &splits.test, &norm, 500, &mut NoHooks)?;
    println!(
        "model {} ({} layers), FP32 test accuracy {:.2}%, loss {:.4}\n",
        a.model.display(),
        layers.len(),
        100.0 * fp.accuracy,
        fp.loss
    );

    // (0) Per layer: Ω_i(b) against the loss increase of quantizing that layer alone.
    let table = OmegaTable::new(&layers, &sens, OmegaConfig::default())?;
    println!("| layer | bits | Ω_i(b) | Δloss, this layer alone (others FP32) |");
    println!("| --- | --- | --- | --- |");
    let fp32_acts = vec![32; layers.len()];
    for (i, l) in layers.iter().enumerate() {
        for b in [2, 3, 4] {
            let mut w = vec![32; layers.len()];
            w[i] = b;
            let plan = plan_of(&layers, &w, &fp32_acts, "single", a.weight_range);
            let (_, loss) = ptq(&ctx, &plan)?;
            println!(
                "| {} | {b} | {:.3e} | {:.3e} |",
                l.name,
                table.omega(i, b, 32)?,
                loss - fp.loss
            );
        }
    }
    println!();

    // (1) Spearman(Ω, ΔL) over random plans of nearly equal average weight bits.
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let (lo, hi) = (a.avg_bits - a.window, a.avg_bits + a.window);
    println!(
        "| experiment | plans | Spearman(Ω, Δloss) | Spearman(Ω_w only, Δloss) | Pearson(Ω, Δloss) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (label, a_cands) in [
        ("weights random, A8", vec![8]),
        ("weights and activations {4,8} random", vec![4, 8]),
    ] {
        let table = OmegaTable::new(&layers, &sens, OmegaConfig::default())?;
        let wonly = OmegaTable::new(
            &layers,
            &sens,
            OmegaConfig {
                act_weight: 0.0,
                ..OmegaConfig::default()
            },
        )?;
        let (mut om, mut omw, mut dl) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.plans {
            let w = draw(&mut rng, &layers, &w_cands, lo, hi);
            let act: Vec<BitWidth> = layers
                .iter()
                .map(|_| a_cands[rng.random_range(0..a_cands.len())])
                .collect();
            let plan = plan_of(&layers, &w, &act, "random", a.weight_range);
            let (_, loss) = ptq(&ctx, &plan)?;
            om.push(table.plan_omega(&layers, &plan)?);
            omw.push(wonly.plan_omega(&layers, &plan)?);
            dl.push(loss - fp.loss);
        }
        println!(
            "| {label}, avg w-bits in [{lo}, {hi}] | {} | {:.3} | {:.3} | {:.3} |",
            a.plans,
            spearman(&om, &dl),
            spearman(&omw, &dl),
            pearson(&om, &dl)
        );
    }

    // (2) Searched plans at the budget vs uniform and random plans of the same size.
    let budget = Budget {
        avg_bits: Some(a.avg_bits),
        ..Budget::default()
    };
    let cands = Candidates {
        w_bits: w_cands.clone(),
        a_bits: vec![8],
    };
    println!(
        "\n| plan (avg w-bits ≤ {}, A8) | avg w-bits | Ω | PTQ accuracy | PTQ loss |",
        a.avg_bits
    );
    println!("| --- | --- | --- | --- | --- |");
    let table = OmegaTable::new(&layers, &sens, OmegaConfig::default())?;
    let mut space = SearchSpace::new(&layers, &cands, &budget, None, &SearchOptions::default())?;
    space.set_omega(&table)?;
    let mut rows: Vec<(String, QuantPlan)> = vec![
        ("pareto (HAWQ-V2)".into(), pareto(&space)?.plan),
        ("ilp".into(), ilp(&space)?.0),
    ];
    if layers.iter().all(|l| {
        sens.layer(&l.name)
            .is_some_and(|r| r.top_eigenvalue.is_some())
    }) {
        let eig = OmegaTable::new(
            &layers,
            &sens,
            OmegaConfig {
                metric: OmegaMetric::Eigen,
                ..OmegaConfig::default()
            },
        )?;
        let mut s2 = SearchSpace::new(&layers, &cands, &budget, None, &SearchOptions::default())?;
        s2.set_omega(&eig)?;
        rows.push(("hawq-v1".into(), hawq_v1(&s2, &eig)?));
    }
    let ub = a.avg_bits.floor() as BitWidth;
    rows.push((
        format!("uniform W{ub}A8"),
        QuantPlan::uniform(&layers, ub, 8),
    ));
    for (name, plan) in &mut rows {
        *plan = ranged(plan.clone(), a.weight_range);
        let bits: Vec<BitWidth> = plan.layers.iter().map(|l| l.w_bits).collect();
        let (acc, loss) = ptq(&ctx, plan)?;
        println!(
            "| {name} ({}) | {:.3} | {:.4e} | {:.2}% | {:.4} |",
            bits.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(","),
            avg_w_bits(&layers, &bits),
            table.plan_omega(&layers, plan)?,
            100.0 * acc,
            loss
        );
    }
    let searched = avg_w_bits(
        &layers,
        &rows[0]
            .1
            .layers
            .iter()
            .map(|l| l.w_bits)
            .collect::<Vec<_>>(),
    );
    let (mut accs, mut losses) = (Vec::new(), Vec::new());
    let int8_acts = vec![8; layers.len()];
    for _ in 0..a.baseline_plans {
        let w = draw(&mut rng, &layers, &w_cands, searched - 0.1, searched);
        let plan = plan_of(&layers, &w, &int8_acts, "random", a.weight_range);
        let (acc, loss) = ptq(&ctx, &plan)?;
        accs.push(acc);
        losses.push(loss);
    }
    let n = accs.len() as f64;
    let mean = accs.iter().sum::<f64>() / n;
    let sd = (accs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    println!(
        "| mean of {} random plans, avg w-bits in [{:.3}, {:.3}] | - | - | {:.2}% ± {:.2} (min {:.2}%, max {:.2}%) | {:.4} |",
        a.baseline_plans,
        searched - 0.1,
        searched,
        100.0 * mean,
        100.0 * sd,
        100.0 * accs.iter().cloned().fold(f64::INFINITY, f64::min),
        100.0 * accs.iter().cloned().fold(0.0, f64::max),
        losses.iter().sum::<f64>() / n
    );
    Ok(())
}
