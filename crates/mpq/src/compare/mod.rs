//! Does mixed precision pay on this model? The files and the statistics of `mpq compare`
//! (docs/compare.md): each plan's measured cells (post-training and fine-tuned accuracy, per
//! test sample), and the comparison built from them: confidence intervals from a test-set
//! bootstrap and the spread over fine-tuning seeds, the distribution of random plans of the
//! same budget, uniform precision at the nearest cost below and above each budget, a verdict
//! against uniform ("better", "worse" or "within noise"), and Ω's rank correlation with the
//! measured loss increase over the random plans. Plain data only: the pipeline measures,
//! `report` draws.

mod analysis;
mod markdown;

pub use analysis::{BudgetInput, CompareInput, MeasuredPlan, analyse};
pub use markdown::markdown;

use serde::{Deserialize, Serialize};

use crate::io::Versioned;
use crate::train::SampleResults;
use crate::{Error, Result};

/// What a budget's cost is measured in (the x axis of its plot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Parameter-weighted mean weight bits.
    AvgWBits,
    /// Weight storage in MiB (scales included).
    SizeMb,
    /// Giga bit-operations per sample.
    Gbops,
    /// Simulated latency in ms.
    LatencyMs,
    /// Simulated energy in mJ.
    EnergyMj,
}

impl Axis {
    /// The axis label of plots and tables.
    pub fn label(self) -> &'static str {
        match self {
            Axis::AvgWBits => "average weight bits",
            Axis::SizeMb => "weight storage (MiB)",
            Axis::Gbops => "GBitOps per sample",
            Axis::LatencyMs => "latency (ms)",
            Axis::EnergyMj => "energy (mJ)",
        }
    }
}

/// A plan's costs, on every axis it has.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Costs {
    /// Parameter-weighted mean weight bits.
    pub avg_w_bits: f64,
    /// Weight storage in bytes (scales included).
    pub size_bytes: u64,
    /// Giga bit-operations per sample.
    pub gbops: f64,
    /// Simulated latency in ms (with a hardware model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Simulated energy in mJ (with a hardware model that prices energy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<f64>,
}

impl Costs {
    /// The cost on `axis` (NaN where the plan has none).
    pub fn on(&self, axis: Axis) -> f64 {
        match axis {
            Axis::AvgWBits => self.avg_w_bits,
            Axis::SizeMb => self.size_bytes as f64 / (1024.0 * 1024.0),
            Axis::Gbops => self.gbops,
            Axis::LatencyMs => self.latency_ms.unwrap_or(f64::NAN),
            Axis::EnergyMj => self.energy_mj.unwrap_or(f64::NAN),
        }
    }
}

/// One evaluation on the test split, sample by sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Accuracy (fraction).
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Test samples.
    pub samples: usize,
    /// Whether each sample was classified correctly: hexadecimal, four samples per digit,
    /// the first sample in the digit's lowest bit.
    pub correct: String,
}

impl Scores {
    /// The scores of an evaluation.
    pub fn new(r: &SampleResults) -> Scores {
        let correct = r
            .correct
            .chunks(4)
            .map(|c| {
                let v = c
                    .iter()
                    .enumerate()
                    .fold(0u32, |v, (k, &b)| v | (b as u32) << k);
                char::from_digit(v, 16).unwrap_or('0')
            })
            .collect();
        let s = r.stats();
        Scores {
            accuracy: s.accuracy,
            loss: s.loss,
            samples: s.samples,
            correct,
        }
    }

    /// The per-sample outcomes; a string that does not hold `samples` of them, or that
    /// disagrees with `accuracy`, is an error naming `source`.
    pub fn outcomes(&self, source: &str) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(self.samples);
        for c in self.correct.chars() {
            let v = c
                .to_digit(16)
                .ok_or_else(|| Error::corrupt(source, format!("`correct` holds {c:?}")))?;
            out.extend((0..4).map(|k| v >> k & 1 == 1));
        }
        if out.len() < self.samples || out.len() >= self.samples + 4 {
            return Err(Error::corrupt(
                source,
                format!("`correct` does not hold {} samples", self.samples),
            ));
        }
        out.truncate(self.samples);
        let hits = out.iter().filter(|&&c| c).count();
        if hits as f64 != (self.accuracy * self.samples as f64).round() {
            return Err(Error::corrupt(
                source,
                "`correct` disagrees with `accuracy`",
            ));
        }
        Ok(out)
    }
}

