//! LIMPQ's one-shot integer program (Tang et al., "Mixed-Precision Neural Network
//! Quantization via Learned Layer-wise Importance", ECCV 2022; docs/algorithms.md §5.6): per searched layer
//! one `(w_bits, a_bits)` minimising `Σ_l I^a_{l,a} + α·I^w_{l,w}` (the learned, cleaned
//! indicators of [`crate::sensitivity::learned`]) under BitOps, compression-ratio, size and
//! average-bit budgets, solved exactly by the shared multiple-choice knapsack ([`super::ilp`]).
//! The layers without indicators (first and last) are pinned at 8 bits; the plan's quantizer
//! is LSQ with one step per tensor, for the final fine-tuning (docs/algorithms.md §5.7).

use std::collections::BTreeSet;
use std::time::Instant;

use super::ilp::{IlpStats, ilp};
use super::space::{Pin, SearchSpace};
use crate::cost::CostTable;
use crate::graph::LayerInfo;
use crate::plan::{BitWidth, Granularity, QuantPlan, QuantizerKind};
use crate::sensitivity::SensitivityTable;
use crate::sensitivity::learned::LayerIndicators;
use crate::{Error, Result};

/// The paper's default weight of the weight indicators (`--alpha 2`).
pub const DEFAULT_ALPHA: f64 = 2.0;

/// Bits of the layers LIMPQ leaves out of the search.
pub const FIXED_BITS: BitWidth = 8;

/// The indicators of a LIMPQ sensitivity JSON (rows without a `limpq` object are the layers
/// that were not searched).
#[derive(Debug, Clone, PartialEq)]
pub struct Indicators {
    layers: Vec<(String, LayerIndicators)>,
    unsearched: Vec<String>,
}

impl Indicators {
    /// The indicators of a sensitivity table written by `mpq analyze --metric limpq`;
    /// `source` names it in errors. The bans are recomputed from the learned values (so a
    /// hand-edited file is cleaned the same way).
    pub fn from_table(table: &SensitivityTable, source: &str) -> Result<Indicators> {
        let mut layers = Vec::new();
        let mut unsearched = Vec::new();
        for r in &table.layers {
            match &r.limpq {
                Some(ind) => {
                    let bad = ind
                        .weight
                        .values()
                        .chain(ind.act.values())
                        .any(|v| !v.is_finite() || *v < 0.0);
                    if bad || ind.weight.is_empty() || ind.act.is_empty() {
                        return Err(Error::corrupt(
                            source,
                            format!(
                                "layer {}: limpq indicators must be non-negative numbers",
                                r.name
                            ),
                        ));
                    }
                    let mut ind = ind.clone();
                    ind.clean();
                    layers.push((r.name.clone(), ind));
                }
                None => unsearched.push(r.name.clone()),
            }
        }
        if layers.is_empty() {
            return Err(Error::corrupt(
                source,
                "no layer has LIMPQ indicators (write them with `mpq analyze --metric limpq`)",
            ));
        }
        Ok(Indicators { layers, unsearched })
    }

    /// Indicators given in memory (cleaned); the unsearched layers are those of the model
    /// without an entry.
    pub fn from_layers(layers: Vec<(String, LayerIndicators)>) -> Indicators {
        let layers = layers
            .into_iter()
            .map(|(n, mut l)| {
                l.clean();
                (n, l)
            })
            .collect();
        Indicators {
            layers,
            unsearched: Vec::new(),
        }
    }

    /// The indicators of `layer`.
    pub fn layer(&self, name: &str) -> Option<&LayerIndicators> {
        self.layers.iter().find(|(n, _)| n == name).map(|(_, l)| l)
    }

    /// The layers with indicators, in file order.
    pub fn layers(&self) -> impl Iterator<Item = (&str, &LayerIndicators)> {
        self.layers.iter().map(|(n, l)| (n.as_str(), l))
    }

    /// Weight and activation bit-widths trained for every searched layer.
    pub fn candidates(&self) -> (Vec<BitWidth>, Vec<BitWidth>) {
        let common = |f: &dyn Fn(&LayerIndicators) -> BTreeSet<BitWidth>| -> Vec<BitWidth> {
            let mut it = self.layers.iter().map(|(_, l)| f(l));
            let first = it.next().unwrap_or_default();
            it.fold(first, |acc, s| acc.intersection(&s).copied().collect())
                .into_iter()
                .collect()
        };
        (
            common(&|l| l.weight.keys().copied().collect()),
            common(&|l| l.act.keys().copied().collect()),
        )
    }

