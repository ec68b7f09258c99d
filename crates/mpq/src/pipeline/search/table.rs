//! `mpq search --table`: a search from a problem table alone ([`crate::search::problem`],
//! docs/file-formats.md "Problem tables"), without a model: the table's layers, Ω and costs
//! make the search space, and the same solvers (`uniform`, `random`, `pareto`, `ilp`) write
//! the same policy format.

use std::collections::BTreeSet;
use std::path::Path;

use super::agent::{Extra, Found};
use super::inputs::{Sensitivity, Tables};
use super::{Method, SearchOutcome, SearchRequest, outcome};
use crate::cost::HardwareModel;
use crate::plan::BitWidth;
use crate::progress::Progress;
use crate::search::problem::ProblemTable;
use crate::search::{self, Candidates, SearchOptions, SearchSpace};
use crate::{Error, Result};

/// Option combinations a table search cannot take.
pub(super) fn validate(req: &SearchRequest) -> Result<()> {
    let usage = |m: &str| Err(Error::Usage(m.into()));
    if !matches!(
        req.method,
        Method::Uniform | Method::Random { .. } | Method::Pareto | Method::Ilp
    ) {
        return usage("--table works with --method uniform, random, pareto or ilp");
    }
    if req.sensitivity.is_some() {
        return usage("--table carries its own Ω: drop --sensitivity");
    }
    if req.hardware.is_some() {
        return usage("--table carries its own costs: put latency_ms/energy_mj columns in it");
    }
    if req.budget.bops_as.is_some() {
        return usage("--bops-as needs a model: give --max-bops or --bops-ratio");
    }
    Ok(())
}

/// Runs the search of `req` on the problem table at `path`.
pub(super) fn search(
    req: &SearchRequest,
    path: &Path,
    progress: &mut dyn Progress,
) -> Result<SearchOutcome> {
    let table = ProblemTable::load(path)?;
    let limits = &req.budget.limits;
    if !table.has_params && (limits.avg_bits.is_some() || limits.compression.is_some()) {
        return Err(Error::config(
            "table",
            "--avg-bits and --compression need a params column (weights per layer)",
        ));
    }
    let hw = table.costs.clone().map(HardwareModel::Lookup);
    let pairs: BTreeSet<(BitWidth, BitWidth)> =
        table.omega.keys().map(|&(_, w, a)| (w, a)).collect();
    let widths = |pick: fn(&(BitWidth, BitWidth)) -> BitWidth| {
        let s: BTreeSet<BitWidth> = pairs.iter().map(pick).collect();
        s.into_iter().collect::<Vec<_>>()
    };
    let cands = Candidates {
        w_bits: req.w_bits.clone().unwrap_or_else(|| widths(|p| p.0)),
        a_bits: req.a_bits.clone().unwrap_or_else(|| widths(|p| p.1)),
    };
    // Without --formats, a table that is not a full grid gives its own pairs as formats.
    let grid = cands.w_bits.len() * cands.a_bits.len();
    let formats = match &req.formats {
        Some(f) => Some(f.clone()),
        None if req.w_bits.is_none() && req.a_bits.is_none() && pairs.len() < grid => {
            Some(pairs.iter().copied().collect())
        }
        None => None,
    };
    let opts = SearchOptions {
        pins: req.pins.clone(),
        ties: req.ties.clone(),
        formats,
        ..SearchOptions::default()
    };
    let mut space = SearchSpace::new(&table.layers, &cands, limits, hw.as_ref(), &opts)?;
    let feasibility = space.feasibility();
    feasibility.check_with_report(!opts.pins.is_empty() || !opts.ties.is_empty())?;
    if !feasibility.budgets.is_empty() {
        progress.note(&feasibility.to_string());
    }
    let searched: BTreeSet<usize> = (space.groups().iter())
        .filter(|g| !g.pinned)
        .flat_map(|g| g.layers.iter().copied())
        .collect();
    space.set_omega_by(|i, w, a| match table.omega(i, w, a) {
        Some(v) => Ok(Some(v)),
        None if !searched.contains(&i) => Ok(None),
        None => Err(Error::config(
            "table",
            format!(
                "{} has no row for layer {} at {w}/{a} (add it, narrow --w-bits/--a-bits or \
                 --formats, or pin the layer)",
                table.name, table.layers[i].name
            ),
        )),
    })?;
    let found = match &req.method {
        Method::Uniform => Found {
            plan: space.uniform()?,
            extra: Extra::None,
        },
        Method::Random { max_tries } => Found {
            plan: space.random(req.seed, *max_tries)?,
            extra: Extra::None,
        },
        Method::Pareto => {
            let r = search::pareto(&space)?;
            let policy = req.out.as_ref().map(|p| p.display().to_string());
            let file = r.to_file(&space, &table.name, &policy.unwrap_or_default());
            Found {
                plan: r.plan,
                extra: Extra::Pareto(Box::new(file)),
            }
        }
        _ => {
            let (plan, stats) = search::ilp(&space)?;
            Found {
                plan,
                extra: Extra::Solver(stats),
            }
        }
    };
    let tables = Tables {
        choice_omega: Some(table.omega.clone()),
        ..Tables::default()
    };
    outcome::finish(
        req,
        &space,
        feasibility,
        &tables,
        &Sensitivity::none(),
        found,
    )
}
