//! `DIR/compare.md`: the comparison as Markdown tables, one per budget, with the verdicts
//! and Ω's rank correlation spelled out (docs/compare.md, "Reading compare.md").

use std::fmt::Write as _;

use super::{BudgetResult, CompareFile, Interval, Row, RowKind, WORSE};

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

fn interval(i: &Interval) -> String {
    format!("{} [{}, {}]", pct(i.mean), pct(i.lo), pct(i.hi))
}

fn points(i: &Interval) -> String {
    format!(
        "{:+.2} [{:+.2}, {:+.2}]",
        100.0 * i.mean,
        100.0 * i.lo,
        100.0 * i.hi
    )
}

fn cell(row: &Row) -> Vec<String> {
    let name = match row.kind {
        RowKind::Method | RowKind::Random => row.name.clone(),
        RowKind::UniformBelow => format!("uniform {} (nearest within)", row.name.to_uppercase()),
        RowKind::UniformAbove => format!("uniform {} (nearest above)", row.name.to_uppercase()),
    };
    if let Some(e) = &row.error {
        let mut v = vec![name, format!("not measured: {e}")];
        v.resize(9, String::new());
        return v;
    }
    let costs = |f: fn(&super::Costs) -> String| row.costs.as_ref().map(f).unwrap_or_default();
    let ft = row.finetuned.as_ref().map_or("-".to_string(), |f| {
        format!(
            "{} ± {} [{}, {}]",
            pct(f.mean),
            pct(f.sd),
            pct(f.total.lo),
            pct(f.total.hi)
        )
    });
    let v = row.verdict.as_ref();
    let diff = v.map_or("-".to_string(), |v| match &v.finetuned {
        Some(f) => format!("{} (PTQ {})", points(f), points(&v.ptq)),
        None => points(&v.ptq),
    });
    let verdict = v.map_or("-".to_string(), |v| {
        if v.headline() == WORSE {
            format!("**{WORSE}**")
        } else {
            v.headline().to_string()
        }
    });
    vec![
        name,
        row.cost.map_or(String::new(), |c| format!("{c:.4}")),
        costs(|c| format!("{:.3}", c.avg_w_bits)),
        row.omega.map_or("-".into(), |o| format!("{o:.3e}")),
        row.ptq.as_ref().map_or("-".into(), interval),
        ft,
        diff,
        verdict,
        row.beats_random
            .map_or("-".into(), |b| format!("{:.0}%", 100.0 * b)),
    ]
}

fn budget(out: &mut String, b: &BudgetResult, f: &CompareFile) {
    let _ = writeln!(
        out,
        "\n## `{}`\n\nLimit: {} ≤ {}.\n",
        b.label,
        b.axis.label(),
        b.limit
    );
    let against = (b.rows.iter())
        .find_map(|r| r.verdict.as_ref().map(|v| v.against.to_uppercase()))
        .unwrap_or_else(|| "uniform".into());
    let head = [
        "plan",
        "cost",
        "avg W bits",
        "Ω",
        "PTQ % [95%]",
        if f.setup.seeds > 0 {
            "fine-tuned % mean ± sd [95%]"
        } else {
            "fine-tuned %"
        },
        &format!("vs {against}, points [95%]"),
        "verdict",
        "beats random (PTQ)",
    ];
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(head.len()));
    for r in &b.rows {
        let _ = writeln!(out, "| {} |", cell(r).join(" | "));
    }
    if let Some(r) = b.rows.iter().find(|r| r.kind == RowKind::Random)
        && let Some(p) = &r.ptq
    {
        let _ = writeln!(
            out,
            "\n{} random plans within the budget: post-training accuracy mean {}%, 95% of \
             them in [{}, {}]%.",
            b.random.len(),
            pct(p.mean),
            pct(p.lo),
            pct(p.hi)
        );
    }
    match &b.omega_spearman {
        Some(c) => {
            let ci = match (c.lo, c.hi) {
                (Some(lo), Some(hi)) => format!(" [{lo:.2}, {hi:.2}]"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "\nΩ's Spearman correlation with the measured post-training loss increase over \
                 the random plans: ρ = {:.3}{ci} (n = {}).",
                c.rho, c.n
            );
        }
        None if !b.random.is_empty() => {
            let _ = writeln!(
                out,
                "\nNo Ω correlation: the random plans have no Ω (give a Hessian sensitivity \
                 file)."
            );
        }
        None => {}
    }
    let losers: Vec<&str> = (b.rows.iter())
        .filter(|r| r.verdict.as_ref().is_some_and(|v| v.headline() == WORSE))
        .map(|r| r.name.as_str())
        .collect();
    let better: Vec<&str> = (b.rows.iter())
        .filter(|r| {
            r.verdict
                .as_ref()
                .is_some_and(|v| v.headline() == super::BETTER)
        })
        .map(|r| r.name.as_str())
        .collect();
    let _ = writeln!(
        out,
        "\nBetter than uniform {against} beyond noise: {}. Worse beyond noise: {}.",
        if better.is_empty() {
            "none".to_string()
        } else {
            better.join(", ")
        },
        if losers.is_empty() {
            "none".to_string()
        } else {
            losers.join(", ")
        }
    );
}

/// The comparison as Markdown.
pub fn markdown(f: &CompareFile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Does mixed precision pay? {} on {}\n",
        f.setup.arch, f.setup.data
    );
    let _ = writeln!(
        out,
        "Model `{}`: {}% FP32 test accuracy, {} test samples. {}; {} random plans per \
         budget. Intervals are 95%: a seeded bootstrap of the test set ({} resamples, paired \
         between plans), widened by the spread over fine-tuning seeds. A verdict compares a \
         plan with the uniform plan of the highest cost within the same budget.",
        f.setup.model,
        pct(f.setup.fp32_accuracy),
        f.test_samples,
        if f.setup.seeds == 0 {
            "Post-training quantization only".to_string()
        } else {
            format!(
                "Each plan fine-tuned {} epoch(s) with {} seed(s)",
                f.setup.finetune_epochs, f.setup.seeds
            )
        },
        f.setup.random_plans,
        f.setup.resamples
    );
    for b in &f.budgets {
        budget(&mut out, b, f);
    }
    out
}
