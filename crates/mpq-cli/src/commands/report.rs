//! `mpq report --run DIR`: renders `DIR/report.html` (and each plot as
//! `DIR/report-<plot>.svg`) and says on stderr what the folder lacks.

use mpq::pipeline::ReportRequest;

use crate::args::GlobalArgs;
use crate::args::runs::ReportArgs;
use crate::output;

pub(crate) fn run(g: &GlobalArgs, a: &ReportArgs) -> anyhow::Result<()> {
    let out = mpq::pipeline::report(&ReportRequest { run: a.run.clone() })?;
    let mut gaps: Vec<String> = out
        .missing
        .iter()
        .map(|m| m.split(" (").next().unwrap_or(m).to_string())
        .collect();
    gaps.extend(
        out.unreadable
            .iter()
            .map(|u| format!("{} (unreadable)", u.split(": ").next().unwrap_or(u))),
    );
    if !gaps.is_empty() {
        // Always shown (not a progress line): the report is incomplete.
        eprintln!(
            "note: the run lacks {}; the report shows the rest",
            gaps.join(", ")
        );
    }
    if g.json {
        return output::json(&serde_json::json!({
            "report": out.path.display().to_string(),
            "plots": out.plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "missing": out.missing,
            "unreadable": out.unreadable,
            "results": out.rows,
        }));
    }
    let plans = out.rows.iter().filter(|r| r.method != "fp32").count();
    let s = |n: usize| if n == 1 { "" } else { "s" };
    output::line(&format!(
        "report: {} ({plans} plan{}; {} plot{} also as report-*.svg)",
        out.path.display(),
        s(plans),
        out.plots.len(),
        s(out.plots.len())
    ))
}
