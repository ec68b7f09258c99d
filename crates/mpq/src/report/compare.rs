//! The plots of `mpq compare` (docs/compare.md): accuracy against cost, one plot per cost
//! axis and stage (post-training, fine-tuned). Every plan is drawn at its real cost with its
//! 95% interval, against the uniform curve; random plans are grey dots and each budget a
//! dotted line.

use std::fmt::Write as _;

use super::svg::{Frame, LegendAt, Mark, Plot, Scale, palette};
use crate::compare::{Axis, CompareFile, Interval, RowKind};

/// A point with its interval, in %.
struct Point {
    x: f64,
    y: Interval,
}

fn pct(i: &Interval) -> Interval {
    Interval {
        mean: 100.0 * i.mean,
        lo: 100.0 * i.lo,
        hi: 100.0 * i.hi,
    }
}

fn axis_id(a: Axis) -> &'static str {
    match a {
        Axis::AvgWBits => "avg-bits",
        Axis::SizeMb => "size",
        Axis::Gbops => "bops",
        Axis::LatencyMs => "latency",
        Axis::EnergyMj => "energy",
    }
}

/// The plots of a comparison: `(id, svg)`, ids `<axis>-ptq` and `<axis>-finetuned`.
pub fn compare_charts(f: &CompareFile) -> Vec<(String, String)> {
    let mut axes: Vec<Axis> = f.budgets.iter().map(|b| b.axis).collect();
    axes.sort();
    axes.dedup();
    let mut out = Vec::new();
    for axis in axes {
        for tuned in [false, true] {
            if tuned && f.setup.seeds == 0 {
                continue;
            }
            if let Some(svg) = chart(f, axis, tuned) {
                let stage = if tuned { "finetuned" } else { "ptq" };
                out.push((format!("{}-{stage}", axis_id(axis)), svg));
            }
        }
    }
    out
}

fn chart(f: &CompareFile, axis: Axis, tuned: bool) -> Option<String> {
    let budgets: Vec<_> = f.budgets.iter().filter(|b| b.axis == axis).collect();
    let mut uniform: Vec<Point> = (f.uniform.iter())
        .filter_map(|u| {
            let y = if tuned {
                u.finetuned.as_ref()?.total
            } else {
                u.ptq
            };
            Some(Point {
                x: u.costs.on(axis),
                y: pct(&y),
            })
        })
        .filter(|p| p.x.is_finite())
        .collect();
    uniform.sort_by(|a, b| a.x.total_cmp(&b.x));
    // Methods in first-seen order, each with its points over the budgets.
    let mut methods: Vec<(String, Vec<Point>)> = Vec::new();
    let mut random: Vec<(f64, f64)> = Vec::new();
    for b in &budgets {
        for r in b.rows.iter().filter(|r| r.kind == RowKind::Method) {
            let y = if tuned {
                r.finetuned.as_ref().map(|f| f.total)
            } else {
                r.ptq
            };
            let (Some(x), Some(y)) = (r.cost, y) else {
                continue;
            };
            let p = Point { x, y: pct(&y) };
            match methods.iter_mut().find(|(n, _)| *n == r.name) {
                Some((_, v)) => v.push(p),
                None => methods.push((r.name.clone(), vec![p])),
            }
        }
        for r in &b.random {
            let y = if tuned {
                r.finetuned_accuracy
            } else {
                Some(r.ptq_accuracy)
            };
            if let Some(y) = y.filter(|_| r.cost.is_finite()) {
                random.push((r.cost, 100.0 * y));
            }
        }
    }
    if methods.is_empty() && uniform.is_empty() {
        return None;
    }
    let xs: Vec<f64> = (uniform.iter().map(|p| p.x))
        .chain(methods.iter().flat_map(|(_, v)| v.iter().map(|p| p.x)))
        .chain(random.iter().map(|r| r.0))
        .chain(budgets.iter().map(|b| b.limit))
        .collect();
    // The y range: every interval, random plans clipped at the lowest interval less a margin
    // so one collapsed plan does not flatten the plot.
    let ends: Vec<f64> = (uniform.iter())
        .chain(methods.iter().flat_map(|(_, v)| v.iter()))
        .flat_map(|p| [p.y.lo, p.y.hi])
        .filter(|v| v.is_finite())
        .collect();
    let lo_end = ends.iter().copied().fold(f64::INFINITY, f64::min);
    let floor = if lo_end.is_finite() {
        lo_end - 5.0
    } else {
        0.0
    };
    let mut ys = ends.clone();
    ys.extend(random.iter().map(|r| r.1.max(floor)));
    let stage = if tuned {
        format!("fine-tuned, {} seed(s)", f.setup.seeds)
    } else {
        "post-training".to_string()
    };
    let mut p = Plot::new(
        Frame {
            right: 150.0,
            ..Frame::legend_above()
        },
        Scale::fit(&xs, false, false),
        Scale::fit(&ys, false, false),
        &format!(
            "{}: accuracy against {} ({stage})",
            f.setup.arch,
            axis.label()
        ),
    );
    p.axes(axis.label(), "test accuracy (%), 95% interval", true);
    let mut body = String::new();
    let (top, bottom) = (p.frame.top, p.frame.height - p.frame.bottom);
    for b in &budgets {
        let x = p.x.px(b.limit);
        let _ = write!(
            body,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#999" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#666">{}</text>"##,
            x + 3.0,
            top + 12.0,
            super::svg::esc(&b.label)
        );
    }
    for (x, y) in &random {
        let _ = write!(
            body,
            r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#bbb"/>"##,
            p.x.px(*x),
            p.y.px(y.max(floor))
        );
    }
    let bar = |body: &mut String, p: &Plot, pt: &Point, colour: &str| {
        let (x, lo, hi) = (p.x.px(pt.x), p.y.px(pt.y.lo), p.y.px(pt.y.hi));
        let _ = write!(
            body,
            r#"<line x1="{x:.1}" y1="{lo:.1}" x2="{x:.1}" y2="{hi:.1}" stroke="{colour}" stroke-width="1.5"/><line x1="{:.1}" y1="{lo:.1}" x2="{:.1}" y2="{lo:.1}" stroke="{colour}"/><line x1="{:.1}" y1="{hi:.1}" x2="{:.1}" y2="{hi:.1}" stroke="{colour}"/>"#,
            x - 3.0,
            x + 3.0,
            x - 3.0,
            x + 3.0
        );
    };
    let line: Vec<String> = (uniform.iter())
        .map(|u| format!("{:.1},{:.1}", p.x.px(u.x), p.y.px(u.y.mean)))
        .collect();
    if line.len() > 1 {
        let _ = write!(
            body,
            r##"<polyline points="{}" fill="none" stroke="#222" stroke-width="1.5" stroke-dasharray="5 3"/>"##,
            line.join(" ")
        );
    }
    for u in &uniform {
        bar(&mut body, &p, u, "#222");
        let _ = write!(
            body,
            r##"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="white" stroke="#222" stroke-width="1.5"/>"##,
            p.x.px(u.x) - 4.0,
            p.y.px(u.y.mean) - 4.0
        );
    }
    for (k, (_, pts)) in methods.iter().enumerate() {
        let c = palette(k);
        for pt in pts {
            bar(&mut body, &p, pt, c);
            let _ = write!(
                body,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="{c}"/>"#,
                p.x.px(pt.x),
                p.y.px(pt.y.mean)
            );
        }
    }
    let mut legend: Vec<(Mark, &str, String)> =
        vec![(Mark::HollowSquare, "#222", "uniform".into())];
    for (k, (name, _)) in methods.iter().enumerate() {
        legend.push((Mark::Dot, palette(k), name.clone()));
    }
    if !random.is_empty() {
        legend.push((Mark::Dot, "#bbb", "random plans".into()));
    }
    Some(p.finish_with(&body, &legend, LegendAt::Right))
}

