//! The text of a sensitivity analysis: per layer the traces, eigenvalues and activation
//! traces (or LIMPQ's learned steps), and a line of what it cost and where it went.

use std::fmt::Write as _;
use std::path::Path;

use super::{Table, sci, thousands};
use crate::sensitivity::{LayerSensitivity, SensitivityTable};

/// The Hessian analysis `t` (written to `out`, its density plot to `svg`).
pub fn sensitivity(t: &SensitivityTable, out: &Path, svg: Option<&Path>) -> String {
    let has = |f: &dyn Fn(&LayerSensitivity) -> bool| t.layers.iter().any(f);
    let (tr, eig, act) = (
        has(&|l| l.trace.is_some()),
        has(&|l| l.top_eigenvalue.is_some()),
        has(&|l| l.act_trace.is_some()),
    );
    let mut header = String::from("layer|op|params");
    for (on, cols) in [
        (tr, "|trace|stderr|trace/param"),
        (eig, "|top eigenvalue"),
        (act, "|act trace|act stderr"),
    ] {
        if on {
            header.push_str(cols);
        }
    }
    let mut tab = Table::new(&header);
    for l in &t.layers {
        let op = l.op.map(super::op_name).unwrap_or_default();
        let mut row = vec![l.name.clone(), op, thousands(l.params as u64)];
        if tr {
            row.extend([sci(l.trace), sci(l.trace_stderr), sci(l.trace_per_param)]);
        }
        if eig {
            row.push(sci(l.top_eigenvalue));
        }
        if act {
            row.extend([sci(l.act_trace), sci(l.act_trace_stderr)]);
        }
        tab.row(row);
    }
    let mut s = format!(
        "{tab}\n\n{} Hessian-vector products in {:.1} s",
        t.hvp_count, t.seconds
    );
    if let Some(p) = t.probes {
        let _ = write!(s, ", {p} weight probes");
    }
    if let Some(p) = t.act_probes {
        let _ = write!(s, ", {p} activation probes");
    }
    if let Some(top) = &t.model_top_eigenvalues {
        let top: Vec<String> = top.iter().map(|x| format!("{x:.4e}")).collect();
        let _ = write!(s, "; model top eigenvalues {}", top.join(", "));
    }
    let _ = write!(s, "; written to {}", out.display());
    if let Some(p) = svg {
        let _ = write!(s, " and {}", p.display());
    }
    let decided: Vec<String> = (t.layers.iter())
        .filter_map(|l| {
            let f = l.channel_order_decided()?;
            Some(format!("{} {:.0}%", l.name, 100.0 * f))
        })
        .collect();
    if !decided.is_empty() {
        let _ = write!(
            s,
            "\nchannel order decided beyond noise (channel pairs whose traces differ by more \
             than 1.96 standard errors): {}",
            decided.join(", ")
        );
    }
    s
}

/// LIMPQ's indicators in `t` for the candidate `bits` (written to `out`): per layer the
/// learned steps at every width and the bans, then the training run's record.
pub fn indicators(t: &SensitivityTable, bits: &[u32], out: &Path) -> String {
    let mut sorted = bits.to_vec();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    let widths: Vec<String> = sorted.iter().map(|b| format!("w{b}|a{b}")).collect();
    let mut tab = Table::new(&format!("layer|params|{}|banned", widths.join("|")));
    for l in &t.layers {
        let mut row = vec![l.name.clone(), thousands(l.params as u64)];
        let Some(ind) = &l.limpq else {
            row.extend(std::iter::repeat_n("-".to_string(), 2 * sorted.len()));
            row.push("not searched (8 bits)".into());
            tab.row(row);
            continue;
        };
        for b in &sorted {
            row.extend([
                sci(ind.weight.get(b).copied()),
                sci(ind.act.get(b).copied()),
            ]);
        }
        let w = ind.banned_w_bits.iter().map(|b| format!("w{b}"));
        let banned: Vec<String> = w
            .chain(ind.banned_a_bits.iter().map(|b| format!("a{b}")))
            .collect();
        row.push(if banned.is_empty() {
            "-".into()
        } else {
            banned.join(" ")
        });
        tab.row(row);
    }
    let Some(r) = &t.limpq else {
        return tab.to_string();
    };
    let bans = if r.bans.is_empty() {
        String::new()
    } else {
        format!(":\n  {}", r.bans.join("\n  "))
    };
    format!(
        "{tab}\n\n{} joint steps ({} passes, {} samples) in {:.1} s; steps grow as bits shrink \
         in {:.0}% of the (layer, weights|activations) series; {} indicator(s) banned{bans}; \
         written to {}",
        r.steps,
        r.passes,
        r.samples,
        t.seconds,
        100.0 * r.monotone_fraction,
        r.bans.len(),
        out.display()
    )
}
