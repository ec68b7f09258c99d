//! The end of a search: the policy with its method's record, the per-layer table a front end
//! shows (bits, Ω, LIMPQ importance, simulated latency and energy), and the files: the
//! policy first (if its path cannot be written, nothing is), then its side files
//! (`OUT.frontier.json` and `.svg` for `pareto`, `OUT.curve.svg` for the agents), all
//! written atomically together.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::agent::{Extra, Found, state_path};
use super::inputs::{Sensitivity, Tables};
use super::{Method, SearchRequest, side};
use crate::Result;
use crate::cost::HwTable;
use crate::graph::LayerInfo;
use crate::io::{Versioned, write_files_atomic};
use crate::pipeline::side_path;
use crate::plan::{BitWidth, LayerPrecision, QuantPlan};
use crate::report::{PlanPoint, agent_curve, pareto_chart};
use crate::search::OmegaMetric;
use crate::search::limpq::Indicators;
use crate::search::{
    AgentSection, Feasibility, FrontierFile, FrontierRef, LayerRow, LimpqSection, Policy,
    SearchSpace, SolverStats,
};

/// What `mpq search` found and wrote.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// The policy: the plan and the method's record.
    pub policy: Policy,
    /// The feasibility pre-flight.
    pub feasibility: Feasibility,
    /// One row per model layer.
    pub rows: Vec<LayerRow>,
    /// The plan on the request's hardware model.
    pub hardware: Option<HwTable>,
    /// HAWQ-V2's frontier (`pareto`).
    pub frontier: Option<FrontierFile>,
    /// HAQ's search state, when written.
    pub state: Option<PathBuf>,
    /// Every file written, the policy first.
    pub written: Vec<PathBuf>,
    /// The best uniform plan within the same budgets, with its Ω on the plan's scale (when
    /// the plan has an Ω and is not itself `uniform`).
    pub uniform: Option<UniformReference>,
    /// What a user should know before using the plan (its Ω above uniform's at the same
    /// budget).
    pub warnings: Vec<String>,
}

/// The uniform plan a searched plan is compared with: the best uniform `(w, a)` within the
/// same budgets ([`SearchSpace::uniform`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UniformReference {
    /// Weight bits of the searched layers.
    pub w_bits: BitWidth,
    /// Activation bits of the searched layers.
    pub a_bits: BitWidth,
    /// Its Ω, on the scale of the plan's `omega`.
    pub omega: f64,
    /// Its average weight bits.
    pub avg_w_bits: Option<f64>,
    /// Its bit operations per sample.
    pub bops: Option<f64>,
}

/// The uniform reference of `plan` and, when Ω predicts the plan worse, the warning.
fn against_uniform(
    req: &SearchRequest,
    space: &SearchSpace,
    layers: &[LayerInfo],
    tables: &Tables,
    other_scale: bool,
    plan: &QuantPlan,
) -> Result<(Option<UniformReference>, Vec<String>)> {
    let (Some(omega), false) = (plan.omega, matches!(req.method, Method::Uniform)) else {
        return Ok((None, Vec::new()));
    };
    if !space.has_omega() {
        return Ok((None, Vec::new()));
    }
    let Ok(u) = space.uniform() else {
        return Ok((None, Vec::new()));
    };
    let u_omega = if other_scale {
        match tables.reported() {
            Some(o) => o.plan_omega(layers, &u)?,
            None => return Ok((None, Vec::new())),
        }
    } else {
        match u.omega {
            Some(o) => o,
            None => return Ok((None, Vec::new())),
        }
    };
    let searched = (space.groups().iter())
        .find(|g| !g.pinned)
        .and_then(|g| g.layers.first())
        .map_or((0, 0), |&i| u.bits(&layers[i].name));
    let reference = UniformReference {
        w_bits: searched.0,
        a_bits: searched.1,
        omega: u_omega,
        avg_w_bits: u.avg_w_bits,
        bops: u.bops,
    };
    let mut warnings = Vec::new();
    if omega > u_omega * (1.0 + 1e-9) {
        warnings.push(format!(
            "the {} plan's Ω {omega:.4e} is higher than uniform W{}A{}'s {u_omega:.4e} within the \
             same budget: Ω predicts it loses more accuracy than uniform",
            req.method.name(),
            reference.w_bits,
            reference.a_bits
        ));
    }
    Ok((Some(reference), warnings))
}

