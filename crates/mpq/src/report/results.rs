//! The results table of a report: per method its size, average bits, BOPs, simulated
//! BitFusion latency and energy, accuracy before and after fine-tuning, search time and Ω on
//! one shared scale (HAWQ-V2's `Σ Tr(H_i)/n_i · ‖Q(W_i) − W_i‖²` plus the activation term,
//! computed with the model by the pipeline and stored in the run's `summary.json`).
//! Every number is taken from the run's files or computed by the library's cost models, and
//! is written to the HTML both visibly and in `data-value` attributes.

use std::fmt::Write as _;

use super::run::{MethodRun, RunFolder};
use super::svg::esc;
use crate::cost::{CostTable, HardwareModel};
use crate::graph::LayerInfo;
use crate::plan::FULL_PRECISION;
use crate::run::ResultRow;
use crate::{QuantPlan, Result};

/// The hardware model behind the latency and energy columns.
pub const HARDWARE: &str = "bitfusion";

fn method_row(
    m: &MethodRun,
    layers: Option<&[LayerInfo]>,
    hw: &HardwareModel,
    omega: Option<f64>,
) -> Result<ResultRow> {
    let s = m.summary.as_ref();
    let plan = &m.policy.plan;
    let sim = layers.map(|l| hw.table(l, plan)).transpose()?;
    Ok(ResultRow {
        method: m.method.clone(),
        size_bytes: plan
            .size_bytes
            .or(s.map(|s| s.size_bytes))
            .map(|b| b as f64),
        avg_w_bits: plan.avg_w_bits.or(s.map(|s| s.avg_w_bits)),
        bops: plan.bops.or(s.map(|s| s.bops)),
        latency_ms: sim.as_ref().map(|t| t.latency_ms),
        energy_mj: sim.as_ref().and_then(|t| t.energy_mj),
        accuracy_before: s.map(|s| s.before_finetune.accuracy),
        accuracy_after: s.map(|s| s.after_finetune.accuracy),
        search_seconds: Some(plan.seconds),
        omega,
        file_bytes: s.map(|s| s.export.file_bytes),
    })
}

/// The FP32 reference row and one row per method. `layers` (the model's) prices the FP32
/// model and the plans' latency and energy; `omega` gives a plan's Ω on the shared scale.
pub fn result_rows(
    run: &RunFolder,
    layers: Option<&[LayerInfo]>,
    omega: impl Fn(&MethodRun) -> Option<f64>,
) -> Result<Vec<ResultRow>> {
    let hw = HardwareModel::from_reference(HARDWARE)?;
    let mut rows = Vec::new();
    let fp_acc = run
        .fp
        .map(|f| f.accuracy)
        .or(run.summary.as_ref().map(|s| s.fp32.accuracy));
    if fp_acc.is_some() || layers.is_some() {
        let fp = layers
            .map(|l| {
                let plan = QuantPlan::uniform(l, FULL_PRECISION, FULL_PRECISION);
                Ok::<_, crate::Error>((CostTable::new(l, &plan)?, hw.table(l, &plan)?))
            })
            .transpose()?;
        rows.push(ResultRow {
            method: "fp32".into(),
            size_bytes: fp.as_ref().map(|c| c.0.size_bytes as f64),
            avg_w_bits: fp.as_ref().map(|c| c.0.avg_w_bits),
            bops: fp.as_ref().map(|c| c.0.bops),
            latency_ms: fp.as_ref().map(|c| c.1.latency_ms),
            energy_mj: fp.as_ref().and_then(|c| c.1.energy_mj),
            accuracy_before: fp_acc,
            accuracy_after: fp_acc,
            search_seconds: None,
            omega: None,
            file_bytes: None,
        });
    }
    for m in &run.methods {
        rows.push(method_row(m, layers, &hw, omega(m))?);
    }
    Ok(rows)
}

/// The rows the report shows: priced on the layers of `summary.json`, with Ω from its row
/// for the same method when that row describes the same plan (same size, bits and BOPs).
pub fn report_rows(run: &RunFolder) -> Result<Vec<ResultRow>> {
    result_rows(run, run.layers(), |m| {
        let row = run
            .summary
            .as_ref()?
            .results
            .iter()
            .find(|r| r.method == m.method)?;
        let p = &m.policy.plan;
        let same = row.size_bytes == p.size_bytes.map(|b| b as f64)
            && row.avg_w_bits == p.avg_w_bits
            && row.bops == p.bops;
        if same { row.omega } else { None }
    })
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
            file_bytes: None,
        };
        let html = results_html(&[row]);
        assert!(html.contains(r#"data-key="size_bytes" data-value="15854">15.85 k<"#));
        assert!(html.contains(r#"data-value="0.001234567">0.001235<"#));
        assert!(html.contains(r#"data-key="bops">-<"#));
        assert!(html.contains(r#"data-value="0.95">95.00<"#));
    }
}
