//! LIMPQ's importance indicators as plain data (Tang et al., "Mixed-Precision Neural Network
//! Quantization via Learned Layer-wise Importance", ECCV 2022; spec §5.3, §5.5): per layer the
//! learned LSQ step of every candidate bit-width, for weights and for the input activation,
//! and the "wired point" cleaning that bans a lower bit-width whose step is smaller than the
//! next higher one's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::BitWidth;

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
/// spec §5.5: for each candidate `b` but the smallest, the next lower candidate `b'` is banned
/// when `I[b'] < I[b]` (a step should grow as bits shrink). The comparison is on the learned
/// values, so one ban does not cascade to every width below it (the spec's example bans the
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
    /// Indicators from learned steps, with the cleaning of spec §5.5 recorded.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &[(BitWidth, f64)]) -> BTreeMap<BitWidth, f64> {
        v.iter().copied().collect()
    }

    #[test]
    fn cleaning_bans_exactly_the_non_monotone_lower_bits() {
        // Weights: 6 → 5 breaks (0.0043 < 0.0114, the spec's layer4.2.conv3 case), 3 → 2
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
