//! The results table of a report: per method its size, average bits, BOPs, simulated
//! BitFusion latency and energy, accuracy before and after fine-tuning, search time and Ω
//! (HAWQ-V2's `Σ Tr(H_i)/n_i · ‖Q(W_i) − W_i‖²` plus the activation term, recomputed for every
//! plan from the model and `sensitivity.json` so all methods share one scale).
//! Every number is taken from the run's JSON files or computed by the library's cost models,
//! and is written to the HTML both visibly and in `data-value` attributes.

use std::fmt::Write as _;

use serde::Serialize;

use super::run::{MethodRun, RunFolder};
use super::svg::esc;
use crate::cost::HardwareModel;
use crate::graph::LayerInfo;
use crate::model::Model;
use crate::plan::FULL_PRECISION;
use crate::search::{OmegaConfig, OmegaTable, Sensitivities};
use crate::{QuantPlan, Result};

/// The hardware model behind the latency and energy columns.
pub const HARDWARE: &str = "bitfusion";

/// One row of the results table (`None`: not available in this run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// The method (`fp32` for the reference row).
    pub method: String,
    /// Weight storage with scales (bytes): the policy's `size_bytes`, else the summary's.
    pub size_bytes: Option<f64>,
    /// Parameter-weighted mean weight bits.
    pub avg_w_bits: Option<f64>,
    /// Bit operations per sample.
    pub bops: Option<f64>,
    /// Simulated latency on BitFusion (ms, batch 1).
    pub latency_ms: Option<f64>,
    /// Simulated energy on BitFusion (mJ).
    pub energy_mj: Option<f64>,
    /// Test accuracy after calibration, before fine-tuning (fraction).
    pub accuracy_before: Option<f64>,
    /// Test accuracy after fine-tuning (fraction).
    pub accuracy_after: Option<f64>,
    /// Search wall time (the policy's `seconds`).
    pub search_seconds: Option<f64>,
    /// Ω of the plan on the shared scale (see the module docs).
    pub omega: Option<f64>,
}

/// Ω of `plan`: per layer `s_i · ‖Q(W_i) − W_i‖²` with the plan's own quantizer (per-channel
/// widths, k-means codebooks) and `s_i = max(Tr(H_i)/n_i, 0)`, plus `Ω^a_i` at its activation
/// width. `None` when a layer lacks a trace.
pub fn plan_omega(
    model: &Model,
    layers: &[LayerInfo],
    sens: &Sensitivities,
    plan: &QuantPlan,
) -> Result<Option<f64>> {
    let table = OmegaTable::new(layers, sens, OmegaConfig::default())?;
    let mut total = 0.0;
    for (i, l) in layers.iter().enumerate() {
        let Some(row) = sens.row(&l.name) else {
            continue;
        };
        let Some(p) = plan.precision(&l.name) else {
            continue; // full precision: no error
        };
        let n = l.params.max(1) as f64;
        let Some(s) = row.trace_per_param.or(row.trace.map(|t| t / n)) else {
            return Ok(None);
        };
        if !p.weights_full_precision() {
            let w = model
                .graph
                .params()
                .var(&format!("{}.weight", l.name))?
                .as_tensor();
            total += s.max(0.0) * crate::quant::weight_error(w, p)?;
        }
        if p.a_bits < FULL_PRECISION {
            total += table.act_term(i, p.a_bits)?;
        }
    }
    Ok(Some(total))
}

fn method_row(run: &RunFolder, m: &MethodRun, hw: Option<&HardwareModel>) -> Result<ResultRow> {
    let s = m.summary.as_ref();
    let sim = match (hw, &run.layers) {
        (Some(hw), Some(layers)) => Some(hw.table(layers, &m.plan)?),
        _ => None,
    };
    let omega = match (&run.model, &run.layers, &run.sensitivities) {
        (Some(model), Some(layers), Some(sens)) => {
            plan_omega(model, layers, sens, &m.plan).unwrap_or(None)
        }
        _ => None,
    };
    Ok(ResultRow {
        method: m.method.clone(),
        size_bytes: m
            .plan
            .size_bytes
            .or(s.and_then(|s| s.size_bytes))
            .map(|b| b as f64),
        avg_w_bits: m.plan.avg_w_bits.or(s.and_then(|s| s.avg_w_bits)),
        bops: m.plan.bops.or(s.and_then(|s| s.bops)),
        latency_ms: sim.as_ref().map(|t| t.latency_ms),
        energy_mj: sim.as_ref().and_then(|t| t.energy_mj),
        accuracy_before: s.map(|s| s.before_finetune.accuracy),
        accuracy_after: s.map(|s| s.after_finetune.accuracy),
        search_seconds: Some(m.plan.seconds),
        omega,
    })
}

