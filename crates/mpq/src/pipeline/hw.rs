//! `mpq hw`: per-layer latency and energy of a model on a simulated accelerator (HAQ's
//! hardware feedback, Wang et al. CVPR 2019): the analytic BitFusion / BISMO roofline models
//! or a CSV lookup table, under a policy, the packed model's own plan, or W8A8. Formulas in
//! `docs/cost-models.md`.

use std::path::PathBuf;

use serde::Serialize;

use super::ModelSource;
use crate::QuantPlan;
use crate::Result;
use crate::cost::{Bound, HardwareModel, HwTable, LookupTable};
use crate::io::Versioned;
use crate::search::Policy;

/// `mpq hw`.
#[derive(Debug, Clone)]
pub struct HwRequest {
    /// The model.
    pub model: ModelSource,
    /// `bitfusion`, `bismo`, `bismo-cloud`, `PATH.toml` or `PATH.csv`.
    pub hardware: String,
    /// A policy; without it a packed model's own plan, else W8A8.
    pub policy: Option<PathBuf>,
    /// Also write the model's lookup table (every layer at 2..8 and 32 bits) as CSV.
    pub export_csv: Option<PathBuf>,
}

/// The simulated table and where the bits came from.
#[derive(Debug, Clone, Serialize)]
pub struct HwOutcome {
    /// The model reference.
    pub model: String,
    /// Where the bits came from.
    pub bits_from: String,
    /// Per layer and in total.
    #[serde(flatten)]
    pub table: HwTable,
    /// Layers whose memory traffic takes longer than their compute.
    pub memory_bound_layers: Vec<String>,
    /// Layers whose compute takes longer.
    pub compute_bound_layers: Vec<String>,
    /// The lookup table written, if asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_csv: Option<String>,
}

/// Simulates the model of `req` on its hardware.
pub fn hw(req: &HwRequest) -> Result<HwOutcome> {
    if let Some(out) = &req.export_csv {
        let mut inputs: Vec<(&str, &std::path::Path)> = Vec::new();
        inputs.extend(super::model_file(&req.model).map(|m| ("model", m)));
        inputs.push(("hardware file", std::path::Path::new(&req.hardware)));
        inputs.extend(req.policy.as_deref().map(|p| ("policy", p)));
        crate::outputs::refuse_overwrite(&inputs, &[out.as_path()])?;
    }
    let hw = HardwareModel::from_reference(&req.hardware)?;
    let model = req.model.open()?;
    let layers = model.graph.layer_infos()?;
    let (plan, bits_from) = match (&req.policy, &model.quantized) {
        (Some(p), _) => {
            let plan = Policy::load(p)?.plan.for_model(&layers)?;
            (plan, format!("policy {}", p.display()))
        }
        (None, Some(q)) => (q.plan().clone(), "the packed model's own plan".into()),
        (None, None) => (
            QuantPlan::uniform(&layers, 8, 8),
            "W8A8 for every layer (no --policy given)".into(),
        ),
    };
    let table = hw.table(&layers, &plan)?;
    if let Some(path) = &req.export_csv {
        let bits: Vec<u32> = (2..=8).chain([32]).collect();
        let csv = LookupTable::from_model(&hw, &layers, &bits, &bits)?.to_csv();
        crate::io::write_atomic(path, csv.as_bytes())?;
    }
    let bound = |b: Bound| -> Vec<String> {
        let rows = table.layers.iter().filter(|r| r.bound == b);
        rows.map(|r| r.name.clone()).collect()
    };
    Ok(HwOutcome {
        model: req.model.reference.clone(),
        bits_from,
        memory_bound_layers: bound(Bound::Memory),
        compute_bound_layers: bound(Bound::Compute),
        export_csv: req.export_csv.as_ref().map(|p| p.display().to_string()),
        table,
    })
}
