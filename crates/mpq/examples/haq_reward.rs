//! HAQ (Wang et al., CVPR 2019; docs/algorithms.md §4.2, §4.6; docs/haq.md "Which reward?"
//! and "Does the agent beat random search?"): two measurements of the search on a trained
//! model and a data set.
//!
//! `rank`: how well two cheap rewards order policies by their final fine-tuned accuracy.
//! Policies: the best uniform plan, `random` plans (seeds 0, 1, …) and plans drawn in HAQ's
//! action space (uniform actions, repaired into the budget), all under a BitOps budget equal
//! to uniform `W{b}A{b}`. For each: (1) the PTQ reward (accuracy on the reward split after
//! calibration), (2) the short-fine-tune reward (the reference recipe scaled to the data:
//! SGD lr 0.001, momentum 0.9, weight decay 4e-5, one pass of batch 128 over the agent's
//! training split, then accuracy on the reward split), (3) the final accuracy that
//! `mpq quantize --policy P --finetune-epochs E` reports on the test split. Prints the table
//! and the Spearman rank correlation of (1) and (2) with (3) (average ranks for ties), each
//! with a seeded percentile-bootstrap 95% interval and a Fisher-z interval, and the paired
//! bootstrap interval of their difference.
//!
//! `agent`: HAQ's DDPG agent against random search with the same environment (the same
//! action → bits mapping, repair and evaluator; random search = every episode a warm-up
//! episode), best-so-far accuracy on the reward split per seed; and, for reference, the
//! project's `random` method (plans drawn near the budget, [`SearchSpace::random`]) with
//! the same number of draws.
//!
//! The reward split is the model's training holdout (`mpq train --holdout N`, its seed) when it
//! has one, so the rewards measure images the model was not trained on.
//!
//! ```sh
//! cargo run --release -p mpq --example haq_reward -- rank lenet5.safetensors \
//!     [--data mnist10k] [--policies 30] [--bits 3] [--final-epochs 1] [--out DIR]
//! cargo run --release -p mpq --example haq_reward -- agent lenet5.safetensors \
//!     [--data mnist10k] [--bits 3] [--episodes 200] [--warmup 20] [--seeds 3]
//! ```
#![expect(
    clippy::print_stdout,
    reason = "a measurement report printed to the terminal"
)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use mpq::Versioned;
use mpq::cost::CostTable;
use mpq::data::DataSplits;
use mpq::graph::LayerInfo;
use mpq::model::Model;
use mpq::pipeline::{
    FinetuneOptions, ModelSource, QuantizeRequest, RewardConfig, RewardEvaluator, load_data,
    quantize,
};
use mpq::plan::{BitWidth, QuantPlan};
use mpq::progress::NoProgress;
use mpq::quant::CalibrationConfig;
use mpq::search::haq::{self, HaqConfig, PlanEvaluator};
use mpq::search::rl::DdpgConfig;
use mpq::search::{Budget, Candidates, Policy, SearchOptions, SearchSpace};
use mpq::stats::{mean_sd, spearman, spearman_interval};
use mpq::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The value after `name` on the command line, parsed (`None` when absent or unparsable).
fn flag<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// Bootstrap resamples of the Spearman intervals.
const BOOTSTRAP: usize = 2000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || Error::Usage("usage: haq_reward rank|agent MODEL.safetensors [flags]".into());
    let mode = args.get(1).ok_or_else(usage)?.clone();
    let model_path = args.get(2).ok_or_else(usage)?.clone();
    let data: String = flag("--data").unwrap_or_else(|| "mnist10k".to_string());
    let bits: BitWidth = flag("--bits").unwrap_or(3);
    let setup = Setup::new(&model_path, &data, bits)?;
    match mode.as_str() {
        "rank" => rank(&setup, &model_path),
        "agent" => agent(&setup),
        _ => Err(usage()),
    }
}

/// The model, its data, the reward split and the search space's ingredients.
struct Setup {
    model: Model,
    layers: Vec<LayerInfo>,
    splits: DataSplits,
    data: String,
    budget: Budget,
    cands: Candidates,
    /// Reward split size and seed.
    val: (usize, u64),
}

