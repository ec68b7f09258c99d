//! Bit-width search over plain tables (no tensors): budgets, the feasibility pre-flight and
//! the baseline methods `uniform` (the largest uniform plan within budget) and `random`
//! (seeded, uniform among the plans of the candidate grid that meet the budget).
//! Sensitivity-driven methods build on this: [`hawq_v1`] (HAWQ), [`pareto`] (HAWQ-V2's exact
//! frontier), [`ilp`] (HAWQ-V3), all over a shared [`SearchSpace`] whose Ω comes from a
//! [`crate::sensitivity::SensitivityTable`] ([`OmegaTable`]), and [`limpq`] (LIMPQ: learned indicators as Ω,
//! the same solver).

pub mod cw_hawq;
pub mod haq;
mod hawq_v1;
mod ilp;
pub mod limpq;
mod lp;
pub mod mckp;
mod omega;
mod pareto;
mod policy;
pub mod problem;
pub mod rl;
mod space;
mod surrogate;

pub use cw_hawq::{ChannelRow, ChannelTable, CwConfig, CwResult, cw_hawq, cw_ilp};
pub use hawq_v1::hawq_v1;
pub use ilp::{IlpStats, ilp};
pub use omega::{OmegaConfig, OmegaMetric, OmegaTable};
pub use pareto::{
    Frontier, FrontierFile, FrontierPoint, FrontierRow, ParetoResult, UniformPoint,
    brute_force_frontier, pareto, pareto_frontier,
};
pub use policy::{
    AgentEpisode, AgentSection, FrontierRef, LayerRow, LimpqSection, Policy, SolverStats,
};
pub use space::{
    BudgetKind, BudgetStatus, Choice, Constraint, Feasibility, Group, Pin, SearchOptions,
    SearchSpace,
};

use serde::{Deserialize, Serialize};

use crate::cost::CostTable;
use crate::graph::LayerInfo;
use crate::plan::{BitWidth, Constraints, QuantPlan, is_valid_bits};
use crate::{Error, Result};

/// Bytes in the "MB" of `--max-size-mb` (2^20, the LIMPQ convention).
pub const MB: f64 = 1024.0 * 1024.0;

/// Resource limits a plan must meet (any combination; `None` is no limit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Largest average weight bit-width (weights-only, element-weighted).
    pub avg_bits: Option<f64>,
    /// Largest weight storage in MiB, scales and zero points included.
    pub max_size_mb: Option<f64>,
    /// Smallest compression ratio versus FP32 weights.
    pub compression: Option<f64>,
    /// Largest bit-operations, in units of 10^9.
    pub max_bops_g: Option<f64>,
    /// Largest latency in ms on the search's hardware model.
    #[serde(default)]
    pub max_latency_ms: Option<f64>,
    /// Largest energy in mJ on the search's hardware model.
    #[serde(default)]
    pub max_energy_mj: Option<f64>,
    /// Size ratio `r` of the searched layers (HAWQ-V3): at most all-low + r·(all-high −
    /// all-low), pinned layers outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_ratio: Option<f64>,
    /// BitOps ratio of the searched layers, as `size_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bops_ratio: Option<f64>,
    /// Latency ratio of the searched layers on the hardware model, as `size_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<f64>,
    /// Energy ratio of the searched layers on the hardware model, as `size_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_ratio: Option<f64>,
}

impl Budget {
    /// The limits `cost` breaks, as `(name, limit, value)`.
    pub fn violations(&self, cost: &CostTable) -> Vec<(&'static str, f64, f64)> {
        let mut v = Vec::new();
        if let Some(b) = self.avg_bits.filter(|&b| cost.avg_w_bits > b + 1e-9) {
            v.push(("avg_bits", b, cost.avg_w_bits));
        }
        if let Some(m) = self
            .max_size_mb
            .filter(|&m| cost.size_bytes as f64 / MB > m)
        {
            v.push(("max_size_mb", m, cost.size_bytes as f64 / MB));
        }
        if let Some(r) = self.compression.filter(|&r| cost.compression + 1e-9 < r) {
            v.push(("compression", r, cost.compression));
        }
        if let Some(g) = self.max_bops_g.filter(|&g| cost.bops / 1e9 > g) {
            v.push(("max_bops_g", g, cost.bops / 1e9));
        }
        v
    }

    /// The budget as (part of) a plan's constraints.
    pub fn to_constraints(&self) -> Constraints {
        Constraints {
            avg_bits: self.avg_bits,
            max_size_mb: self.max_size_mb,
            compression: self.compression,
            max_bops_g: self.max_bops_g,
            max_latency_ms: self.max_latency_ms,
            max_energy_mj: self.max_energy_mj,
            size_ratio: self.size_ratio,
            bops_ratio: self.bops_ratio,
            latency_ratio: self.latency_ratio,
            energy_ratio: self.energy_ratio,
            ..Constraints::default()
        }
    }
}

