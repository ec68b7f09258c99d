//! The HAWQ-V3 / LIMPQ integer program (Yao et al. ICML 2021; Tang et al. ECCV 2022; spec
//! §2.7, §5.6): a one-hot `(w_bits, a_bits)` per layer minimising `Σ_l Ω_l(w, a)` (weights
//! plus activations) under any mix of size, BOPs, latency and energy budgets, with pinned
//! layers and tied layers sharing bits. Solved exactly by [`super::mckp::solve`]; ties in Ω
//! are then broken towards more bits.

use std::time::Instant;

use serde::Serialize;

use super::mckp::{self, Item, Mckp};
use super::space::SearchSpace;
use crate::plan::QuantPlan;
use crate::{Error, Result};

/// How the solve went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IlpStats {
    /// Branch-and-bound nodes.
    pub nodes: u64,
    /// Whether optimality was proven (false only past [`mckp::NODE_LIMIT`] nodes).
    pub proven_optimal: bool,
}

impl SearchSpace<'_> {
    /// The space as a multiple-choice knapsack: one group per tied group, value Ω, one cost per
    /// budget.
    pub fn to_mckp(&self) -> Mckp {
        Mckp {
            groups: self
                .groups()
                .iter()
                .map(|g| {
                    g.choices
                        .iter()
                        .map(|c| Item {
                            value: c.omega,
                            costs: c.costs.clone(),
                        })
                        .collect()
                })
                .collect(),
            limits: self.constraints().iter().map(|c| c.cost_limit).collect(),
        }
    }
}

/// The least-Ω plan meeting every budget. Needs Ω ([`SearchSpace::set_omega`]).
pub fn ilp(space: &SearchSpace) -> Result<(QuantPlan, IlpStats)> {
    let start = Instant::now();
    space.check_omega_search("ilp")?;
    let Some(sol) = mckp::solve(&space.to_mckp()) else {
        return Err(Error::Infeasible {
            budget: "the budgets together (each alone is achievable, but no plan meets all)".into(),
            min_value: "loosen one of them".into(),
        });
    };
    let mut choice = sol.choice;
    space.raise_free_bits(&mut choice);
    let plan = space.plan(&choice, "ilp", start)?;
    Ok((
        plan,
        IlpStats {
            nodes: sol.nodes,
            proven_optimal: sol.proven_optimal,
        },
    ))
}