impl Setup {
    fn new(model_path: &str, data: &str, bits: BitWidth) -> Result<Setup> {
        let model = ModelSource::new(model_path).open()?;
        let layers = model.graph.layer_infos()?;
        let splits = load_data(data, 0)?;
        let val = model.training_holdout(data).unwrap_or((2000, 0));
        let bops = CostTable::new(&layers, &QuantPlan::uniform(&layers, bits, bits))?.bops;
        let budget = Budget {
            max_bops_g: Some(bops / 1e9),
            ..Budget::default()
        };
        let cands = Candidates {
            w_bits: (2..=8).collect(),
            a_bits: (2..=8).collect(),
        };
        println!(
            "model {model_path}: {} layers; data {data}: {} training samples, {} test; reward \
             split {} samples (seed {}); budget BitOps <= uniform W{bits}A{bits} = {:.4} G",
            layers.len(),
            splits.train.len(),
            splits.test.len(),
            val.0,
            val.1,
            bops / 1e9
        );
        Ok(Setup {
            model,
            layers,
            splits,
            data: data.to_string(),
            budget,
            cands,
            val,
        })
    }

    fn space(&self) -> Result<SearchSpace<'_>> {
        SearchSpace::new(
            &self.layers,
            &self.cands,
            &self.budget,
            None,
            &SearchOptions::default(),
        )
    }

    /// The agent's training split: the training data minus the reward split.
    fn agent_train_len(&self) -> usize {
        self.splits.train.len() - self.val.0
    }

    /// The reward evaluator with `finetune_steps` SGD steps of batch 128.
    fn evaluator(&self, finetune_steps: usize) -> Result<RewardEvaluator<'_>> {
        let norm = self.model.normalization_or(&self.splits.normalization);
        let cfg = RewardConfig {
            val_samples: self.val.0,
            seed: self.val.1,
            calibration: CalibrationConfig::default(),
            finetune_steps,
            finetune_batch_size: 128,
            finetune_lr: 0.001,
            ..RewardConfig::default()
        };
        RewardEvaluator::new(&self.model, &self.splits.train, &norm, cfg)
    }

    /// HAQ's settings: the reference defaults with `episodes`, `warmup` and the agent `seed`.
    fn haq_config(
        &self,
        episodes: usize,
        warmup: usize,
        seed: u64,
        ev: &RewardEvaluator<'_>,
    ) -> HaqConfig {
        HaqConfig {
            ddpg: DdpgConfig {
                warmup_episodes: warmup,
                replay_capacity: 128 * self.layers.len(),
                seed,
                ..DdpgConfig::default()
            },
            episodes,
            evaluator: ev.settings(),
            ..HaqConfig::default()
        }
    }
}

/// `ceil(n / d)`.
fn div_ceil(n: usize, d: usize) -> usize {
    n.div_ceil(d.max(1))
}

fn bits_of(plan: &QuantPlan) -> String {
    plan.layers
        .iter()
        .map(|l| format!("{}/{}", l.w_bits, l.a_bits))
        .collect::<Vec<_>>()
        .join(" ")
}

/// HAQ-space plans: the repaired plans of `n` uniformly random episodes.
fn haq_random_plans(setup: &Setup, n: usize, seed: u64) -> Result<Vec<QuantPlan>> {
    let space = setup.space()?;
    let mut ev = setup.evaluator(0)?;
    let cfg = setup.haq_config(n, n, seed, &ev);
    let r = haq::haq(&space, &mut ev, &cfg, None, |_, _| Ok(()))?;
    r.history
        .episodes
        .iter()
        .map(|e| {
            let choice = space
                .groups()
                .iter()
                .map(|g| {
                    let [w, a] = e.bits[g.layers[0]];
                    g.choices
                        .iter()
                        .position(|c| (c.w_bits, c.a_bits) == (w, a))
                        .ok_or_else(|| Error::config("haq", "episode bits are not a candidate"))
                })
                .collect::<Result<Vec<usize>>>()?;
            space.plan(&choice, "haq-random", Instant::now())
        })
        .collect()
}

