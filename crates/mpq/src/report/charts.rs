//! The report's plots, each an inline SVG drawn on [`super::svg::Plot`]: per-layer weight
//! sensitivity (HAWQ-V2's `Tr(H)/n` with standard-error bars next to HAWQ's top eigenvalue),
//! activation traces, the Hessian spectral density (SLQ, as PyHessian), the Pareto frontier of
//! Ω against size with every method's plan, and the learning curves of the agent searches
//! (HAQ, CW-HAWQ).

use std::fmt::Write as _;

use super::svg::{Frame, LegendAt, Mark, Plot, Scale, esc, palette};
use crate::search::{FrontierFile, MB};
use crate::sensitivity::SensitivityTable;

const EIGEN: &str = "#ff7f0e";
const TRACE: &str = "#1f77b4";

/// Whether positive `values` span enough (over 20×) to read better on a log axis.
fn wants_log(values: &[f64]) -> bool {
    let pos: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let (lo, hi) = pos
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
    pos.len() == values.len() && !pos.is_empty() && hi / lo > 20.0
}

/// One bar series of a grouped bar chart: a value and an optional standard error per
/// category.
struct Bars<'a> {
    label: String,
    colour: &'a str,
    values: Vec<Option<(f64, Option<f64>)>>,
}

fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Bars<'_>],
    note: &str,
) -> String {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().map(|v| v.0))
        .collect();
    let log = wants_log(&all);
    let tops: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().map(|(v, e)| v + e.unwrap_or(0.0)))
        .chain(all.iter().copied())
        .collect();
    let frame = Frame {
        bottom: 70.0,
        ..Frame::legend_above()
    };
    let n = categories.len().max(1) as f64;
    let mut plot = Plot::new(
        frame,
        Scale::new(0.0, n, false),
        Scale::fit(&tops, log, true),
        title,
    );
    plot.axes("layer", y_label, false);
    let slot = (plot.x.p1 - plot.x.p0) / n;
    let bw = (slot * 0.8 / series.len().max(1) as f64).min(36.0);
    let base = if log { plot.y.p0 } else { plot.y.px(0.0) };
    let mut s = String::new();
    for (k, ser) in series.iter().enumerate() {
        for (i, v) in ser.values.iter().enumerate() {
            let Some((v, se)) = *v else { continue };
            let cx = plot.x.p0
                + slot * (i as f64 + 0.5)
                + (k as f64 - (series.len() as f64 - 1.0) / 2.0) * bw;
            if log && v <= 0.0 {
                let _ = write!(
                    s,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#888">≤0</text>"##,
                    base - 4.0
                );
                continue;
            }
            let y = plot.y.px(v);
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                cx - bw / 2.0 + 1.0,
                y.min(base),
                bw - 2.0,
                (base - y).abs(),
                ser.colour,
                esc(&categories[i]),
                super::results::sig4(v)
            );
            if let Some(se) = se.filter(|e| *e > 0.0) {
                let lo = if log { (v - se).max(plot.y.lo) } else { v - se };
                let (y0, y1) = (plot.y.px(lo), plot.y.px(v + se));
                let _ = write!(
                    s,
                    r##"<path d="M{cx:.1} {y0:.1} V{y1:.1} M{:.1} {y0:.1} H{:.1} M{:.1} {y1:.1} H{:.1}" stroke="#222" stroke-width="1.2" fill="none"/>"##,
                    cx - 4.0,
                    cx + 4.0,
                    cx - 4.0,
                    cx + 4.0
                );
            }
        }
    }
    plot.push(&s);
    let labels: Vec<(f64, String)> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (plot.x.p0 + slot * (i as f64 + 0.5), c.clone()))
        .collect();
    plot.x_categories(&labels);
    let mut items: Vec<(Mark, &str, String)> = series
        .iter()
        .map(|s| (Mark::Bar, s.colour, s.label.clone()))
        .collect();
    if !note.is_empty() {
        items.push((Mark::Line, "#222", note.to_string()));
    }
    plot.legend(&items, LegendAt::Above);
    plot.finish()
}

