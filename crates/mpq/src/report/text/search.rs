//! The text of a search: per layer its bits (and channels), Ω or LIMPQ's importance, and
//! simulated latency and energy; then the plan's totals and what the method found besides.

use std::fmt::Write as _;
use std::path::Path;

use super::{Table, num, opt, thousands};
use crate::cost::HwTable;
use crate::search::{LayerRow, Policy};

/// The per-layer table of a searched plan.
pub fn plan_table(rows: &[LayerRow], hw: Option<&HwTable>) -> Table {
    let any = |f: &dyn Fn(&LayerRow) -> bool| rows.iter().any(f);
    let (channels, omega, importance) = (
        any(&|l| l.channels.is_some()),
        any(&|l| l.omega.is_some()),
        any(&|l| l.importance.is_some()),
    );
    let mut header = String::from("layer|params|w_bits|a_bits");
    for (on, col) in [
        (channels, "|channels (bits:count)"),
        (omega, "|omega"),
        (importance, "|importance"),
        (hw.is_some(), "|latency_ms|energy_mj"),
    ] {
        if on {
            header.push_str(col);
        }
    }
    let mut t = Table::new(&header);
    for l in rows {
        let mut row = vec![
            l.name.clone(),
            thousands(l.params as u64),
            l.w_bits.to_string(),
            l.a_bits.to_string(),
        ];
        if channels {
            row.push(l.channels.clone().unwrap_or_else(|| "-".into()));
        }
        for (on, v) in [(omega, l.omega), (importance, l.importance)] {
            if on {
                row.push(opt(v, num));
            }
        }
        if hw.is_some() {
            row.extend([opt(l.latency_ms, num), opt(l.energy_mj, num)]);
        }
        t.row(row);
    }
    t
}

/// The plan's totals (written to `out`), what the method found besides the plan, and
/// HAWQ's fine-tuning order.
pub fn plan_lines(policy: &Policy, hw: Option<&HwTable>, out: &Path) -> String {
    let p = &policy.plan;
    let mut s = format!(
        "{}: {} bytes, {:.3} average weight bits, {:.4} GBOPs",
        p.method,
        p.size_bytes.unwrap_or(0),
        p.avg_w_bits.unwrap_or(f64::NAN),
        p.bops.unwrap_or(f64::NAN) / 1e9,
    );
    if let Some(o) = p.omega {
        let _ = write!(s, ", omega {}", num(o));
    }
    if let Some(h) = hw {
        let _ = write!(s, ", {} ms", num(h.latency_ms));
        if let Some(e) = h.energy_mj {
            let _ = write!(s, ", {} mJ", num(e));
        }
        let _ = write!(s, " on {}", h.hardware);
    }
    let _ = write!(s, " ({:.3} s); written to {}", p.seconds, out.display());
    if let Some(m) = method_line(policy, out) {
        let _ = write!(s, "\n{m}");
    }
    if let Some(order) = &p.finetune_order {
        let order = order.join(", ");
        let _ = write!(s, "\nfine-tuning order (most sensitive first): {order}");
    }
    s
}

/// `OUT`'s side file with `suffix` (`p.json` → `p.curve.svg`).
fn side(out: &Path, suffix: &str) -> String {
    out.with_extension(suffix).display().to_string()
}

/// What the method found besides the plan, when anything.
fn method_line(pol: &Policy, out: &Path) -> Option<String> {
    let optimal = |proven: bool, limit: &str| {
        if proven {
            "optimal".to_string()
        } else {
            limit.to_string()
        }
    };
    if let Some(c) = &pol.cw_hawq {
        let b = c.history.get(c.best_episode?)?;
        return Some(format!(
            "CW-HAWQ: best episode {} of {}: {:.2}% on the held-out split (FP {:.2}%), reward \
             {:.4}",
            b.episode, c.episodes, b.accuracy, c.fp_accuracy, b.reward
        ));
    }
    if let Some(h) = &pol.haq {
        let mut s = String::new();
        if let Some(b) = h.best_episode.and_then(|i| h.history.get(i)) {
            let resumed = match h.resumed_episodes.unwrap_or(0) {
                0 => String::new(),
                n => format!(", {n} episodes replayed from the saved state"),
            };
            s = format!(
                "HAQ: best episode {} of {}: {:.2}% on the held-out split (FP {:.2}%), reward \
                 {:.4}; {:.1} s scoring plans{resumed}\n",
                b.episode,
                h.episodes,
                b.accuracy,
                h.fp_accuracy,
                b.reward,
                h.evaluations_seconds.unwrap_or(0.0),
            );
        }
        let (curve, state) = (side(out, "curve.svg"), side(out, "haq-state.json"));
        return Some(format!("{s}learning curve: {curve}; search state: {state}"));
    }
    if let (Some(s), Some(l)) = (&pol.solver, &pol.limpq) {
        let bans = l.bans.len();
        let listed = if bans > 0 {
            " (listed under limpq.bans in the policy)"
        } else {
            ""
        };
        return Some(format!(
            "LIMPQ: alpha {}, {} nodes ({}); {bans} indicator(s) banned by the monotonicity \
             cleaning{listed}",
            l.alpha,
            s.nodes,
            optimal(s.proven_optimal, "node limit reached")
        ));
    }
    if let Some(s) = &pol.solver {
        return Some(format!(
            "solver: exact multiple-choice knapsack branch and bound, {} nodes, {}",
            s.nodes,
            optimal(
                s.proven_optimal,
                "node limit reached (best plan found, optimality not proven)"
            )
        ));
    }
    pol.frontier.as_ref().map(|f| {
        let (json, svg) = (side(out, "frontier.json"), side(out, "frontier.svg"));
        let (n, c) = (f.points, f.chosen);
        format!("frontier: {n} points, chosen #{c}; written to {json} and {svg}")
    })
}
