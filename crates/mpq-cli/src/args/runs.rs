//! Flags of the commands over whole runs: `mpq quickstart`, `mpq report` and `mpq bench`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// Run folder (reused: an existing model there is not retrained).
    #[arg(long, default_value = "runs/quickstart")]
    pub(crate) out: PathBuf,
    /// A shorter run (fewer epochs) for a first look.
    #[arg(long)]
    pub(crate) fast: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Run folder, as `mpq quickstart` writes it (docs/file-formats.md).
    #[arg(long, value_name = "DIR")]
    pub(crate) run: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Timed runs per workload, after one untimed warm-up run.
    #[arg(long, default_value_t = 5)]
    pub(crate) repeats: usize,
    /// Run only these workloads (comma separated; docs/benchmarks.md lists them).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Use candle's own conv and batch-norm ops instead of mpq-kernels (as MPQ_STOCK_OPS=1).
    #[arg(long)]
    pub(crate) stock: bool,
}