    /// Pins at [`FIXED_BITS`] for every model layer without indicators (LIMPQ's first conv
    /// and classifier). A row naming no model layer is an input error.
    pub fn pins(&self, layers: &[LayerInfo]) -> Result<Vec<Pin>> {
        if let Some((n, _)) = self
            .layers
            .iter()
            .find(|(n, _)| !layers.iter().any(|l| &l.name == n))
        {
            return Err(Error::UnknownLayer { name: n.clone() });
        }
        Ok(layers
            .iter()
            .filter(|l| self.layer(&l.name).is_none())
            .map(|l| Pin {
                layer: l.name.clone(),
                w_bits: FIXED_BITS,
                a_bits: FIXED_BITS,
            })
            .collect())
    }

    /// Layers of the file without indicators.
    pub fn unsearched(&self) -> &[String] {
        &self.unsearched
    }

    /// `I^a_{l,a} + α·I^w_{l,w}` of `layer` (cleaned: banned widths cost
    /// [`crate::sensitivity::learned::BANNED_INDICATOR`]); `None` for a layer without
    /// indicators; an input error for a width that was not trained.
    pub fn cost(&self, layer: &str, w: BitWidth, a: BitWidth, alpha: f64) -> Result<Option<f64>> {
        let Some(l) = self.layer(layer) else {
            return Ok(None);
        };
        let untrained = |what: &str, b: BitWidth| {
            Error::config(
                "limpq",
                format!(
                    "layer {layer}: no {what} indicator for {b} bits (candidates must be among \
                     the trained bit-widths)"
                ),
            )
        };
        let iw = l.weight_at(w).ok_or_else(|| untrained("weight", w))?;
        let ia = l.act_at(a).ok_or_else(|| untrained("activation", a))?;
        Ok(Some(ia + alpha * iw))
    }
}

/// Sets the space's Ω to LIMPQ's objective with weight `alpha` on the weight indicators.
pub fn set_limpq_omega(space: &mut SearchSpace, ind: &Indicators, alpha: f64) -> Result<()> {
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(Error::config("alpha", "must be a non-negative number"));
    }
    let names: Vec<String> = space.layers().iter().map(|l| l.name.clone()).collect();
    space.set_omega_by(|i, w, a| ind.cost(&names[i], w, a, alpha))
}

