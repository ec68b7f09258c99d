//! A small kit for hand-written SVG plots: linear and log axes with round ticks
//! (1, 2, 5 × 10ᵏ, or powers of ten), a plot frame with grid lines, axis labels, a title and a
//! legend. No dependencies; every report chart (and the search plots) draws on a [`Plot`].

use std::fmt::Write as _;

/// Escapes text for SVG and HTML (`&`, `<`, `>`, `"`).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A short label for a tick or a value: up to four significant digits, scientific notation
/// below 0.01 and from 10⁴ on (`1.5e-3`, `2e5`).
pub fn tick_label(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let a = v.abs();
    if (1e-2..1e4).contains(&a) {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".into() } else { s.into() }
    } else {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        let m = format!("{m:.2}");
        let m = m.trim_end_matches('0').trim_end_matches('.');
        format!("{m}e{e}")
    }
}

/// Round linear ticks covering `[lo, hi]`: about `n` of them at a 1, 2 or 5 × 10ᵏ step.
pub fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw * 0.999)
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// One axis: a data range mapped onto a pixel range, linear or base-10 logarithmic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Lower end of the data range (positive on a log axis).
    pub lo: f64,
    /// Upper end of the data range.
    pub hi: f64,
    /// Whether the axis is logarithmic.
    pub log: bool,
    /// Pixel position of `lo`.
    pub p0: f64,
    /// Pixel position of `hi`.
    pub p1: f64,
}

impl Scale {
    /// An axis over `values` (non-finite ones ignored; non-positive ones too when `log`),
    /// padded by 5% (linear) or to whole decades (log). Falls back to `[0, 1]` without data.
    pub fn fit(values: &[f64], log: bool, include_zero: bool) -> Scale {
        let vals: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let (mut lo, mut hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            return if log {
                Scale::new(1.0, 10.0, true)
            } else {
                Scale::new(0.0, 1.0, false)
            };
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil());
            if hi <= lo {
                hi = lo * 10.0;
            }
        } else {
            if include_zero {
                lo = lo.min(0.0);
                hi = hi.max(0.0);
            }
            let d = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
            if !(include_zero && lo == 0.0) {
                lo -= d;
            }
            hi += d;
        }
        Scale::new(lo, hi, log)
    }

    /// An axis over `[lo, hi]` (pixels set later by the [`Plot`]).
    pub fn new(lo: f64, hi: f64, log: bool) -> Scale {
        Scale {
            lo,
            hi,
            log,
            p0: 0.0,
            p1: 1.0,
        }
    }

    fn t(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.lo * 1e-3).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// The pixel position of `v`.
    pub fn px(&self, v: f64) -> f64 {
        self.p0 + self.t(v) * (self.p1 - self.p0)
    }

    /// The tick values: powers of ten (with 2× and 5× when the axis spans under two decades)
    /// on a log axis, round steps on a linear one.
    pub fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().floor() as i32,
                self.hi.log10().ceil() as i32,
            );
            let every = ((b - a) / 7 + 1).max(1);
            let mut out = Vec::new();
            for e in a..=b {
                if (e - a) % every != 0 {
                    continue;
                }
                let mults: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
                for m in mults {
                    let v = m * 10f64.powi(e);
                    if v >= self.lo * 0.999 && v <= self.hi * 1.001 {
                        out.push(v);
                    }
                }
            }
            out
        } else {
            linear_ticks(self.lo, self.hi, 5)
        }
    }
}

/// The margins and size of a plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Width in pixels.
    pub width: f64,
    /// Height in pixels.
    pub height: f64,
    /// Left margin (y tick labels and the y label).
    pub left: f64,
    /// Right margin.
    pub right: f64,
    /// Top margin (title).
    pub top: f64,
    /// Bottom margin (x tick labels and the x label).
    pub bottom: f64,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            width: 640.0,
            height: 380.0,
            left: 78.0,
            right: 20.0,
            top: 36.0,
            bottom: 52.0,
        }
    }
}

impl Frame {
    /// The report's 660x420 plot with room for a legend above it ([`LegendAt::Above`]).
    pub fn legend_above() -> Self {
        Frame {
            width: 660.0,
            height: 420.0,
            top: 60.0,
            ..Frame::default()
        }
    }
}

