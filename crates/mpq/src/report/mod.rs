//! The HTML report of a run folder (`mpq report --run DIR`, the end of `mpq quickstart`): one
//! self-contained `DIR/report.html` with inline SVG plots and no scripts to run: the run's
//! settings, the results table, per-layer weight and activation sensitivity, the Pareto
//! frontier with every method's plan, the bit-map of every plan, the Hessian spectral density
//! and the agent searches' learning curves. Each plot is also written as its own file,
//! `DIR/report-<plot>.svg`. What the folder lacks is listed, not fatal.
//!
//! The results table's numbers are also in a `<script type="application/json"
//! id="mpq-report-data">` block, for tests and scripts.

mod bitmap;
mod charts;
mod compare;
mod results;
mod run;
pub mod svg;
pub mod text;

pub use bitmap::{bitmap_svg, bits_colour};
pub use charts::{
    Episode, PlanPoint, activation_chart, density_chart, learning_curve, pareto_chart,
    sensitivity_chart,
};
pub use compare::{compare_charts, compare_table};
pub use results::{HARDWARE, report_rows, result_rows, results_html, si, sig4};
pub use run::{METHOD_ORDER, MethodRun, RunFolder, method_rank};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use svg::esc;

use crate::Result;
use crate::run::ResultRow;
use crate::search::{AgentEpisode, AgentSection};

/// What [`render`] wrote and what the run lacked.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOutcome {
    /// The written report (`DIR/report.html`).
    pub path: PathBuf,
    /// Each plot of the report also as its own file (`DIR/report-<plot>.svg`).
    pub plots: Vec<PathBuf>,
    /// What the run folder lacks (relative paths, each with what it would have shown).
    pub missing: Vec<String>,
    /// Files that exist but could not be read (`path: reason`).
    pub unreadable: Vec<String>,
    /// The results table.
    pub rows: Vec<ResultRow>,
}

/// Reads the run folder `dir` and writes `dir/report.html` atomically. Fails (an input
/// error) only when `dir` is not a folder or holds none of a run's files; missing and
/// unreadable parts are listed in the report and in the outcome.
pub fn render(dir: &Path) -> Result<ReportOutcome> {
    let run = RunFolder::load(dir)?;
    let report = report_html(&run)?;
    let path = dir.join("report.html");
    let mut plots = Vec::new();
    for id in PLOTS {
        let file = dir.join(format!("report-{id}.svg"));
        match report.plots.iter().find(|(p, _)| p == &id) {
            Some((_, svg)) => {
                crate::io::write_atomic(&file, svg.as_bytes())?;
                plots.push(file);
            }
            // A plot this run cannot draw: no stale file from an earlier render.
            None if file.is_file() => {
                std::fs::remove_file(&file).map_err(|e| crate::Error::io(&file, e))?;
            }
            None => {}
        }
    }
    crate::io::write_atomic(&path, report.html.as_bytes())?;
    Ok(ReportOutcome {
        path,
        plots,
        missing: run.missing,
        unreadable: run.unreadable,
        rows: report.rows,
    })
}

/// The report's plots, by section id (`DIR/report-<id>.svg`).
pub const PLOTS: [&str; 9] = [
    "compare-finetuned",
    "compare-ptq",
    "sensitivity",
    "activations",
    "pareto",
    "bitmap",
    "density",
    "haq-curve",
    "cw-curve",
];