/// Per-layer weight sensitivity: `Tr(H)/n` (mean Hessian eigenvalue per weight) with
/// standard-error bars, and the top eigenvalue `λ_max` alongside; `None` without either.
pub fn sensitivity_chart(t: &SensitivityTable) -> Option<String> {
    let names: Vec<String> = t.layers.iter().map(|l| l.name.clone()).collect();
    let trace = Bars {
        label: "Tr(H)/n (mean eigenvalue)".into(),
        colour: TRACE,
        values: t
            .layers
            .iter()
            .map(|l| {
                let n = l.params.max(1) as f64;
                let v = l.trace_per_param.or(l.trace.map(|x| x / n))?;
                Some((v, l.trace_stderr.map(|e| e / n)))
            })
            .collect(),
    };
    let eigen = Bars {
        label: "λ_max (top eigenvalue)".into(),
        colour: EIGEN,
        values: t
            .layers
            .iter()
            .map(|l| l.top_eigenvalue.map(|v| (v, None)))
            .collect(),
    };
    let series: Vec<Bars<'_>> = [trace, eigen]
        .into_iter()
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    if series.is_empty() {
        return None;
    }
    let has_se = t.layers.iter().any(|l| l.trace_stderr.is_some());
    Some(bar_chart(
        "Weight sensitivity per layer",
        "Hessian eigenvalue (loss / weight²)",
        &names,
        &series,
        if has_se { "± 1 standard error" } else { "" },
    ))
}

/// Per-layer activation traces `Tr(H_a)` (per sample) with standard-error bars; `None`
/// without any.
pub fn activation_chart(t: &SensitivityTable) -> Option<String> {
    let names: Vec<String> = t.layers.iter().map(|l| l.name.clone()).collect();
    let values: Vec<Option<(f64, Option<f64>)>> = t
        .layers
        .iter()
        .map(|l| l.act_trace.map(|v| (v, l.act_trace_stderr)))
        .collect();
    if values.iter().all(Option::is_none) {
        return None;
    }
    let has_se = t.layers.iter().any(|l| l.act_trace_stderr.is_some());
    Some(bar_chart(
        "Activation sensitivity per layer (input of each layer)",
        "Tr(H) w.r.t. the input activation, per sample",
        &names,
        &[Bars {
            label: "activation trace".into(),
            colour: "#2ca02c",
            values,
        }],
        if has_se { "± 1 standard error" } else { "" },
    ))
}

/// The smoothed spectral density of the whole model's Hessian (log density against
/// eigenvalue), with the top eigenvalues marked; `None` without a density.
pub fn density_chart(t: &SensitivityTable) -> Option<String> {
    let d = t.density.as_ref()?;
    if d.runs.iter().all(|q| q.nodes.is_empty()) {
        return None;
    }
    let (grid, dens) = d.curve(800, 1e-5);
    let floor = 1e-6 * dens.iter().copied().fold(0.0, f64::max).max(1e-300);
    let ys: Vec<f64> = dens.iter().map(|v| v.max(floor)).collect();
    let frame = Frame::legend_above();
    let mut plot = Plot::new(
        frame,
        Scale::fit(&grid, false, false),
        Scale::fit(&ys, true, false),
        &format!("Hessian eigenvalue density (SLQ, dimension {})", d.dim),
    );
    plot.axes("eigenvalue", "density", true);
    let mut pts = String::new();
    for (x, y) in grid.iter().zip(&ys) {
        let _ = write!(pts, "{:.1},{:.1} ", plot.x.px(*x), plot.y.px(*y));
    }
    let mut s = format!(
        r#"<polyline fill="none" stroke="{TRACE}" stroke-width="1.6" points="{}"/>"#,
        pts.trim_end()
    );
    let mut items = vec![(Mark::Line, TRACE, "density (Gaussian-smoothed)".to_string())];
    if let Some(top) = &t.model_top_eigenvalues {
        for &e in top.iter().filter(|e| **e >= plot.x.lo && **e <= plot.x.hi) {
            let x = plot.x.px(e);
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{EIGEN}" stroke-dasharray="4 3"/>"#,
                plot.y.p1, plot.y.p0
            );
        }
        if !top.is_empty() {
            items.push((
                Mark::Dashed,
                EIGEN,
                "top eigenvalues (power iteration)".into(),
            ));
        }
    }
    Some(plot.finish_with(&s, &items, LegendAt::Above))
}

