//! From measured cells to the comparison (docs/compare.md, "How the numbers are made"):
//! intervals from a seeded test-set bootstrap (paired between two plans, which are scored on
//! the same samples) widened by the spread over fine-tuning seeds, the budget's uniform
//! reference, the verdicts, and Ω's rank correlation over the random plans.

use super::{
    Axis, BETTER, BudgetResult, CompareFile, Correlation, FinetuneCell, FinetuneEstimate, Interval,
    PlanCell, RandomPoint, Row, RowKind, Setup, UniformPoint, Verdict, WITHIN_NOISE, WORSE,
};
use crate::Result;
use crate::stats::{bootstrap_interval, mean_sd, spearman, spearman_interval};

/// A plan with its fine-tunings.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredPlan {
    /// The plan's cell.
    pub cell: PlanCell,
    /// Its fine-tunings, in seed order.
    pub finetuned: Vec<FinetuneCell>,
}

/// One budget's measured plans.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetInput {
    /// Short key.
    pub key: String,
    /// As a user writes it.
    pub label: String,
    /// The axis of its cost.
    pub axis: Axis,
    /// The limit on that axis.
    pub limit: f64,
    /// The methods' (and user plans') cells, in the requested order.
    pub methods: Vec<MeasuredPlan>,
    /// The random plans (empty when random is not compared).
    pub random: Vec<MeasuredPlan>,
}

/// Everything [`analyse`] reads.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareInput {
    /// The model, the data and how plans were measured.
    pub setup: Setup,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// The budgets.
    pub budgets: Vec<BudgetInput>,
    /// Every uniform plan measured.
    pub uniform: Vec<MeasuredPlan>,
}

/// A plan's per-sample outcomes: after post-training quantization, and per fine-tuning.
struct Samples {
    /// Per sample, 1 when correct after post-training quantization (a mean over plans when
    /// several are pooled).
    ptq: Vec<f64>,
    /// Per sample, the mean over fine-tunings of being correct (empty without them).
    finetuned: Vec<f64>,
    accuracies: Vec<f64>,
}

impl Samples {
    fn of(p: &MeasuredPlan) -> Result<Option<Samples>> {
        let Some(ptq) = &p.cell.ptq else {
            return Ok(None);
        };
        let source = format!("cell {}/{}", p.cell.budget, p.cell.name);
        let ptq = ptq.outcomes(&source)?;
        Samples::with(ptq, &p.finetuned, &source).map(Some)
    }

