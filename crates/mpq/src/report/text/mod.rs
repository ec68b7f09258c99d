//! Text renderings of results for terminals (what `mpq` prints unless asked for JSON):
//! aligned tables with numeric-looking cells right-aligned and a rule under the header, the
//! number formats they use, and one module per kind of result.

mod analysis;
mod run;
mod search;

pub use analysis::{indicators, sensitivity};
pub use run::{hardware, layers, results};
pub use search::{plan_lines, plan_table};

use std::fmt;

/// A table with a header row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column titles, separated by `|` (`"layer|params"`).
    pub fn new(header: &str) -> Self {
        Table {
            header: header.split('|').map(String::from).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (extra cells are not shown).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let numeric = |s: &str| {
            let numeric_char = |c: char| c.is_ascii_digit() || ".,-+e%x".contains(c);
            !s.is_empty() && s.chars().all(numeric_char)
        };
        let line = |r: &Vec<String>| {
            let cells = r.iter().zip(&width).map(|(c, &w)| {
                if numeric(c) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            });
            cells.collect::<Vec<_>>().join("  ").trim_end().to_string()
        };
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        write!(f, "{}\n{}", line(&self.header), rule.join("  "))?;
        for r in &self.rows {
            write!(f, "\n{}", line(r))?;
        }
        Ok(())
    }
}

/// Thousands separators: 1234567 → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A layer kind's name (`conv`, `depthwise_conv`, `grouped_conv`, `linear`).
pub fn op_name(op: crate::graph::LayerOp) -> String {
    let v = serde_json::to_value(op).unwrap_or_default();
    v.as_str().unwrap_or("?").to_string()
}

/// `v` through `f`, or `-` when absent.
pub fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// Scientific notation with five significant digits, or `-`.
pub fn sci(v: Option<f64>) -> String {
    opt(v, |x| format!("{x:.4e}"))
}

/// Four significant digits, scientific below 1e-3 and from 1e5.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let mut t = Table::new("layer|params");
        t.row(vec!["conv1".into(), thousands(150)]);
        t.row(vec!["fc".into(), thousands(1_234_567)]);
        assert_eq!(
            t.to_string(),
            "layer  params\n-----  ---------\nconv1        150\nfc     1,234,567"
        );
        assert_eq!(
            (num(0.0), num(12.3456), num(2.5e-5)),
            ("0".into(), "12.35".into(), "2.500e-5".into())
        );
    }
}
