//! Everything the CLI prints: aligned tables, JSON, progress bars on stderr (hidden when
//! stderr is not a terminal or with `--quiet`).

pub(crate) use mpq::report::text::Table;

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Prints `value` as one JSON object line on stdout.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Writes `bytes` (a whole JSON file) to stdout.
pub(crate) fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    std::io::stdout().lock().write_all(bytes)?;
    Ok(())
}

/// Prints a line on stdout.
pub(crate) fn line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    Ok(())
}

/// A status line on stderr (suppressed by `--quiet`).
pub(crate) fn status(quiet: bool, s: &str) {
    if !quiet {
        eprintln!("{s}");
    }
}

/// A warning on stderr (`warning: …`), shown even with `--quiet`: it concerns the result.
pub(crate) fn warn(s: &str) {
    eprintln!("warning: {s}");
}

/// Prints a table on stdout.
pub(crate) fn table(t: &Table) -> anyhow::Result<()> {
    line(&t.to_string())
}

/// Progress bars drawn with indicatif, and the library's status lines on stderr.
pub(crate) struct Bars {
    bar: Option<ProgressBar>,
    visible: bool,
    quiet: bool,
}

impl Bars {
    pub(crate) fn new(quiet: bool) -> Self {
        Bars {
            bar: None,
            visible: !quiet && std::io::stderr().is_terminal(),
            quiet,
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

    fn note(&mut self, line: &str) {
        match &self.bar {
            Some(b) if !self.quiet => b.suspend(|| eprintln!("{line}")),
            _ => status(self.quiet, line),
        }
    }
}
