//! `mpq bench`: warm timings of the fixed workload table of [`mpq::bench`], with the machine
//! they ran on; `--stock` switches the executor to candle's own ops for comparison.

use mpq::bench::{self, BenchConfig};

use crate::args::GlobalArgs;
use crate::args::runs::BenchArgs;
use crate::output::{self, Bars};

pub(crate) fn run(g: &GlobalArgs, a: &BenchArgs) -> anyhow::Result<()> {
    if a.stock {
        mpq::graph::set_stock_ops(true);
    }
    let cfg = BenchConfig {
        repeats: a.repeats,
        only: a.only.clone(),
        seed: g.seed,
    };
    // Check the names before printing anything.
    cfg.selected()?;
    if !g.json {
        output::line(&bench::machine().describe())?;
    }
    let report = bench::run(&cfg, &mut Bars::new(g.quiet))?;
    if g.json {
        return output::json(&report);
    }
    output::line(&report.to_string())
}
