//! `mpq hw`: per-layer latency and energy of a model on a simulated accelerator (HAQ's
//! hardware feedback, Wang et al. CVPR 2019): the analytic BitFusion / BISMO roofline models
//! or a CSV lookup table, under a policy or W8A8. Formulas in `docs/cost-models.md`.

use serde::Serialize;

use mpq::QuantPlan;
use mpq::cost::{Bound, HardwareModel, HwTable, LookupTable};

use super::search::num;
use crate::args::{GlobalArgs, HwArgs};
use crate::output::{self, Table, thousands};

/// Where the bits came from.
fn bits_source(a: &HwArgs, packed: bool) -> String {
    match (&a.policy, packed) {
        (Some(p), _) => format!("policy {}", p.display()),
        (None, true) => "the packed model's own plan".into(),
        (None, false) => "W8A8 for every layer (no --policy given)".into(),
    }
}

#[derive(Serialize)]
struct HwJson<'a> {
    model: &'a str,
    bits_from: String,
    #[serde(flatten)]
    table: &'a HwTable,
    memory_bound_layers: Vec<&'a str>,
    compute_bound_layers: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export_csv: Option<String>,
}

pub(crate) fn run(g: &GlobalArgs, a: &HwArgs) -> anyhow::Result<()> {
    let hw = HardwareModel::from_reference(&a.hardware)?;
    let model = super::open_model(&a.model, g.seed)?;
    let layers = model.graph.layer_infos()?;
    let plan = match (&a.policy, &model.quantized) {
        (Some(p), _) => {
            let plan = QuantPlan::load(p)?;
            plan.validate(&layers)?;
            plan
        }
        (None, Some(q)) => q.plan().clone(),
        (None, None) => QuantPlan::uniform(&layers, 8, 8),
    };
    let table = hw.table(&layers, &plan)?;
    if let Some(path) = &a.export_csv {
        let bits: Vec<u32> = (2..=8).chain([32]).collect();
        let csv = LookupTable::from_model(&hw, &layers, &bits, &bits)?.to_csv();
        super::write_files_atomic(&[(path.clone(), csv.into_bytes())])?;
    }
    let bound = |b: Bound| -> Vec<&str> {
        table
            .layers
            .iter()
            .filter(|r| r.bound == b)
            .map(|r| r.name.as_str())
            .collect()
    };
    let source = bits_source(a, model.quantized.is_some());
    if g.json {
        return output::json(&HwJson {
            model: &a.model.model,
            bits_from: source,
            table: &table,
            memory_bound_layers: bound(Bound::Memory),
            compute_bound_layers: bound(Bound::Compute),
            export_csv: a.export_csv.as_ref().map(|p| p.display().to_string()),
        });
    }
    let mut t = Table::new(&[
        "layer",
        "w/a",
        "MACs",
        "compute_ms",
        "memory_ms",
        "latency_ms",
        "energy_mj",
        "bound",
    ]);
    let opt = |v: Option<f64>| v.map_or("-".to_string(), num);
    for r in &table.layers {
        t.row(vec![
            r.name.clone(),
            format!("{}/{}", r.w_bits, r.a_bits),
            thousands(r.macs),
            opt(r.compute_ms),
            opt(r.memory_ms),
            num(r.latency_ms),
            opt(r.energy_mj),
            r.bound.as_str().to_string(),
        ]);
    }
    t.row(vec![
        "total".into(),
        String::new(),
        thousands(table.layers.iter().map(|r| r.macs).sum()),
        String::new(),
        String::new(),
        num(table.latency_ms),
        opt(table.energy_mj),
        String::new(),
    ]);
    t.print()?;
    let memory = bound(Bound::Memory).len();
    let mut summary = format!(
        "\n{} (batch {}): {} ms, {} mJ per run",
        table.hardware,
        table.batch,
        num(table.latency_ms),
        opt(table.energy_mj)
    );
    if memory + bound(Bound::Compute).len() > 0 {
        summary.push_str(&format!(
            "; {memory} of {} layers memory-bound",
            table.layers.len()
        ));
    }
    summary.push_str(&format!("; bits: {source}"));
    output::line(&summary)?;
    if let Some(p) = &a.export_csv {
        output::line(&format!("lookup table written to {}", p.display()))?;
    }
    Ok(())
}
