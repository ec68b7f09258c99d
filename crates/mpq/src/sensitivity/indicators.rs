//! LIMPQ's importance indicators as plain data (Tang et al., "Mixed-Precision Neural Network
//! Quantization via Learned Layer-wise Importance", ECCV 2022; docs/algorithms.md §5.3, §5.5): per layer the
//! learned LSQ step of every candidate bit-width, for weights and for the input activation,
//! and the "wired point" cleaning that bans a lower bit-width whose step is smaller than the
//! next higher one's; and the settings and run record of the joint indicator training that
//! learns them ([`super::learned`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::BitWidth;
use crate::{Error, Result};

/// The value LIMPQ's search code gives a banned indicator (`C = 1e8`): large enough that the
/// ILP never picks it unless no other plan meets the budgets.
pub const BANNED_INDICATOR: f64 = 1e8;

/// One layer's learned indicators (the `limpq` object of a sensitivity row).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LayerIndicators {
    /// `I^w_{l,b}`: the learned weight step per candidate bit-width.
    pub weight: BTreeMap<BitWidth, f64>,
    /// `I^a_{l,b}`: the learned input-activation step per candidate bit-width.
    pub act: BTreeMap<BitWidth, f64>,
    /// Weight bit-widths the cleaning bans (their step is below the next higher width's).
    #[serde(default)]
    pub banned_w_bits: Vec<BitWidth>,
    /// Activation bit-widths the cleaning bans.
    #[serde(default)]
    pub banned_a_bits: Vec<BitWidth>,
    /// One line per ban saying why.
    #[serde(default)]
    pub bans: Vec<String>,
}

/// The lower bit-widths whose indicator breaks monotonicity, with the reason, following
/// docs/algorithms.md §5.5: for each candidate `b` but the smallest, the next lower candidate `b'` is banned
/// when `I[b'] < I[b]` (a step should grow as bits shrink). The comparison is on the learned
/// values, so one ban does not cascade to every width below it (docs/algorithms.md §5.5: its example bans the
/// single 5-bit entry); with non-consecutive candidates `b'` is the next lower candidate.
pub fn non_monotone(ind: &BTreeMap<BitWidth, f64>, what: &str) -> Vec<(BitWidth, String)> {
    let bits: Vec<BitWidth> = ind.keys().copied().collect();
    let mut out = Vec::new();
    for pair in bits.windows(2) {
        let (lower, higher) = (pair[0], pair[1]);
        let (il, ih) = (ind[&lower], ind[&higher]);
        if il < ih {
            out.push((
                lower,
                format!(
                    "{what} {lower}-bit step {il:.4e} < {higher}-bit step {ih:.4e} \
                     (not monotone: {lower}-bit banned)"
                ),
            ));
        }
    }
    out
}

impl LayerIndicators {
    /// Indicators from learned steps, with the cleaning of docs/algorithms.md §5.5 recorded.
    pub fn new(weight: BTreeMap<BitWidth, f64>, act: BTreeMap<BitWidth, f64>) -> Self {
        let mut l = LayerIndicators {
            weight,
            act,
            ..Default::default()
        };
        l.clean();
        l
    }

    /// Recomputes the bans from the learned values.
    pub fn clean(&mut self) {
        let w = non_monotone(&self.weight, "weight");
        let a = non_monotone(&self.act, "activation");
        self.banned_w_bits = w.iter().map(|(b, _)| *b).collect();
        self.banned_a_bits = a.iter().map(|(b, _)| *b).collect();
        self.bans = w.into_iter().chain(a).map(|(_, why)| why).collect();
    }

    /// The cleaned weight indicator at `bits` ([`BANNED_INDICATOR`] when banned), `None` when
    /// `bits` is not a trained candidate.
    pub fn weight_at(&self, bits: BitWidth) -> Option<f64> {
        cleaned(&self.weight, &self.banned_w_bits, bits)
    }

    /// The cleaned activation indicator at `bits`.
    pub fn act_at(&self, bits: BitWidth) -> Option<f64> {
        cleaned(&self.act, &self.banned_a_bits, bits)
    }

    /// Whether both steps grow (weakly) as bits shrink, i.e. nothing was banned.
    pub fn monotone(&self) -> bool {
        self.banned_w_bits.is_empty() && self.banned_a_bits.is_empty()
    }
}

fn cleaned(map: &BTreeMap<BitWidth, f64>, banned: &[BitWidth], bits: BitWidth) -> Option<f64> {
    let v = *map.get(&bits)?;
    Some(if banned.contains(&bits) {
        BANNED_INDICATOR
    } else {
        v
    })
}

/// Settings of the joint indicator training (defaults: docs/algorithms.md §5.4's ResNet-18 recipe with the
/// batch scaled to small data sets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimpqConfig {
    /// Candidate bit-widths in pass order (the paper: 6, 5, 4, 3, 2).
    pub bits: Vec<BitWidth>,
    /// Passes over the (fraction of the) training set.
    pub epochs: usize,
    /// Fraction of the training set used (a seeded subset; the paper's README: about half
    /// is enough).
    pub data_fraction: f64,
    /// Samples per step.
    pub batch_size: usize,
    /// Base learning rate of the cosine schedule.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub lr_min: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Gradient value clip.
    pub grad_clip: f64,
    /// Whether each step adds the random mixed pass.
    pub mixed_pass: bool,
    /// Seed of the subset, shuffling, and the per-step reseeding.
    pub seed: u64,
}