fn rank(setup: &Setup, model_path: &str) -> Result<()> {
    let n_policies: usize = flag("--policies").unwrap_or(30);
    let final_epochs: usize = flag("--final-epochs").unwrap_or(1);
    let final_seed: u64 = flag("--final-seed").unwrap_or(0);
    let out: PathBuf = flag("--out").unwrap_or_else(|| PathBuf::from("runs/haq_reward"));
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let space = setup.space()?;

    // The policies: uniform, HAQ-space draws (a quarter), `random` plans for the rest.
    let mut plans = vec![space.uniform()?];
    let n_haq = n_policies / 4;
    plans.extend(haq_random_plans(setup, n_haq, 100)?);
    let mut seen: HashSet<String> = plans.iter().map(bits_of).collect();
    let mut seed = 0u64;
    while plans.len() < n_policies {
        let p = space.random(seed, 1000)?;
        seed += 1;
        if seen.insert(bits_of(&p)) {
            plans.push(p);
        }
        if seed > 10 * n_policies as u64 {
            return Err(Error::config("policies", "too few distinct random plans"));
        }
    }
    plans.truncate(n_policies);

    let steps = div_ceil(setup.agent_train_len(), 128);
    println!(
        "short fine-tune: {steps} steps of 128 (one pass over {} samples); final: mpq quantize \
         --finetune-epochs {final_epochs} --seed {final_seed}",
        setup.agent_train_len()
    );
    let mut ptq_ev = setup.evaluator(0)?;
    let mut ft_ev = setup.evaluator(steps)?;
    let mut rows = Vec::new();
    println!(
        "\n| # | method | bits w/a per layer | GBOPs | PTQ reward % | 1-pass reward % | final % |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut csv = String::from("index,method,bits,gbops,ptq,short_ft,final,policy\n");
    for (i, plan) in plans.iter().enumerate() {
        let ptq = ptq_ev.accuracy(plan)?;
        let ft = ft_ev.accuracy(plan)?;
        let policy = out.join(format!("p{i:02}.json"));
        Policy::new(plan.clone()).save(&policy)?;
        let mut req = QuantizeRequest::new(
            ModelSource::new(model_path),
            &policy,
            setup.data.clone(),
            out.join(format!("q{i:02}")),
        );
        req.finetune = FinetuneOptions {
            epochs: final_epochs,
            lr: Some(0.01),
            ..FinetuneOptions::default()
        };
        req.seed = final_seed;
        let s = quantize(&req, &mut NoProgress)?;
        let fin = 100.0 * s.after_finetune.accuracy;
        let gbops = plan.bops.unwrap_or(f64::NAN) / 1e9;
        println!(
            "| {i} | {} | {} | {gbops:.4} | {ptq:.2} | {ft:.2} | {fin:.2} |",
            plan.method,
            bits_of(plan)
        );
        csv.push_str(&format!(
            "{i},{},{},{gbops},{ptq},{ft},{fin},{}\n",
            plan.method,
            bits_of(plan),
            policy.display()
        ));
        rows.push((ptq, ft, fin));
    }
    let csv_path = out.join("rank.csv");
    std::fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))?;

    let ptq: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let ft: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let fin: Vec<f64> = rows.iter().map(|r| r.2).collect();
    let n = rows.len();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.2}–{hi:.2}%")
    };
    println!(
        "\nranges: PTQ {}, 1-pass {}, final {}",
        range(&ptq),
        range(&ft),
        range(&fin)
    );
    let [ci_p, ci_f, ci_d] = bootstrap(&ptq, &ft, &fin, 0);
    let rp = spearman(&ptq, &fin);
    let rf = spearman(&ft, &fin);
    println!("\nSpearman with the final accuracy, n = {n} (95% intervals):");
    println!("| reward | ρ | bootstrap | Fisher z |");
    println!("| --- | --- | --- | --- |");
    for (name, r, ci) in [("PTQ", rp, ci_p), ("one-pass fine-tune", rf, ci_f)] {
        let fz = spearman_interval(r, n).unwrap_or((f64::NAN, f64::NAN));
        println!(
            "| {name} | {r:.3} | [{:.3}, {:.3}] | [{:.3}, {:.3}] |",
            ci.0, ci.1, fz.0, fz.1
        );
    }
    println!(
        "difference ρ(1-pass) − ρ(PTQ) = {:.3}, paired bootstrap 95% [{:.3}, {:.3}]",
        rf - rp,
        ci_d.0,
        ci_d.1
    );
    println!("table: {}", csv_path.display());
    Ok(())
}