/// Channels per width of a per-channel layer, highest first (`8:3 4:10 2:7`).
fn channel_summary(p: &LayerPrecision) -> Option<String> {
    let mut n: BTreeMap<u32, usize> = BTreeMap::new();
    for &b in p.channel_w_bits.as_ref()? {
        *n.entry(b).or_default() += 1;
    }
    let parts: Vec<String> = n.iter().rev().map(|(b, c)| format!("{b}:{c}")).collect();
    Some(parts.join(" "))
}

/// LIMPQ's record: α, the cleaning's bans, and any banned width the plan uses anyway.
fn limpq_section(ind: &Indicators, plan: &QuantPlan, alpha: f64) -> LimpqSection {
    let bans = ind
        .layers()
        .flat_map(|(n, l)| l.bans.iter().map(move |b| format!("{n}: {b}")))
        .collect();
    let banned_choices_used = ind
        .layers()
        .filter_map(|(n, l)| {
            let (w, a) = plan.bits(n);
            (l.banned_w_bits.contains(&w) || l.banned_a_bits.contains(&a))
                .then(|| format!("{n}: W{w}A{a}"))
        })
        .collect();
    LimpqSection {
        alpha,
        bans,
        banned_choices_used,
        importance: None,
    }
}

/// The policy, rows and files of a finished search.
pub(super) fn finish(
    req: &SearchRequest,
    space: &SearchSpace,
    feasibility: Feasibility,
    tables: &Tables,
    sens: &Sensitivity,
    found: Found,
) -> Result<SearchOutcome> {
    let (layers, hw) = (space.layers(), space.hardware());
    let mut plan = found.plan;
    if !matches!(req.method, Method::Limpq { .. }) {
        for l in &mut plan.layers {
            l.weight_range = req.weight_range;
        }
    }
    // One Ω scale for every method: the trace Ω, whatever ranked the layers (HAWQ's
    // eigenvalues, LIMPQ's importance, which LIMPQ's section keeps as `importance`).
    let other_scale = matches!(req.method, Method::Limpq { .. })
        || tables
            .omega
            .as_ref()
            .is_some_and(|o| o.config().metric != OmegaMetric::Trace);
    let objective = plan.omega;
    if other_scale {
        plan.omega = tables
            .reported()
            .map(|o| o.plan_omega(layers, &plan))
            .transpose()?;
    }
    let (uniform, warnings) = against_uniform(req, space, layers, tables, other_scale, &plan)?;
    let hardware = (hw.filter(|h| h.has_latency()))
        .map(|h| h.table(layers, &plan))
        .transpose()?;
    let alpha = match req.method {
        Method::Limpq { alpha } => alpha,
        _ => 0.0,
    };
    let mut rows = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let (w, a) = plan.bits(&l.name);
        let omega = match (tables.reported(), &tables.choice_omega) {
            (Some(o), _) if o.has_row(i) => Some(o.omega(i, w, a)?),
            (None, Some(t)) => t.get(&(i, w, a)).copied(),
            _ => None,
        };
        let importance = match sens.indicators() {
            Some(ind) => ind.cost(&l.name, w, a, alpha)?,
            None => None,
        };
        let sim = hardware.as_ref().map(|h| &h.layers[i]);
        rows.push(LayerRow {
            name: l.name.clone(),
            params: l.params,
            w_bits: w,
            a_bits: a,
            channels: plan.precision(&l.name).and_then(channel_summary),
            omega,
            importance,
            latency_ms: sim.map(|r| r.latency_ms),
            energy_mj: sim.and_then(|r| r.energy_mj),
        });
    }
    let name = |suffix: &str| {
        let path = req.out.as_ref().map(|o| side_path(o, suffix));
        let file = path.as_ref().and_then(|p| p.file_name());
        file.map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut policy = Policy::new(plan);
    let mut frontier = None;
    match found.extra {
        Extra::None => {}
        Extra::Pareto(file) => {
            policy.frontier = Some(FrontierRef {
                points: file.points.len(),
                chosen: file.chosen,
                json: name(side::FRONTIER_JSON),
                svg: name(side::FRONTIER_SVG),
            });
            frontier = Some(*file);
        }
        Extra::Solver(s) => policy.solver = Some(SolverStats::from(&s)),
        Extra::Limpq(s) => {
            policy.solver = Some(SolverStats::from(&s));
            if let Some(ind) = sens.indicators() {
                let mut section = limpq_section(ind, &policy.plan, alpha);
                section.importance = objective;
                policy.limpq = Some(section);
            }
        }
        Extra::Haq(r) => {
            let h = r.history;
            let best = h.best_episode.and_then(|b| h.episodes.get(b));
            policy.haq = Some(AgentSection {
                fp_accuracy: h.fp_accuracy,
                best_episode: h.best_episode,
                best_accuracy: best.map(|b| b.accuracy),
                best_reward: best.map(|b| b.reward),
                episodes: h.episodes.len(),
                steps_per_episode: Some(h.steps_per_episode),
                evaluations_seconds: Some(r.eval_seconds),
                resumed_episodes: Some(r.resumed_episodes),
                state: Some(name(side::HAQ_STATE)),
                warmup: None,
                curve: name(side::CURVE_SVG),
                settings: Some(h.settings),
                history: h.episodes,
            });
        }
        Extra::Cw(r) => {
            let best = r.episodes.get(r.best_episode);
            let warmup = req.method.agent().map_or(0, |a| a.warmup);
            policy.cw_hawq = Some(AgentSection {
                fp_accuracy: r.fp_accuracy,
                best_episode: Some(r.best_episode),
                best_accuracy: best.map(|b| b.accuracy),
                best_reward: best.map(|b| b.reward),
                episodes: r.episodes.len(),
                steps_per_episode: None,
                evaluations_seconds: None,
                resumed_episodes: Some(r.resumed_episodes),
                state: Some(name(side::CW_STATE)),
                warmup: Some(warmup),
                curve: name(side::CURVE_SVG),
                settings: None,
                history: r.episodes,
            });
        }
    }
    let written = match &req.out {
        Some(out) => write(out, &policy, frontier.as_ref())?,
        None => Vec::new(),
    };
    Ok(SearchOutcome {
        state: state_path(req),
        policy,
        feasibility,
        rows,
        hardware,
        frontier,
        written,
        uniform,
        warnings,
    })
}