/// The comparison's verdicts as an HTML table: per budget and plan, its cost, accuracies and
/// verdict against uniform.
pub fn compare_table(f: &CompareFile) -> String {
    let esc = super::svg::esc;
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let mut s = String::from(
        r#"<table class="compare"><tr><th>budget</th><th>plan</th><th>cost</th><th>PTQ % [95%]</th><th>fine-tuned % mean ± sd</th><th>vs uniform</th></tr>"#,
    );
    for b in &f.budgets {
        for r in &b.rows {
            let ptq = r.ptq.map_or("-".into(), |i| {
                format!("{} [{}, {}]", pct(i.mean), pct(i.lo), pct(i.hi))
            });
            let ft = r
                .finetuned
                .as_ref()
                .map_or("-".into(), |e| format!("{} ± {}", pct(e.mean), pct(e.sd)));
            let verdict = match (&r.error, &r.verdict) {
                (Some(e), _) => format!("not measured: {e}"),
                (None, Some(v)) => format!("{} (vs {})", v.headline(), v.against),
                (None, None) => match r.kind {
                    RowKind::UniformBelow => "reference".into(),
                    RowKind::UniformAbove => "nearest uniform above".into(),
                    _ => "-".into(),
                },
            };
            let _ = write!(
                s,
                r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{ptq}</td><td class="num">{ft}</td><td>{}</td></tr>"#,
                esc(&b.label),
                esc(&r.name),
                r.cost.map_or(String::new(), |c| format!("{c:.4}")),
                esc(&verdict)
            );
        }
    }
    s.push_str("</table>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{BudgetResult, Costs, Row, UniformPoint};

    #[test]
    fn every_plan_and_the_uniform_curve_are_drawn() {
        let i = |m: f64| Interval {
            mean: m,
            lo: m - 0.01,
            hi: m + 0.01,
        };
        let costs = |b: f64| Costs {
            avg_w_bits: b,
            ..Costs::default()
        };
        let f = CompareFile {
            setup: crate::compare::Setup {
                model: "m".into(),
                arch: "lenet5".into(),
                data: "d".into(),
                fp32_accuracy: 0.99,
                fp32_loss: 0.1,
                seeds: 0,
                finetune_epochs: 0,
                random_plans: 0,
                resamples: 100,
            },
            test_samples: 100,
            budgets: vec![BudgetResult {
                key: "avg-bits-3".into(),
                label: "--avg-bits 3".into(),
                axis: Axis::AvgWBits,
                limit: 3.0,
                rows: vec![Row {
                    name: "ilp".into(),
                    kind: RowKind::Method,
                    costs: Some(costs(2.95)),
                    cost: Some(2.95),
                    omega: None,
                    ptq: Some(i(0.9)),
                    finetuned: None,
                    verdict: None,
                    beats_random: None,
                    error: None,
                }],
                omega_spearman: None,
                random: Vec::new(),
            }],
            uniform: [2.0, 3.0, 4.0]
                .map(|b| UniformPoint {
                    name: format!("w{b}a8"),
                    costs: costs(b),
                    ptq: i(0.5 + b / 10.0),
                    finetuned: None,
                })
                .to_vec(),
        };
        let charts = compare_charts(&f);
        assert_eq!(charts.len(), 1);
        let (id, svg) = &charts[0];
        assert_eq!(id, "avg-bits-ptq");
        assert!(svg.contains("<polyline") && svg.contains(">ilp<") && !svg.contains("NaN"));
        assert!(svg.matches("<rect x=").count() >= 3);
    }
}