/// The FP32 reference row and one row per method.
pub fn result_rows(run: &RunFolder) -> Result<Vec<ResultRow>> {
    let hw = HardwareModel::from_reference(HARDWARE)?;
    let hw = run.layers.as_ref().map(|_| &hw);
    let mut rows = Vec::new();
    if run.fp.is_some() || run.layers.is_some() {
        let fp_plan = run
            .layers
            .as_ref()
            .map(|l| QuantPlan::uniform(l, FULL_PRECISION, FULL_PRECISION));
        let cost = match (&run.layers, &fp_plan) {
            (Some(l), Some(p)) => Some(crate::cost::CostTable::new(l, p)?),
            _ => None,
        };
        let sim = match (hw, &run.layers, &fp_plan) {
            (Some(hw), Some(l), Some(p)) => Some(hw.table(l, p)?),
            _ => None,
        };
        let acc = run.fp.map(|f| f.accuracy);
        rows.push(ResultRow {
            method: "fp32".into(),
            size_bytes: cost.as_ref().map(|c| c.size_bytes as f64),
            avg_w_bits: cost.as_ref().map(|c| c.avg_w_bits),
            bops: cost.as_ref().map(|c| c.bops),
            latency_ms: sim.as_ref().map(|t| t.latency_ms),
            energy_mj: sim.as_ref().and_then(|t| t.energy_mj),
            accuracy_before: acc,
            accuracy_after: acc,
            search_seconds: None,
            omega: None,
        });
    }
    for m in &run.methods {
        rows.push(method_row(run, m, hw)?);
    }
    Ok(rows)
}

/// A number with an SI suffix (`15.9 k`, `10.91 M`, `1.2 G`), four significant digits.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (d, suffix) = if a >= 1e9 {
        (1e9, " G")
    } else if a >= 1e6 {
        (1e6, " M")
    } else if a >= 1e3 {
        (1e3, " k")
    } else {
        (1.0, "")
    };
    format!("{}{suffix}", sig4(v / d))
}

/// Four significant digits, without scientific notation for `1e-4 ≤ |v| < 1e6`.
pub fn sig4(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        return "0".into();
    }
    if !(1e-4..1e6).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

fn cell(key: &str, v: Option<f64>, text: impl Fn(f64) -> String) -> String {
    match v {
        Some(x) => format!(
            r#"<td class="num" data-key="{key}" data-value="{x}">{}</td>"#,
            text(x)
        ),
        None => format!(r#"<td class="num na" data-key="{key}">-</td>"#),
    }
}

/// The results table as HTML: one `<tr data-method=…>` per row, each number a
/// `<td data-key=… data-value=…>` whose text is the value rounded for reading.
pub fn results_html(rows: &[ResultRow]) -> String {
    let best_after = rows
        .iter()
        .filter(|r| r.method != "fp32")
        .filter_map(|r| r.accuracy_after)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut s = String::from(
        r#"<table class="results" id="results"><thead><tr><th>method</th><th>size (bytes)</th><th>avg W bits</th><th>BOPs / sample</th><th>latency (ms)</th><th>energy (mJ)</th><th>Ω (shared scale)</th><th>accuracy before FT (%)</th><th>accuracy after FT (%)</th><th>search time (s)</th></tr></thead><tbody>"#,
    );
    let pct = |x: f64| format!("{:.2}", 100.0 * x);
    for r in rows {
        let class = if r.method == "fp32" {
            " class=\"ref\""
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<tr data-method="{m}"{class}><td class="method">{m}</td>"#,
            m = esc(&r.method)
        );
        s.push_str(&cell("size_bytes", r.size_bytes, si));
        s.push_str(&cell("avg_w_bits", r.avg_w_bits, |x| format!("{x:.3}")));
        s.push_str(&cell("bops", r.bops, si));
        s.push_str(&cell("latency_ms", r.latency_ms, sig4));
        s.push_str(&cell("energy_mj", r.energy_mj, sig4));
        s.push_str(&cell("omega", r.omega, sig4));
        s.push_str(&cell("accuracy_before", r.accuracy_before, pct));
        let after = cell("accuracy_after", r.accuracy_after, pct);
        if r.method != "fp32" && r.accuracy_after == Some(best_after) {
            s.push_str(&after.replacen("class=\"num\"", "class=\"num best\"", 1));
        } else {
            s.push_str(&after);
        }
        s.push_str(&cell("search_seconds", r.search_seconds, sig4));
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(si(15_854.0), "15.85 k");
        assert_eq!(si(10_905_600.0), "10.91 M");
        assert_eq!(si(2.5e9), "2.500 G");
        assert_eq!(sig4(0.000_365_8), "0.0003658");
        assert_eq!(sig4(12.345_6), "12.35");
        assert_eq!(sig4(3e-7), "3.000e-7");
    }

    #[test]
    fn table_cells_carry_exact_values() {
        let row = ResultRow {
            method: "ilp".into(),
            size_bytes: Some(15_854.0),
            avg_w_bits: Some(2.699_253),
            bops: None,
            latency_ms: Some(0.001_234_567),
            energy_mj: None,
            accuracy_before: Some(0.9),
            accuracy_after: Some(0.95),
            search_seconds: Some(0.01),
            omega: None,
        };
        let html = results_html(&[row]);
        assert!(html.contains(r#"data-key="size_bytes" data-value="15854">15.85 k<"#));
        assert!(html.contains(r#"data-value="0.001234567">0.001235<"#));
        assert!(html.contains(r#"data-key="bops">-<"#));
        assert!(html.contains(r#"data-value="0.95">95.00<"#));
    }
}
