//! Progress reporting without printing: long-running library calls report through this
//! trait (bars, and status lines as notes) and the CLI draws them.

/// Receives progress of a long computation.
pub trait Progress {
    /// A new stage `label` with `total` steps begins.
    fn start(&mut self, label: &str, total: u64) {
        let _ = (label, total);
    }
    /// `n` more steps are done.
    fn inc(&mut self, n: u64) {
        let _ = n;
    }
    /// A short status line for the current stage (loss, accuracy so far).
    fn message(&mut self, msg: &str) {
        let _ = msg;
    }
    /// The current stage ended.
    fn finish(&mut self) {}
    /// A status line worth showing a person (a stage's settings, a resumed state, a
    /// pre-flight report); front ends print it or drop it.
    fn note(&mut self, line: &str) {
        let _ = line;
    }
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