/// Seeded percentile-bootstrap 95% intervals of ρ(a, f), ρ(b, f) and ρ(b, f) − ρ(a, f),
/// resampling policies (paired).
fn bootstrap(a: &[f64], b: &[f64], f: &[f64], seed: u64) -> [(f64, f64); 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = f.len();
    let (mut ra, mut rb, mut rd) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..BOOTSTRAP {
        let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
        let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        let (x, y, z) = (pick(a), pick(b), pick(f));
        let (p, q) = (spearman(&x, &z), spearman(&y, &z));
        if p.is_finite() && q.is_finite() {
            ra.push(p);
            rb.push(q);
            rd.push(q - p);
        }
    }
    let ci = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        (at(0.025), at(0.975))
    };
    [ci(ra), ci(rb), ci(rd)]
}

fn agent(setup: &Setup) -> Result<()> {
    let episodes: usize = flag("--episodes").unwrap_or(200);
    let warmup: usize = flag("--warmup").unwrap_or(20);
    let seeds: u64 = flag("--seeds").unwrap_or(3);
    let finetune_steps: usize = flag("--finetune-steps").unwrap_or(0);
    let marks: Vec<usize> = [25, 50, 100, 200, 400, 600]
        .into_iter()
        .filter(|&m| m <= episodes)
        .collect();
    let space = setup.space()?;
    // best-so-far accuracy curves: [method][seed][episode].
    let mut curves: [Vec<Vec<f64>>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for seed in 0..seeds {
        for (m, name) in ["agent", "random"].iter().enumerate() {
            let mut ev = setup.evaluator(finetune_steps)?;
            let w = if m == 0 { warmup } else { episodes };
            let cfg = setup.haq_config(episodes, w, seed, &ev);
            let start = Instant::now();
            let r = haq::haq(&space, &mut ev, &cfg, None, |_, _| Ok(()))?;
            let h = &r.history;
            let curve: Vec<f64> = h
                .episodes
                .iter()
                .map(|e| h.fp_accuracy + e.best_reward / cfg.reward_scale)
                .collect();
            let best = h.best_episode.and_then(|b| h.episodes.get(b));
            println!(
                "seed {seed} {name:>6}: best {:.2}% at episode {} ({}), {} distinct plans \
                 evaluated, {:.0} s; FP {:.2}%",
                curve.last().copied().unwrap_or(f64::NAN),
                h.best_episode.unwrap_or(0),
                best.map(|b| {
                    b.bits
                        .iter()
                        .map(|[w, a]| format!("{w}/{a}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
                ev.evaluations(),
                start.elapsed().as_secs_f64(),
                h.fp_accuracy
            );
            curves[m].push(curve);
        }
        // The project's `random` method: each draw lowered into the budget and raised back
        // to within 2% of it (a different sampler from HAQ's action space and repair).
        let mut ev = setup.evaluator(finetune_steps)?;
        let fp = ev.fp_accuracy()?;
        let start = Instant::now();
        let mut seen = std::collections::HashMap::new();
        let mut best = f64::NEG_INFINITY;
        let mut curve = Vec::with_capacity(episodes);
        for i in 0..episodes as u64 {
            let plan = space.random(seed * 1_000_000 + i, 1000)?;
            let key = bits_of(&plan);
            let acc = match seen.get(&key) {
                Some(&a) => a,
                None => {
                    let a = ev.accuracy(&plan)?;
                    seen.insert(key, a);
                    a
                }
            };
            best = best.max(acc);
            curve.push(best);
        }
        println!(
            "seed {seed} random method: best {best:.2}%, {} distinct plans evaluated, {:.0} s; \
             FP {fp:.2}%",
            seen.len(),
            start.elapsed().as_secs_f64()
        );
        curves[2].push(curve);
    }
    println!(
        "\nbest-so-far accuracy (%) on the reward split after E episodes, mean ± sd over {seeds} seeds (per seed in brackets):"
    );
    let head: Vec<String> = marks.iter().map(|m| format!("E = {m}")).collect();
    println!("| method | {} |", head.join(" | "));
    println!("| --- |{}", " --- |".repeat(marks.len()));
    let names = [
        "DDPG agent",
        "random actions, HAQ repair",
        "`random` method",
    ];
    for (m, name) in names.iter().enumerate() {
        let cells: Vec<String> = marks
            .iter()
            .map(|&e| {
                let v: Vec<f64> = curves[m].iter().map(|c| c[e - 1]).collect();
                let (mu, sd) = mean_sd(&v);
                let per: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
                format!("{mu:.2} ± {sd:.2} ({})", per.join(", "))
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}