/// A legend entry's symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A filled circle.
    Dot,
    /// A filled square.
    Square,
    /// A hollow square.
    HollowSquare,
    /// A line segment.
    Line,
    /// A dashed line segment.
    Dashed,
    /// A filled bar.
    Bar,
}

/// Where a [`Plot::legend`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendAt {
    /// A box in the plot area's top-right corner.
    TopRight,
    /// A box in the plot area's top-left corner.
    TopLeft,
    /// One row between the title and the plot area.
    Above,
    /// A column in the right margin.
    Right,
}

/// An SVG plot being drawn: a frame, an x and a y [`Scale`], and the body so far.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Size and margins.
    pub frame: Frame,
    /// The x axis (pixels set).
    pub x: Scale,
    /// The y axis (pixels set).
    pub y: Scale,
    body: String,
}

impl Plot {
    /// A plot of `frame` size over the `x` and `y` axes, titled `title`.
    pub fn new(frame: Frame, mut x: Scale, mut y: Scale, title: &str) -> Plot {
        x.p0 = frame.left;
        x.p1 = frame.width - frame.right;
        y.p0 = frame.height - frame.bottom;
        y.p1 = frame.top;
        let mut body = String::new();
        let _ = writeln!(
            body,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12" fill="#222"><rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"##,
            frame.width / 2.0,
            esc(title),
            w = frame.width,
            h = frame.height,
        );
        Plot { frame, x, y, body }
    }

    /// Appends raw SVG to the body.
    pub fn push(&mut self, svg: &str) {
        self.body.push_str(svg);
        self.body.push('\n');
    }