/// One plan of a comparison, searched (or built) and measured after post-training
/// quantization (`DIR/cells/<budget>/<name>.json`, format `mpq.compare-cell`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanCell {
    /// A digest of everything that determined the cell (model, data, method and its
    /// options, budget, seeds): a cell whose key differs from a rerun's is measured again.
    pub key: String,
    /// The budget's key (`uniform` for the uniform references).
    pub budget: String,
    /// The cell: a method, `random-<i>`, a user plan, or `w<W>a<A>`.
    pub name: String,
    /// Seconds the search took.
    pub seconds: f64,
    /// Its costs (absent when the method could not produce a plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<Costs>,
    /// Ω on the trace scale (`Tr(H)/n · ‖Q(W) − W‖²` plus the activation term), when the
    /// comparison has a Hessian sensitivity file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omega: Option<f64>,
    /// Weight and activation bits when every searched layer has the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniform_bits: Option<(u32, u32)>,
    /// Post-training quantization on the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptq: Option<Scores>,
    /// Why there is no plan (an infeasible budget, a method that cannot price it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Versioned for PlanCell {
    const FORMAT: &'static str = "mpq.compare-cell";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a comparison cell";
}

/// One fine-tuning of a plan with one seed (`DIR/cells/<budget>/<name>.ft<seed>.json`,
/// format `mpq.compare-finetune`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneCell {
    /// A digest of the plan cell's key and the fine-tuning settings.
    pub key: String,
    /// The budget's key.
    pub budget: String,
    /// The plan's cell name.
    pub name: String,
    /// The fine-tuning seed.
    pub seed: u64,
    /// The learning rate used.
    pub lr: f64,
    /// Seconds it took.
    pub seconds: f64,
    /// The fine-tuned plan on the test split.
    pub scores: Scores,
}

impl Versioned for FinetuneCell {
    const FORMAT: &'static str = "mpq.compare-finetune";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a comparison fine-tuning cell";
}

/// An accuracy with its 95% interval (fractions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The estimate.
    pub mean: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// Fine-tuned accuracy over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneEstimate {
    /// Accuracy of each fine-tuning, in seed order.
    pub accuracies: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (0 with one seed).
    pub sd: f64,
    /// The test-set bootstrap interval of the mean over seeds.
    pub test: Interval,
    /// Both together: half-width `√(h_test² + (1.96·sd/√S)²)` about the mean.
    pub total: Interval,
}

/// A plan against the uniform reference of its budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The reference (`w3a8`).
    pub against: String,
    /// Accuracy difference (plan − uniform) after post-training quantization, paired
    /// test-set bootstrap interval.
    pub ptq: Interval,
    /// `better`, `worse` or `within noise` after post-training quantization.
    pub ptq_verdict: String,
    /// Fine-tuned accuracy difference, the paired bootstrap widened by both seed spreads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned: Option<Interval>,
    /// `better`, `worse` or `within noise` after fine-tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned_verdict: Option<String>,
}

impl Verdict {
    /// The verdict that counts: after fine-tuning when the comparison fine-tunes.
    pub fn headline(&self) -> &str {
        self.finetuned_verdict
            .as_deref()
            .unwrap_or(&self.ptq_verdict)
    }
}

/// What a row of a budget is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// A search method (or a user's plan).
    Method,
    /// Random plans of the budget (their distribution).
    Random,
    /// Uniform precision at the nearest cost within the budget.
    UniformBelow,
    /// Uniform precision at the nearest cost above the budget.
    UniformAbove,
}

/// One row of a budget's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Method, `random`, or the uniform plan (`w3a8`).
    pub name: String,
    /// What the row is.
    pub kind: RowKind,
    /// Costs (random: the median plan's by cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<Costs>,
    /// Cost on the budget's axis (random: the mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Ω on the trace scale (random: the mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omega: Option<f64>,
    /// Post-training accuracy with its bootstrap interval (random: mean and 2.5/97.5
    /// percentiles over the plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptq: Option<Interval>,
    /// Fine-tuned accuracy over seeds (random: one plan per seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned: Option<FinetuneEstimate>,
    /// Against the budget's uniform reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Where this row's method stands among the random plans after post-training
    /// quantization: the fraction of them it beats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beats_random: Option<f64>,
    /// Why the row has no numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A rank correlation with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    /// Spearman's ρ.
    pub rho: f64,
    /// Fisher-z interval, lower end (absent below 4 pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lo: Option<f64>,
    /// Upper end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hi: Option<f64>,
    /// Pairs.
    pub n: usize,
}