    fn with(ptq: Vec<bool>, fts: &[FinetuneCell], source: &str) -> Result<Samples> {
        let ptq = as_f64(&ptq);
        let mut finetuned = vec![0.0; if fts.is_empty() { 0 } else { ptq.len() }];
        for f in fts {
            let o = f.scores.outcomes(source)?;
            if o.len() != ptq.len() {
                return Err(crate::Error::corrupt(
                    source,
                    "fine-tuned and post-training scores count different test samples",
                ));
            }
            for (v, c) in finetuned.iter_mut().zip(o) {
                *v += c as u8 as f64 / fts.len() as f64;
            }
        }
        let accuracies = fts.iter().map(|f| f.scores.accuracy).collect();
        Ok(Samples {
            ptq,
            finetuned,
            accuracies,
        })
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The bootstrap interval of the mean of `v` about its mean.
fn interval(v: &[f64], resamples: usize, seed: u64) -> Interval {
    let m = mean(v);
    let (lo, hi) = bootstrap_interval(v.len(), resamples, seed, |idx| {
        idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len().max(1) as f64
    })
    .unwrap_or((m, m));
    Interval { mean: m, lo, hi }
}

fn as_f64(v: &[bool]) -> Vec<f64> {
    v.iter().map(|&c| c as u8 as f64).collect()
}

/// Widens `test` (an interval about its mean) by a seed spread `seed_half` (a 95% half-width).
fn widen(test: Interval, seed_half: f64) -> Interval {
    let down = (test.mean - test.lo).hypot(seed_half);
    let up = (test.hi - test.mean).hypot(seed_half);
    Interval {
        mean: test.mean,
        lo: test.mean - down,
        hi: test.mean + up,
    }
}

fn seed_half(accuracies: &[f64]) -> f64 {
    let (_, sd) = mean_sd(accuracies);
    if accuracies.len() < 2 || !sd.is_finite() {
        return 0.0;
    }
    1.96 * sd / (accuracies.len() as f64).sqrt()
}

fn finetune_estimate(s: &Samples, resamples: usize, seed: u64) -> Option<FinetuneEstimate> {
    if s.accuracies.is_empty() {
        return None;
    }
    let (m, sd) = mean_sd(&s.accuracies);
    let test = interval(&s.finetuned, resamples, seed);
    Some(FinetuneEstimate {
        accuracies: s.accuracies.clone(),
        mean: m,
        sd: if sd.is_finite() { sd } else { 0.0 },
        test: Interval { mean: m, ..test },
        total: widen(Interval { mean: m, ..test }, seed_half(&s.accuracies)),
    })
}

fn word(i: &Interval) -> String {
    if i.lo > 0.0 {
        BETTER
    } else if i.hi < 0.0 {
        WORSE
    } else {
        WITHIN_NOISE
    }
    .to_string()
}

/// `plan` against `reference` on the same test samples.
fn verdict(
    plan: &Samples,
    reference: &Samples,
    name: &str,
    resamples: usize,
    seed: u64,
) -> Verdict {
    let d: Vec<f64> = (plan.ptq.iter().zip(&reference.ptq))
        .map(|(a, b)| a - b)
        .collect();
    let ptq = interval(&d, resamples, seed);
    let finetuned = (!plan.finetuned.is_empty() && !reference.finetuned.is_empty()).then(|| {
        let d: Vec<f64> = (plan.finetuned.iter().zip(&reference.finetuned))
            .map(|(a, b)| a - b)
            .collect();
        let test = interval(&d, resamples, seed);
        let spread = seed_half(&plan.accuracies).hypot(seed_half(&reference.accuracies));
        widen(test, spread)
    });
    Verdict {
        against: name.to_string(),
        ptq_verdict: word(&ptq),
        ptq,
        finetuned_verdict: finetuned.as_ref().map(word),
        finetuned,
    }
}

/// The accuracy a plan is ranked by: fine-tuned when it was, else post-training.
fn headline(s: &Samples) -> f64 {
    if s.accuracies.is_empty() {
        mean(&s.ptq)
    } else {
        mean(&s.accuracies)
    }
}

/// A measured plan with its per-sample outcomes.
type Scored = (MeasuredPlan, Samples);

/// The uniform plan at the highest cost within `limit` and at the lowest above it (ties: the
/// more accurate).
fn neighbours(uniform: &[Scored], axis: Axis, limit: f64) -> (Option<&Scored>, Option<&Scored>) {
    let tol = 1e-9 * limit.abs().max(1e-12);
    let cost = |u: &Scored| u.0.cell.costs.map_or(f64::NAN, |c| c.on(axis));
    let pick = |below: bool| {
        let mut best: Option<&Scored> = None;
        for u in uniform.iter().filter(|u| cost(u).is_finite()) {
            let c = cost(u);
            if below != (c <= limit + tol) {
                continue;
            }
            best = match best {
                None => Some(u),
                Some(b) => {
                    let (cb, better_cost) =
                        (cost(b), if below { c > cost(b) } else { c < cost(b) });
                    let tie = (c - cb).abs() <= tol;
                    if (!tie && better_cost) || (tie && headline(&u.1) > headline(&b.1)) {
                        Some(u)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        best
    };
    (pick(true), pick(false))
}

fn row(
    p: &MeasuredPlan,
    s: Option<&Samples>,
    kind: RowKind,
    axis: Axis,
    input: &CompareInput,
) -> Row {
    let seed = input.seed;
    Row {
        name: p.cell.name.clone(),
        kind,
        costs: p.cell.costs,
        cost: p.cell.costs.map(|c| c.on(axis)).filter(|c| c.is_finite()),
        omega: p.cell.omega,
        ptq: s.map(|s| interval(&s.ptq, input.setup.resamples, seed)),
        finetuned: s.and_then(|s| finetune_estimate(s, input.setup.resamples, seed)),
        verdict: None,
        beats_random: None,
        error: p.cell.error.clone(),
    }
}

/// The comparison of the measured cells of `input`.
pub fn analyse(input: &CompareInput) -> Result<CompareFile> {
    let (resamples, seed) = (input.setup.resamples, input.seed);
    let mut uniform = Vec::new();
    for u in &input.uniform {
        if let Some(s) = Samples::of(u)? {
            uniform.push((u.clone(), s));
        }
    }
    let mut budgets = Vec::new();
    for b in &input.budgets {
        let (below, above) = neighbours(&uniform, b.axis, b.limit);
        let reference = below.map(|(p, s)| (p.cell.name.clone(), s));
        let mut random_samples = Vec::new();
        for p in &b.random {
            if let Some(s) = Samples::of(p)? {
                random_samples.push((p, s));
            }
        }
        let random_ptq: Vec<f64> = (random_samples.iter()).map(|(_, s)| mean(&s.ptq)).collect();
        let mut rows = Vec::new();
        for p in &b.methods {
            let s = Samples::of(p)?;
            let mut r = row(p, s.as_ref(), RowKind::Method, b.axis, input);
            if let (Some(s), Some((name, u))) = (&s, &reference) {
                r.verdict = Some(verdict(s, u, name, resamples, seed));
            }
            if let (Some(s), false) = (&s, random_ptq.is_empty()) {
                let a = mean(&s.ptq);
                let beaten: f64 = (random_ptq.iter())
                    .map(|&x| {
                        if x < a {
                            1.0
                        } else if x == a {
                            0.5
                        } else {
                            0.0
                        }
                    })
                    .sum();
                r.beats_random = Some(beaten / random_ptq.len() as f64);
            }
            rows.push(r);
        }
        let mut random = Vec::new();
        if !b.random.is_empty() {
            random = (random_samples.iter())
                .map(|(p, s)| RandomPoint {
                    cost: p.cell.costs.map_or(f64::NAN, |c| c.on(b.axis)),
                    omega: p.cell.omega,
                    ptq_accuracy: mean(&s.ptq),
                    loss_increase: p.cell.ptq.as_ref().map_or(f64::NAN, |x| x.loss)
                        - input.setup.fp32_loss,
                    finetuned_accuracy: (!s.accuracies.is_empty()).then(|| s.accuracies[0]),
                })
                .collect();
            rows.push(random_row(b, &random_samples, &reference, input));
        }
        for (u, kind) in [
            (below, RowKind::UniformBelow),
            (above, RowKind::UniformAbove),
        ] {
            if let Some((p, s)) = u {
                rows.push(row(p, Some(s), kind, b.axis, input));
            }
        }
        let pairs: Vec<(f64, f64)> = (random.iter())
            .filter_map(|r| Some((r.omega?, r.loss_increase)))
            .filter(|(o, l)| o.is_finite() && l.is_finite())
            .collect();
        let omega_spearman = (pairs.len() >= 3).then(|| {
            let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
            let rho = spearman(&x, &y);
            let ci = spearman_interval(rho, pairs.len());
            Correlation {
                rho,
                lo: ci.map(|c| c.0),
                hi: ci.map(|c| c.1),
                n: pairs.len(),
            }
        });
        budgets.push(BudgetResult {
            key: b.key.clone(),
            label: b.label.clone(),
            axis: b.axis,
            limit: b.limit,
            rows,
            omega_spearman: omega_spearman.filter(|c| c.rho.is_finite()),
            random,
        });
    }
    let mut points: Vec<UniformPoint> = (uniform.iter())
        .filter_map(|(p, s)| {
            Some(UniformPoint {
                name: p.cell.name.clone(),
                costs: p.cell.costs?,
                ptq: interval(&s.ptq, resamples, seed),
                finetuned: finetune_estimate(s, resamples, seed),
            })
        })
        .collect();
    points.sort_by(|a, b| {
        a.costs
            .gbops
            .total_cmp(&b.costs.gbops)
            .then(a.name.cmp(&b.name))
    });
    let test_samples = uniform
        .first()
        .map(|(_, s)| s.ptq.len())
        .or_else(|| {
            (input.budgets.iter())
                .flat_map(|b| b.methods.iter().chain(&b.random))
                .find_map(|p| p.cell.ptq.as_ref().map(|s| s.samples))
        })
        .unwrap_or(0);
    Ok(CompareFile {
        setup: input.setup.clone(),
        test_samples,
        budgets,
        uniform: points,
    })
}

/// The random plans as one row: their post-training distribution (mean, 2.5 and 97.5
/// percentiles), and the fine-tuned ones as if they were seeds of one method (each plan is
/// one seed), against the reference.
fn random_row(
    b: &BudgetInput,
    random: &[(&MeasuredPlan, Samples)],
    reference: &Option<(String, &Samples)>,
    input: &CompareInput,
) -> Row {
    let (resamples, seed) = (input.setup.resamples, input.seed);
    let mut accs: Vec<f64> = random.iter().map(|(_, s)| mean(&s.ptq)).collect();
    accs.sort_by(f64::total_cmp);
    let pct = |q: f64| accs[((q * (accs.len() - 1) as f64).round() as usize).min(accs.len() - 1)];
    let costs: Vec<f64> = (random.iter())
        .filter_map(|(p, _)| p.cell.costs.map(|c| c.on(b.axis)))
        .collect();
    let omegas: Vec<f64> = random.iter().filter_map(|(p, _)| p.cell.omega).collect();
    // The random plans pooled as one method: the mean post-training outcome of every plan,
    // and the fine-tuned ones as its seeds (a plan per seed).
    let tuned: Vec<&Samples> = (random.iter().map(|(_, s)| s))
        .filter(|s| !s.accuracies.is_empty())
        .collect();
    let n = random.first().map_or(0, |(_, s)| s.ptq.len());
    let pool = |v: &mut Vec<f64>, x: &[f64], k: usize| {
        for (a, b) in v.iter_mut().zip(x) {
            *a += b / k as f64;
        }
    };
    let mut pooled = Samples {
        ptq: vec![0.0; n],
        finetuned: vec![0.0; if tuned.is_empty() { 0 } else { n }],
        accuracies: tuned.iter().map(|s| s.accuracies[0]).collect(),
    };
    for (_, s) in random {
        pool(&mut pooled.ptq, &s.ptq, random.len());
    }
    for s in &tuned {
        pool(&mut pooled.finetuned, &s.finetuned, tuned.len());
    }
    let finetuned = finetune_estimate(&pooled, resamples, seed);
    let verdict = (reference.as_ref())
        .filter(|_| !random.is_empty())
        .map(|(name, u)| verdict(&pooled, u, name, resamples, seed));
    Row {
        name: "random".into(),
        kind: RowKind::Random,
        costs: None,
        cost: (!costs.is_empty()).then(|| mean(&costs)),
        omega: (!omegas.is_empty()).then(|| mean(&omegas)),
        ptq: (!accs.is_empty()).then(|| Interval {
            mean: mean(&accs),
            lo: pct(0.025),
            hi: pct(0.975),
        }),
        finetuned,
        verdict,
        beats_random: None,
        error: random
            .is_empty()
            .then(|| "no random plan within the budget".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Costs, Scores};
    use crate::train::SampleResults;

    fn plan(
        budget: &str,
        name: &str,
        bits: f64,
        correct: Vec<bool>,
        fts: &[Vec<bool>],
    ) -> MeasuredPlan {
        let scores = |c: &Vec<bool>| {
            Scores::new(&SampleResults {
                correct: c.clone(),
                loss: 1.0 - c.iter().filter(|&&x| x).count() as f64 / c.len() as f64,
            })
        };
        MeasuredPlan {
            cell: PlanCell {
                key: String::new(),
                budget: budget.into(),
                name: name.into(),
                seconds: 0.0,
                costs: Some(Costs {
                    avg_w_bits: bits,
                    ..Costs::default()
                }),
                omega: Some(1.0 - bits / 10.0),
                uniform_bits: None,
                ptq: Some(scores(&correct)),
                error: None,
            },
            finetuned: (fts.iter().enumerate())
                .map(|(k, c)| FinetuneCell {
                    key: String::new(),
                    budget: budget.into(),
                    name: name.into(),
                    seed: k as u64,
                    lr: 0.01,
                    seconds: 0.0,
                    scores: scores(c),
                })
                .collect(),
        }
    }

    /// Samples correct with probability `p`, deterministically spread.
    fn outcomes(n: usize, p: f64, shift: usize) -> Vec<bool> {
        (0..n)
            .map(|i| (((i + shift) * 7919) % 1000) as f64 / 1000.0 < p)
            .collect()
    }

    fn input(methods: Vec<MeasuredPlan>, uniform: Vec<MeasuredPlan>) -> CompareInput {
        CompareInput {
            setup: Setup {
                model: "m".into(),
                arch: "a".into(),
                data: "d".into(),
                fp32_accuracy: 0.99,
                fp32_loss: 0.0,
                seeds: 2,
                finetune_epochs: 1,
                random_plans: 0,
                resamples: 1000,
            },
            seed: 1,
            budgets: vec![BudgetInput {
                key: "avg-bits-3".into(),
                label: "--avg-bits 3".into(),
                axis: Axis::AvgWBits,
                limit: 3.0,
                methods,
                random: Vec::new(),
            }],
            uniform,
        }
    }

    #[test]
    fn a_plan_that_loses_beyond_noise_is_flagged_and_a_tie_is_not() {
        let n = 2000;
        let u3 = outcomes(n, 0.95, 0);
        let uniform = vec![
            plan(
                "uniform",
                "w2a8",
                2.0,
                outcomes(n, 0.5, 3),
                &[outcomes(n, 0.6, 4)],
            ),
            plan(
                "uniform",
                "w3a8",
                3.0,
                u3.clone(),
                &[u3.clone(), outcomes(n, 0.95, 1)],
            ),
            plan("uniform", "w4a8", 4.0, outcomes(n, 0.98, 5), &[]),
        ];
        let loser = outcomes(n, 0.85, 9);
        let methods = vec![
            plan(
                "avg-bits-3",
                "lose",
                2.9,
                loser.clone(),
                &[loser.clone(), outcomes(n, 0.86, 2)],
            ),
            // The same outcomes as uniform, one sample flipped: within noise.
            plan(
                "avg-bits-3",
                "tie",
                3.0,
                u3.iter().enumerate().map(|(i, &c)| c ^ (i == 0)).collect(),
                &[u3.clone(), u3.clone()],
            ),
        ];
        let f = analyse(&input(methods, uniform)).unwrap();
        let b = &f.budgets[0];
        let names: Vec<(&str, RowKind)> =
            b.rows.iter().map(|r| (r.name.as_str(), r.kind)).collect();
        assert_eq!(
            names,
            [
                ("lose", RowKind::Method),
                ("tie", RowKind::Method),
                ("w3a8", RowKind::UniformBelow),
                ("w4a8", RowKind::UniformAbove)
            ]
        );
        let v = b.rows[0].verdict.as_ref().unwrap();
        assert_eq!(
            (v.against.as_str(), v.ptq_verdict.as_str()),
            ("w3a8", WORSE)
        );
        assert_eq!(v.finetuned_verdict.as_deref(), Some(WORSE));
        assert!(v.ptq.hi < 0.0 && (v.ptq.mean + 0.1).abs() < 0.01, "{v:?}");
        assert_eq!(b.rows[1].verdict.as_ref().unwrap().headline(), WITHIN_NOISE);
        assert_eq!(
            f.losers(),
            [("--avg-bits 3".to_string(), "lose".to_string())]
        );
        // The interval of the fine-tuned mean holds the mean and is wider with the seed spread.
        let ft = b.rows[0].finetuned.as_ref().unwrap();
        assert!(ft.total.lo <= ft.test.lo && ft.total.hi >= ft.test.hi);
        assert!(ft.test.lo < ft.mean && ft.mean < ft.test.hi);
    }
}