/// Candidate bit-widths for weights and activations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidates {
    /// Weight bit-widths, e.g. `[2, 3, 4, 8]`.
    pub w_bits: Vec<BitWidth>,
    /// Activation bit-widths, e.g. `[4, 8]`.
    pub a_bits: Vec<BitWidth>,
}

impl Candidates {
    /// Sorted, deduplicated and checked (2..8 or 32).
    pub fn validated(&self) -> Result<Candidates> {
        let clean = |v: &[BitWidth], field: &str| -> Result<Vec<BitWidth>> {
            if v.is_empty() {
                return Err(Error::config(field, "needs at least one bit-width"));
            }
            if let Some(b) = v.iter().find(|&&b| !is_valid_bits(b)) {
                return Err(Error::config(
                    field,
                    format!("{b} is not allowed (use 2..8 or 32)"),
                ));
            }
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            Ok(v)
        };
        Ok(Candidates {
            w_bits: clean(&self.w_bits, "w-bits")?,
            a_bits: clean(&self.a_bits, "a-bits")?,
        })
    }
}

/// Fails with [`Error::Infeasible`] (naming the limit and the smallest achievable value)
/// when even the smallest candidate bits everywhere break the budget (the size and BOPs
/// budgets; [`SearchSpace::feasibility`] covers hardware budgets, pins and ties too).
pub fn preflight(layers: &[LayerInfo], cands: &Candidates, budget: &Budget) -> Result<()> {
    SearchSpace::new(layers, cands, budget, None, &SearchOptions::default())?
        .feasibility()
        .check()
}

/// The best uniform plan within `budget`: [`SearchSpace::uniform`] without pins, ties or Ω.
pub fn uniform(layers: &[LayerInfo], cands: &Candidates, budget: &Budget) -> Result<QuantPlan> {
    SearchSpace::new(layers, cands, budget, None, &SearchOptions::default())?.uniform()
}

/// A seeded random plan near `budget`: [`SearchSpace::random`] without pins or ties.
pub fn random(
    layers: &[LayerInfo],
    cands: &Candidates,
    budget: &Budget,
    seed: u64,
    max_tries: usize,
) -> Result<QuantPlan> {
    SearchSpace::new(layers, cands, budget, None, &SearchOptions::default())?
        .random(seed, max_tries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::{self, ZooConfig};

    /// LeNet-5's layer table (28x28 inputs, 10 classes), shared by the search tests.
    pub(crate) fn lenet() -> Vec<LayerInfo> {
        zoo::layer_infos("lenet5", &ZooConfig::new([1, 28, 28], 10)).unwrap()
    }

    fn cands() -> Candidates {
        Candidates {
            w_bits: vec![8, 2, 4, 3],
            a_bits: vec![8, 4],
        }
    }

    #[test]
    fn uniform_picks_the_largest_plan_within_budget() {
        let layers = lenet();
        let b = Budget::avg_bits(3.5);
        let p = uniform(&layers, &cands(), &b).unwrap();
        assert!(p.layers.iter().all(|l| l.w_bits == 3 && l.a_bits == 8));
        assert_eq!(p.avg_w_bits, Some(3.0));
        let b = Budget {
            avg_bits: Some(3.5),
            max_bops_g: Some(281_640.0 * 3.0 * 4.0 / 1e9),
            ..Default::default()
        };
        let p = uniform(&layers, &cands(), &b).unwrap();
        assert!(p.layers.iter().all(|l| l.w_bits == 3 && l.a_bits == 4));
    }

    #[test]
    fn random_meets_the_budget_and_is_seeded() {
        let layers = lenet();
        let b = Budget::avg_bits(3.0);
        let p1 = random(&layers, &cands(), &b, 7, 100_000).unwrap();
        let p2 = random(&layers, &cands(), &b, 7, 100_000).unwrap();
        assert_eq!(p1.layers, p2.layers);
        assert!(p1.avg_w_bits.unwrap() <= 3.0 + 1e-9);
        let others: Vec<_> = (0..8)
            .map(|s| random(&layers, &cands(), &b, s, 100_000).unwrap().layers)
            .collect();
        assert!(
            others.iter().any(|l| *l != others[0]),
            "different seeds should differ"
        );
    }

    #[test]
    fn infeasible_budget_reports_the_smallest_value() {
        let layers = lenet();
        let b = Budget::avg_bits(1.5);
        match uniform(&layers, &cands(), &b) {
            Err(Error::Infeasible { budget, min_value }) => {
                assert!(budget.contains("avg_bits"), "{budget}");
                assert_eq!(min_value, "2.000000");
            }
            other => panic!("expected infeasible, got {other:?}"),
        }
    }
}