/// Writes the policy and its side files atomically; returns their paths.
fn write(
    out: &std::path::Path,
    policy: &Policy,
    frontier: Option<&FrontierFile>,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if let Some(f) = frontier {
        files.push((side_path(out, side::FRONTIER_JSON), f.to_bytes()?));
        let p = &policy.plan;
        let chosen = PlanPoint {
            method: "pareto (chosen)".into(),
            avg_w_bits: p.avg_w_bits.unwrap_or(f64::NAN),
            size_bytes: p.size_bytes.unwrap_or(0) as f64,
            bops: p.bops.unwrap_or(f64::NAN),
            omega: p.omega.unwrap_or(f64::NAN),
        };
        if let Some(svg) = pareto_chart(Some(f), &[chosen]) {
            files.push((side_path(out, side::FRONTIER_SVG), svg.into_bytes()));
        }
    }
    let curve = match (&policy.haq, &policy.cw_hawq) {
        (Some(h), _) => agent_curve(h, "HAQ"),
        (None, Some(c)) => agent_curve(c, "CW-HAWQ"),
        _ => None,
    };
    if let Some(svg) = curve {
        files.push((side_path(out, side::CURVE_SVG), svg.into_bytes()));
    }
    // The policy last: a policy on disk always has its side files beside it.
    files.push((out.to_path_buf(), policy.to_bytes()?));
    write_files_atomic(&files)?;
    let mut written: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).collect();
    written.rotate_right(1);
    Ok(written)
}
