//! `mpq bench`: warm timings of the fixed workload table of [`mpq::bench`], with the machine
//! they ran on; `--stock` switches the executor to candle's own ops for comparison.

use mpq::bench::{self, BenchConfig, BenchReport, Machine};

use crate::args::{BenchArgs, GlobalArgs};
use crate::output::{self, Bars, Table};

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
        output::line(&machine_line(&bench::machine()))?;
    }
    let report = bench::run(&cfg, &mut Bars::new(g.quiet))?;
    if g.json {
        return output::json(&report);
    }
    print_table(&report)
}

fn machine_line(m: &Machine) -> String {
    let flags: Vec<&str> = [("avx2", m.avx2), ("fma", m.fma), ("avx512f", m.avx512f)]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
    let mut s = format!(
        "machine: {} cores, {}",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU")
    );
    if let Some(mhz) = m.mhz {
        s.push_str(&format!(" @ {mhz:.0} MHz"));
    }
    s.push_str(&format!(
        ", flags: {}; kernels: {}",
        if flags.is_empty() {
            "none".to_string()
        } else {
            flags.join(" ")
        },
        m.kernels_isa
    ));
    if let Some(p) = m.peak_gflops_per_s {
        s.push_str(&format!(
            "; peak {p:.0} GFLOP/s ({} FLOP/cycle/core)",
            m.flops_per_cycle
        ));
    }
    s
}

fn print_table(r: &BenchReport) -> anyhow::Result<()> {
    output::line(&format!(
        "threads: {}, ops: {}, seed {}\n",
        r.threads, r.ops, r.seed
    ))?;
    let mut t = Table::new(&[
        "workload", "batch", "median s", "min s", "runs", "HVPs", "GFLOP", "GFLOP/s", "% peak",
    ]);
    for w in &r.workloads {
        let peak = r.machine.peak_gflops_per_s.map_or("-".to_string(), |p| {
            format!("{:.1}", 100.0 * w.gflops_per_s / p)
        });
        t.row(vec![
            w.name.clone(),
            w.batch.to_string(),
            format!("{:.4}", w.median_s),
            format!("{:.4}", w.min_s),
            w.runs.to_string(),
            w.hvp_count.map_or("-".to_string(), |n| n.to_string()),
            format!("{:.2}", w.gflop),
            format!("{:.1}", w.gflops_per_s),
            peak,
        ]);
    }
    t.print()?;
    for line in ratio_lines(r) {
        output::line(&line)?;
    }
    Ok(())
}

/// The Hessian workloads against one training step (forward+backward) of the same model, when
/// both ran: one HVP by central differences, and the products of the per-layer traces.
fn ratio_lines(r: &BenchReport) -> Vec<String> {
    let find = |name: &str| r.workloads.iter().find(|w| w.name == name);
    let Some(step) = find("resnet20_fwd_bwd") else {
        return Vec::new();
    };
    let mut out = vec![String::new()];
    if let Some(h) = find("resnet20_hvp") {
        out.push(format!(
            "resnet20: one HVP (central differences, 2 gradients) = {:.2}x one forward+backward",
            h.median_s / step.median_s
        ));
    }
    if let Some(t) = find("resnet20_layer_traces")
        && let Some(n) = t.hvp_count.filter(|&n| n > 0)
    {
        let per = t.median_s / n as f64;
        out.push(format!(
            "resnet20: per-layer traces of all layers: {n} HVPs (one-sided, 1 gradient) in \
             {:.1} s, {per:.3} s each = {:.2}x one forward+backward",
            t.median_s,
            per / step.median_s
        ));
    }
    if out.len() == 1 { Vec::new() } else { out }
}