/// A random plan as plotted: its cost, Ω and measured post-training numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandomPoint {
    /// Cost on the budget's axis.
    pub cost: f64,
    /// Ω on the trace scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omega: Option<f64>,
    /// Post-training accuracy.
    pub ptq_accuracy: f64,
    /// Post-training loss minus the float model's.
    pub loss_increase: f64,
    /// Fine-tuned accuracy (the first plans, one seed each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned_accuracy: Option<f64>,
}

/// One budget of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetResult {
    /// Short key (`avg-bits-3`, `bops-as-3x3`), the folder of its cells.
    pub key: String,
    /// As a user writes it (`--avg-bits 3 --a-bits 8`).
    pub label: String,
    /// What its cost is measured in.
    pub axis: Axis,
    /// The limit on that axis.
    pub limit: f64,
    /// The rows: methods in the requested order, then random, then uniform below and above.
    pub rows: Vec<Row>,
    /// Ω's Spearman correlation with the measured post-training loss increase over the
    /// random plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omega_spearman: Option<Correlation>,
    /// The random plans.
    pub random: Vec<RandomPoint>,
}

/// A uniform plan on the comparison's curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniformPoint {
    /// Its name (`w3a8`).
    pub name: String,
    /// Its costs.
    pub costs: Costs,
    /// Post-training accuracy.
    pub ptq: Interval,
    /// Fine-tuned accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned: Option<FinetuneEstimate>,
}

/// What a comparison measured against: the model, the data and how plans were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// The model reference.
    pub model: String,
    /// Its architecture.
    pub arch: String,
    /// The data reference.
    pub data: String,
    /// The float model's test accuracy.
    pub fp32_accuracy: f64,
    /// The float model's test loss.
    pub fp32_loss: f64,
    /// Fine-tuning seeds per plan (0: post-training quantization only).
    pub seeds: usize,
    /// Fine-tuning epochs.
    pub finetune_epochs: usize,
    /// Random plans per budget.
    pub random_plans: usize,
    /// Bootstrap resamples of every interval.
    pub resamples: usize,
}

/// The comparison (`DIR/compare.json`, format `mpq.compare`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareFile {
    /// The model, the data and how plans were measured.
    #[serde(flatten)]
    pub setup: Setup,
    /// Test samples of every accuracy.
    pub test_samples: usize,
    /// The budgets.
    pub budgets: Vec<BudgetResult>,
    /// Every uniform plan measured, by axis order of cost.
    pub uniform: Vec<UniformPoint>,
}

impl Versioned for CompareFile {
    const FORMAT: &'static str = "mpq.compare";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a comparison";
}

impl CompareFile {
    /// Every row marked worse than uniform beyond noise, as `(budget label, row name)`.
    pub fn losers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for b in &self.budgets {
            for r in &b.rows {
                if r.verdict.as_ref().is_some_and(|v| v.headline() == WORSE) {
                    out.push((b.label.clone(), r.name.clone()));
                }
            }
        }
        out
    }
}

/// The verdict words.
pub const BETTER: &str = "better";
/// See [`BETTER`].
pub const WORSE: &str = "worse";
/// See [`BETTER`].
pub const WITHIN_NOISE: &str = "within noise";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_pack_and_unpack_every_sample() {
        for n in [1usize, 4, 5, 7, 2000] {
            let correct: Vec<bool> = (0..n).map(|i| (i * 7 + i / 3) % 5 < 3).collect();
            let r = SampleResults {
                correct: correct.clone(),
                loss: 0.5,
            };
            let s = Scores::new(&r);
            assert_eq!(s.correct.len(), n.div_ceil(4));
            assert_eq!(s.outcomes("t").unwrap(), correct);
            let mut bad = s.clone();
            bad.accuracy += 0.5;
            assert!(bad.outcomes("t").is_err());
            bad = s.clone();
            bad.correct.push('x');
            assert!(bad.outcomes("t").is_err());
        }
    }
}