/// A rendered report: the HTML document, its results table and its plots (`(section id,
/// SVG)`, each also inline in the HTML).
#[derive(Debug, Clone)]
pub struct Report {
    /// The whole HTML document.
    pub html: String,
    /// The results table.
    pub rows: Vec<ResultRow>,
    /// The plots drawn.
    pub plots: Vec<(&'static str, String)>,
}

const CSS: &str = r#"
body { font-family: Helvetica, Arial, sans-serif; color: #222; margin: 0; background: #f4f5f7; }
header { background: #1f3a5f; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: 0.85; }
main { padding: 16px 32px 40px 32px; }
section { background: white; border: 1px solid #dde1e6; border-radius: 6px; padding: 14px 18px; margin: 0 0 16px 0; }
h2 { font-size: 18px; margin: 0 0 8px 0; color: #1f3a5f; }
p.caption { margin: 4px 0 10px 0; color: #555; font-size: 13px; max-width: 1200px; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
.grid > section { flex: 1 1 560px; margin: 0; }
.grid { margin: 0 0 16px 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e6ea; text-align: left; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: #999; }
td.best { font-weight: bold; color: #1a7f37; }
tr.ref td { color: #555; font-style: italic; }
table.results th { text-align: right; } table.results th:first-child { text-align: left; }
.kv td:first-child { color: #555; }
.warn { border-left: 5px solid #d9822b; }
.warn li { font-family: monospace; font-size: 12px; }
.na-box { color: #777; font-style: italic; padding: 24px; border: 1px dashed #ccc; }
svg { max-width: 100%; height: auto; }
"#;

fn section(id: &str, title: &str, caption: &str, body: Option<String>, why: &str) -> String {
    let body =
        body.unwrap_or_else(|| format!(r#"<div class="na-box">not available: {}</div>"#, esc(why)));
    format!(
        r#"<section id="{id}"><h2>{}</h2><p class="caption">{}</p>{body}</section>"#,
        esc(title),
        esc(caption)
    )
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.into(), s.clone())),
        other => out.push((prefix.into(), other.to_string())),
    }
}

fn settings_html(run: &RunFolder) -> Option<String> {
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(v) = run
        .settings
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
    {
        flatten("", &v, &mut rows);
    }
    if let Some(fp) = &run.fp {
        rows.push((
            "FP32 test accuracy".into(),
            format!("{:.2}%", 100.0 * fp.accuracy),
        ));
        rows.push(("FP32 test loss".into(), format!("{:.4}", fp.loss)));
        rows.push(("test samples".into(), fp.samples.to_string()));
    }
    if let Some(l) = run.layers() {
        let params: usize = l.iter().map(|l| l.params).sum();
        rows.push((
            "quantizable layers".into(),
            format!("{} ({params} weights)", l.len()),
        ));
    }
    if rows.is_empty() {
        return None;
    }
    let mut s = String::from(r#"<table class="kv">"#);
    for (k, v) in rows {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(&k), esc(&v));
    }
    s.push_str("</table>");
    Some(s)
}

/// The learning curve of an agent search (`mpq search --method haq|cw-hawq`, and the report)
/// from its policy section: each episode's accuracy on the reward split, warm-up episodes in
/// grey, the best so far and the FP accuracy. `None` without episodes.
pub fn agent_curve<E: AgentEpisode>(sec: &AgentSection<E>, title: &str) -> Option<String> {
    let eps: Vec<Episode> = sec
        .accuracies()
        .into_iter()
        .enumerate()
        .filter(|(_, a)| a.is_finite())
        .map(|(i, accuracy)| Episode {
            episode: i as f64,
            accuracy,
        })
        .collect();
    let best = eps
        .iter()
        .map(|e| e.accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    learning_curve(
        &format!(
            "{title} learning curve: {} episodes, best {best:.2}%",
            eps.len()
        ),
        &eps,
        sec.warmup_episodes(),
        Some(sec.fp_accuracy),
    )
}

/// The report as an HTML document, with its results table and plots.
pub fn report_html(run: &RunFolder) -> Result<Report> {
    let rows = report_rows(run)?;
    let mut plots: Vec<(&'static str, String)> = Vec::new();
    let mut plot = |id: &'static str, svg: Option<String>| {
        if let Some(svg) = &svg {
            plots.push((id, svg.clone()));
        }
        svg
    };
    let sens = run.sensitivity.as_ref();
    let mut html = String::new();
    let title = run.dir.file_name().map_or_else(
        || run.dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mpq report: {t}</title><style>{CSS}</style></head><body><header><h1>Mixed-precision quantization report</h1><p>run folder <b>{t}</b> · {n} search method{s} · mpq {v}</p></header><main>"#,
        t = esc(&title),
        n = run.methods.len(),
        s = if run.methods.len() == 1 { "" } else { "s" },
        v = env!("CARGO_PKG_VERSION"),
    );
    if !run.missing.is_empty() || !run.unreadable.is_empty() {
        html.push_str(r#"<section id="missing" class="warn"><h2>Incomplete run</h2><p class="caption">The report shows what the run folder holds. Missing:</p><ul>"#);
        for m in &run.missing {
            let _ = write!(html, r#"<li class="missing">{}</li>"#, esc(m));
        }
        html.push_str("</ul>");
        if !run.unreadable.is_empty() {
            html.push_str(r#"<p class="caption">Unreadable (skipped):</p><ul>"#);
            for m in &run.unreadable {
                let _ = write!(html, r#"<li class="unreadable">{}</li>"#, esc(m));
            }
            html.push_str("</ul>");
        }
        html.push_str("</section>");
    }
    html.push_str(&section(
        "settings",
        "Settings",
        "settings.json and fp.json of the run.",
        settings_html(run),
        "no settings.json or fp.json",
    ));
    html.push_str(&section(
        "results",
        "Results",
        &format!(
            "One row per plan in plans/. Size, average bits and BOPs from the policy; latency and \
             energy simulated on {HARDWARE} (batch 1) from the model's layer table; Ω computed \
             for every plan with the plan's own quantizer so methods compare on one scale; \
             accuracy from quantized/<method>/summary.json, before and after fine-tuning \
             (best after fine-tuning in green); search time is the policy's seconds."
        ),
        (!rows.is_empty()).then(|| results_html(&rows)),
        "no plans and no FP model",
    ));
    let charts = run.compare.as_ref().map(compare_charts).unwrap_or_default();
    let chart = |stage: &str| {
        (charts.iter())
            .find(|(id, _)| id.ends_with(stage))
            .map(|(_, svg)| svg.clone())
    };
    let caption = "From compare/compare.json (mpq compare): every plan at its real cost with \
         its 95% interval (test-set bootstrap, widened by the spread over fine-tuning seeds), \
         against uniform precision (squares, dashed) and random plans of the same budget \
         (grey). The table's verdict compares each plan with the uniform plan of the highest \
         cost within the budget; compare/compare.md has every number.";
    let missing = "no compare/compare.json (run mpq compare --out DIR/compare)";
    html.push_str(&section(
        "compare-finetuned",
        "Does mixed precision pay? After fine-tuning",
        caption,
        plot("compare-finetuned", chart("finetuned")).map(|svg| {
            let table = run.compare.as_ref().map(compare_table).unwrap_or_default();
            format!("{svg}{table}")
        }),
        missing,
    ));
    html.push_str(&section(
        "compare-ptq",
        "Does mixed precision pay? After post-training quantization",
        "The same plans before fine-tuning; grey dots are every random plan of each budget.",
        plot("compare-ptq", chart("ptq")),
        missing,
    ));
    html.push_str(r#"<div class="grid">"#);
    html.push_str(&section(
        "sensitivity",
        "Weight sensitivity",
        "Per layer: HAWQ-V2's average Hessian trace per weight Tr(H)/n (Hutchinson, with its \
         standard error) and HAWQ's top Hessian eigenvalue. Higher means the layer needs more bits.",
        plot("sensitivity", sens.and_then(sensitivity_chart)),
        "sensitivity.json has no trace or eigenvalue",
    ));
    html.push_str(&section(
        "activations",
        "Activation sensitivity",
        "Per layer: the Hessian trace of the loss with respect to the layer's input \
         activation, per sample (HAWQ-V2 §2.6).",
        plot("activations", sens.and_then(activation_chart)),
        "sensitivity.json has no activation traces (analyze --metric act-trace or all)",
    ));
    html.push_str("</div>");
    let points: Vec<PlanPoint> = run
        .methods
        .iter()
        .zip(rows.iter().filter(|r| r.method != "fp32"))
        .filter_map(|(m, r)| {
            Some(PlanPoint {
                method: m.method.clone(),
                avg_w_bits: r.avg_w_bits?,
                size_bytes: r.size_bytes?,
                bops: r.bops.unwrap_or(f64::NAN),
                omega: r.omega?,
            })
        })
        .collect();
    html.push_str(&section(
        "pareto",
        "Pareto frontier",
        "HAWQ-V2's exact frontier of Ω against size from plans/pareto.frontier.json, the uniform \
         plans on it (squares), and every method's plan at its Ω on the shared scale (dots).",
        plot("pareto", pareto_chart(run.frontier.as_ref(), &points)),
        "no frontier and no plan with Ω (needs summary.json computed with sensitivity.json)",
    ));
    html.push_str(r#"<div class="grid">"#);
    html.push_str(&section(
        "bitmap",
        "Bit-widths per layer",
        "Each plan's weight (W) and input-activation (A) bits per layer. Striped cells are \
         per-channel weight widths (one stripe per output channel), labelled with their mean.",
        plot("bitmap", bitmap_svg(&run.layer_names(), &run.methods)),
        "no plans",
    ));
    html.push_str(&section(
        "density",
        "Hessian spectral density",
        "Eigenvalue density of the whole model's weight Hessian by stochastic Lanczos \
         quadrature (PyHessian). A few large outliers dominate the curvature.",
        plot("density", sens.and_then(density_chart)),
        "sensitivity.json has no density (analyze --metric density or all)",
    ));
    html.push_str("</div>");
    html.push_str(r#"<div class="grid">"#);
    let haq = run.methods.iter().find_map(|m| m.policy.haq.as_ref());
    html.push_str(&section(
        "haq-curve",
        "HAQ learning curve",
        "Accuracy of each episode's plan on the reward split (held out of training), the best \
         so far, and the FP model's accuracy on the same split.",
        plot("haq-curve", haq.and_then(|s| agent_curve(s, "HAQ"))),
        "no plans/haq.json with a history",
    ));
    if let Some(cw) = run.methods.iter().find_map(|m| m.policy.cw_hawq.as_ref()) {
        html.push_str(&section(
            "cw-curve",
            "CW-HAWQ learning curve",
            "Accuracy of each episode's channel-wise plan on the reward split, and the best so far.",
            plot("cw-curve", agent_curve(cw, "CW-HAWQ")),
            "no history in the cw_hawq section",
        ));
    }
    html.push_str("</div>");
    let data = serde_json::json!({
        "run": run.dir.display().to_string(),
        "hardware": HARDWARE,
        "fp": run.fp,
        "results": rows,
        "missing": run.missing,
        "unreadable": run.unreadable,
    });
    let json = serde_json::to_string(&data)?.replace("</", "<\\/");
    let _ = write!(
        html,
        r#"</main><script type="application/json" id="mpq-report-data">{json}</script></body></html>"#
    );
    html.push('\n');
    Ok(Report { html, rows, plots })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_curve_draws_every_episode_the_warmup_and_the_best_so_far() {
        let history: Vec<_> = [50.0, 70.0, 60.0, 80.0, 75.0]
            .iter()
            .enumerate()
            .map(|(i, &accuracy)| crate::search::cw_hawq::CwEpisode {
                episode: i,
                counts: vec![],
                repaired: false,
                avg_w_bits: 3.0,
                accuracy,
                reward: 0.0,
            })
            .collect();
        let mut sec = AgentSection {
            fp_accuracy: 90.0,
            best_episode: Some(3),
            best_accuracy: Some(80.0),
            best_reward: Some(0.0),
            episodes: 5,
            steps_per_episode: None,
            evaluations_seconds: None,
            resumed_episodes: None,
            state: None,
            warmup: Some(2),
            curve: "p.curve.svg".into(),
            settings: None,
            history,
        };
        let svg = agent_curve(&sec, "HAQ").unwrap();
        assert!(
            svg.contains("HAQ learning curve: 5 episodes, best 80.00%"),
            "{svg}"
        );
        // Two grey warm-up dots, three agent dots.
        assert_eq!(svg.matches(r##"r="3" fill="#b0b0b0""##).count(), 2);
        assert_eq!(svg.matches(r##"r="3" fill="#1f77b4""##).count(), 3);
        // The best-so-far line starts at the first episode and steps once per episode.
        let at = svg.find(r#"<path d="M"#).unwrap();
        let d = &svg[at..at + svg[at..].find("\" fill").unwrap()];
        assert_eq!(d.matches(" H").count(), 4, "{d}");
        assert!(svg.contains("FP accuracy") && svg.contains("warm-up episode"));
        sec.history.clear();
        assert!(agent_curve(&sec, "HAQ").is_none());
    }
}