/// A plan's place in the Pareto plot.
pub struct PlanPoint {
    /// The method.
    pub method: String,
    /// Average weight bits.
    pub avg_w_bits: f64,
    /// Size in bytes.
    pub size_bytes: f64,
    /// Bit operations per sample.
    pub bops: f64,
    /// Ω.
    pub omega: f64,
}

/// HAWQ-V2's Pareto frontier (Ω against average weight bits or size) from the frontier
/// file, the uniform plans as hollow squares and each method's plan as a coloured dot; `None`
/// with nothing to plot.
pub fn pareto_chart(frontier: Option<&FrontierFile>, plans: &[PlanPoint]) -> Option<String> {
    let by_bits = frontier.is_none_or(|f| f.axis == "weight_bits");
    let by_bops = frontier.is_some_and(|f| f.axis == "bops");
    let points: Vec<(f64, f64)> = frontier
        .map(|f| {
            let pts = f.points.iter();
            pts.map(|p| (FrontierFile::x(p), p.omega)).collect()
        })
        .unwrap_or_default();
    let uniform: Vec<(String, f64, f64)> = frontier
        .map(|f| {
            let u = f.uniform.iter();
            u.map(|u| {
                let name = match u.a_bits {
                    Some(a) => format!("W{}A{a}", u.w_bits),
                    None => format!("W{}", u.w_bits),
                };
                (name, f.uniform_x(u), u.omega)
            })
            .collect()
        })
        .unwrap_or_default();
    let plan_xy: Vec<(&PlanPoint, f64, f64)> = plans
        .iter()
        .map(|p| {
            let x = if by_bits {
                p.avg_w_bits
            } else if by_bops {
                p.bops / 1e9
            } else {
                p.size_bytes / MB
            };
            (p, x, p.omega)
        })
        .collect();
    if points.is_empty() && plan_xy.is_empty() {
        return None;
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = points
        .iter()
        .copied()
        .chain(uniform.iter().map(|u| (u.1, u.2)))
        .chain(plan_xy.iter().map(|p| (p.1, p.2)))
        .unzip();
    let log = ys.iter().all(|y| *y > 0.0);
    let frame = Frame {
        width: 900.0,
        height: 460.0,
        right: 200.0,
        ..Frame::default()
    };
    let mut plot = Plot::new(
        frame,
        Scale::fit(&xs, false, false),
        Scale::fit(&ys, log, false),
        "Pareto frontier: quantization error Ω against size",
    );
    let x_label = if by_bits {
        "average weight bits (size / parameters)"
    } else if by_bops {
        "giga bit-operations per sample"
    } else {
        "model size (MiB)"
    };
    plot.axes(x_label, "Ω = Σ Tr(H)/n · ‖ΔW‖² (+ activation term)", true);
    let mut s = String::new();
    let mut items: Vec<(Mark, &str, String)> = Vec::new();
    if !points.is_empty() {
        let mut d = format!(
            "M{:.1} {:.1}",
            plot.x.px(points[0].0),
            plot.y.px(points[0].1)
        );
        for p in &points[1..] {
            let _ = write!(d, " H{:.1} V{:.1}", plot.x.px(p.0), plot.y.px(p.1));
        }
        let _ = write!(
            s,
            r##"<path d="{d}" fill="none" stroke="#9ecae1" stroke-width="1.5"/>"##
        );
        if points.len() <= 3000 {
            for p in &points {
                let _ = write!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="#6baed6"/>"##,
                    plot.x.px(p.0),
                    plot.y.px(p.1)
                );
            }
        }
        items.push((
            Mark::Line,
            "#6baed6",
            format!("frontier ({} points)", points.len()),
        ));
    }
    for (label, x, y) in &uniform {
        let (cx, cy) = (plot.x.px(*x), plot.y.px(*y));
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="none" stroke="#555" stroke-width="1.8"/><text x="{:.1}" y="{:.1}" fill="#555" font-size="11">{}</text>"##,
            cx - 4.5,
            cy - 4.5,
            cx + 7.0,
            cy - 6.0,
            esc(label)
        );
    }
    if !uniform.is_empty() {
        items.push((
            Mark::HollowSquare,
            "#555",
            "uniform plans (frontier)".into(),
        ));
    }
    // Shrinking dots, so plans at the same point show as concentric rings.
    for (k, (p, x, y)) in plan_xy.iter().enumerate() {
        let c = palette(k);
        let r = (8.0 - 0.5 * k as f64).max(3.0);
        let (cx, cy) = (plot.x.px(*x), plot.y.px(*y));
        let _ = write!(
            s,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r}" fill="{c}" stroke="white" stroke-width="1.2"><title>{}: Ω {}, {:.3} bits</title></circle>"#,
            esc(&p.method),
            super::results::sig4(p.omega),
            p.avg_w_bits
        );
        items.push((Mark::Dot, c, p.method.clone()));
    }
    Some(plot.finish_with(&s, &items, LegendAt::Right))
}