    /// Draws grid lines, the frame, the y ticks and (when `x_ticks`) the x ticks, and the axis
    /// labels (with "(log)" on logarithmic axes).
    pub fn axes(&mut self, x_label: &str, y_label: &str, x_ticks: bool) {
        let f = self.frame;
        let (l, r, t, b) = (f.left, f.width - f.right, f.top, f.height - f.bottom);
        let mut s = String::new();
        for v in self.y.ticks() {
            let y = self.y.px(v);
            let _ = write!(
                s,
                r##"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#e4e4e4"/><line x1="{}" y1="{y:.1}" x2="{l}" y2="{y:.1}" stroke="#444"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                l - 5.0,
                l - 8.0,
                y + 4.0,
                tick_label(v)
            );
        }
        if x_ticks {
            for v in self.x.ticks() {
                let x = self.x.px(v);
                let _ = write!(
                    s,
                    r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}" stroke="#f0f0f0"/><line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{}" stroke="#444"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                    b + 5.0,
                    b + 18.0,
                    tick_label(v)
                );
            }
        }
        let _ = write!(
            s,
            r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            r - l,
            b - t
        );
        let log = |on: bool| if on { ", log scale" } else { "" };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="13">{}{}</text>"#,
            (l + r) / 2.0,
            f.height - 10.0,
            esc(x_label),
            log(self.x.log)
        );
        let mid = (t + b) / 2.0;
        let _ = write!(
            s,
            r#"<text x="16" y="{mid:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 16 {mid:.1})">{}{}</text>"#,
            esc(y_label),
            log(self.y.log)
        );
        self.push(&s);
    }

    /// Category labels under the x axis at pixel positions `xs` (rotated when long).
    pub fn x_categories(&mut self, labels: &[(f64, String)]) {
        let b = self.frame.height - self.frame.bottom;
        let rotate = labels.iter().any(|(_, l)| l.len() > 8) && labels.len() > 6;
        let mut s = String::new();
        for (x, label) in labels {
            if rotate {
                let _ = write!(
                    s,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="end" transform="rotate(-35 {x:.1} {:.1})">{}</text>"#,
                    b + 14.0,
                    b + 14.0,
                    esc(label)
                );
            } else {
                let _ = write!(
                    s,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    b + 18.0,
                    esc(label)
                );
            }
        }
        self.push(&s);
    }

    /// A legend at `at`: a box inside the plot area's top corners, a row between the title
    /// and the plot ([`LegendAt::Above`], needs a top margin of about 58), or a column in the
    /// right margin ([`LegendAt::Right`], needs a right margin of about 170).
    pub fn legend(&mut self, items: &[(Mark, &str, String)], at: LegendAt) {
        if items.is_empty() {
            return;
        }
        let f = self.frame;
        let text_w = |l: &str| l.chars().count() as f64 * 6.6;
        let w = 30.0 + items.iter().map(|i| text_w(&i.2)).fold(0.0, f64::max);
        let h = 8.0 + 17.0 * items.len() as f64;
        let mut s = String::new();
        let positions: Vec<(f64, f64)> = match at {
            LegendAt::Above => {
                let total: f64 = items.iter().map(|i| 34.0 + text_w(&i.2)).sum();
                let mut x = ((f.width - total) / 2.0).max(f.left);
                items
                    .iter()
                    .map(|i| {
                        let p = (x, 42.0);
                        x += 34.0 + text_w(&i.2);
                        p
                    })
                    .collect()
            }
            _ => {
                let (x0, y0) = match at {
                    LegendAt::TopLeft => (f.left + 8.0, f.top + 8.0),
                    LegendAt::Right => (f.width - f.right + 10.0, f.top),
                    _ => (f.width - f.right - w - 8.0, f.top + 8.0),
                };
                let _ = write!(
                    s,
                    r##"<rect x="{x0:.1}" y="{y0:.1}" width="{w:.1}" height="{h:.1}" fill="white" fill-opacity="0.9" stroke="#bbb"/>"##
                );
                (0..items.len())
                    .map(|k| (x0, y0 + 12.0 + 17.0 * k as f64))
                    .collect()
            }
        };
        for ((mark, colour, label), (x, cy)) in items.iter().zip(positions) {
            let cx = x + 12.0;
            let sym = match mark {
                Mark::Dot => {
                    format!(r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="{colour}"/>"#)
                }
                Mark::Square | Mark::Bar => format!(
                    r#"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="{colour}"/>"#,
                    cx - 4.5,
                    cy - 4.5
                ),
                Mark::HollowSquare => format!(
                    r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                    cx - 4.0,
                    cy - 4.0
                ),
                Mark::Line | Mark::Dashed => format!(
                    r#"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{colour}" stroke-width="2"{}/>"#,
                    cx - 7.0,
                    cx + 7.0,
                    if *mark == Mark::Dashed {
                        r#" stroke-dasharray="4 3""#
                    } else {
                        ""
                    }
                ),
            };
            let _ = write!(
                s,
                r#"{sym}<text x="{:.1}" y="{:.1}">{}</text>"#,
                cx + 12.0,
                cy + 4.0,
                esc(label)
            );
        }
        self.push(&s);
    }

    /// Adds `body`, then the legend of `items` at `at`, and finishes the document.
    pub fn finish_with(
        mut self,
        body: &str,
        items: &[(Mark, &str, String)],
        at: LegendAt,
    ) -> String {
        self.push(body);
        self.legend(items, at);
        self.finish()
    }

    /// The finished SVG document.
    pub fn finish(mut self) -> String {
        self.body.push_str("</svg>\n");
        self.body
    }
}

/// A distinct colour per series (the Tableau 10 palette).
pub fn palette(i: usize) -> &'static str {
    const P: [&str; 10] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    P[i % P.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(linear_ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t: Vec<String> = linear_ticks(0.13, 0.61, 5)
            .into_iter()
            .map(tick_label)
            .collect();
        assert_eq!(t, ["0.2", "0.3", "0.4", "0.5", "0.6"]);
        let s = Scale::fit(&[3e-4, 2.0, -1.0], true, false);
        assert_eq!((s.lo, s.hi), (1e-4, 10.0));
        assert_eq!(s.ticks().len(), 6);
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(1.5e-3), "1.5e-3");
        assert_eq!(tick_label(20000.0), "2e4");
        assert_eq!(tick_label(-0.0001), "-1e-4");
    }

    #[test]
    fn plot_has_axes_legend_and_escaped_labels() {
        let mut p = Plot::new(
            Frame::default(),
            Scale::fit(&[0.0, 4.0], false, true),
            Scale::fit(&[0.01, 5.0], true, false),
            "t <1>",
        );
        p.axes("x", "y & z", true);
        p.legend(&[(Mark::Dot, palette(0), "a".into())], LegendAt::Above);
        let svg = p.finish();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("y &amp; z, log scale"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