/// The LIMPQ plan of a space whose Ω came from [`set_limpq_omega`]: the least-cost plan within
/// every budget, with LSQ per-tensor quantizers on the quantized layers.
pub fn limpq(space: &SearchSpace) -> Result<(QuantPlan, IlpStats)> {
    let start = Instant::now();
    let (mut plan, stats) = ilp(space)?;
    plan.method = "limpq".into();
    for l in &mut plan.layers {
        if l.w_bits < crate::plan::FULL_PRECISION {
            l.quantizer = QuantizerKind::Lsq;
            l.granularity = Granularity::PerTensor;
        }
    }
    let cost = CostTable::new(space.layers(), &plan)?;
    cost.fill_plan(&mut plan);
    plan.seconds = start.elapsed().as_secs_f64();
    Ok((plan, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Versioned;

    /// Indicators of a sensitivity JSON text.
    fn parse(text: &str) -> Result<Indicators> {
        Indicators::from_table(&SensitivityTable::parse(text.as_bytes(), "t")?, "t")
    }
    use crate::search::{Budget, Candidates, SearchOptions};

    fn layer(i: usize, name: &str, params: usize, macs: u64) -> LayerInfo {
        let mut l = LayerInfo::linear(i, name, 1, params);
        l.macs = macs;
        l
    }

    fn table() -> (Vec<LayerInfo>, String) {
        let layers = vec![
            layer(0, "first", 10, 100),
            layer(1, "a", 400, 4000),
            layer(2, "b", 300, 9000),
            layer(3, "c", 200, 1000),
            layer(4, "last", 10, 10),
        ];
        let json = r#"{"layers": [
          {"name": "first"},
          {"name": "a", "limpq": {"weight": {"2": 0.30, "3": 0.20, "4": 0.10},
                                  "act":    {"2": 0.50, "3": 0.30, "4": 0.20}}},
          {"name": "b", "limpq": {"weight": {"2": 0.90, "3": 0.40, "4": 0.05},
                                  "act":    {"2": 0.20, "3": 0.15, "4": 0.12}}},
          {"name": "c", "limpq": {"weight": {"2": 0.10, "3": 0.30, "4": 0.08},
                                  "act":    {"2": 0.70, "3": 0.20, "4": 0.10}}},
          {"name": "last"}
        ]}"#;
        (layers, json.to_string())
    }

    #[test]
    fn limpq_matches_brute_force_and_fixes_the_ends() {
        let (layers, json) = table();
        let ind = parse(&json).unwrap();
        // c's 2-bit weight step (0.10) is below its 3-bit one (0.30): 2-bit weights banned.
        assert_eq!(ind.layer("c").unwrap().banned_w_bits, vec![2]);
        let cands = Candidates {
            w_bits: vec![2, 3, 4],
            a_bits: vec![2, 3, 4],
        };
        let fixed: u64 = 100 * 64 + 10 * 64;
        for (wa, alpha) in [(9.0, 2.0), (6.0, 2.0), (6.0, 0.5), (12.0, 1.0), (5.0, 2.0)] {
            let budget = Budget {
                max_bops_g: Some((fixed as f64 + 14000.0 * wa) / 1e9),
                ..Default::default()
            };
            let opts = SearchOptions {
                pins: ind.pins(&layers).unwrap(),
                quantizer: QuantizerKind::Lsq,
                ..Default::default()
            };
            let mut space = SearchSpace::new(&layers, &cands, &budget, None, &opts).unwrap();
            set_limpq_omega(&mut space, &ind, alpha).unwrap();
            let (plan, _) = limpq(&space).unwrap();
            assert_eq!(plan.bits("first"), (8, 8));
            assert_eq!(plan.bits("last"), (8, 8));
            // Brute force over the 9^3 plans of the searched layers.
            let mut best = (f64::INFINITY, vec![]);
            let pairs: Vec<(u32, u32)> =
                (2..=4).flat_map(|w| (2..=4).map(move |a| (w, a))).collect();
            for p0 in &pairs {
                for p1 in &pairs {
                    for p2 in &pairs {
                        let ch = [p0, p1, p2];
                        let bops: u64 = [4000u64, 9000, 1000]
                            .iter()
                            .zip(ch)
                            .map(|(m, (w, a))| m * u64::from(*w) * u64::from(*a))
                            .sum();
                        if (bops + fixed) as f64 > budget.max_bops_g.unwrap() * 1e9 * (1.0 + 1e-12)
                        {
                            continue;
                        }
                        let obj: f64 = ["a", "b", "c"]
                            .iter()
                            .zip(ch)
                            .map(|(n, (w, a))| ind.cost(n, *w, *a, alpha).unwrap().unwrap())
                            .sum();
                        if obj < best.0 - 1e-12 {
                            best = (obj, ch.iter().map(|p| **p).collect());
                        }
                    }
                }
            }
            let got: Vec<(u32, u32)> = ["a", "b", "c"].iter().map(|n| plan.bits(n)).collect();
            let got_obj: f64 = ["a", "b", "c"]
                .iter()
                .zip(&got)
                .map(|(n, (w, a))| ind.cost(n, *w, *a, alpha).unwrap().unwrap())
                .sum();
            assert!(
                (got_obj - best.0).abs() < 1e-9,
                "budget {wa} alpha {alpha}: ilp {got:?} = {got_obj}, brute force {:?} = {}",
                best.1,
                best.0
            );
            assert!(
                plan.layers
                    .iter()
                    .all(|l| l.quantizer == QuantizerKind::Lsq)
            );
            assert!(
                plan.layers
                    .iter()
                    .all(|l| l.granularity == Granularity::PerTensor)
            );
        }
    }

    #[test]
    fn untrained_candidates_and_bad_files_are_input_errors() {
        let (layers, json) = table();
        let ind = parse(&json).unwrap();
        let cands = Candidates {
            w_bits: vec![2, 8],
            a_bits: vec![4],
        };
        let opts = SearchOptions {
            pins: ind.pins(&layers).unwrap(),
            ..Default::default()
        };
        let mut space = SearchSpace::new(&layers, &cands, &Budget::default(), None, &opts).unwrap();
        let e = set_limpq_omega(&mut space, &ind, 2.0).unwrap_err();
        assert!(e.to_string().contains("8 bits"), "{e}");
        assert_eq!(ind.candidates(), (vec![2, 3, 4], vec![2, 3, 4]));
        assert!(parse(r#"{"layers": [{"name": "x"}]}"#).is_err());
        let neg = json.replace("0.30,", "-0.30,");
        assert!(parse(&neg).is_err());
    }
}
