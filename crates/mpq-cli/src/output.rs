//! Everything the CLI prints: aligned tables, JSON, progress bars on stderr (hidden when
//! stderr is not a terminal or with `--quiet`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// While set, stdout lines, JSON and status lines are dropped (progress bars stay): the
/// quickstart runs whole commands in-process and prints its own one-line results.
static MUTED: AtomicBool = AtomicBool::new(false);

/// Drops (`true`) or restores (`false`) everything but progress bars.
pub(crate) fn mute(on: bool) {
    MUTED.store(on, Ordering::SeqCst);
}

fn muted() -> bool {
    MUTED.load(Ordering::SeqCst)
}

/// Prints `value` as one JSON object line on stdout.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    if muted() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints a line on stdout.
pub(crate) fn line(s: &str) -> anyhow::Result<()> {
    if muted() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    Ok(())
}

/// A status line on stderr (suppressed by `--quiet`).
pub(crate) fn status(quiet: bool, s: &str) {
    if !quiet && !muted() {
        eprintln!("{s}");
    }
}

/// A table with a header row; numeric-looking cells are right-aligned.
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let numeric = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || ".,-+e%x".contains(c))
        };
        let fmt_row = |r: &Vec<String>| {
            r.iter()
                .enumerate()
                .map(|(i, c)| {
                    if numeric(c) {
                        format!("{c:>w$}", w = width[i])
                    } else {
                        format!("{c:<w$}", w = width[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut s = fmt_row(&self.header);
        s.push('\n');
        s.push_str(
            &width
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  "),
        );
        for r in &self.rows {
            s.push('\n');
            s.push_str(&fmt_row(r));
        }
        s
    }

    pub(crate) fn print(&self) -> anyhow::Result<()> {
        line(&self.render())
    }
}

/// Thousands separators: 1234567 -> 1,234,567.
pub(crate) fn thousands(n: u64) -> String {
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

/// Progress bars drawn with indicatif.
pub(crate) struct Bars {
    bar: Option<ProgressBar>,
    visible: bool,
}

impl Bars {
    pub(crate) fn new(quiet: bool) -> Self {
        Bars {
            bar: None,
            visible: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

impl mpq::progress::Progress for Bars {
    fn start(&mut self, label: &str, total: u64) {
        if !self.visible {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .expect("the progress template should be valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        self.bar = Some(bar);
    }

    fn inc(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn message(&mut self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
