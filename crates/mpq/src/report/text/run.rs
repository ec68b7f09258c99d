//! The text of a model's layer table, of a hardware simulation, and of a run's results.

use std::fmt::Write as _;

use super::{Table, num, opt, thousands};
use crate::cost::{Bound, HwTable};
use crate::graph::LayerInfo;
use crate::run::RunSummary;

fn shape(s: &[usize]) -> String {
    let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    dims.join("x")
}

/// The quantizable layers of a model, then one line about the model.
pub fn layers(arch: &str, layers: &[LayerInfo], params: usize, input: &[usize]) -> String {
    let mut t = Table::new("#|layer|op|weight|params|MACs|input|output");
    for l in layers {
        t.row(vec![
            l.index.to_string(),
            l.name.clone(),
            super::op_name(l.op),
            shape(&l.weight_shape),
            thousands(l.params as u64),
            thousands(l.macs),
            shape(&l.input_shape),
            shape(&l.output_shape),
        ]);
    }
    let weights: usize = layers.iter().map(|l| l.params).sum();
    let macs: u64 = layers.iter().map(|l| l.macs).sum();
    format!(
        "{t}\n\n{arch}: {} quantizable layers, {} parameters ({} in layer weights), {} MACs per \
         sample, input {}",
        layers.len(),
        thousands(params as u64),
        thousands(weights as u64),
        thousands(macs),
        shape(input),
    )
}

/// A simulated accelerator's per-layer table and totals; `bits_from` says where the bits
/// came from.
pub fn hardware(t: &HwTable, bits_from: &str) -> String {
    let mut tab = Table::new("layer|w/a|MACs|compute_ms|memory_ms|latency_ms|energy_mj|bound");
    for l in &t.layers {
        tab.row(vec![
            l.name.clone(),
            format!("{}/{}", l.w_bits, l.a_bits),
            thousands(l.macs),
            opt(l.compute_ms, num),
            opt(l.memory_ms, num),
            num(l.latency_ms),
            opt(l.energy_mj, num),
            l.bound.as_str().to_string(),
        ]);
    }
    let macs = thousands(t.layers.iter().map(|l| l.macs).sum());
    let (latency, energy) = (num(t.latency_ms), opt(t.energy_mj, num));
    let total = ["total", "", &macs, "", "", &latency, &energy, ""];
    tab.row(total.map(String::from).to_vec());
    let (hw, batch) = (&t.hardware, t.batch);
    let mut s = format!("{tab}\n\n{hw} (batch {batch}): {latency} ms, {energy} mJ per run");
    let count = |b: Bound| t.layers.iter().filter(|l| l.bound == b).count();
    let memory = count(Bound::Memory);
    if memory + count(Bound::Compute) > 0 {
        let n = t.layers.len();
        let _ = write!(s, "; {memory} of {n} layers memory-bound");
    }
    let _ = write!(s, "; bits: {bits_from}");
    s
}

/// A run's results: the FP32 model and every plan.
pub fn results(s: &RunSummary) -> Table {
    let mut t =
        Table::new("method|weight bytes|avg bits|BOPs|latency ms|PTQ acc|fine-tuned acc|search s");
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    let dash = || "-".to_string();
    let fp = &s.fp32;
    let size = thousands(fp.size_bytes);
    t.row(vec![
        "fp32".into(),
        size,
        "32".into(),
        dash(),
        dash(),
        pct(fp.accuracy),
        dash(),
        dash(),
    ]);
    for r in &s.results {
        t.row(vec![
            r.method.clone(),
            thousands(r.size_bytes.unwrap_or(0.0) as u64),
            opt(r.avg_w_bits, |x| format!("{x:.2}")),
            opt(r.bops, |x| format!("{x:.3e}")),
            opt(r.latency_ms, |x| format!("{x:.6}")),
            opt(r.accuracy_before, pct),
            opt(r.accuracy_after, pct),
            opt(r.search_seconds, |x| format!("{x:.2}")),
        ]);
    }
    t
}
