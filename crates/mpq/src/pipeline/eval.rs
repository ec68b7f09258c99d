//! `mpq eval`: test accuracy and loss of a model, in FP32, under a policy (calibrated fake
//! quantization: post-training quantization), or as the packed model it is; its size, average
//! bits and BOPs; with a hardware model, its simulated latency and energy.

use std::path::PathBuf;

use serde::Serialize;

use super::{ModelSource, open_with_data};
use crate::QuantPlan;
use crate::cost::{CostTable, HardwareModel};
use crate::graph::{Hooks, NoHooks};
use crate::io::Versioned;
use crate::quant::{CalibrationConfig, PlanHooks};
use crate::search::Policy;
use crate::{Error, Result};

/// `mpq eval`.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// The model.
    pub model: ModelSource,
    /// Data reference; its test split is evaluated.
    pub data: String,
    /// Samples per forward pass.
    pub batch_size: usize,
    /// A policy to simulate (a float model only).
    pub policy: Option<PathBuf>,
    /// Training samples that calibrate activation ranges under `policy`.
    pub calib_samples: usize,
    /// A hardware model to simulate latency and energy on.
    pub hardware: Option<String>,
    /// Seed of the data splits.
    pub seed: u64,
}

/// What `mpq eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOutcome {
    /// Test accuracy (fraction).
    pub accuracy: f64,
    /// Mean test loss.
    pub loss: f64,
    /// Test samples.
    pub samples: usize,
    /// Weight storage (bytes, scales included).
    pub size_bytes: u64,
    /// Parameter-weighted mean weight bits.
    pub avg_w_bits: f64,
    /// Bit operations per sample.
    pub bops: f64,
    /// Simulated latency in ms on `hardware` (null without it).
    pub latency_ms: Option<f64>,
    /// Simulated energy in mJ on `hardware` (null without it, or a table without energies).
    pub energy_mj: Option<f64>,
    /// The hardware model simulated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// The simulated batch.
    #[serde(skip)]
    pub batch: Option<usize>,
}

/// Evaluates the model of `req`.
pub fn eval(req: &EvalRequest) -> Result<EvalOutcome> {
    let hw = req
        .hardware
        .as_deref()
        .map(HardwareModel::from_reference)
        .transpose()?;
    let (model, splits) = open_with_data(&req.model, &req.data, req.seed)?;
    let norm = model.normalization_or(&splits.normalization);
    let layers = model.graph.layer_infos()?;
    // A packed quantized model carries its plan and activation quantizers; otherwise
    // without a policy every layer is FP32 (an empty plan), priced the same way.
    let (plan, graph, mut hooks): (QuantPlan, _, Box<dyn Hooks>) =
        match (&model.quantized, &req.policy) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "policy",
                    "the model is already quantized (a packed file): drop --policy",
                ));
            }
            (Some(q), None) => (q.plan().clone(), model.graph.clone(), Box::new(q.clone())),
            (None, Some(p)) => {
                let plan = Policy::load(p)?.plan.for_model(&layers)?;
                let graph = crate::quant::prepare_graph(&model.graph, &plan)?;
                let cfg = CalibrationConfig {
                    samples: req.calib_samples,
                    ..Default::default()
                };
                let hooks = PlanHooks::calibrate(&graph, &plan, &splits.train, &norm, &cfg)?;
                (plan, graph, Box::new(hooks))
            }
            (None, None) => (
                QuantPlan::uniform(&[], 32, 32),
                model.graph.clone(),
                Box::new(NoHooks),
            ),
        };
    let cost = CostTable::new(&layers, &plan)?;
    // Before the evaluation, so a lookup table missing an entry fails fast.
    let hw_table = hw.as_ref().map(|h| h.table(&layers, &plan)).transpose()?;
    let stats =
        crate::train::evaluate(&graph, &splits.test, &norm, req.batch_size, hooks.as_mut())?;
    Ok(EvalOutcome {
        accuracy: stats.accuracy,
        loss: stats.loss,
        samples: stats.samples,
        size_bytes: cost.size_bytes,
        avg_w_bits: cost.avg_w_bits,
        bops: cost.bops,
        latency_ms: hw_table.as_ref().map(|t| t.latency_ms),
        energy_mj: hw_table.as_ref().and_then(|t| t.energy_mj),
        hardware: hw_table.as_ref().map(|t| t.hardware.clone()),
        batch: hw_table.as_ref().map(|t| t.batch),
    })
}
