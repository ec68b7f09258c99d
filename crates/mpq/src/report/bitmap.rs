//! The bit-map of a report: layers across, one pair of rows (weights, activations) per method,
//! each cell coloured by its bit-width. Per-channel plans (CW-HAWQ) show every output
//! channel as a thin stripe, labelled with the layer's mean weight bits.

use std::fmt::Write as _;

use super::run::MethodRun;
use super::svg::esc;
use crate::plan::{BitWidth, FULL_PRECISION};

/// The fill colour of `bits` (viridis from 2 to 8 bits; light grey for full precision).
pub fn bits_colour(bits: BitWidth) -> &'static str {
    match bits {
        2 => "#440154",
        3 => "#46327e",
        4 => "#365c8d",
        5 => "#277f8e",
        6 => "#1fa187",
        7 => "#4ac16d",
        8 => "#a0da39",
        _ => "#e6e6e6",
    }
}

fn text_colour(bits: f64) -> &'static str {
    if bits >= 6.5 { "#111" } else { "white" }
}

/// The bit-map SVG of `methods` over `layers`; `None` without methods or layers.
pub fn bitmap_svg(layers: &[String], methods: &[MethodRun]) -> Option<String> {
    if layers.is_empty() || methods.is_empty() {
        return None;
    }
    let label_w = 150.0;
    let cell_w = (980.0 / layers.len() as f64).clamp(18.0, 96.0);
    let legend_w = 50.0 + 58.0 * 8.0;
    let row_h = 22.0;
    let gap = 8.0;
    let head = 40.0;
    let legend_h = 50.0;
    let width = (label_w + cell_w * layers.len() as f64 + 20.0).max(legend_w);
    let height = head + methods.len() as f64 * (2.0 * row_h + gap) + legend_h;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12" fill="#222"><rect width="{width}" height="{height}" fill="white"/>"##
    );
    let rotate = layers.iter().any(|l| l.len() as f64 * 6.5 > cell_w);
    for (j, name) in layers.iter().enumerate() {
        let x = label_w + cell_w * (j as f64 + 0.5);
        if rotate {
            let _ = write!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="start" font-size="11" transform="rotate(-30 {x:.1} {:.1})">{}</text>"#,
                head - 6.0,
                head - 6.0,
                esc(name)
            );
        } else {
            let _ = write!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
                head - 8.0,
                esc(name)
            );
        }
    }
    for (i, m) in methods.iter().enumerate() {
        let y0 = head + i as f64 * (2.0 * row_h + gap);
        let _ = write!(
            s,
            r##"<text x="8" y="{:.1}" font-weight="bold">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#666" font-size="11">W</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#666" font-size="11">A</text>"##,
            y0 + row_h + 4.0,
            esc(&m.method),
            label_w - 6.0,
            y0 + row_h * 0.5 + 4.0,
            label_w - 6.0,
            y0 + row_h * 1.5 + 4.0
        );
        for (j, name) in layers.iter().enumerate() {
            let x = label_w + cell_w * j as f64;
            let p = m.policy.plan.precision(name);
            let (w, a) = m.policy.plan.bits(name);
            // Weights: stripes per channel, or one cell.
            match p
                .and_then(|p| p.channel_w_bits.as_ref())
                .filter(|c| !c.is_empty())
            {
                Some(ch) => {
                    let sw = (cell_w - 2.0) / ch.len() as f64;
                    for (c, &b) in ch.iter().enumerate() {
                        let _ = write!(
                            s,
                            r#"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"/>"#,
                            x + 1.0 + sw * c as f64,
                            y0 + 1.0,
                            sw + 0.05,
                            row_h - 2.0,
                            bits_colour(b)
                        );
                    }
                    let mean = ch.iter().map(|&b| f64::from(b)).sum::<f64>() / ch.len() as f64;
                    let _ = write!(
                        s,
                        r#"<rect x="{:.1}" y="{:.1}" width="34" height="14" rx="3" fill="white" fill-opacity="0.85"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{mean:.2}</text>"#,
                        x + cell_w / 2.0 - 17.0,
                        y0 + row_h / 2.0 - 7.0,
                        x + cell_w / 2.0,
                        y0 + row_h / 2.0 + 4.0
                    );
                }
                None => cell(&mut s, x, y0, cell_w, row_h, w),
            }
            cell(&mut s, x, y0 + row_h, cell_w, row_h, a);
        }
    }
    // Legend.
    let ly = height - legend_h + 16.0;
    let _ = write!(s, r#"<text x="8" y="{:.1}">bits:</text>"#, ly + 11.0);
    for (k, b) in [2, 3, 4, 5, 6, 7, 8, FULL_PRECISION].iter().enumerate() {
        let x = 50.0 + 58.0 * k as f64;
        let label = if *b == FULL_PRECISION {
            "FP32".to_string()
        } else {
            b.to_string()
        };
        let _ = write!(
            s,
            r##"<rect x="{x}" y="{ly}" width="22" height="14" fill="{}" stroke="#999" stroke-width="0.5"/><text x="{}" y="{:.1}">{label}</text>"##,
            bits_colour(*b),
            x + 27.0,
            ly + 11.0
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

fn cell(s: &mut String, x: f64, y: f64, w: f64, h: f64, bits: BitWidth) {
    let label = if bits == FULL_PRECISION {
        "FP".to_string()
    } else {
        bits.to_string()
    };
    let _ = write!(
        s,
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{}">{label}</text>"#,
        x + 1.0,
        y + 1.0,
        w - 2.0,
        h - 2.0,
        bits_colour(bits),
        x + w / 2.0,
        y + h / 2.0 + 4.0,
        if bits == FULL_PRECISION {
            "#111"
        } else {
            text_colour(f64::from(bits))
        }
    );
}
