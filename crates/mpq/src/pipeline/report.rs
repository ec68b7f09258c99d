//! `mpq report`: the numbers of a run folder that need the model (each plan's Ω on one
//! shared scale, latency and energy on the model's layer table) go into the folder's
//! `summary.json`; then the report renders the folder's files without loading anything
//! else (`crate::report`).

use std::path::{Path, PathBuf};

use crate::graph::LayerInfo;
use crate::io::Versioned;
use crate::model::{Model, ModelHint};
use crate::plan::FULL_PRECISION;
use crate::report::{ReportOutcome, RunFolder, result_rows};
use crate::run::{FpRow, RunPaths, RunSummary};
use crate::search::{OmegaConfig, OmegaTable};
use crate::sensitivity::SensitivityTable;
use crate::train::EvalStats;
use crate::{QuantPlan, Result};

/// `mpq report`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRequest {
    /// The run folder.
    pub run: PathBuf,
}

/// Ω of `plan`: per layer `s_i · ‖Q(W_i) − W_i‖²` with the plan's own quantizer (per-channel
/// widths, k-means codebooks) and `s_i = max(Tr(H_i)/n_i, 0)`, plus `Ω^a_i` at its activation
/// width. `None` when a layer lacks a trace.
fn plan_omega(
    model: &Model,
    layers: &[LayerInfo],
    sens: &SensitivityTable,
    plan: &QuantPlan,
) -> Result<Option<f64>> {
    let table = OmegaTable::new(layers, sens, OmegaConfig::default())?;
    let mut total = 0.0;
    for (i, l) in layers.iter().enumerate() {
        let (Some(row), Some(p)) = (sens.layer(&l.name), plan.precision(&l.name)) else {
            continue; // no sensitivity, or full precision: no error
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

/// The run's results computed with its model (`DIR/model.safetensors`) and written to
/// `DIR/summary.json`; `trained` and `seconds` are kept from an earlier summary unless given.
/// Needs the model and `fp.json`.
pub fn summarize(dir: &Path, run_info: Option<(bool, f64)>) -> Result<RunSummary> {
    let paths = RunPaths::new(dir);
    let model = Model::load(&paths.model(), &ModelHint::default(), &super::device())?;
    let layers = model.graph.layer_infos()?;
    let run = RunFolder::load(dir)?;
    let fp = EvalStats::load(paths.file("fp.json"))?;
    let omega = |m: &crate::report::MethodRun| {
        let sens = run.sensitivity.as_ref()?;
        plan_omega(&model, &layers, sens, &m.policy.plan).unwrap_or(None)
    };
    let results = result_rows(&run, Some(&layers), omega)?
        .into_iter()
        .filter(|r| r.method != "fp32")
        .collect();
    let (trained, seconds) = run_info.unwrap_or_else(|| {
        run.summary
            .as_ref()
            .map_or((false, 0.0), |s| (s.trained, s.seconds))
    });
    let params = model.num_params();
    let summary = RunSummary {
        fp32: FpRow {
            accuracy: fp.accuracy,
            loss: fp.loss,
            params,
            samples: fp.samples,
            size_bytes: 4 * params as u64,
        },
        layers,
        model: paths.model().display().to_string(),
        results,
        seconds,
        trained,
    };
    summary.save(paths.file("summary.json"))?;
    Ok(summary)
}

/// Refreshes the run's `summary.json` when its model and `fp.json` are there, then renders
/// `DIR/report.html` and its plots. A model that does not load is listed as unreadable and
/// the report shows the rest.
pub fn report(req: &ReportRequest) -> Result<ReportOutcome> {
    crate::run::check_folder(&req.run)?;
    let paths = RunPaths::new(&req.run);
    let mut stale = None;
    if paths.model().is_file() && paths.file("fp.json").is_file() {
        stale = summarize(&req.run, None)
            .err()
            .map(|e| format!("model.safetensors: {e} (summary.json not refreshed)"));
    }
    let mut out = crate::report::render(&req.run)?;
    out.unreadable.extend(stale);
    Ok(out)
}