/// One agent episode: its accuracy on the reward split (%) and reward.
pub struct Episode {
    /// Episode index.
    pub episode: f64,
    /// Accuracy in percent.
    pub accuracy: f64,
}

/// The learning curve of an agent search: each episode's accuracy (warm-up in grey), the best
/// so far, and the FP accuracy as a dashed line.
pub fn learning_curve(
    title: &str,
    episodes: &[Episode],
    warmup: usize,
    fp_accuracy: Option<f64>,
) -> Option<String> {
    if episodes.is_empty() {
        return None;
    }
    let xs: Vec<f64> = episodes.iter().map(|e| e.episode).collect();
    let ys: Vec<f64> = episodes
        .iter()
        .map(|e| e.accuracy)
        .chain(fp_accuracy)
        .collect();
    let frame = Frame::legend_above();
    let mut plot = Plot::new(
        frame,
        Scale::fit(&xs, false, false),
        Scale::fit(&ys, false, false),
        title,
    );
    plot.axes("episode", "accuracy on the reward split (%)", true);
    let mut s = String::new();
    if let Some(fp) = fp_accuracy {
        let y = plot.y.px(fp);
        let _ = write!(
            s,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#555" stroke-dasharray="6 4"/>"##,
            plot.x.p0, plot.x.p1
        );
    }
    let mut best = f64::NEG_INFINITY;
    let mut d = String::new();
    for (i, e) in episodes.iter().enumerate() {
        let colour = if i < warmup { "#b0b0b0" } else { TRACE };
        let (cx, cy) = (plot.x.px(e.episode), plot.y.px(e.accuracy));
        let _ = write!(
            s,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}"/>"#
        );
        best = best.max(e.accuracy);
        let by = plot.y.px(best);
        if d.is_empty() {
            let _ = write!(d, "M{cx:.1} {by:.1}");
        } else {
            let _ = write!(d, " H{cx:.1} V{by:.1}");
        }
    }
    let _ = write!(
        s,
        r##"<path d="{d}" fill="none" stroke="#d62728" stroke-width="1.8"/>"##
    );
    let mut items = Vec::new();
    if warmup > 0 {
        items.push((Mark::Dot, "#b0b0b0", "warm-up episode (random)".to_string()));
    }
    items.push((Mark::Dot, TRACE, "agent episode".to_string()));
    items.push((Mark::Line, "#d62728", "best so far".to_string()));
    if fp_accuracy.is_some() {
        items.push((Mark::Dashed, "#555", "FP accuracy".to_string()));
    }
    Some(plot.finish_with(&s, &items, LegendAt::Above))
}
