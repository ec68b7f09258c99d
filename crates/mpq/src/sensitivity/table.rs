//! [`SensitivityTable`]: the "Sensitivity" JSON of `cli.md` (what `mpq analyze` writes and the
//! HAWQ / HAWQ-V2 / CW-HAWQ searches read; Dong et al. 2019, 2020).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::density::Density;
use super::hvp::FdScheme;
use super::learned::{LayerIndicators, LimpqReport};
use super::problem::Precision;
use super::{Estimator, Metric};
use crate::Result;
use crate::graph::{LayerInfo, LayerOp};

/// Second-order sensitivity of every analysed layer, plus how it was computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityTable {
    /// The model reference (`zoo:resnet20`, a file path).
    pub model: String,
    /// What was computed.
    pub metric: Metric,
    /// Trace estimator.
    pub estimator: Estimator,
    /// Seed of every probe.
    pub seed: u64,
    /// Batches analysed.
    pub batches: usize,
    /// Samples per batch (the first batch's).
    pub batch_size: usize,
    /// Hessian-vector products computed (weight and activation products, each over all batches).
    pub hvp_count: u64,
    /// Wall-clock seconds of the analysis.
    pub seconds: f64,
    /// One row per analysed layer, in execution order.
    pub layers: Vec<LayerSensitivity>,
    /// The data reference.
    #[serde(default)]
    pub data: Option<String>,
    /// The data split analysed (`train` or `test`).
    #[serde(default)]
    pub split: Option<String>,
    /// Samples analysed (`batches × batch_size` unless the last batch is short).
    #[serde(default)]
    pub samples: usize,
    /// Mean loss at the model's weights over the analysed samples.
    #[serde(default)]
    pub loss: f64,
    /// Finite-difference scheme of the Hutchinson trace products (weights and activations).
    #[serde(default)]
    pub trace_scheme: FdScheme,
    /// Relative step of the Hutchinson trace products.
    #[serde(default)]
    pub trace_rel_step: f64,
    /// Finite-difference scheme of the other products (eigenvalues, exact blocks, densities).
    #[serde(default)]
    pub scheme: FdScheme,
    /// Arithmetic of the analysis.
    #[serde(default)]
    pub precision: Precision,
    /// Relative step of the other products.
    #[serde(default)]
    pub rel_step: f64,
    /// Stopping tolerance of traces and power iteration.
    #[serde(default)]
    pub tol: f64,
    /// Most probes / iterations.
    #[serde(default)]
    pub max_iter: usize,
    /// Fewest Hutchinson probes.
    #[serde(default)]
    pub min_probes: usize,
    /// Weight probes used by Hutchinson (shared by all layers).
    #[serde(default)]
    pub probes: Option<usize>,
    /// Activation probes used by Hutchinson.
    #[serde(default)]
    pub act_probes: Option<usize>,
    /// Sum of the analysed layers' weight traces (the block-diagonal part of the trace).
    #[serde(default)]
    pub model_trace: Option<f64>,
    /// Largest-magnitude eigenvalues of the whole analysed Hessian (power iteration with
    /// deflation).
    #[serde(default)]
    pub model_top_eigenvalues: Option<Vec<f64>>,
    /// Spectral density of the whole analysed Hessian (SLQ).
    #[serde(default)]
    pub density: Option<Density>,
    /// LIMPQ's indicator training run (metric `limpq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limpq: Option<LimpqReport>,
}

/// One layer's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSensitivity {
    /// Dotted layer name.
    pub name: String,
    /// Layer kind (`conv`, `depthwise_conv`, `grouped_conv`, `linear`).
    pub op: LayerOp,
    /// Weight elements.
    pub params: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// Trace of the Hessian w.r.t. the layer's weight.
    pub trace: Option<f64>,
    /// Standard error of `trace` (0 for `exact`).
    pub trace_stderr: Option<f64>,
    /// `trace / params` (HAWQ-V2's average).
    pub trace_per_param: Option<f64>,
    /// Largest-magnitude eigenvalue of the Hessian w.r.t. the layer's weight (HAWQ).
    pub top_eigenvalue: Option<f64>,
    /// Per-sample trace of the Hessian w.r.t. the layer's input activation (HAWQ-V2).
    pub act_trace: Option<f64>,
    /// Per-output-channel weight traces (CW-HAWQ); they sum to `trace`.
    pub channel_traces: Option<Vec<f64>>,
    /// Probes behind `trace`.
    #[serde(default)]
    pub trace_probes: Option<usize>,
    /// The probe count at which this layer's stopping rule first held.
    #[serde(default)]
    pub trace_converged_at: Option<usize>,
    /// Power iterations behind `top_eigenvalue`.
    #[serde(default)]
    pub eigen_iterations: Option<usize>,
    /// Whether the power iteration met its tolerance.
    #[serde(default)]
    pub eigen_converged: Option<bool>,
    /// Elements of the input activation per sample.
    #[serde(default)]
    pub act_elems: usize,
    /// Standard error of `act_trace`.
    #[serde(default)]
    pub act_trace_stderr: Option<f64>,
    /// `act_trace / act_elems`.
    #[serde(default)]
    pub act_trace_per_elem: Option<f64>,
    /// Per-channel activation traces (input channels); they sum to `act_trace`.
    #[serde(default)]
    pub act_channel_traces: Option<Vec<f64>>,
    /// Spectral density of the layer's weight Hessian block (SLQ).
    #[serde(default)]
    pub density: Option<Density>,
    /// LIMPQ's learned indicators per candidate bit-width (metric `limpq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limpq: Option<LayerIndicators>,
}

impl LayerSensitivity {
    /// An empty row for `info`.
    pub fn new(info: &LayerInfo) -> Self {
        LayerSensitivity {
            name: info.name.clone(),
            op: info.op,
            params: info.params,
            macs: info.macs,
            trace: None,
            trace_stderr: None,
            trace_per_param: None,
            top_eigenvalue: None,
            act_trace: None,
            channel_traces: None,
            trace_probes: None,
            trace_converged_at: None,
            eigen_iterations: None,
            eigen_converged: None,
            act_elems: info.input_elems,
            act_trace_stderr: None,
            act_trace_per_elem: None,
            act_channel_traces: None,
            density: None,
            limpq: None,
        }
    }
}

impl SensitivityTable {
    /// Writes the table as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_json(path, self)
    }

    /// Reads a table written by [`SensitivityTable::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::io::read(path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| crate::Error::corrupt(path, format!("not a sensitivity table: {e}")))
    }

    /// The row of layer `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerSensitivity> {
        self.layers.iter().find(|l| l.name == name)
    }
}
