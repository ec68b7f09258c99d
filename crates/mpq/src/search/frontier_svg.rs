//! A hand-written SVG plot of HAWQ-V2's Pareto frontier (Dong et al., NeurIPS 2020, the
//! "Pareto frontier of Ω versus model size" figure): the frontier as a step line with points,
//! the chosen plan in red and the uniform plans as labelled squares. Ω uses a log axis when
//! every value is positive.

use std::fmt::Write as _;

use crate::report::svg::{esc, tick_label as tick};

const W: f64 = 640.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;

/// An SVG document plotting `points` (x ascending), `chosen` and labelled `marks`.
pub fn frontier_svg(
    points: &[(f64, f64)],
    chosen: (f64, f64),
    marks: &[(String, f64, f64)],
    x_label: &str,
    y_label: &str,
) -> String {
    let all: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .chain([chosen])
        .chain(marks.iter().map(|m| (m.1, m.2)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let log = !all.is_empty() && all.iter().all(|p| p.1 > 0.0);
    let fy = |y: f64| if log { y.log10() } else { y };
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(fy(y));
        y1 = y1.max(fy(y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |lo: f64, hi: f64| {
        let d = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
        (lo - d, hi + d)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (fy(y) - y0) / (y1 - y0) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">Pareto frontier ({} points)</text>"#,
        W / 2.0,
        points.len()
    );
    // Axes and ticks.
    let (bx, by) = (H - BOTTOM, W - RIGHT);
    let _ = writeln!(
        s,
        r#"<path d="M{LEFT} {TOP} V{bx} H{by}" fill="none" stroke="black"/>"#
    );
    for i in 0..=4 {
        let t = i as f64 / 4.0;
        let xv = x0 + t * (x1 - x0);
        let x = px(xv);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{bx}" x2="{x:.1}" y2="{}" stroke="black"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bx + 5.0,
            bx + 18.0,
            tick(xv)
        );
        let yv = y0 + t * (y1 - y0);
        let y = H - BOTTOM - t * (H - TOP - BOTTOM);
        let label = if log { tick(10f64.powf(yv)) } else { tick(yv) };
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="black"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
            LEFT - 5.0,
            LEFT - 8.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}{}</text>"#,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label),
        if log { " (log)" } else { "" }
    );
    // Frontier as a step line, then dots for small fronts.
    if !points.is_empty() {
        let mut d = format!("M{:.2} {:.2}", px(points[0].0), py(points[0].1));
        for w in points.windows(2) {
            let _ = write!(d, " H{:.2} V{:.2}", px(w[1].0), py(w[1].1));
        }
        let _ = writeln!(
            s,
            r##"<path d="{d}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##
        );
        if points.len() <= 2000 {
            for &(x, y) in points {
                let _ = writeln!(
                    s,
                    r##"<circle cx="{:.2}" cy="{:.2}" r="2" fill="#1f77b4"/>"##,
                    px(x),
                    py(y)
                );
            }
        }
    }
    for (label, x, y) in marks {
        let (cx, cy) = (px(*x), py(*y));
        let _ = writeln!(
            s,
            r##"<rect x="{:.2}" y="{:.2}" width="8" height="8" fill="none" stroke="#2ca02c" stroke-width="2"/><text x="{:.2}" y="{:.2}" fill="#2ca02c">{}</text>"##,
            cx - 4.0,
            cy - 4.0,
            cx + 6.0,
            cy - 6.0,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        r##"<circle cx="{:.2}" cy="{:.2}" r="5" fill="#d62728"/><text x="{:.2}" y="{:.2}" fill="#d62728">chosen</text>"##,
        px(chosen.0),
        py(chosen.1),
        px(chosen.0) + 7.0,
        py(chosen.1) + 14.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_frontier_chosen_and_uniform_marks() {
        let pts = [(2.0, 10.0), (3.0, 1.0), (4.0, 0.1)];
        let svg = frontier_svg(
            &pts,
            (3.0, 1.0),
            &[("W4".into(), 4.0, 0.1)],
            "bits",
            "Ω <x>",
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains(">W4<") && svg.contains("chosen") && svg.contains("(log)"));
        assert!(svg.contains("Ω &lt;x&gt;"));
        let flat = frontier_svg(&[(1.0, 0.0)], (1.0, 0.0), &[], "x", "y");
        assert!(!flat.contains("(log)") && !flat.contains("NaN"));
    }
}