impl Default for LimpqConfig {
    fn default() -> Self {
        LimpqConfig {
            bits: vec![6, 5, 4, 3, 2],
            epochs: 3,
            data_fraction: 1.0,
            batch_size: 64,
            lr: 0.01,
            lr_min: 1e-5,
            momentum: 0.9,
            weight_decay: 2.5e-5,
            label_smoothing: 0.1,
            grad_clip: 1.0,
            mixed_pass: true,
            seed: 0,
        }
    }
}

impl LimpqConfig {
    /// Checks ranges once, before any work.
    pub fn validate(&self) -> Result<()> {
        if self.bits.len() < 2 {
            return Err(Error::config("bits", "LIMPQ needs at least two candidates"));
        }
        if let Some(b) = self.bits.iter().find(|b| !(2..=8).contains(*b)) {
            return Err(Error::config("bits", format!("{b} is outside 2..8")));
        }
        let mut sorted = self.bits.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.bits.len() {
            return Err(Error::config("bits", "candidates must be distinct"));
        }
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch-size", "must be at least 1"));
        }
        if !(self.data_fraction > 0.0 && self.data_fraction <= 1.0) {
            return Err(Error::config("data-fraction", "must be in (0, 1]"));
        }
        for (f, v) in [("lr", self.lr), ("lr-min", self.lr_min)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(f, "must be a non-negative number"));
            }
        }
        crate::train::validate_loss_and_momentum(
            self.momentum,
            self.weight_decay,
            self.label_smoothing,
        )?;
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return Err(Error::config("grad-clip", "must be a positive number"));
        }
        Ok(())
    }

    /// The cosine rate at `step` of `total` (no warm-up), from `lr` down to `lr_min`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let t = step as f64 / total.max(1) as f64;
        self.lr_min + (self.lr - self.lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// The run-level part of a LIMPQ sensitivity table (`limpq` in the JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimpqReport {
    /// The settings.
    pub config: LimpqConfig,
    /// Layers searched (the others are fixed at 8 bits by the search).
    pub searched: Vec<String>,
    /// Layers left out of the search (first and last).
    pub fixed: Vec<String>,
    /// Batch norms with one copy per candidate.
    pub switchable_bn: Vec<String>,
    /// Joint steps taken.
    pub steps: usize,
    /// Forward/backward passes (`steps · (|B| + 1)`).
    pub passes: usize,
    /// Samples of the training subset.
    pub samples: usize,
    /// Mean loss of each epoch's passes.
    pub epoch_losses: Vec<f64>,
    /// Fraction of (layer, weight|activation) indicator series that grow monotonically as
    /// bits shrink (nothing banned).
    pub monotone_fraction: f64,
    /// Every ban of the cleaning, `layer: reason`.
    pub bans: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &[(BitWidth, f64)]) -> BTreeMap<BitWidth, f64> {
        v.iter().copied().collect()
    }

    #[test]
    fn cleaning_bans_exactly_the_non_monotone_lower_bits() {
        // Weights: 6 → 5 breaks (0.0043 < 0.0114, the layer4.2.conv3 case of docs/algorithms.md §5.5), 3 → 2
        // breaks; 5 → 4 → 3 are fine. Activations: monotone.
        let w = map(&[(2, 0.05), (3, 0.06), (4, 0.02), (5, 0.0043), (6, 0.0114)]);
        let a = map(&[(2, 0.44), (3, 0.3), (4, 0.2), (5, 0.12), (6, 0.096)]);
        let l = LayerIndicators::new(w, a);
        assert_eq!(l.banned_w_bits, vec![2, 5]);
        assert!(l.banned_a_bits.is_empty());
        assert_eq!(l.bans.len(), 2);
        assert!(l.bans[1].contains("5-bit banned"), "{:?}", l.bans);
        assert_eq!(l.weight_at(5), Some(BANNED_INDICATOR));
        assert_eq!(l.weight_at(2), Some(BANNED_INDICATOR));
        assert_eq!(l.weight_at(4), Some(0.02));
        assert_eq!(l.weight_at(6), Some(0.0114));
        assert_eq!(l.act_at(3), Some(0.3));
        assert_eq!(l.act_at(8), None);
        assert!(!l.monotone());
    }

    #[test]
    fn equal_steps_are_not_banned_and_gaps_use_the_next_candidate() {
        let w = map(&[(2, 0.1), (4, 0.1), (8, 0.2)]);
        let l = LayerIndicators::new(w, map(&[(4, 1.0), (8, 0.5)]));
        // 4 vs 8: 0.1 < 0.2 → 4 banned; 2 vs 4 equal → kept.
        assert_eq!(l.banned_w_bits, vec![4]);
        assert!(l.banned_a_bits.is_empty());
    }

    #[test]
    fn indicators_round_trip_through_json() {
        let l = LayerIndicators::new(map(&[(2, 0.2), (3, 0.1)]), map(&[(2, 0.5), (3, 0.6)]));
        let s = serde_json::to_string(&l).unwrap();
        assert!(s.contains("\"2\":0.2"), "{s}");
        let back: LayerIndicators = serde_json::from_str(&s).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.banned_a_bits, vec![2]);
    }
}
